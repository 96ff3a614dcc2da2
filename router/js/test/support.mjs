// Helpers shared by the tests: the built bindings, the repository's shared
// vector files, and Ed25519 signing done by Node's own crypto, so a push
// signed here is verified by an independent implementation.

import crypto from "node:crypto";
import { readFileSync, readdirSync } from "node:fs";
import http from "node:http";
import { gzipSync } from "node:zlib";

export const repoRoot = new URL("../../../", import.meta.url);
export const pkgDir = new URL("../pkg/", import.meta.url);

export function readRepoJson(path) {
  return JSON.parse(readFileSync(new URL(path, repoRoot), "utf8"));
}

export function readRepoText(path) {
  return readFileSync(new URL(path, repoRoot), "utf8");
}

export function listRepoDir(path) {
  return readdirSync(new URL(path, repoRoot)).sort();
}

/** The bindings, initialised the way Node and Deno load them. */
export async function loadBindings() {
  const bindings = await import(new URL("rollout_router_js.js", pkgDir).href);
  bindings.initSync({ module: readFileSync(new URL("rollout_router_js_bg.wasm", pkgDir)) });
  return bindings;
}

// DER prefix of a PKCS#8 Ed25519 private key; the 32-byte seed follows.
const PKCS8_ED25519 = Buffer.from("302e020100300506032b657004220420", "hex");

/** A signing key from a 32-byte seed made of `seedByte`. */
export function signer(seedByte) {
  const seed = Buffer.alloc(32, seedByte);
  const key = crypto.createPrivateKey({
    key: Buffer.concat([PKCS8_ED25519, seed]),
    format: "der",
    type: "pkcs8",
  });
  const raw = crypto.createPublicKey(key).export({ format: "der", type: "spki" }).subarray(-32);
  return {
    publicKey: `ed25519:${raw.toString("base64")}`,
    // The key's id, as edges name it: the first 8 bytes of SHA-256 of the key.
    keyId: crypto.createHash("sha256").update(raw).digest("hex").slice(0, 16),
    // The body's signature with a fresh push stamp, as the control service
    // sends it: an edge that holds nothing takes only a stamped push.
    sign: (body, at = Math.floor(Date.now() / 1000)) => {
      const digest = crypto.createHash("sha256").update(body).digest("hex");
      const stamp = crypto.sign(null, Buffer.from(`rollout-push-stamp\n${digest}\n${at}`), key);
      return `ed25519=${crypto.sign(null, body, key).toString("base64")}; at=${at}; stamp=${stamp.toString("base64")}`;
    },
    // A rollout-read header value: asks an edge that trusts this key for
    // the envelope it holds.
    readStamp: (at = Math.floor(Date.now() / 1000)) => {
      const signature = crypto.sign(null, Buffer.from(`rollout-envelope-read\n${at}`), key);
      return `ed25519=${signature.toString("base64")}; key=${crypto.createHash("sha256").update(raw).digest("hex").slice(0, 16)}; at=${at}`;
    },
  };
}

/**
 * An admin GET reply without its `age_s`, after checking that `age_s` is the
 * seconds since `issued_at` by this clock (within 5 s).
 */
export function withoutAge(reply) {
  const { age_s: age, ...rest } = reply;
  if (rest.issued_at !== undefined) {
    const expected = Date.now() / 1000 - Date.parse(rest.issued_at) / 1000;
    if (typeof age !== "number" || Math.abs(age - expected) > 5) {
      throw new Error(`age_s ${age} is not the seconds since ${rest.issued_at} (${expected})`);
    }
  } else if (age !== undefined) {
    throw new Error(`age_s ${age} without issued_at`);
  }
  return rest;
}

/** An envelope body, as the control service writes one. */
export function envelope({ version, config, parent = null, reason = "test" }) {
  return Buffer.from(
    JSON.stringify({
      version,
      parent,
      issued_at: "2026-11-27T08:00:00Z",
      actor: "js-tests",
      reason,
      config,
    }),
  );
}

export function sha256Hex(bytes) {
  return crypto.createHash("sha256").update(bytes).digest("hex");
}

/** The decision fields every build must agree on, from a route() result. */
export function decisionFields(outcome) {
  const { route, arm, origin, bucket, reason, key, flags, set_cookie } = outcome;
  return { route, arm, origin, bucket, reason, key, flags, set_cookie };
}

export function listen(server) {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve(server.address().port));
  });
}

export function close(server) {
  return new Promise((resolve) => {
    server.closeAllConnections?.();
    server.close(() => resolve());
  });
}

/** An origin that says who it is and echoes what it received. */
export function origin(name) {
  return http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = JSON.stringify({
        origin: name,
        method: req.method,
        url: req.url,
        headers: req.headers,
        body: Buffer.concat(chunks).toString(),
      });
      const status = req.url.startsWith("/flaky") && name === "new" ? 503 : 200;
      const gzip = req.url.startsWith("/gz");
      res.writeHead(status, {
        ...(gzip ? { "content-encoding": "gzip" } : {}),
        "content-type": "application/json",
        "x-origin": name,
        "set-cookie": `from-${name}=1; Path=/`,
        connection: "keep-alive, x-origin-private",
        "x-origin-private": "must not reach the client",
      });
      res.end(gzip ? gzipSync(body) : body);
    });
  });
}
