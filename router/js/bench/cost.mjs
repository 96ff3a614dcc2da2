// What a request costs the JavaScript edge now that every request crosses
// into wasm (core's request machine). Two measurements, printed as a
// markdown table (and written to target/bench/js.md):
//
// 1. In process, on Node: serve() for one request, from raw facts to the
//    answer, with the origin replaced by a function that answers at once.
//    That is the transport and the machine (store read, checks, decision,
//    the origin request's header list, the verdict, the client's headers),
//    and nothing of the network.
// 2. The hop, on loopback: sequential keep-alive GETs (1 connection) through
//    the Node edge and through workerd to a Node origin, against the same
//    GETs sent to the origin directly: the added latency, p50 and p90.
//
// The config is core/benches/decide-case.json's (10 routes, flags, 3 key
// sources), the request its realistic browser request.
//
//   node router/js/bench/cost.mjs [--smoke]

import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import http from "node:http";

import { serve } from "../handler.mjs";
import { createServer, memoryKv } from "../node.mjs";
import { startWorkerd } from "../test/workerd-support.mjs";
import { close, envelope, listen, signer } from "../test/support.mjs";

const smoke = process.argv.includes("--smoke");
const root = new URL("../../../", import.meta.url);
const decideCase = JSON.parse(readFileSync(new URL("core/benches/decide-case.json", root), "utf8"));
const control = signer(31);

function quantile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function spread(samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  return { n: sorted.length, p50: quantile(sorted, 0.5), p90: quantile(sorted, 0.9), p99: quantile(sorted, 0.99) };
}

const us = (ns) => `${(ns / 1000).toFixed(1)} µs`;

/** The decide-case config with every origin pointed at `origin`. */
function configFor(origin) {
  const config = structuredClone(decideCase.config);
  for (const route of config.routes) {
    route.old = origin;
    route.new = origin;
  }
  return config;
}

const allowed = (origin) => origin;

async function pushTo(edgeUrl, config) {
  const body = envelope({ version: 1, config });
  const res = await fetch(`${edgeUrl}/.well-known/rollout/config`, {
    method: "PUT",
    body,
    headers: { "rollout-signature": control.sign(body) },
  });
  if (res.status !== 200) throw new Error(`push: ${res.status} ${await res.text()}`);
}

async function inProcess(origin) {
  const env = {
    ROLLOUT_KV: memoryKv(),
    PUBLIC_KEY: control.publicKey,
    OLD_ORIGIN: origin,
    ROLLOUT_ALLOWED_ORIGINS: allowed(origin),
  };
  const body = envelope({ version: 1, config: configFor(origin) });
  const pushed = await serve(
    { method: "PUT", target: "/.well-known/rollout/config", headers: [["host", "edge"], ["rollout-signature", control.sign(body)]] },
    (async function* () {
      yield body;
    })(),
    env,
    null,
  );
  if (pushed.status !== 200) throw new Error(`push: ${pushed.status} ${pushed.body}`);
  const facts = {
    method: "GET",
    target: decideCase.request.path,
    headers: decideCase.request.headers,
    client_ip: decideCase.request.client_ip,
  };
  const answer = { status: 200, headers: [["content-type", "text/plain"], ["content-length", "2"]], body: null, cancel() {} };
  const send = async () => answer;
  const runs = smoke ? 200 : 20_000;
  for (let i = 0; i < runs / 4; i++) await serve(facts, null, env, send); // warm-up
  const samples = [];
  for (let i = 0; i < runs; i++) {
    const start = process.hrtime.bigint();
    const out = await serve(facts, null, env, send);
    samples.push(Number(process.hrtime.bigint() - start));
    if (out.status !== 200) throw new Error(`serve answered ${out.status}`);
  }
  return spread(samples);
}

async function sequential(url, host, runs) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const get = () =>
    new Promise((resolve, reject) => {
      const req = http.get(url, { agent, headers: { ...Object.fromEntries(decideCase.request.headers), host } }, (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode));
      });
      req.on("error", reject);
    });
  for (let i = 0; i < runs / 4; i++) await get();
  const samples = [];
  for (let i = 0; i < runs; i++) {
    const start = process.hrtime.bigint();
    const status = await get();
    samples.push(Number(process.hrtime.bigint() - start));
    if (status !== 200) throw new Error(`${url} answered ${status}`);
  }
  agent.destroy();
  return spread(samples);
}

const origin = http.createServer({ keepAlive: true }, (req, res) => {
  req.resume();
  res.writeHead(200, { "content-type": "text/plain", "content-length": "2" });
  res.end("ok");
});
const originUrl = `http://127.0.0.1:${await listen(origin)}`;
const rows = [];
try {
  const machine = await inProcess(originUrl);
  rows.push([`Node, in process: serve() per request, origin stubbed (${machine.n} requests)`, machine]);

  const runs = smoke ? 100 : 5_000;
  const path = decideCase.request.path;
  const direct = await sequential(`${originUrl}${path}`, "svc5.example.com", runs);
  rows.push([`direct to the origin, 1 connection (${direct.n} requests)`, direct]);

  const node = createServer({
    ROLLOUT_KV: memoryKv(),
    PUBLIC_KEY: control.publicKey,
    OLD_ORIGIN: originUrl,
    ROLLOUT_ALLOWED_ORIGINS: originUrl,
  });
  const nodeUrl = `http://127.0.0.1:${await listen(node)}`;
  try {
    await pushTo(nodeUrl, configFor(originUrl));
    const through = await sequential(`${nodeUrl}${path}`, "svc5.example.com", runs);
    rows.push([`through the Node edge, 1 connection (${through.n} requests)`, through, direct]);
  } finally {
    await close(node);
  }

  const workerd = await startWorkerd({
    PUBLIC_KEY: control.publicKey,
    OLD_ORIGIN: originUrl,
    ROLLOUT_ALLOWED_ORIGINS: originUrl,
  });
  try {
    await pushTo(`http://${workerd.edge}`, configFor(originUrl));
    const through = await sequential(`http://${workerd.edge}${path}`, "svc5.example.com", runs);
    rows.push([`through workerd, 1 connection (${through.n} requests)`, through, direct]);
  } finally {
    await workerd.stop();
  }
} finally {
  await close(origin);
}

const lines = [
  smoke ? "_smoke run: these are not figures_" : "",
  "| what | p50 | p90 | p99 | added p50 |",
  "|---|---|---|---|---|",
  ...rows.map(([what, s, base]) => `| ${what} | ${us(s.p50)} | ${us(s.p90)} | ${us(s.p99)} | ${base ? us(s.p50 - base.p50) : ""} |`),
].filter(Boolean);
const table = lines.join("\n");
console.log(table);
mkdirSync(new URL("target/bench/", root), { recursive: true });
writeFileSync(new URL("target/bench/js.md", root), `${table}\n`);
