// The rollout edge as a fetch handler, for any runtime with the Fetch API
// (Cloudflare Workers / workerd, Deno, Node). It holds no rollout rules: every
// decision, header list, push rule and reply comes from rollout-core through
// the wasm bindings in ./pkg. The wasm module must be initialised (initSync)
// before the first request; worker.mjs does that for Workers.
//
// env:
//   ROLLOUT_KV   a KV namespace: get(key, "arrayBuffer") and put(key, value)
//   PUBLIC_KEY   the Ed25519 key pushes must be signed with (ed25519:<base64>)
//   OLD_ORIGIN   where to send requests while no config is applied

import {
  Router,
  appliedReply,
  bootstrap,
  clientResponseHeaders,
  constants,
  edgeResponseHeaders,
  failedOver,
  nackReply,
  originRequestHeaders,
  oversizedReply,
  receivePush,
} from "./pkg/rollout_router_js.js";

let shared;
function names() {
  shared ??= constants();
  return shared;
}

// The compiled config of this isolate, with the stored bytes it came from.
// Workers keep an isolate for many requests, so a config is decoded once per
// change, not per request. Replaced routers are left to the garbage collector
// (wasm-bindgen frees them by finalizer): a request still holding one must
// not find it freed under it.
let cached = null;

function sameBytes(a, b) {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

// Workers KV gives an ArrayBuffer; other stores (Deno KV, a Map) may give a view.
async function readActive(kv) {
  const value = await kv.get(names().kvActive, "arrayBuffer");
  if (!value) return null;
  return ArrayBuffer.isView(value)
    ? new Uint8Array(value.buffer, value.byteOffset, value.byteLength)
    : new Uint8Array(value);
}

// The router for the stored config, or null when there is none or it does
// not decode. The request path never fails because of config.
async function loadRouter(env) {
  let bytes;
  try {
    bytes = await readActive(env.ROLLOUT_KV);
  } catch {
    return null;
  }
  if (!bytes) return null;
  if (cached && sameBytes(cached.bytes, bytes)) return cached.router;
  try {
    const router = Router.fromCompact(bytes);
    cached = { bytes, router };
    return router;
  } catch {
    return null;
  }
}

function mint() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function headerList(headers) {
  // Set-Cookie values must stay separate; everything else may be joined.
  const pairs = [];
  for (const [name, value] of headers) if (name !== "set-cookie") pairs.push([name, value]);
  const cookies = typeof headers.getSetCookie === "function" ? headers.getSetCookie() : [];
  for (const value of cookies) pairs.push(["set-cookie", value]);
  return pairs;
}

function toHeaders(pairs) {
  const headers = new Headers();
  for (const [name, value] of pairs) headers.append(name, value);
  return headers;
}

function textResponse(status, body, pairs) {
  const headers = toHeaders(pairs);
  headers.set("content-type", "text/plain; charset=utf-8");
  return new Response(body, { status, headers });
}

function jsonResponse(status, body) {
  return new Response(body, {
    status,
    headers: { "content-type": "application/json", "cache-control": "no-store" },
  });
}

async function send(outcome, request, pairs, hop, pathWithQuery, body) {
  const init = {
    method: request.method,
    headers: toHeaders(originRequestHeaders(pairs, outcome, hop)),
    // A redirect is the origin's answer to the client, not the edge's to follow.
    redirect: "manual",
  };
  if (body) {
    init.body = body;
    init.duplex = "half";
  }
  try {
    return { response: await fetch(outcome.origin + pathWithQuery, init) };
  } catch (error) {
    return { error };
  }
}

async function proxy(request, env, url, options) {
  const pairs = headerList(request.headers);
  const clientIp = options.clientIp ?? request.headers.get("cf-connecting-ip") ?? null;
  const router = await loadRouter(env);
  let outcome = null;
  if (router) {
    try {
      outcome = router.route({
        method: request.method,
        host: url.host,
        path: url.pathname,
        query: url.search.slice(1),
        headers: pairs,
        client_ip: clientIp,
        mint: mint(),
      });
    } catch (e) {
      // Facts are built here, so this is a bug, not bad input; serve anyway.
      console.error(`rollout edge: route: ${e.message}`);
    }
  }
  if (!outcome) {
    try {
      outcome = bootstrap(env.OLD_ORIGIN ?? "");
    } catch (e) {
      console.error(`rollout edge: OLD_ORIGIN: ${e.message}`);
      return textResponse(
        502,
        "rollout edge: no config applied and no valid OLD_ORIGIN to fall back to\n",
        [
          ["x-rollout-arm", "old"],
          ["x-rollout-version", "0"],
        ],
      );
    }
  }

  const hop = {
    client_ip: clientIp,
    host: url.host,
    proto: url.protocol === "https:" ? "https" : "http",
  };
  const pathWithQuery = url.pathname + url.search;
  // A streamed body can be sent only once: failover is for requests without one.
  const body = request.body;
  let result = await send(outcome, request, pairs, hop, pathWithQuery, body);
  const failover = body ? null : outcome.failover;
  if (failover) {
    const retry = result.error
      ? failover.connect_error
      : failover.statuses.includes(result.response.status);
    if (retry) {
      await result.response?.body?.cancel();
      outcome = failedOver(outcome);
      result = await send(outcome, request, pairs, hop, pathWithQuery, null);
    }
  }

  if (result.error) {
    const label = outcome.version === 0 ? "bootstrap" : "config";
    console.error(`rollout edge: origin ${outcome.arm} (${outcome.origin}): ${result.error}`);
    return textResponse(
      502,
      `rollout edge: origin ${outcome.arm} (${label}) failed: ${result.error.message ?? result.error}\n`,
      edgeResponseHeaders(outcome),
    );
  }
  const { response } = result;
  const headers = toHeaders(clientResponseHeaders(headerList(response.headers), outcome));
  const bodyless = request.method === "HEAD" || response.status === 204 || response.status === 304;
  if (bodyless) await response.body?.cancel();
  try {
    return new Response(bodyless ? null : response.body, {
      status: response.status,
      statusText: response.statusText,
      headers,
    });
  } catch {
    return textResponse(
      502,
      "rollout edge: origin sent a response that cannot be relayed\n",
      edgeResponseHeaders(outcome),
    );
  }
}

// The body, or null when it is over `limit` bytes (reading stops there).
async function readLimited(request, limit) {
  if (!request.body) return new Uint8Array(0);
  const reader = request.body.getReader();
  const chunks = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      await reader.cancel();
      return null;
    }
    chunks.push(value);
  }
  const body = new Uint8Array(total);
  let at = 0;
  for (const chunk of chunks) {
    body.set(chunk, at);
    at += chunk.byteLength;
  }
  return body;
}

async function push(request, env, current) {
  const { maxEnvelopeBytes, signatureHeader, kvActive, kvEnvelope, kvSignature } = names();
  const declared = Number(request.headers.get("content-length") ?? 0);
  if (declared > maxEnvelopeBytes) return jsonResponse(413, oversizedReply(current));
  let body;
  try {
    body = await readLimited(request, maxEnvelopeBytes);
  } catch {
    return jsonResponse(400, nackReply(current, "request body could not be read"));
  }
  if (body === null) return jsonResponse(413, oversizedReply(current));

  const signature = request.headers.get(signatureHeader);
  let outcome;
  try {
    outcome = receivePush(current, body, signature, env.PUBLIC_KEY ?? "");
  } catch (e) {
    // Only a missing or malformed PUBLIC_KEY throws: the edge is misconfigured.
    return jsonResponse(503, nackReply(current, `PUBLIC_KEY: ${e.message}`));
  }
  const active = outcome.active;
  if (active) {
    // The envelope first, the active key last: readers switch only when the
    // compact form lands, in one write.
    try {
      await env.ROLLOUT_KV.put(kvEnvelope, body);
      await env.ROLLOUT_KV.put(kvSignature, signature ?? "");
      await env.ROLLOUT_KV.put(kvActive, active);
    } catch (e) {
      return jsonResponse(503, nackReply(current, `key-value store write failed: ${e.message}`));
    }
  }
  return jsonResponse(outcome.status, outcome.body);
}

// GET / PUT /.well-known/rollout/config, with the Spin component's semantics.
async function admin(request, env) {
  let current;
  try {
    current = await readActive(env.ROLLOUT_KV);
  } catch (e) {
    return jsonResponse(503, nackReply(null, `key-value store unavailable: ${e.message}`));
  }
  switch (request.method) {
    case "GET":
    case "HEAD":
      return jsonResponse(200, appliedReply(current));
    case "PUT":
      return push(request, env, current);
    default:
      return new Response("method not allowed\n", { status: 405, headers: { allow: "GET, PUT" } });
  }
}

/**
 * Handles one request: the admin endpoint on its path (only the path selects
 * it, never a header), the rollout proxy everywhere else.
 *
 * options.clientIp: the client address when the runtime knows it other than
 * by Cloudflare's `cf-connecting-ip` header (Deno's `info.remoteAddr`, Node's
 * socket address).
 */
export async function handleRequest(request, env, options = {}) {
  const url = new URL(request.url);
  if (url.pathname === names().adminPath) return admin(request, env);
  return proxy(request, env, url, options);
}
