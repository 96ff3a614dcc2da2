// The rollout edge on Node (20+): node:http in, node:http(s) out, and the
// same core machines every build runs (handler.mjs `serve`). Node hands over
// the request as it came off the wire (the target unparsed, every header
// line, values as bytes), and sends to the origin exactly the headers the
// machine lists, so nothing of Node's own (user-agent, accept, ...) is added.
// Run it directly:
//
//   PUBLIC_KEY=ed25519:... OLD_ORIGIN=https://old.internal \
//   ROLLOUT_ALLOWED_ORIGINS="https://old.internal https://new.internal" \
//   ROLLOUT_STATE_DIR=/var/lib/rollout-edge PORT=8080 node router/js/node.mjs
//
// or import { createServer, fileKv, memoryKv } to embed it.

import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

import { serve } from "./handler.mjs";
import { initSync } from "./pkg/rollout_router_js.js";

initSync({ module: readFileSync(new URL("./pkg/rollout_router_js_bg.wasm", import.meta.url)) });

function bytesOf(value) {
  if (typeof value === "string") return new TextEncoder().encode(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength).slice();
  return new Uint8Array(value);
}

function sameBytes(a, b) {
  if (a === null || b === null) return a === b;
  return Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;
}

/**
 * A KV namespace in memory: lost on restart (the control service re-pushes).
 * compareAndSwap is atomic: it runs to completion on Node's one thread.
 */
export function memoryKv() {
  const values = new Map();
  return {
    async get(key) {
      return values.get(key) ?? null;
    },
    async put(key, value) {
      values.set(key, bytesOf(value));
    },
    async compareAndSwap(key, expected, value) {
      const now = values.get(key) ?? null;
      if (!sameBytes(now, expected)) return { ok: false, current: now };
      values.set(key, bytesOf(value));
      return { ok: true, current: value };
    },
  };
}

/**
 * A KV namespace in a directory, one file per key; each put is an atomic
 * rename. compareAndSwap reads, compares and renames synchronously, so no
 * other request of this process runs in between (one process per directory).
 */
export function fileKv(dir) {
  mkdirSync(dir, { recursive: true });
  const path = (key) => join(dir, encodeURIComponent(key));
  const read = (key) => {
    try {
      return new Uint8Array(readFileSync(path(key)));
    } catch (e) {
      if (e.code === "ENOENT") return null;
      throw e;
    }
  };
  const write = (key, value) => {
    const tmp = `${path(key)}.tmp-${process.pid}`;
    writeFileSync(tmp, bytesOf(value));
    renameSync(tmp, path(key));
  };
  return {
    async get(key) {
      return read(key);
    },
    async put(key, value) {
      write(key, value);
    },
    async compareAndSwap(key, expected, value) {
      const now = read(key);
      if (!sameBytes(now, expected)) return { ok: false, current: now };
      write(key, value);
      return { ok: true, current: value };
    },
  };
}

function clientIp(socket) {
  const ip = socket.remoteAddress ?? "";
  return ip.startsWith("::ffff:") ? ip.slice(7) : ip;
}

// Errors that mean nothing reached the origin, so failover may resend.
const CONNECT_CODES = new Set([
  "ECONNREFUSED",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ETIMEDOUT",
  "ERR_TLS_CERT_ALTNAME_INVALID",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
]);

const agents = { "http:": new http.Agent({ keepAlive: true }), "https:": new https.Agent({ keepAlive: true }) };

/**
 * The chunks of a node:http message's body (a client's request, an origin's
 * response), failing instead of ending when the message broke off: cut
 * short, or framed wrongly. node:http can end the iteration of such a body
 * as if it were whole; `complete` tells them apart. A failure is never sent
 * on as an end: the upload to the origin is destroyed, the client's response
 * cut.
 */
async function* whole(message) {
  for await (const chunk of message) yield chunk;
  if (!message.complete) throw new Error("the message broke off before its end");
}

/**
 * Whether a Transfer-Encoding value (node:http joins repeated lines with
 * ", ") is absent or `chunked` alone, core's rule for requests
 * (edge::request::only_chunked). node:http decodes only chunked, so a
 * response coded otherwise would reach the client with its coding stripped.
 */
function onlyChunked(value) {
  if (value === undefined) return true;
  const codings = value
    .split(",")
    .map((c) => c.trim())
    .filter((c) => c !== "");
  return codings.length === 1 && codings[0].toLowerCase() === "chunked";
}

/** Sends the machine's outbound request with node:http, adding only Host and framing. */
function send(out) {
  const url = new URL(out.origin);
  const client = url.protocol === "https:" ? https : http;
  const raw = ["host", url.host];
  let length = false;
  for (const [name, value] of out.headers) {
    raw.push(name, value);
    if (name.toLowerCase() === "content-length") length = true;
  }
  // Framing is the transport's: a body without a length goes chunked, for
  // every method (node:http would write a GET's or DELETE's body unframed,
  // and the origin would read it as the next request on the connection).
  if (out.body && !length) raw.push("transfer-encoding", "chunked");
  return new Promise((resolve, reject) => {
    let connected = false;
    const req = client.request({
      protocol: url.protocol,
      hostname: url.hostname.replace(/^\[|\]$/g, ""),
      port: url.port || undefined,
      method: out.method,
      path: out.path,
      headers: raw,
      agent: agents[url.protocol],
      setHost: false,
    });
    req.on("socket", (socket) => {
      // A pooled socket is connected already; a new one says when it is.
      if (!socket.connecting) {
        connected = true;
        return;
      }
      socket.once(url.protocol === "https:" ? "secureConnect" : "connect", () => {
        connected = true;
      });
    });
    req.on("error", (e) => {
      const error = new Error(`${e.code ?? "error"}: ${e.message}`);
      error.connect = !connected || CONNECT_CODES.has(e.code);
      reject(error);
    });
    // A 101 the edge never asked for: no response to relay (the machine
    // answers 502 for any status outside 200-599).
    req.on("upgrade", (res, socket) => {
      socket.destroy();
      resolve({ status: res.statusCode, headers: [], body: null, cancel: () => {} });
    });
    req.on("response", (res) => {
      if (!onlyChunked(res.headers["transfer-encoding"])) {
        res.destroy();
        reject(new Error(`its response is coded ${res.headers["transfer-encoding"]}, which the edge does not decode`));
        return;
      }
      const headers = [];
      for (let i = 0; i < res.rawHeaders.length; i += 2) headers.push([res.rawHeaders[i], res.rawHeaders[i + 1]]);
      resolve({ status: res.statusCode, headers, body: whole(res), cancel: () => res.destroy() });
    });
    if (!out.body) {
      req.end();
      return;
    }
    (async () => {
      try {
        for await (const chunk of out.body) {
          if (!req.write(chunk)) await new Promise((r) => req.once("drain", r));
        }
        req.end();
      } catch (e) {
        req.destroy(e);
      }
    })();
  });
}

function factsOf(req, https) {
  const headers = [];
  for (let i = 0; i < req.rawHeaders.length; i += 2) headers.push([req.rawHeaders[i], req.rawHeaders[i + 1]]);
  return {
    method: req.method,
    // A fragment is never sent on; hyper and workerd drop it before the
    // edge runs, so it is dropped here too.
    target: (req.url ?? "").split("#")[0],
    headers,
    client_ip: clientIp(req.socket),
    https,
  };
}

async function write(res, answer) {
  const raw = [];
  for (const [name, value] of answer.headers) raw.push(name, value);
  res.writeHead(answer.status, raw);
  const body = answer.body;
  if (body === null || body === undefined) return res.end();
  if (typeof body === "string") return res.end(body);
  for await (const chunk of body) {
    if (!res.write(chunk)) await new Promise((resolve) => res.once("drain", resolve));
  }
  res.end();
}

/** An http.Server that hands every request to the edge with `env`. */
export function createServer(env, { https = false } = {}) {
  const server = http.createServer(async (req, res) => {
    try {
      const answer = await serve(factsOf(req, https), whole(req), env, send);
      await write(res, answer);
    } catch (e) {
      console.error(`rollout edge: ${e.stack ?? e}`);
      if (res.headersSent) {
        res.destroy();
      } else {
        res.writeHead(502, { "content-type": "text/plain; charset=utf-8" });
        res.end("rollout edge: the request could not be relayed\n");
      }
    }
  });
  // CONNECT never reaches the request handler in Node; the machine answers it.
  server.on("connect", async (req, socket) => {
    try {
      const answer = await serve(factsOf(req, https), null, env, send);
      const lines = [`HTTP/1.1 ${answer.status} ${http.STATUS_CODES[answer.status] ?? ""}`];
      const body = Buffer.from(typeof answer.body === "string" ? answer.body : "", "utf8");
      for (const [name, value] of answer.headers) lines.push(`${name}: ${value}`);
      lines.push(`content-length: ${body.byteLength}`, "connection: close", "", "");
      socket.end(Buffer.concat([Buffer.from(lines.join("\r\n"), "latin1"), body]));
    } catch {
      socket.destroy();
    }
  });
  return server;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const dir = process.env.ROLLOUT_STATE_DIR;
  const env = {
    ROLLOUT_KV: dir ? fileKv(dir) : memoryKv(),
    PUBLIC_KEY: process.env.PUBLIC_KEY,
    OLD_ORIGIN: process.env.OLD_ORIGIN,
    ROLLOUT_ALLOWED_ORIGINS: process.env.ROLLOUT_ALLOWED_ORIGINS,
  };
  const host = process.env.HOST ?? "127.0.0.1";
  const port = Number(process.env.PORT ?? 8080);
  createServer(env).listen(port, host, () => console.log(`rollout edge listening on http://${host}:${port}`));
}
