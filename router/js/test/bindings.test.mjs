// The bindings in Node: the same frozen vectors and shared decisions as the
// native core tests, the same error messages as native, and the push rules.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  decisionFields,
  envelope,
  listRepoDir,
  loadBindings,
  readRepoJson,
  readRepoText,
  sha256Hex,
  signer,
} from "./support.mjs";

const b = await loadBindings();
const control = signer(7);
const stranger = signer(8);

const CONFIG = {
  schema: 1,
  routes: [
    {
      id: "web",
      old: "http://127.0.0.1:8001",
      new: "http://127.0.0.1:8002",
      new_weight: 10,
      key: ["header:x-user-id", "cookie:sid"],
      assign_cookie: true,
    },
  ],
};

function push(version, config = CONFIG) {
  const body = envelope({ version, config });
  return { body, signature: control.sign(body) };
}

test("every frozen bucket vector is identical to native", () => {
  const { cases } = readRepoJson("core/tests/vectors/buckets.json");
  assert.ok(cases.length >= 1000, `only ${cases.length} vectors`);
  const wrong = cases.filter((c) => b.bucket(c.salt, c.key) !== c.bucket);
  assert.deepEqual(
    wrong.map((c) => `salt ${JSON.stringify(c.salt)} key ${JSON.stringify(c.key).slice(0, 40)}`),
    [],
  );
});

test("every shared decision case gets the decision native core gets", () => {
  const file = readRepoJson("core/tests/vectors/decisions.json");
  assert.ok(file.cases.length >= 50, `only ${file.cases.length} cases`);
  const router = b.Router.fromConfig(JSON.stringify(file.config));
  for (const c of file.cases) {
    assert.ok(c.expect, `${c.name}: no expectation`);
    assert.deepEqual(decisionFields(router.route(c.request)), c.expect, c.name);
  }
});

test("invalid configs are refused with the native message", () => {
  const dir = "core/tests/fixtures/invalid/";
  const fixtures = listRepoDir(dir).filter((f) => f.endsWith(".json"));
  assert.ok(fixtures.length >= 20, `only ${fixtures.length} fixtures`);
  for (const f of fixtures) {
    const want = readRepoText(dir + f.replace(/\.json$/, ".err")).trimEnd();
    const json = readRepoText(dir + f);
    assert.throws(() => b.validateConfig(json), { message: want }, f);
    assert.throws(() => b.Router.fromConfig(json), { message: want }, f);
  }
  for (const f of listRepoDir("core/tests/fixtures/valid/").filter((f) => f.endsWith(".json"))) {
    assert.doesNotThrow(() => b.validateConfig(readRepoText(`core/tests/fixtures/valid/${f}`)), f);
  }
});

test("an envelope signed by Node's Ed25519 verifies and compiles", () => {
  const { body, signature } = push(3);
  const router = b.Router.fromEnvelope(body, signature, control.publicKey);
  assert.equal(router.version, 3);
  assert.equal(router.digest, sha256Hex(body));
  const again = b.Router.fromCompact(router.toCompact());
  assert.equal(again.digest, router.digest);
  const out = again.route({ method: "GET", host: "h", path: "/", headers: [["x-user-id", "u1"]] });
  assert.equal(out.version, 3);
  assert.equal(out.bucket, b.bucket("web", "u1"));
});

test("envelope and key errors are exceptions with the native messages", () => {
  const { body, signature } = push(1);
  const cases = [
    [() => b.Router.fromEnvelope(body, stranger.sign(body), control.publicKey), "signature does not verify"],
    [() => b.Router.fromEnvelope(body, "ed25519=abc", control.publicKey), "signature header must be ed25519=<base64 of 64 bytes>"],
    [() => b.Router.fromEnvelope(body, signature, "ed25519:short"), "public key must be ed25519:<base64 of 32 bytes>"],
    [() => b.Router.fromCompact(new Uint8Array([1, 2, 3])), "stored config is not in the compact form"],
    [() => b.Router.fromConfig("{"), "config: EOF while parsing an object at line 1 column 1"],
  ];
  const bad = push(2, { ...CONFIG, routes: [{ ...CONFIG.routes[0], new_weight: 150 }] });
  cases.push([
    () => b.Router.fromEnvelope(bad.body, bad.signature, control.publicKey),
    "config.routes[0].new_weight: must be 0..=100",
  ]);
  const zero = push(0);
  cases.push([() => b.Router.fromEnvelope(zero.body, zero.signature, control.publicKey), "version must be 1 or more"]);
  for (const [call, message] of cases) {
    assert.throws(call, (e) => e instanceof Error && e.message === message, message);
  }
});

test("request facts in the wrong shape are refused, not guessed", () => {
  const router = b.Router.fromConfig(JSON.stringify(CONFIG));
  assert.throws(() => router.route({ method: "GET", host: "h" }), /^Error: request facts: missing field `path`/);
  assert.throws(() => router.route({ method: "GET", host: "h", path: "/", mint: "xyz" }), {
    message: "request facts: mint must be 32 hex digits (16 random bytes)",
  });
  assert.throws(() => router.route(undefined), { message: "request facts: missing" });
  // clientIp is accepted as well as client_ip.
  const byIp = b.Router.fromConfig(
    JSON.stringify({ ...CONFIG, routes: [{ ...CONFIG.routes[0], key: ["client-ip"], assign_cookie: false }] }),
  );
  assert.equal(byIp.route({ method: "GET", host: "h", path: "/", clientIp: "192.0.2.1" }).bucket, b.bucket("web", "192.0.2.1"));
});

test("pushes follow the version rule with the documented statuses", () => {
  const v1 = push(1);
  const first = b.receivePush(null, v1.body, v1.signature, control.publicKey);
  assert.equal(first.status, 200);
  assert.deepEqual(JSON.parse(first.body), { status: "ack", version: 1, digest: sha256Hex(v1.body) });
  const held = first.active;
  assert.ok(held instanceof Uint8Array && held.length > 0, "an applied push has a compact form to store");

  const replay = b.receivePush(held, v1.body, v1.signature, control.publicKey);
  assert.equal(replay.status, 200, "the same version and body is an idempotent ack");
  assert.equal(replay.active, undefined, "nothing to write");

  const other = push(1, { ...CONFIG, routes: [{ ...CONFIG.routes[0], new_weight: 20 }] });
  const conflict = b.receivePush(held, other.body, other.signature, control.publicKey);
  assert.equal(conflict.status, 409);
  assert.match(JSON.parse(conflict.body).error, /does not follow the applied version 1/);

  assert.equal(b.receivePush(held, v1.body, stranger.sign(v1.body), control.publicKey).status, 401);
  assert.equal(b.receivePush(held, v1.body, undefined, control.publicKey).status, 401);
  const invalid = push(2, { schema: 2, routes: [] });
  const refused = b.receivePush(held, invalid.body, invalid.signature, control.publicKey);
  assert.equal(refused.status, 400);
  assert.equal(JSON.parse(refused.body).version, 1, "a refusal names what is held");
  const huge = Buffer.alloc(b.constants().maxEnvelopeBytes + 1, 0x20);
  assert.equal(b.receivePush(held, huge, v1.signature, control.publicKey).status, 413);

  const v2 = push(2);
  const next = b.receivePush(held, v2.body, v2.signature, control.publicKey);
  assert.equal(next.status, 200);
  assert.equal(b.Router.fromCompact(next.active).version, 2);
  assert.throws(() => b.receivePush(held, v2.body, v2.signature, "nope"), {
    message: "public key must be ed25519:<base64 of 32 bytes>",
  });
});

test("admin replies are the documented JSON", () => {
  const v4 = push(4);
  const held = b.receivePush(null, v4.body, v4.signature, control.publicKey).active;
  assert.deepEqual(JSON.parse(b.appliedReply(held)), { version: 4, digest: sha256Hex(v4.body) });
  assert.deepEqual(JSON.parse(b.appliedReply(null)), { version: 0, digest: null });
  assert.deepEqual(JSON.parse(b.oversizedReply(held)), {
    status: "nack",
    version: 4,
    digest: sha256Hex(v4.body),
    error: "body is over the limit of 1048576 bytes",
  });
  assert.equal(JSON.parse(b.nackReply(null, "store down")).error, "store down");
});

test("the version rule: higher applies, same is idempotent, anything else is refused", () => {
  const d1 = "a".repeat(64);
  const d2 = "b".repeat(64);
  assert.equal(b.admit(null, { version: 1, digest: d1 }), "apply");
  assert.equal(b.admit({ version: 1, digest: d1 }, { version: 2, digest: d2 }), "apply");
  assert.equal(b.admit({ version: 2, digest: d2 }, { version: 2, digest: d2 }), "already-applied");
  assert.equal(b.admit({ version: 2, digest: d2 }, { version: 2, digest: d1 }), "reject");
  assert.equal(b.admit({ version: 3, digest: d1 }, { version: 2, digest: d2 }), "reject");
  assert.throws(() => b.admit(null, { version: 1, digest: "XYZ" }), /digest must be 64 lowercase hex digits/);
});

test("header lists keep hop-by-hop and edge headers away and add the decision", () => {
  const router = b.Router.fromConfig(JSON.stringify({ ...CONFIG, debug_headers: true }));
  const incoming = [
    ["accept", "*/*"],
    ["connection", "x-private"],
    ["x-private", "1"],
    ["x-rollout-arm", "new"],
    ["cf-connecting-ip", "192.0.2.9"],
    ["x-user-id", "u1"],
  ];
  const outcome = router.route({ method: "GET", host: "edge.example", path: "/", headers: incoming });
  const toOrigin = b.originRequestHeaders(incoming, outcome, { client_ip: "192.0.2.9", host: "edge.example", proto: "https" });
  assert.deepEqual(
    toOrigin.map(([n]) => n),
    ["accept", "x-user-id", "x-rollout-arm", "x-rollout-version", "x-rollout-flags", "x-forwarded-for", "forwarded", "x-forwarded-host", "x-forwarded-proto"],
  );
  assert.deepEqual(toOrigin[2], ["x-rollout-arm", outcome.arm]);
  const toClient = b.clientResponseHeaders([["content-type", "text/plain"], ["keep-alive", "5"]], outcome);
  assert.deepEqual(toClient.slice(0, 3), [
    ["content-type", "text/plain"],
    ["x-rollout-arm", outcome.arm],
    ["x-rollout-version", "0"],
  ]);
  assert.ok(toClient.some(([n, v]) => n === "x-rollout-bucket" && v === String(b.bucket("web", "u1"))));
});

test("bootstrap and failover outcomes go to old", () => {
  const boot = b.bootstrap("http://127.0.0.1:9/");
  assert.deepEqual(decisionFields(boot), {
    route: null,
    arm: "old",
    origin: "http://127.0.0.1:9",
    bucket: null,
    reason: "bootstrap",
    key: null,
    flags: [],
    set_cookie: null,
  });
  assert.throws(() => b.bootstrap("ftp://x"), { message: "bootstrap origin: must be an absolute http or https URL" });
  const router = b.Router.fromConfig(
    JSON.stringify({ ...CONFIG, routes: [{ ...CONFIG.routes[0], new_weight: 100, failover: { statuses: [503] } }] }),
  );
  const onNew = router.route({ method: "GET", host: "h", path: "/", headers: [["x-user-id", "u"]] });
  assert.equal(onNew.arm, "new");
  const retry = b.failedOver(onNew);
  assert.deepEqual([retry.arm, retry.origin, retry.failover], ["old", "http://127.0.0.1:8001", null]);
  assert.equal(b.failedOver(retry), null);
  const post = router.route({ method: "POST", host: "h", path: "/", headers: [["x-user-id", "u"]] });
  assert.equal(post.failover, null, "POST is not idempotent");
});
