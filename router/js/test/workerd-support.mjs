// workerd on loopback for the JavaScript tests and benchmarks: worker.mjs
// and the built pkg/ in a temporary directory, a KV namespace backed by a
// Node service (the protocol workerd speaks to a kvNamespace binding), text
// bindings, and a network service that reaches loopback origins.

import { spawn } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

import { listen } from "./support.mjs";

const jsDir = fileURLToPath(new URL("..", import.meta.url));

/** The KV protocol workerd speaks to the service behind a kvNamespace binding. */
export function kvServer(store) {
  return http.createServer((req, res) => {
    const key = decodeURIComponent(new URL(req.url, "http://kv").pathname.slice(1));
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      if (req.method === "GET" && key === "") {
        res.writeHead(200, { "content-type": "application/json" });
        return res.end(JSON.stringify({ keys: [...store.keys()].sort().map((name) => ({ name })), list_complete: true }));
      }
      if (req.method === "GET") {
        if (!store.has(key)) {
          res.writeHead(404);
          return res.end();
        }
        res.writeHead(200);
        return res.end(store.get(key));
      }
      if (req.method === "PUT") {
        store.set(key, Buffer.concat(chunks));
        res.writeHead(200);
        return res.end();
      }
      if (req.method === "DELETE") {
        store.delete(key);
        res.writeHead(200);
        return res.end();
      }
      res.writeHead(405);
      res.end();
    });
  });
}

function workerdBinary() {
  const platform = { linux: "linux", darwin: "darwin", win32: "windows" }[process.platform];
  const arch = { x64: "64", arm64: "arm64" }[process.arch];
  const direct = join(jsDir, "node_modules", "@cloudflare", `workerd-${platform}-${arch}`, "bin", "workerd");
  if (existsSync(direct)) return direct;
  return join(jsDir, "node_modules", ".bin", "workerd");
}

/** A workerd config for worker.mjs with `bindings` as text bindings plus the KV binding. */
function workerdConfig({ kvPort, bindings }) {
  const text = Object.entries(bindings)
    .map(([name, value]) => `    (name = ${JSON.stringify(name)}, text = ${JSON.stringify(value)}),\n`)
    .join("");
  return `using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "edge", worker = .edge),
    (name = "kv", external = (address = ${JSON.stringify(`127.0.0.1:${kvPort}`)}, http = ())),
    (name = "loopback", network = (allow = ["local"])),
  ],
  sockets = [ (name = "http", address = "127.0.0.1:0", http = (), service = "edge") ],
);

const edge :Workerd.Worker = (
  modules = [
    (name = "worker.mjs", esModule = embed "worker.mjs"),
    (name = "handler.mjs", esModule = embed "handler.mjs"),
    (name = "pkg/rollout_router_js.js", esModule = embed "pkg/rollout_router_js.js"),
    (name = "pkg/rollout_router_js_bg.wasm", wasm = embed "pkg/rollout_router_js_bg.wasm"),
  ],
  compatibilityDate = "2025-01-01",
  bindings = [
    (name = "ROLLOUT_KV", kvNamespace = "kv"),
${text}  ],
  globalOutbound = "loopback",
);
`;
}

/**
 * Starts workerd serving worker.mjs on a loopback port, with a Node KV
 * backend and `bindings` as text bindings. Resolves with
 * { edge: "127.0.0.1:PORT", stop(), log, store } (store: the KV namespace
 * as a Map of key to bytes).
 */
export async function startWorkerd(bindings) {
  const store = new Map();
  const kv = kvServer(store);
  const kvPort = await listen(kv);
  const dir = mkdtempSync(join(tmpdir(), "rollout-workerd-"));
  mkdirSync(join(dir, "pkg"));
  for (const f of ["worker.mjs", "handler.mjs", "pkg/rollout_router_js.js", "pkg/rollout_router_js_bg.wasm"]) {
    copyFileSync(join(jsDir, f), join(dir, f));
  }
  const configPath = join(dir, "edge.capnp");
  writeFileSync(configPath, workerdConfig({ kvPort, bindings }));
  const log = [];
  const child = spawn(
    workerdBinary(),
    ["serve", configPath, "--verbose", "--socket-addr", "http=127.0.0.1:0", "--control-fd", "3"],
    { stdio: ["ignore", "pipe", "pipe", "pipe"] },
  );
  // If the test process dies early, workerd must not outlive it.
  const killOnExit = () => child.kill("SIGKILL");
  process.on("exit", killOnExit);
  child.stdout.on("data", (d) => log.push(d.toString()));
  child.stderr.on("data", (d) => log.push(d.toString()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      await new Promise((resolve) => {
        const hard = setTimeout(() => child.kill("SIGKILL"), 2000);
        child.once("exit", () => {
          clearTimeout(hard);
          resolve();
        });
        child.kill("SIGTERM");
      });
    }
    process.off("exit", killOnExit);
    await new Promise((resolve) => {
      kv.closeAllConnections?.();
      kv.close(() => resolve());
    });
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const port = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`workerd did not listen in 30 s:\n${log.join("")}`)), 30_000);
      let buffered = "";
      child.stdio[3].on("data", (d) => {
        buffered += d.toString();
        for (const line of buffered.split("\n")) {
          try {
            const event = JSON.parse(line);
            if (event.event === "listen" && event.socket === "http") {
              clearTimeout(timer);
              resolve(event.port);
            }
          } catch {
            // A partial line; wait for the rest.
          }
        }
      });
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`workerd exited with ${code}:\n${log.join("")}`));
      });
    });
    return { edge: `127.0.0.1:${port}`, stop, log, store };
  } catch (e) {
    await stop();
    throw e;
  }
}
