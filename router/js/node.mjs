// The rollout edge on Node (20+): node:http in front of the same fetch
// handler Workers run. Run it directly:
//
//   PUBLIC_KEY=ed25519:... OLD_ORIGIN=https://old.internal \
//   ROLLOUT_STATE_DIR=/var/lib/rollout-edge PORT=8080 node router/js/node.mjs
//
// or import { createServer, fileKv, memoryKv } to embed it.

import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import http from "node:http";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pathToFileURL } from "node:url";

import { handleRequest } from "./handler.mjs";
import { initSync } from "./pkg/rollout_router_js.js";

initSync({ module: readFileSync(new URL("./pkg/rollout_router_js_bg.wasm", import.meta.url)) });

function bytesOf(value) {
  if (typeof value === "string") return new TextEncoder().encode(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength).slice();
  return new Uint8Array(value);
}

/** A KV namespace in memory: lost on restart (the control service re-pushes). */
export function memoryKv() {
  const values = new Map();
  return {
    async get(key) {
      return values.get(key) ?? null;
    },
    async put(key, value) {
      values.set(key, bytesOf(value));
    },
  };
}

/** A KV namespace in a directory, one file per key; each put is an atomic rename. */
export function fileKv(dir) {
  mkdirSync(dir, { recursive: true });
  const path = (key) => join(dir, encodeURIComponent(key));
  return {
    async get(key) {
      try {
        return new Uint8Array(await readFile(path(key)));
      } catch (e) {
        if (e.code === "ENOENT") return null;
        throw e;
      }
    },
    async put(key, value) {
      const tmp = `${path(key)}.tmp-${process.pid}`;
      writeFileSync(tmp, bytesOf(value));
      renameSync(tmp, path(key));
    },
  };
}

// Node's fetch decodes these content codings but keeps the header, so the
// header no longer describes the body it relays.
const DECODED = new Set(["gzip", "x-gzip", "deflate", "br"]);

function clientIp(socket) {
  const ip = socket.remoteAddress ?? "";
  return ip.startsWith("::ffff:") ? ip.slice(7) : ip;
}

// A Host value that is an authority and nothing more: a name or address and an
// optional port. Anything else (a "/", "?", "#", "@", space...) would let the
// Host header rewrite the path or query of the URL the handler routes by.
const AUTHORITY = /^(?:[A-Za-z0-9\-._~]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$/;

function refuse(res, status, message) {
  res.writeHead(status, { "content-type": "text/plain; charset=utf-8", connection: "close" });
  res.end(`rollout edge: ${message}\n`);
}

/**
 * The URL the handler sees: the authority from Host (checked to be one), the
 * path and query from the request target alone. Null when either is not
 * what HTTP allows here.
 */
export function requestUrl(host, target) {
  if (!AUTHORITY.test(host)) return null;
  // Origin-form only ("/path?query"); "*" and absolute-form are refused.
  if (!target.startsWith("/")) return null;
  return `http://${host}${target}`;
}

/** An http.Server that hands every request to the edge with `env`. */
export function createServer(env) {
  return http.createServer(async (req, res) => {
    try {
      const url = requestUrl(req.headers.host ?? "localhost", req.url ?? "");
      if (url === null) return refuse(res, 400, "bad Host header or request target");
      const headers = new Headers();
      for (let i = 0; i < req.rawHeaders.length; i += 2) headers.append(req.rawHeaders[i], req.rawHeaders[i + 1]);
      const bodyless = req.method === "GET" || req.method === "HEAD";
      const request = new Request(url, {
        method: req.method,
        headers,
        body: bodyless ? undefined : Readable.toWeb(req),
        duplex: "half",
      });
      const response = await handleRequest(request, env, { clientIp: clientIp(req.socket) });
      const decoded = DECODED.has((response.headers.get("content-encoding") ?? "").toLowerCase());
      const out = [];
      for (const [name, value] of response.headers) {
        if (name === "set-cookie") continue;
        if (decoded && (name === "content-encoding" || name === "content-length")) continue;
        out.push(name, value);
      }
      for (const cookie of response.headers.getSetCookie()) out.push("set-cookie", cookie);
      res.writeHead(response.status, response.statusText, out);
      if (response.body) {
        for await (const chunk of response.body) {
          if (!res.write(chunk)) await new Promise((resolve) => res.once("drain", resolve));
        }
      }
      res.end();
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
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const dir = process.env.ROLLOUT_STATE_DIR;
  const env = {
    ROLLOUT_KV: dir ? fileKv(dir) : memoryKv(),
    PUBLIC_KEY: process.env.PUBLIC_KEY,
    OLD_ORIGIN: process.env.OLD_ORIGIN,
  };
  const host = process.env.HOST ?? "127.0.0.1";
  const port = Number(process.env.PORT ?? 8080);
  createServer(env).listen(port, host, () => console.log(`rollout edge listening on http://${host}:${port}`));
}
