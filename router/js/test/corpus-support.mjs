// The raw-request corpus runner (core/tests/vectors/requests.json) for the
// JavaScript edges, the same checks tests/tests/corpus.rs makes against
// rollout-host: raw bytes in on a fresh connection, the status and headers
// the client got back, and exactly what each recording origin received.
// The corpus file's "description" defines the format.

import net from "node:net";

import { envelope, listen, readRepoJson } from "./support.mjs";

export const ADMIN = "/.well-known/rollout/config";
const REQUEST_TIMEOUT_MS = 10_000;
// Header names the transport owns: never compared in an origin's header list.
const TRANSPORT = new Set(["host", "connection", "keep-alive", "content-length", "transfer-encoding"]);

export function loadCorpus() {
  return readRepoJson("core/tests/vectors/requests.json");
}

// ---------------------------------------------------------------- placeholders

/** Substitution of `{{edge}}`, `{{old}}`... in text, bytes and JSON values. */
export function places(map) {
  const pairs = Object.entries(map).map(([k, v]) => [`{{${k}}}`, String(v)]);
  const text = (s) => pairs.reduce((acc, [k, v]) => acc.split(k).join(v), s);
  const bytes = (buf) => {
    let out = buf;
    for (const [k, v] of pairs) out = replaceBytes(out, Buffer.from(k), Buffer.from(v));
    return out;
  };
  const json = (value) => {
    if (typeof value === "string") return text(value);
    if (Array.isArray(value)) return value.map(json);
    if (value && typeof value === "object") {
      return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, json(v)]));
    }
    return value;
  };
  return { text, bytes, json };
}

function replaceBytes(haystack, from, to) {
  const parts = [];
  let start = 0;
  for (let at = haystack.indexOf(from); at !== -1; at = haystack.indexOf(from, start)) {
    parts.push(haystack.subarray(start, at), to);
    start = at + from.length;
  }
  parts.push(haystack.subarray(start));
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------- recording origins

/**
 * Parses one HTTP/1.1 request from the start of `buf`: null while it is
 * incomplete, else { method, target, headers: [[name, Buffer]], body }.
 * Throws on bytes that are not a request.
 */
function parseRequest(buf) {
  const headEnd = buf.indexOf("\r\n\r\n");
  if (headEnd === -1) return null;
  const lines = [];
  let start = 0;
  const head = buf.subarray(0, headEnd);
  for (let at = head.indexOf("\n"); ; at = head.indexOf("\n", start)) {
    const end = at === -1 ? head.length : at;
    let line = head.subarray(start, end);
    if (line.at(-1) === 0x0d) line = line.subarray(0, -1);
    lines.push(line);
    if (at === -1) break;
    start = at + 1;
  }
  const requestLine = lines.shift().toString("latin1").split(" ");
  if (requestLine.length < 3) throw new Error(`bad request line ${JSON.stringify(requestLine.join(" "))}`);
  const [method, target] = requestLine;
  const headers = lines.map((line) => {
    const colon = line.indexOf(":");
    if (colon === -1) throw new Error(`header line without a colon: ${JSON.stringify(line.toString("latin1"))}`);
    return [line.subarray(0, colon).toString("latin1").toLowerCase(), trimOws(line.subarray(colon + 1))];
  });
  const values = (name) => headers.filter(([n]) => n === name).map(([, v]) => v.toString("latin1").toLowerCase());
  let rest = buf.subarray(headEnd + 4);
  const te = values("transfer-encoding").at(-1);
  if (te?.trimEnd().endsWith("chunked")) {
    const chunks = [];
    for (;;) {
      const lineEnd = rest.indexOf("\r\n");
      if (lineEnd === -1) return null;
      const sizeText = rest.subarray(0, lineEnd).toString("latin1").split(";")[0].trim();
      if (!/^[0-9a-fA-F]+$/.test(sizeText)) throw new Error(`bad chunk size ${JSON.stringify(sizeText)}`);
      const size = parseInt(sizeText, 16);
      rest = rest.subarray(lineEnd + 2);
      if (size === 0) {
        // Trailers, up to the empty line.
        for (;;) {
          const end = rest.indexOf("\r\n");
          if (end === -1) return null;
          const trailer = rest.subarray(0, end);
          rest = rest.subarray(end + 2);
          if (trailer.length === 0) break;
        }
        return { method, target, headers, body: Buffer.concat(chunks) };
      }
      if (rest.length < size + 2) return null;
      chunks.push(rest.subarray(0, size));
      rest = rest.subarray(size + 2);
    }
  }
  const length = values("content-length")[0];
  if (length === undefined) return { method, target, headers, body: Buffer.alloc(0) };
  if (!/^\s*\d+\s*$/.test(length)) throw new Error(`bad content-length ${JSON.stringify(length)}`);
  const n = Number(length);
  if (rest.length < n) return null;
  return { method, target, headers, body: rest.subarray(0, n) };
}

function trimOws(buf) {
  let a = 0;
  let b = buf.length;
  while (a < b && (buf[a] === 0x20 || buf[a] === 0x09)) a++;
  while (b > a && (buf[b - 1] === 0x20 || buf[b - 1] === 0x09)) b--;
  return Buffer.from(buf.subarray(a, b));
}

/** The status an origin answers: NNN for a target holding /status/NNN, except on old. */
function statusFor(name, target) {
  if (name === "old") return 200;
  const m = /\/status\/(\d{3})/.exec(target ?? "");
  return m ? Number(m[1]) : 200;
}

/**
 * A loopback HTTP/1.1 server on node:net that records every request as read
 * off the wire (method, raw target, headers in order, body) and answers
 * `ok <name>` with `x-origin: <name>`, then closes the connection.
 */
export async function recorder(name) {
  const log = [];
  const server = net.createServer((socket) => {
    let buf = Buffer.alloc(0);
    let done = false;
    const timer = setTimeout(() => finish({ error: "timed out reading the request", raw: buf }), REQUEST_TIMEOUT_MS);
    function finish(recorded) {
      if (done) return;
      done = true;
      clearTimeout(timer);
      log.push(recorded);
      const body = `ok ${name}`;
      const status = statusFor(name, recorded.target);
      // `/conn-named`: the answer names a header in Connection and forges an
      // edge header, neither of which may reach the client.
      const connection = (recorded.target ?? "").includes("/conn-named")
        ? "connection: close, x-secret\r\nx-secret: s\r\nx-rollout-version: 999"
        : "connection: close";
      socket.end(
        `HTTP/1.1 ${status} Status\r\ncontent-type: text/plain\r\nx-origin: ${name}\r\n` +
          `content-length: ${body.length}\r\n${connection}\r\n\r\n${body}`,
      );
    }
    socket.on("data", (chunk) => {
      if (done) return;
      buf = Buffer.concat([buf, chunk]);
      try {
        const parsed = parseRequest(buf);
        if (parsed) finish(parsed);
      } catch (e) {
        finish({ error: e.message, raw: buf });
      }
    });
    socket.on("end", () => {
      // A connection that carried no byte sent nothing: not recorded.
      if (!done && buf.length > 0) finish({ error: "closed before the request was complete", raw: buf });
      clearTimeout(timer);
    });
    socket.on("error", () => clearTimeout(timer));
  });
  const port = await listen(server);
  return {
    name,
    server,
    host: `127.0.0.1:${port}`,
    take: () => log.splice(0, log.length),
  };
}

/** `host:port` of a loopback port nobody listens on. */
export async function closedPort() {
  const server = net.createServer();
  const port = await listen(server);
  await new Promise((resolve) => server.close(resolve));
  return `127.0.0.1:${port}`;
}

// ---------------------------------------------------------------- client side

/** Writes `bytes` on a fresh connection to `host:port`; resolves with all that came back. */
export function exchange(hostPort, bytes) {
  const [host, port] = [hostPort.slice(0, hostPort.lastIndexOf(":")), hostPort.slice(hostPort.lastIndexOf(":") + 1)];
  return new Promise((resolve) => {
    const chunks = [];
    let settled = false;
    const settle = (result) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(
      () => settle({ error: `no end of response within ${REQUEST_TIMEOUT_MS} ms`, raw: Buffer.concat(chunks) }),
      REQUEST_TIMEOUT_MS,
    );
    // No half-close: every request says Connection: close, so the edge
    // closes when it has answered.
    const socket = net.connect(Number(port), host, () => socket.write(bytes));
    socket.on("data", (c) => chunks.push(c));
    // A reset after a response still leaves that response to check.
    socket.on("error", (e) => settle(chunks.length ? { raw: Buffer.concat(chunks) } : { error: e.message }));
    socket.on("close", () => settle({ raw: Buffer.concat(chunks) }));
  });
}

function parseResponse(raw) {
  let end = raw.indexOf("\r\n\r\n");
  if (end === -1) end = raw.length;
  const lines = raw.subarray(0, end).toString("latin1").split("\n").map((l) => l.replace(/\r$/, ""));
  const first = lines.shift() ?? "";
  const m = /^HTTP\/\S+ (\d{3})/.exec(first);
  const headers = [];
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon === -1) continue;
    // Values kept as bytes (latin1 round-trips them) so UTF-8 compares exactly.
    headers.push([line.slice(0, colon).toLowerCase(), trimOws(Buffer.from(line.slice(colon + 1), "latin1"))]);
  }
  return { status: m ? Number(m[1]) : null, headers, first };
}

/** Bytes for a message: text when UTF-8, else escaped. */
function show(buf) {
  const text = new TextDecoder("utf-8", { fatal: false }).decode(buf);
  if (Buffer.from(text, "utf8").equals(buf)) return JSON.stringify(text);
  return `b"${[...buf].map((b) => (b >= 0x20 && b < 0x7f && b !== 0x22 && b !== 0x5c ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, "0")}`)).join("")}"`;
}

// Header lists keyed by lowercased name, values joined by ", " in order
// (RFC 9110 §5.3); null for a name whose expected value may be anything.
function joinInto(map, name, value) {
  if (!map.has(name)) return map.set(name, value);
  const have = map.get(name);
  map.set(name, have === null || value === null ? null : Buffer.concat([have, Buffer.from(", "), value]));
}

function recordedSet(headers) {
  const map = new Map();
  for (const [n, v] of headers) if (!TRANSPORT.has(n)) joinInto(map, n, v);
  return map;
}

function expectedSet(pairs) {
  const map = new Map();
  for (const [n, v] of pairs) joinInto(map, n.toLowerCase(), v === null ? null : Buffer.from(v, "utf8"));
  return map;
}

function showSet(map) {
  return [...map.keys()]
    .sort()
    .map((n) => `${n}: ${map.get(n) === null ? "<any>" : show(map.get(n))}`)
    .join(", ");
}

function compareRequest(want, got) {
  const diffs = [];
  if (got.error) return [`unreadable request (${got.error}): ${show(got.raw)}`];
  if (got.method !== want.method) diffs.push(`method ${JSON.stringify(got.method)} (want ${JSON.stringify(want.method)})`);
  if (got.target !== want.target) {
    diffs.push(`target ${JSON.stringify(got.target)} (want ${JSON.stringify(want.target)})`);
  }
  const hosts = got.headers.filter(([n]) => n === "host").map(([, v]) => v);
  if (hosts.length !== 1 || !hosts[0].equals(Buffer.from(want.host))) {
    diffs.push(`host [${hosts.map(show).join(", ")}] (want ${JSON.stringify(want.host)})`);
  }
  const gotSet = recordedSet(got.headers);
  const wantSet = expectedSet(want.headers);
  const extra = [];
  const wrong = [];
  for (const [n, v] of gotSet) {
    if (!wantSet.has(n)) extra.push(`${n}: ${show(v)}`);
    else if (wantSet.get(n) !== null && !wantSet.get(n).equals(v)) wrong.push(`${n}: ${show(v)} (want ${show(wantSet.get(n))})`);
  }
  const missing = [...wantSet.keys()].filter((n) => !gotSet.has(n));
  if (extra.length) diffs.push(`unexpected headers [${extra.join("; ")}]`);
  if (missing.length) diffs.push(`missing headers [${missing.join(", ")}]`);
  if (wrong.length) diffs.push(`wrong header values [${wrong.join("; ")}]`);
  if (extra.length || missing.length) diffs.push(`(received: ${showSet(gotSet)}; wanted: ${showSet(wantSet)})`);
  if (!got.body.equals(Buffer.from(want.body, "utf8"))) {
    diffs.push(`body ${show(got.body)} (want ${JSON.stringify(want.body)})`);
  }
  return diffs;
}

function describe(r) {
  return r.error ? `<unreadable: ${r.error}>` : `${r.method} ${r.target}`;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The request bytes of `c`, placeholders substituted. */
export function requestBytes(c, p) {
  if ((c.request === undefined) === (c.request_base64 === undefined)) {
    throw new Error(`case ${c.name}: needs exactly one of request, request_base64`);
  }
  const raw = c.request !== undefined ? Buffer.from(c.request, "utf8") : Buffer.from(c.request_base64, "base64");
  return p.bytes(raw);
}

/** Runs one case: the list of what differed (empty when it passed). */
async function runCase(c, { edge, origins, p, prepare }) {
  const diffs = [];
  const bytes = prepare(requestBytes(c, p));
  for (const o of origins) o.take();
  const reply = await exchange(edge, bytes);
  // Anything an origin is still receiving lands before it is looked at.
  await sleep(50);
  const recorded = origins.map((o) => [o.name, o.take()]);

  if (reply.error && !reply.raw?.length) {
    diffs.push(`no response: ${reply.error}`);
  } else {
    const resp = parseResponse(reply.raw);
    if (resp.status !== c.status) {
      diffs.push(`status ${resp.status ?? "none"} (want ${c.status}); response began ${JSON.stringify(resp.first || "<nothing>")}`);
    }
    for (const name of c.response_headers_absent ?? []) {
      if (resp.headers.some(([h]) => h === name.toLowerCase())) diffs.push(`response header ${name} must not reach the client`);
    }
    for (const [n, v] of p.json(c.response_headers ?? [])) {
      const got = resp.headers.filter(([h]) => h === n.toLowerCase()).map(([, x]) => x);
      if (!got.some((g) => g.equals(Buffer.from(v, "utf8")))) {
        diffs.push(`response header ${n}: [${got.map(show).join(", ")}] (want ${JSON.stringify(v)})`);
      }
    }
  }

  const origin = p.json(c.origin ?? null);
  const expected = origin === null ? [] : Array.isArray(origin) ? origin : [origin];
  for (const [name, got] of recorded) {
    const want = expected.filter((e) => e.at === name);
    if (got.length !== want.length) {
      diffs.push(`origin ${name} received ${got.length} request(s) [${got.map(describe).join(", ")}], want ${want.length}`);
    }
    want.forEach((w, i) => {
      if (i < got.length) for (const d of compareRequest(w, got[i])) diffs.push(`origin ${name} request ${i + 1}: ${d}`);
    });
  }
  return diffs;
}

/**
 * Runs every case against the edge at `edge` (host:port). `prepare` may
 * rewrite each request's bytes before they are sent. Returns
 * { total, failures: [{ name, diffs }] }.
 */
export async function runCorpus(corpus, { build, edge, origins, p, prepare = (b) => b, log = () => {} }) {
  const failures = [];
  for (const listed of corpus.cases) {
    if (!listed.name || !listed.why) throw new Error(`every case needs a name and a why: ${JSON.stringify(listed).slice(0, 200)}`);
    // A platform exception replaces the fields it names, for that build only.
    const exception = listed.platform?.[build];
    if (exception && !exception.why) throw new Error(`case ${listed.name}: a platform exception needs a why`);
    const c = exception ? { ...listed, ...exception } : listed;
    const diffs = await runCase(c, { edge, origins, p, prepare });
    log(`${diffs.length ? "FAIL" : "pass"}  ${c.name}`);
    if (diffs.length) failures.push({ name: c.name, diffs });
  }
  return { total: corpus.cases.length, failures };
}

/** The assertion message listing every failing case and what differed. */
export function report(build, { total, failures }) {
  return (
    `${build}: ${failures.length} of ${total} corpus cases failed:\n` +
    failures.map((f) => `- ${f.name}\n    ${f.diffs.join("\n    ")}`).join("\n")
  );
}

/**
 * Signs `config` as envelope `version` and PUTs it to the edge's admin path:
 * the status, the JSON reply and the signature header it was sent with.
 */
export async function pushConfig(edge, signer, version, config) {
  const body = envelope({ version, config, reason: `corpus v${version}` });
  const signature = signer.sign(body);
  const res = await fetch(`http://${edge}${ADMIN}`, {
    method: "PUT",
    body,
    headers: { "rollout-signature": signature, "content-type": "application/json" },
  });
  return { status: res.status, json: await res.json(), signature };
}
