// The fetch handler in workerd (the Workers runtime), on loopback: two Node
// origins, a Node KV backend behind the worker's KV binding, and pushes
// signed by Node's own Ed25519. Everything listens on 127.0.0.1 only and is
// stopped at the end, by SIGKILL if it does not stop by itself.

import assert from "node:assert/strict";
import http from "node:http";
import { after, before, test } from "node:test";

import { close, envelope, listen, loadBindings, origin, sha256Hex, signer, withoutAge } from "./support.mjs";
import { startWorkerd } from "./workerd-support.mjs";

const b = await loadBindings();
const control = signer(11);
const stranger = signer(12);
const ADMIN = "/.well-known/rollout/config";

// ---------------------------------------------------------------- lifecycle

const state = { servers: [], kv: null, workerd: null };
let edge; // "http://127.0.0.1:PORT"
let oldOrigin;
let newOrigin;

before(async () => {
  const oldServer = origin("old");
  const newServer = origin("new");
  state.servers.push(oldServer, newServer);
  oldOrigin = `http://127.0.0.1:${await listen(oldServer)}`;
  newOrigin = `http://127.0.0.1:${await listen(newServer)}`;
  // A port nobody listens on, for the connect-error failover test; it must
  // be on the allow-list like any origin the config names.
  const dead = http.createServer();
  state.deadOrigin = `http://127.0.0.1:${await listen(dead)}`;
  await close(dead);
  state.workerd = await startWorkerd({
    PUBLIC_KEY: control.publicKey,
    OLD_ORIGIN: oldOrigin,
    ROLLOUT_ALLOWED_ORIGINS: [oldOrigin, newOrigin, state.deadOrigin].join(" "),
  });
  state.kv = state.workerd.store;
  edge = `http://${state.workerd.edge}`;
});

after(async () => {
  await state.workerd?.stop();
  await Promise.all(state.servers.map(close));
});

// ---------------------------------------------------------------- helpers

const WEB = (weight, extra = {}) => ({
  schema: 1,
  debug_headers: true,
  routes: [
    {
      id: "web",
      old: oldOrigin,
      new: newOrigin,
      new_weight: weight,
      key: ["header:x-user-id", "cookie:sid"],
      assign_cookie: true,
      flags: [{ name: "beta", percent: 0, allow: ["user-1"] }],
      ...extra,
    },
  ],
});

const pushed = new Map(); // version -> { body, signature }

async function pushConfig(version, config, { sign = control.sign } = {}) {
  const body = envelope({ version, config, reason: `v${version}` });
  const signature = sign(body);
  pushed.set(version, { body, signature });
  return send(version, { body, signature });
}

async function send(_version, { body, signature, headers = {} }) {
  const res = await fetch(edge + ADMIN, {
    method: "PUT",
    body,
    headers: { "rollout-signature": signature, "content-type": "application/json", ...headers },
  });
  return { status: res.status, json: await res.json() };
}

async function get(path, headers = {}) {
  const res = await fetch(edge + path, { headers, redirect: "manual" });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    // Not every response is the origin's JSON echo.
  }
  return { res, text, json };
}

/** Runs `fn` over `items` with at most `width` in flight. */
async function pool(items, width, fn) {
  const out = new Array(items.length);
  let next = 0;
  async function worker() {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  }
  await Promise.all(Array.from({ length: width }, worker));
  return out;
}

async function armsOf(keys) {
  return pool(keys, 16, async (key) => {
    const { res, json } = await get("/", { "x-user-id": key });
    assert.equal(res.status, 200, `key ${key}`);
    const arm = res.headers.get("x-rollout-arm");
    assert.equal(json.origin, arm, `the ${arm} origin served key ${key}`);
    return arm;
  });
}

/** A request with headers fetch() refuses to send (Connection, TE). */
function rawGet(path, headers) {
  const url = new URL(edge);
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: url.hostname, port: url.port, path, method: "GET", headers },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => resolve({ res, json: JSON.parse(Buffer.concat(chunks).toString()) }));
      },
    );
    req.on("error", reject);
    req.end();
  });
}

const KEYS = Array.from({ length: 10_000 }, (_, i) => `user-${i}`);
let armsAtV1;

// ---------------------------------------------------------------- tests
// They run in order and share the edge: each push builds on the last.

test("with nothing pushed the edge routes to the bootstrap origin", async () => {
  const { res, json } = await get("/hello?x=1", { "x-user-id": "user-1" });
  assert.equal(res.status, 200);
  assert.equal(json.origin, "old");
  assert.equal(json.url, "/hello?x=1");
  assert.equal(res.headers.get("x-rollout-arm"), "old");
  assert.equal(res.headers.get("x-rollout-version"), "0");
  assert.equal(res.headers.get("x-rollout-reason"), "bootstrap");
  const applied = await get(ADMIN);
  assert.deepEqual(applied.json, { version: 0, digest: null, keys: [control.keyId] });
});

test("push v1 at 10 % is acknowledged and applies on the next request", async () => {
  const { status, json } = await pushConfig(1, WEB(10));
  assert.equal(status, 200);
  assert.deepEqual(json, { status: "ack", version: 1, digest: sha256Hex(pushed.get(1).body) });
  const { res } = await get("/", { "x-user-id": "user-1" });
  assert.equal(res.headers.get("x-rollout-version"), "1");
  assert.deepEqual([...state.kv.keys()], ["rollout.active"], "one value under one key");
  const stored = Buffer.from(state.kv.get("rollout.active"));
  assert.ok(stored.includes(Buffer.from(pushed.get(1).body)), "the value holds the signed envelope");
  assert.ok(stored.includes(Buffer.from(pushed.get(1).signature)), "and its signature");
});

test("10 % of 10 000 keys go to new, each exactly as the bindings bucket it", async (t) => {
  armsAtV1 = await armsOf(KEYS);
  const onNew = armsAtV1.filter((a) => a === "new").length;
  t.diagnostic(`v1 at 10 %: ${onNew} of ${KEYS.length} keys on new (${(onNew / 100).toFixed(2)} %)`);
  assert.ok(onNew >= 900 && onNew <= 1100, `${onNew} of 10000 on new`);
  const mismatched = KEYS.filter((k, i) => (b.bucket("web", k) < 100_000 ? "new" : "old") !== armsAtV1[i]);
  assert.deepEqual(mismatched, [], "workerd decides exactly as bucket() < weight");
});

test("a key stays on its arm, and a minted cookie keeps a new visitor there", async () => {
  const sample = KEYS.slice(0, 300);
  const again = await armsOf(sample);
  assert.deepEqual(again, armsAtV1.slice(0, 300));

  const first = await get("/");
  const cookie = first.res.headers.getSetCookie().find((c) => c.startsWith("sid="));
  assert.ok(cookie, "a visitor without a key gets a sticky id");
  assert.match(cookie, /^sid=[0-9a-f]{32}; Max-Age=34560000; Path=\/; HttpOnly; Secure; SameSite=Lax$/);
  assert.equal(first.res.headers.get("x-rollout-key"), "minted");
  const id = cookie.slice(4, 36);
  for (let i = 0; i < 5; i++) {
    const next = await get("/", { cookie: `sid=${id}` });
    assert.equal(next.res.headers.get("x-rollout-arm"), first.res.headers.get("x-rollout-arm"));
    assert.equal(next.res.headers.get("x-rollout-bucket"), String(b.bucket("web", id)));
    assert.ok(!next.res.headers.getSetCookie().some((c) => c.startsWith("sid=")), "no second cookie");
  }
});

test("the origin gets a fresh request: its own host, no hop-by-hop or forged edge headers", async () => {
  const { res, json } = await rawGet("/echo", {
    "x-user-id": "user-1",
    connection: "keep-alive, x-hop-secret",
    "x-hop-secret": "1",
    "x-rollout-arm": "new",
    "x-rollout-version": "999",
    host: "shop.example.com",
  });
  assert.equal(res.statusCode, 200);
  const arm = res.headers["x-rollout-arm"];
  assert.equal(json.origin, arm);
  assert.equal(json.headers["x-rollout-arm"], arm, "the edge's arm, not the client's");
  assert.equal(json.headers["x-rollout-version"], "1");
  assert.equal(json.headers["x-rollout-flags"], "beta", "user-1 is allow-listed");
  assert.equal(json.headers["x-hop-secret"], undefined);
  assert.equal(json.headers.host, new URL(arm === "new" ? newOrigin : oldOrigin).host);
  assert.equal(json.headers["x-forwarded-host"], "shop.example.com");
  assert.equal(json.headers["x-forwarded-proto"], "http");
  assert.equal(res.headers["x-origin-private"], undefined, "connection-named response headers stay behind");
  assert.deepEqual(res.headers["set-cookie"], [`from-${arm}=1; Path=/`]);
});

test("a compressed origin response reaches the client intact", async () => {
  const { res, json } = await get("/gz", { "x-user-id": "user-1", "accept-encoding": "gzip" });
  assert.equal(res.status, 200);
  assert.equal(json.url, "/gz");
});

test("push v2 at 50 % applies on the next request and keeps every new key on new", async (t) => {
  assert.equal((await pushConfig(2, WEB(50))).status, 200);
  const sample = KEYS.slice(0, 2000);
  const arms = await armsOf(sample);
  const { res } = await get("/", { "x-user-id": "user-0" });
  assert.equal(res.headers.get("x-rollout-version"), "2");
  const onNew = arms.filter((a) => a === "new").length;
  t.diagnostic(`v2 at 50 %: ${onNew} of ${sample.length} keys on new`);
  assert.ok(onNew >= 900 && onNew <= 1100, `${onNew} of 2000`);
  const movedBack = sample.filter((_, i) => armsAtV1[i] === "new" && arms[i] !== "new");
  assert.deepEqual(movedBack, [], "raising the weight never moves a key back to old");
});

test("rollback as v3 (v1's config) applies on the next request", async () => {
  assert.equal((await pushConfig(3, WEB(10))).status, 200);
  const { res } = await get("/", { "x-user-id": "user-0" });
  assert.equal(res.headers.get("x-rollout-version"), "3");
  const sample = KEYS.slice(0, 1000);
  assert.deepEqual(await armsOf(sample), armsAtV1.slice(0, 1000), "every key is back where v1 put it");
  const applied = await get(ADMIN);
  assert.deepEqual(withoutAge(applied.json), {
    version: 3,
    digest: sha256Hex(pushed.get(3).body),
    issued_at: "2026-11-27T08:00:00Z",
    keys: [control.keyId],
  });
});

test("a push with a bad signature is refused with 401 and changes nothing", async () => {
  const { status, json } = await pushConfig(4, WEB(100), { sign: stranger.sign });
  assert.equal(status, 401);
  assert.deepEqual(json, {
    status: "nack",
    version: 3,
    digest: sha256Hex(pushed.get(3).body),
    error: "signature does not verify",
  });
  const unsigned = await fetch(edge + ADMIN, { method: "PUT", body: pushed.get(3).body });
  assert.equal(unsigned.status, 401);
  const { res } = await get("/", { "x-user-id": "user-0" });
  assert.equal(res.headers.get("x-rollout-version"), "3");
});

test("a replayed older push is refused with 409; the current one is an idempotent ack", async () => {
  const replay = await send(2, pushed.get(2));
  assert.equal(replay.status, 409);
  assert.equal(replay.json.status, "nack");
  assert.equal(replay.json.version, 3);
  assert.match(replay.json.error, /^version 2 does not follow the applied version 3/);
  const same = await send(3, pushed.get(3));
  assert.deepEqual([same.status, same.json.status, same.json.version], [200, "ack", 3]);
});

test("invalid and oversized pushes get 400 and 413", async () => {
  const bad = await pushConfig(5, WEB(150));
  assert.equal(bad.status, 400);
  assert.equal(bad.json.error, "config.routes[0].new_weight: must be 0..=100");
  const huge = Buffer.alloc(1024 * 1024 + 1, 0x20);
  const big = await send(6, { body: huge, signature: control.sign(huge) });
  assert.equal(big.status, 413);
  assert.equal(big.json.version, 3);
  const other = await fetch(edge + ADMIN, { method: "POST", body: "x" });
  assert.equal(other.status, 405);
  await other.body?.cancel();
});

test("no header reaches the admin endpoint from another path", async () => {
  const { res, json } = await get("/", {
    "x-user-id": "user-0",
    "rollout-signature": pushed.get(3).signature,
    "x-original-url": ADMIN,
    "x-forwarded-path": ADMIN,
  });
  assert.equal(res.status, 200);
  assert.equal(json.url, "/", "proxied, not handled as admin");
});

test("failover retries an idempotent request on old; a POST gets 502", async () => {
  const config = WEB(100, {
    new: state.deadOrigin,
    failover: { connect_error: true, statuses: [503] },
  });
  assert.equal((await pushConfig(7, config)).status, 200);
  const { res, json } = await get("/", { "x-user-id": "user-0" });
  assert.equal(res.status, 200);
  assert.equal(json.origin, "old");
  assert.equal(res.headers.get("x-rollout-arm"), "old");

  const post = await fetch(edge + "/orders", { method: "POST", body: "{}", headers: { "x-user-id": "user-0" } });
  assert.equal(post.status, 502);
  assert.equal(post.headers.get("x-rollout-arm"), "new");
  assert.match(await post.text(), /^rollout edge: origin new \(config\) failed/);

  const flaky = WEB(100, { failover: { connect_error: true, statuses: [503] } });
  assert.equal((await pushConfig(8, flaky)).status, 200);
  const retried = await get("/flaky", { "x-user-id": "user-0" });
  assert.equal(retried.res.status, 200);
  assert.equal(retried.json.origin, "old", "a 503 from new is retried on old");
});
