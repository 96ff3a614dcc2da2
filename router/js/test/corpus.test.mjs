// The raw-request corpus (core/tests/vectors/requests.json) against the
// JavaScript edges: the Node edge (node.mjs createServer) and workerd running
// worker.mjs. tests/tests/corpus.rs runs the same file against rollout-host;
// every build must answer every case the same way. Each test collects every
// failing case and reports them together.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { createServer, memoryKv } from "../node.mjs";
import { closedPort, loadCorpus, places, pushConfig, recorder, report, runCorpus } from "./corpus-support.mjs";
import { startWorkerd } from "./workerd-support.mjs";
import { close, listen, signer } from "./support.mjs";

const corpus = loadCorpus();
const control = signer(31);
let origins;
let closed;

before(async () => {
  origins = [await recorder("old"), await recorder("new"), await recorder("outside")];
  closed = await closedPort();
});

after(async () => {
  await Promise.all(origins.map((o) => close(o.server)));
});

const [oldOrigin, newOrigin, outsideOrigin] = [0, 1, 2].map((i) => () => origins[i].host);

/** The env both JS edges get: bootstrap old, and an allow-list without outside. */
function edgeEnv() {
  return {
    PUBLIC_KEY: control.publicKey,
    OLD_ORIGIN: `http://${oldOrigin()}`,
    // Space-separated origins the edge may call; the outside origin runs
    // but is deliberately not on it.
    ROLLOUT_ALLOWED_ORIGINS: [oldOrigin(), newOrigin(), closed].map((h) => `http://${h}`).join(" "),
  };
}

/** Pushes the corpus config as version 1, then runs every case; asserts once at the end. */
async function check(t, build, edge, prepare) {
  const hosts = { edge, old: oldOrigin(), new: newOrigin(), outside: outsideOrigin(), closed };
  const pushed = await pushConfig(edge, control, 1, places(hosts).json(corpus.config));
  assert.equal(pushed.status, 200, `the corpus config is applied: ${JSON.stringify(pushed.json)}`);
  const now = Math.floor(Date.now() / 1000);
  const p = places({
    ...hosts,
    signature: pushed.signature,
    read_stamp: control.readStamp(now),
    stale_read_stamp: control.readStamp(now - 3600),
    stranger_read_stamp: signer(2).readStamp(now),
  });
  for (const o of origins) o.take();
  const result = await runCorpus(corpus, { build, edge, origins, p, prepare, log: (line) => t.diagnostic(line) });
  t.diagnostic(`${build}: ${result.total - result.failures.length} of ${result.total} corpus cases pass`);
  assert.equal(result.failures.length, 0, report(build, result));
}

test("the Node edge answers the raw-request corpus", async (t) => {
  const server = createServer({ ROLLOUT_KV: memoryKv(), ...edgeEnv() });
  const port = await listen(server);
  try {
    await check(t, "node", `127.0.0.1:${port}`, (bytes) => bytes);
  } finally {
    await close(server);
  }
});

// Cloudflare's front end terminates the client's connection and tells the
// worker who the client is only in `cf-connecting-ip` (workerd has no other
// way to learn it). The runner plays that front end: it inserts
// `cf-connecting-ip: 127.0.0.1` right after the request line of every request.
// The edge must treat it as the platform's header (never forwarded).
function asCloudflareFrontEnd(bytes) {
  const end = bytes.indexOf("\r\n");
  if (end === -1) return bytes;
  return Buffer.concat([bytes.subarray(0, end + 2), Buffer.from("cf-connecting-ip: 127.0.0.1\r\n"), bytes.subarray(end + 2)]);
}

test("workerd answers the raw-request corpus", async (t) => {
  const workerd = await startWorkerd(edgeEnv());
  try {
    await check(t, "workerd", workerd.edge, asCloudflareFrontEnd);
  } finally {
    await workerd.stop();
  }
});
