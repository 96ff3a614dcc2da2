// The same fetch handler on Node's http server (node.mjs), as a Node or
// Deno deployment runs it: pushes, routing, client address, persistence.

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { createServer, fileKv, memoryKv } from "../node.mjs";
import { close, envelope, listen, loadBindings, origin, signer } from "./support.mjs";

const b = await loadBindings();
const control = signer(21);
const ADMIN = "/.well-known/rollout/config";
const servers = [];
const stateDir = mkdtempSync(join(tmpdir(), "rollout-node-edge-"));
let oldOrigin;
let newOrigin;
let edge;
// Every request target either origin received, in order.
const seen = [];

async function startEdge() {
  const server = createServer({
    ROLLOUT_KV: fileKv(stateDir),
    PUBLIC_KEY: control.publicKey,
    OLD_ORIGIN: oldOrigin,
    ROLLOUT_ALLOWED_ORIGINS: `${oldOrigin} ${newOrigin}`,
  });
  servers.push(server);
  return `http://127.0.0.1:${await listen(server)}`;
}

before(async () => {
  const o = origin("old");
  o.on("request", (req) => seen.push(req.url));
  const n = origin("new");
  n.on("request", (req) => seen.push(req.url));
  servers.push(o, n);
  oldOrigin = `http://127.0.0.1:${await listen(o)}`;
  newOrigin = `http://127.0.0.1:${await listen(n)}`;
  edge = await startEdge();
});

after(async () => {
  await Promise.all(servers.map(close));
  rmSync(stateDir, { recursive: true, force: true });
});

const config = (weight) => ({
  schema: 1,
  routes: [{ id: "web", old: oldOrigin, new: newOrigin, new_weight: weight, key: ["header:x-user-id", "client-ip"] }],
});

async function pushVersion(version, weight) {
  const body = envelope({ version, config: config(weight) });
  const res = await fetch(edge + ADMIN, { method: "PUT", body, headers: { "rollout-signature": control.sign(body) } });
  return { status: res.status, json: await res.json() };
}

test("with nothing pushed the Node edge routes to the bootstrap origin", async () => {
  const res = await fetch(`${edge}/a?b=c`);
  const json = await res.json();
  assert.deepEqual([json.origin, json.url], ["old", "/a?b=c"]);
  assert.equal(res.headers.get("x-rollout-version"), "0");
});

test("the control service's signed GET reads back the envelope byte for byte", async () => {
  const body = envelope({ version: 1, config: config(50) });
  const signature = control.sign(body);
  const pushed = await fetch(edge + ADMIN, { method: "PUT", body, headers: { "rollout-signature": signature } });
  assert.equal(pushed.status, 200);
  const res = await fetch(edge + ADMIN, { headers: { "rollout-read": control.readStamp() } });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("rollout-signature"), signature);
  assert.deepEqual(Buffer.from(await res.arrayBuffer()), Buffer.from(body));
  // Without a stamp, only what is held; with a stranger's, 401.
  const plain = await (await fetch(edge + ADMIN)).json();
  assert.equal(plain.version, 1);
  assert.equal(plain.config, undefined);
  const stranger = await fetch(edge + ADMIN, { headers: { "rollout-read": signer(22).readStamp() } });
  assert.equal(stranger.status, 401);
  assert.equal(stranger.headers.get("rollout-signature"), null);
});

test("a push applies and keys split exactly as bucket() says", async () => {
  assert.deepEqual((await pushVersion(1, 50)).json.status, "ack");
  for (let i = 0; i < 200; i++) {
    const key = `node-${i}`;
    const res = await fetch(`${edge}/`, { headers: { "x-user-id": key } });
    const json = await res.json();
    const want = b.bucket("web", key) < 500_000 ? "new" : "old";
    assert.equal(res.headers.get("x-rollout-arm"), want, key);
    assert.equal(json.origin, want, key);
    assert.equal(json.headers["x-rollout-version"], "1");
  }
});

test("the socket address is the client-ip key and is forwarded", async () => {
  const res = await fetch(`${edge}/ip`);
  const json = await res.json();
  assert.equal(json.headers["x-forwarded-for"], "127.0.0.1");
  assert.equal(res.headers.get("x-rollout-arm"), b.bucket("web", "127.0.0.1") < 500_000 ? "new" : "old");
});

test("a gzip response from the origin is relayed readable", async () => {
  const res = await fetch(`${edge}/gz`, { headers: { "x-user-id": "node-1" } });
  assert.equal(res.status, 200);
  assert.equal((await res.json()).url, "/gz");
});

test("the applied config survives a restart of the edge (file KV)", async () => {
  assert.equal((await pushVersion(2, 100)).status, 200);
  const second = await startEdge();
  const res = await fetch(`${second}/`, { headers: { "x-user-id": "node-1" } });
  assert.equal(res.headers.get("x-rollout-version"), "2");
  assert.equal((await res.json()).origin, "new");
  const replay = await fetch(second + ADMIN);
  assert.equal((await replay.json()).version, 2);
});

// The stored frame's fixed layout: magic, frame version, compact form number
// (u16 LE), then three u32-LE-length-prefixed parts: compact, signature,
// envelope (core/src/edge/stored.rs).
function reframe(value, form, compact) {
  const bytes = Buffer.from(value);
  const head = 13 + 1;
  const compactLen = bytes.readUInt32LE(head + 2);
  const rest = bytes.subarray(head + 2 + 4 + compactLen);
  const out = Buffer.alloc(head + 2 + 4 + compact.length);
  bytes.copy(out, 0, 0, head);
  out.writeUInt16LE(form, head);
  out.writeUInt32LE(compact.length, head + 2);
  compact.copy(out, head + 6);
  return { bytes: Buffer.concat([out, rest]), form: bytes.readUInt16LE(head) };
}

test("an older compact form in the store is re-derived from its envelope and written back", async () => {
  const kv = memoryKv();
  const server = createServer({
    ROLLOUT_KV: kv,
    PUBLIC_KEY: control.publicKey,
    OLD_ORIGIN: oldOrigin,
    ROLLOUT_ALLOWED_ORIGINS: `${oldOrigin} ${newOrigin}`,
  });
  servers.push(server);
  const base = `http://127.0.0.1:${await listen(server)}`;
  const body = envelope({ version: 6, config: config(100) });
  const pushed = await fetch(base + ADMIN, { method: "PUT", body, headers: { "rollout-signature": control.sign(body) } });
  assert.equal(pushed.status, 200);
  const current = Buffer.from(await kv.get("rollout.active"));
  // What an older build would have stored: its own compact form beside the envelope.
  const { bytes: older, form } = reframe(current, 1, Buffer.from("an older build's compact form"));
  assert.equal(form, 2, "the form this build writes");
  await kv.put("rollout.active", older);

  const res = await fetch(`${base}/`, { headers: { "x-user-id": "node-7" } });
  assert.equal(res.headers.get("x-rollout-version"), "6", "served by the envelope's config");
  assert.equal((await res.json()).origin, "new");
  await new Promise((resolve) => setTimeout(resolve, 20)); // the write-back is not awaited
  assert.deepEqual(Buffer.from(await kv.get("rollout.active")), current, "written back in this build's form");
});

/** Sends `raw` bytes on a fresh connection and resolves with everything the edge sent back. */
function rawRequest(base, raw) {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    // Written without a half-close: every request says Connection: close,
    // so the edge closes when it has answered.
    const socket = net.connect(Number(port), hostname, () => socket.write(raw));
    const chunks = [];
    socket.on("data", (c) => chunks.push(c));
    socket.on("error", reject);
    socket.on("close", () => resolve(Buffer.concat(chunks).toString("latin1")));
  });
}

test("the Host header cannot rewrite the path the origin gets or reach the admin endpoint", async () => {
  const cases = [
    // Host used to become part of the URL: the origin got /admin/secret?/public.
    "GET /public HTTP/1.1\r\nHost: x/admin/secret?\r\nConnection: close\r\n\r\n",
    // ...and this one was answered by the admin endpoint with what is applied.
    "GET /public HTTP/1.1\r\nHost: x/.well-known/rollout/config?\r\nConnection: close\r\n\r\n",
    "GET /public HTTP/1.1\r\nHost: user@evil.example\r\nConnection: close\r\n\r\n",
    // An absolute-form target is accepted (RFC 9112 §3.2.2), but its
    // authority is held to the same rule as Host.
    "GET http://user@evil.example/admin HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    "OPTIONS * HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
  ];
  for (const raw of cases) {
    const before = seen.length;
    const reply = await rawRequest(edge, raw);
    assert.match(reply, /^HTTP\/1\.1 400 /, raw);
    assert.doesNotMatch(reply, /"version"|"origin"/, `neither the admin endpoint nor an origin answered: ${raw}`);
    assert.deepEqual(seen.slice(before), [], `the origin received nothing for ${raw}`);
  }
  // The same target with a plain Host reaches the origin exactly as sent.
  const before = seen.length;
  const reply = await rawRequest(edge, `GET /public?x=1 HTTP/1.1\r\nHost: ${new URL(edge).host}\r\nConnection: close\r\n\r\n`);
  assert.match(reply, /^HTTP\/1\.1 200 /);
  assert.deepEqual(seen.slice(before), ["/public?x=1"]);
});

/**
 * A raw TCP origin: answers every request head it reads with `replies[target]`
 * ([bytes, close after them]) and records every byte of every connection.
 */
async function rawOrigin(replies) {
  const conns = [];
  const server = net.createServer((socket) => {
    const conn = { bytes: "", closed: false };
    conns.push(conn);
    let answered = 0;
    socket.on("data", (d) => {
      conn.bytes += d.toString("latin1");
      const heads = [...conn.bytes.matchAll(/(?:GET|POST) (\S+) HTTP\/1\.1\r\n[^]*?\r\n\r\n/g)];
      for (const [, target] of heads.slice(answered)) {
        answered += 1;
        const reply = replies[target];
        if (reply?.[1]) socket.end(reply[0]);
        else if (reply) socket.write(reply[0]);
      }
    });
    socket.on("error", () => {});
    socket.on("close", () => (conn.closed = true));
  });
  servers.push(server);
  return { url: `http://127.0.0.1:${await listen(server)}`, conns };
}

async function rawEdge(originUrl) {
  const server = createServer({
    ROLLOUT_KV: memoryKv(),
    PUBLIC_KEY: control.publicKey,
    OLD_ORIGIN: originUrl,
    ROLLOUT_ALLOWED_ORIGINS: originUrl,
  });
  servers.push(server);
  return `http://127.0.0.1:${await listen(server)}`;
}

/** Like rawRequest, but survives a reset and can half-close after writing. */
function rawExchange(base, raw, halfClose = false) {
  const { hostname, port } = new URL(base);
  return new Promise((resolve) => {
    const socket = net.connect(Number(port), hostname, () => {
      socket.write(raw);
      if (halfClose) socket.end();
    });
    const chunks = [];
    socket.on("data", (c) => chunks.push(c));
    socket.on("error", () => {});
    socket.on("close", () => resolve(Buffer.concat(chunks).toString("latin1")));
  });
}

test("a body that breaks reaches the other side cut, never as a shorter whole one", async () => {
  const origin = await rawOrigin({
    "/malformed": ["HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n", false],
    "/cut": ["HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n", true],
    "/short": ["HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello", true],
    "/coded": ["HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", false],
  });
  const base = await rawEdge(origin.url);
  const host = new URL(base).host;
  const get = (path) => rawExchange(base, `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
  // Origin to client: the head is relayed, the body cut (no last chunk, fewer
  // bytes than the Content-Length).
  for (const path of ["/malformed", "/cut"]) {
    const reply = await get(path);
    assert.match(reply, /^HTTP\/1\.1 200 [^]*\r\n\r\n5\r\nhello\r\n$/, `${path}: ${JSON.stringify(reply)}`);
  }
  const short = await get("/short");
  assert.match(short, /^HTTP\/1\.1 200 [^]*content-length: 100\r\n[^]*\r\n\r\nhello$/i, JSON.stringify(short));
  // A transfer coding node:http would strip: a 502, the body not relayed.
  const coded = await get("/coded");
  assert.match(coded, /^HTTP\/1\.1 502 /, JSON.stringify(coded));
  assert.doesNotMatch(coded, /hello\r\n0\r\n/);

  // Client to origin: once part of the upload is at the origin, it breaks
  // (a malformed chunk size, or the client stops sending); the origin's copy
  // is cut, never ended.
  const { hostname, port } = new URL(base);
  for (const [target, breaking] of [
    ["/malformed-upload", "ZZ\r\n"],
    ["/cut-upload", null],
  ]) {
    const carried = () => origin.conns.filter((c) => c.bytes.includes(`POST ${target} `));
    const waitFor = async (what, done) => {
      for (let i = 0; i < 500 && !done(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
      assert.ok(done(), `${target}: ${what}`);
    };
    const reply = await new Promise((resolve) => {
      const socket = net.connect(Number(port), hostname, async () => {
        socket.write(`POST ${target} HTTP/1.1\r\nHost: ${host}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n`);
        await waitFor("the upload begins at the origin", () => carried().some((c) => c.bytes.endsWith("hello\r\n")));
        if (breaking) socket.write(breaking);
        else socket.end();
      });
      const chunks = [];
      socket.on("data", (c) => chunks.push(c));
      socket.on("error", () => {});
      socket.on("close", () => resolve(Buffer.concat(chunks).toString("latin1")));
    });
    assert.doesNotMatch(reply, /^HTTP\/1\.1 2/, JSON.stringify(reply));
    await waitFor("the connection is closed", () => carried().every((c) => c.closed));
    assert.equal(carried().length, 1);
    const upload = carried()[0].bytes;
    assert.ok(upload.endsWith("5\r\nhello\r\n"), `${target}: the origin got the upload cut: ${JSON.stringify(upload)}`);
  }
});
