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
  withoutAge,
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
  const out = router.route({ method: "GET", host: "h", path: "/", headers: [["x-user-id", "u1"]] });
  assert.equal(out.version, 3);
  assert.equal(out.bucket, b.bucket("web", "u1"));
});

test("envelope and key errors are exceptions with the native messages", () => {
  const { body, signature } = push(1);
  const cases = [
    [() => b.Router.fromEnvelope(body, stranger.sign(body), control.publicKey), "signature does not verify"],
    [() => b.Router.fromEnvelope(body, "ed25519=abc", control.publicKey), "signature header must be ed25519=<base64 of 64 bytes>"],
    [() => b.Router.fromEnvelope(body, signature, "ed25519:short"), "public key must be ed25519:<base64 of 32 bytes>"],
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

function admin(method, headers, stored, publicKey = control.publicKey) {
  return b.adminBegin(method, headers, stored ?? undefined, undefined, publicKey, Date.now() / 1000);
}

// A push through the admin machine against a store holding `stored`:
// returns the answer and the value the store holds after it.
function pushTo(stored, { body, signature }) {
  const begun = admin("PUT", [["rollout-signature", signature]], stored);
  assert.equal(begun.answer, undefined, "a signed PUT reads its body");
  const step = begun.finish(body);
  const value = step.value;
  if (value === undefined) return { answer: step.answer, held: stored };
  return { answer: step.done(), held: value };
}

test("pushes go through the admin machine: version rule, statuses, one value to swap in", () => {
  const v1 = push(1);
  const first = pushTo(null, v1);
  assert.equal(first.answer.status, 200);
  assert.deepEqual(JSON.parse(first.answer.body), { status: "ack", version: 1, digest: sha256Hex(v1.body) });
  const held = first.held;
  assert.ok(held instanceof Uint8Array && held.length > v1.body.length, "one value: envelope, signature and compact form");

  const replay = pushTo(held, v1);
  assert.equal(replay.answer.status, 200, "the same version and body is an idempotent ack");
  assert.equal(replay.held, held, "nothing to write");

  const other = push(1, { ...CONFIG, routes: [{ ...CONFIG.routes[0], new_weight: 20 }] });
  const conflict = pushTo(held, other);
  assert.equal(conflict.answer.status, 409);
  assert.match(JSON.parse(conflict.answer.body).error, /does not follow the applied version 1/);

  assert.equal(pushTo(held, { body: v1.body, signature: stranger.sign(v1.body) }).answer.status, 401);
  const invalid = push(2, { schema: 2, routes: [] });
  const refused = pushTo(held, invalid);
  assert.equal(refused.answer.status, 400);
  assert.equal(JSON.parse(refused.answer.body).version, 1, "a refusal names what is held");

  const tooLong = admin("PUT", [["content-length", String(b.constants().maxEnvelopeBytes + 1)]], held);
  assert.equal(tooLong.answer.status, 413, "refused before any body is read");
  assert.equal(b.adminBegin("PUT", [], held, undefined, undefined, Date.now() / 1000).answer.status, 503, "no key: the edge is misconfigured");
  assert.match(JSON.parse(admin("PUT", [], held, "nope").answer.body).error, /public key must be ed25519/);
  const post = admin("POST", [], held);
  assert.equal(post.answer.status, 405);
  assert.ok(post.answer.headers.some(([n, v]) => n === "allow" && v === "GET, PUT"));
  const get = admin("GET", [], held);
  assert.deepEqual(withoutAge(JSON.parse(get.answer.body)), {
    version: 1,
    digest: sha256Hex(v1.body),
    issued_at: "2026-11-27T08:00:00Z",
    keys: [control.keyId],
  });
  assert.deepEqual(JSON.parse(admin("GET", [], null).answer.body), { version: 0, digest: null, keys: [control.keyId] });
});

test("a push that loses a compare-and-swap decides again against what landed", () => {
  const v5 = pushTo(null, push(5)).held;
  // Version 3 read an empty store, then found 5 there: refused against 5.
  const late = admin("PUT", [["rollout-signature", push(3).signature]], null).finish(push(3).body);
  assert.ok(late.value instanceof Uint8Array);
  const refused = late.conflict(v5);
  assert.equal(refused.value, undefined);
  assert.equal(refused.answer.status, 409);
  assert.equal(JSON.parse(refused.answer.body).version, 5);
  // Version 7 read an empty store, found 5: it still applies, over 5.
  const v7 = push(7);
  const again = admin("PUT", [["rollout-signature", v7.signature]], null).finish(v7.body).conflict(v5);
  assert.ok(again.value instanceof Uint8Array, "swap again, over what is there now");
  assert.equal(JSON.parse(again.done().body).version, 7);
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

const ROUTED = {
  ...CONFIG,
  debug_headers: true,
  routes: [
    {
      id: "api",
      match: { path_prefix: "/api" },
      old: "http://127.0.0.1:8001",
      new: "http://127.0.0.1:8002",
      new_weight: 100,
      key: ["header:x-user-id"],
      failover: { statuses: [503] },
    },
    CONFIG.routes[0],
  ],
};

function route(target, headers, stored, extra = {}) {
  const facts = { method: "GET", target, headers: [["host", "edge.example"], ...headers], client_ip: "192.0.2.9", ...extra };
  return b.routeRequest(facts, stored ?? undefined, "http://127.0.0.1:8009", "000102030405060708090a0b0c0d0e0f");
}

test("the request machine refuses, routes, and lists exactly what the origin gets", () => {
  const held = pushTo(null, push(3, ROUTED)).held;
  for (const target of ["/a/../api", "/%2e%2e/x", "*"]) assert.equal(route(target, [], held).answer.status, 400, target);
  assert.equal(route("/", [["host", "two.example"]], held).answer.status, 400, "two Host headers");
  assert.equal(route("/x", [], held, { method: "CONNECT" }).answer.status, 405);
  assert.equal(route("/.well-known/rollout/config", [], held).admin, true);

  const forward = route("/api/x?q=1", [["x-user-id", "u1"], ["connection", "x-private"], ["x-private", "1"], ["cf-ray", "r"]], held).takeForward();
  const out = forward.request;
  assert.deepEqual([out.method, out.origin, out.path], ["GET", "http://127.0.0.1:8002", "/api/x?q=1"]);
  assert.deepEqual(
    out.headers.map(([n]) => n),
    ["x-user-id", "x-rollout-arm", "x-rollout-version", "x-rollout-flags", "x-forwarded-for", "forwarded", "x-forwarded-host", "x-forwarded-proto"],
  );
  const toClient = forward.responseHeaders([["content-type", "text/plain"], ["keep-alive", "5"], ["x-rollout-arm", "old"]]);
  assert.deepEqual(toClient.slice(0, 3), [["content-type", "text/plain"], ["x-rollout-arm", "new"], ["x-rollout-version", "3"]]);

  // Header values are byte strings: UTF-8 bytes of "é1" bucket as "é1".
  const utf8 = Buffer.from("é1", "utf8").toString("latin1");
  const keyed = route("/", [["x-user-id", utf8]], held).takeForward();
  assert.ok(keyed.responseHeaders([]).some(([n, v]) => n === "x-rollout-bucket" && v === String(b.bucket("web", "é1"))));
  assert.throws(() => b.routeRequest({ method: "GET" }), /^Error: request facts: missing field `target`/);
});

test("failover retries on old only when the body can be sent again, and allow-lists bind", () => {
  const held = pushTo(null, push(3, ROUTED)).held;
  const forward = route("/api/x", [["x-user-id", "u1"]], held).takeForward();
  assert.equal(forward.replayLimit, b.constants().replayLimit);
  const retry = forward.after(503, undefined, false, true).takeRetry();
  assert.equal(retry.request.origin, "http://127.0.0.1:8001");
  assert.ok(retry.request.headers.some(([n, v]) => n === "x-rollout-arm" && v === "old"));
  assert.equal(forward.after(503, undefined, false, false).relay, true, "a streamed body is never replayed");
  const failed = forward.after(undefined, "reset", false, true).answer;
  assert.equal(failed.status, 502);
  assert.equal(failed.body, "rollout edge: origin new (config) failed: reset\n");
  assert.equal(forward.after(undefined, "refused", true, true).takeRetry().request.origin, "http://127.0.0.1:8001");

  assert.equal(forward.permittedBy(new b.AllowedOrigins("http://127.0.0.1:8002")), true);
  assert.equal(forward.permittedBy(new b.AllowedOrigins("http://127.0.0.1:8001, https://127.0.0.1:8002")), false);
  assert.throws(() => new b.AllowedOrigins("ftp://x"), /ftp:\/\/x/);
  const boot = route("/x", [], null).takeForward();
  assert.equal(boot.request.origin, "http://127.0.0.1:8009", "nothing applied: the bootstrap origin");
});
