// The rollout edge for JavaScript runtimes: transport around rollout-core's
// edge machines (through the wasm bindings in ./pkg). It holds no rollout
// rules: which requests are refused, where one goes, what the origin gets,
// when to fail over, what a push does and what is stored all come from core,
// exactly as in the Spin component. The wasm module must be initialised
// (initSync) before the first request; worker.mjs and node.mjs do that.
//
// Two ways in:
//   serve(facts, body, env, send)   raw request facts, for runtimes that give
//                                   them (node.mjs, on node:http)
//   handleRequest(request, env)     a Fetch API Request (Workers / workerd,
//                                   Deno); fetch() sends to the origin
//
// env:
//   ROLLOUT_KV               a KV namespace: get(key, "arrayBuffer"), put(key,
//                            value), and optionally compareAndSwap(key,
//                            expected, value) -> {ok, current} (atomic)
//   PUBLIC_KEY               the Ed25519 key pushes must be signed with
//   OLD_ORIGIN               where requests go while no config is applied
//   ROLLOUT_ALLOWED_ORIGINS  the origins this edge may send to (scheme://host
//                            [:port], separated by spaces or commas); unset
//                            means none

import { AllowedOrigins, adminBegin, constants, routeRequest } from "./pkg/rollout_router_js.js";

let shared;
function names() {
  shared ??= constants();
  return shared;
}

// Header values cross into the machines as byte strings: one character per
// byte, which is how node:http decodes them and what fetch's Headers hold.

/** The value under the store key, as bytes, or null. */
async function readStored(kv) {
  const value = await kv.get(names().kvActive, "arrayBuffer");
  if (value === null || value === undefined) return null;
  if (typeof value === "string") return new TextEncoder().encode(value);
  return ArrayBuffer.isView(value)
    ? new Uint8Array(value.buffer, value.byteOffset, value.byteLength)
    : new Uint8Array(value);
}

function sameBytes(a, b) {
  if (a === null || b === null) return a === b;
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Stores `value` under `key` only if it still holds `expected` (null: absent).
 * Atomic when the store offers compareAndSwap (memoryKv and fileKv in
 * node.mjs do); on a store with only get and put (Workers KV) it is a read,
 * a compare and a write, and the control service's verify loop repairs what
 * a lost race leaves (docs/js-edge.md).
 */
async function compareAndSwap(kv, key, expected, value) {
  if (typeof kv.compareAndSwap === "function") return kv.compareAndSwap(key, expected, value);
  const now = await readStored(kv);
  if (!sameBytes(now, expected)) return { ok: false, current: now };
  await kv.put(key, value);
  return { ok: true, current: value };
}

function mint() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

let allowCache = { text: undefined, list: null, error: null };
function allowList(env) {
  const text = env.ROLLOUT_ALLOWED_ORIGINS ?? "";
  if (allowCache.text !== text) {
    try {
      allowCache = { text, list: new AllowedOrigins(text), error: null };
    } catch (e) {
      allowCache = { text, list: null, error: `ROLLOUT_ALLOWED_ORIGINS: ${e.message}` };
    }
  }
  return allowCache;
}

/** The chunks of `body` (an async iterable of Uint8Array, or null). */
function iterate(body) {
  return body ? body[Symbol.asyncIterator]() : null;
}

/**
 * Reads until the body ends or more than `limit` bytes are held, at least one
 * chunk so that an empty body is known to be empty.
 */
async function hold(chunks, limit) {
  const held = [];
  let total = 0;
  if (!chunks) return { held, total, ended: true, rest: null };
  for (;;) {
    const { done, value } = await chunks.next();
    if (done) return { held, total, ended: true, rest: null };
    const chunk = value instanceof Uint8Array ? value : new Uint8Array(value);
    held.push(chunk);
    total += chunk.byteLength;
    if (total > limit) return { held, total, ended: false, rest: chunks };
  }
}

/** The body to send: the held chunks, then (the first time) the rest. */
function bodyToSend(body) {
  if (body.ended && body.total === 0) return null;
  const held = body.held;
  const rest = body.rest;
  body.rest = null;
  return {
    async *[Symbol.asyncIterator]() {
      yield* held;
      if (rest) {
        for (;;) {
          const { done, value } = await rest.next();
          if (done) return;
          yield value;
        }
      }
    },
  };
}

async function attempt(forward, body, allow, send) {
  const out = forward.request;
  if (!allow.list || !forward.permittedBy(allow.list)) {
    const why = allow.error ?? `${out.origin} is not on the outbound allow-list (ROLLOUT_ALLOWED_ORIGINS)`;
    return { status: undefined, error: why, connect: true };
  }
  try {
    const response = await send({ ...out, body: bodyToSend(body) });
    return { status: response.status, response };
  } catch (e) {
    return { status: undefined, error: String(e?.message ?? e), connect: e?.connect === true };
  }
}

function relayed(forward, result) {
  const { response } = result;
  const relays = forward.relaysBody(response.status);
  if (!relays) response.cancel?.();
  return {
    status: response.status,
    headers: forward.responseHeaders(response.headers),
    body: relays ? response.body : null,
  };
}

async function proxy(routing, chunks, env, send) {
  let forward = routing.takeForward();
  const allow = allowList(env);
  let body;
  try {
    body = await hold(chunks, forward.replayLimit ?? 0);
  } catch {
    return forward.unreadableBody();
  }
  if (!(body.ended && body.total === 0)) {
    const refused = forward.refusesBody();
    if (refused) return refused;
  }
  let result = await attempt(forward, body, allow, send);
  let verdict = forward.after(result.status, result.error, result.connect === true, body.ended);
  const retry = verdict.takeRetry();
  if (retry) {
    result.response?.cancel?.();
    forward = retry;
    result = await attempt(forward, body, allow, send);
    verdict = forward.after(result.status, result.error, result.connect === true, false);
  }
  if (verdict.relay) return relayed(forward, result);
  return verdict.answer;
}

async function readAll(chunks, limit) {
  const parts = [];
  let total = 0;
  if (chunks) {
    for (;;) {
      const { done, value } = await chunks.next();
      if (done) break;
      total += value.byteLength;
      if (total > limit) {
        await chunks.return?.();
        return null;
      }
      parts.push(value);
    }
  }
  const body = new Uint8Array(total);
  let at = 0;
  for (const part of parts) {
    body.set(part, at);
    at += part.byteLength;
  }
  return body;
}

async function admin(facts, chunks, env, stored, storeError) {
  const begun = adminBegin(
    facts.method,
    facts.headers,
    stored ?? undefined,
    storeError ?? undefined,
    env.PUBLIC_KEY ?? undefined,
    Date.now() / 1000,
  );
  const answer = begun.answer;
  if (answer) return answer;
  let bytes;
  try {
    bytes = await readAll(chunks, begun.limit);
  } catch {
    return begun.unreadable();
  }
  if (bytes === null) return begun.tooLarge();
  let step = begun.finish(bytes);
  let read = stored;
  for (;;) {
    const done = step.answer;
    if (done) return done;
    let swapped;
    try {
      swapped = await compareAndSwap(env.ROLLOUT_KV, names().kvActive, read, step.value);
    } catch (e) {
      return step.failed(read ?? undefined, String(e?.message ?? e));
    }
    if (swapped.ok) return step.done();
    read = swapped.current ?? null;
    step = step.conflict(read ?? undefined);
  }
}

/**
 * Serves one request from its raw facts: `{method, target, authority?,
 * headers: [[name, byteString]], client_ip?, https?}`. `body` is an async
 * iterable of Uint8Array (or null). `send({method, origin, path, headers,
 * body})` sends to an origin adding only Host and framing, and resolves to
 * `{status, headers: [[name, byteString]], body, cancel()}` or throws an
 * error whose `connect` is true when nothing reached the origin.
 *
 * Resolves to `{status, headers: [[name, byteString]], body}` where body is
 * a string, a stream from `send`, or null.
 */
export async function serve(facts, body, env, send) {
  let stored = null;
  let storeError = null;
  try {
    stored = await readStored(env.ROLLOUT_KV);
  } catch (e) {
    storeError = String(e?.message ?? e);
  }
  const routing = routeRequest(facts, stored ?? undefined, env.OLD_ORIGIN ?? undefined, mint());
  const answer = routing.answer;
  if (answer) return answer;
  const chunks = iterate(body);
  if (routing.admin) return admin(facts, chunks, env, stored, storeError);
  // The store held an older compact form (after an upgrade): write back the
  // frame core re-derived, so later requests need not. Best effort: a lost
  // race leaves the next request to try again.
  const rewrite = routing.rewrite;
  if (rewrite) compareAndSwap(env.ROLLOUT_KV, names().kvActive, stored, rewrite).catch(() => {});
  return proxy(routing, chunks, env, send);
}

// --- The Fetch API way in (Workers / workerd, Deno) ------------------------

// How a runtime's Headers hold bytes. The Fetch standard (Deno, Node's fetch)
// holds them as byte strings already; Cloudflare's runtime decodes them as
// UTF-8 (bytes that are not UTF-8 become U+FFFD) and encodes strings it sends
// as UTF-8.
const LATIN1 = { in: (text) => text, out: (bytes) => bytes };
const UTF8 = {
  in: (text) => String.fromCharCode(...new TextEncoder().encode(text)),
  out: (bytes) => new TextDecoder().decode(Uint8Array.from(bytes, (c) => c.charCodeAt(0))),
};
const ASCII = /^[\x00-\x7f]*$/;
function codecFor(encoding) {
  if (encoding !== "utf-8") return LATIN1;
  // Most values are ASCII, the same in both; only the rest are converted.
  return {
    in: (text) => (ASCII.test(text) ? text : UTF8.in(text)),
    out: (bytes) => (ASCII.test(bytes) ? bytes : UTF8.out(bytes)),
  };
}

/** A Headers object as pairs, Set-Cookie values kept apart. */
export function headerPairs(headers, codec = LATIN1) {
  const pairs = [];
  for (const [name, value] of headers) if (name !== "set-cookie") pairs.push([name, codec.in(value)]);
  const cookies = typeof headers.getSetCookie === "function" ? headers.getSetCookie() : [];
  for (const value of cookies) pairs.push(["set-cookie", codec.in(value)]);
  return pairs;
}

function streamOf(chunks) {
  const iterator = chunks[Symbol.asyncIterator]();
  return new ReadableStream({
    async pull(controller) {
      const { done, value } = await iterator.next();
      if (done) controller.close();
      else controller.enqueue(value);
    },
  });
}

// Errors fetch reports when nothing reached the origin (Node's undici names
// the cause's code; workerd only says so in the message).
const CONNECT_CODES = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH"]);

function fetchSender(codec) {
  return async (out) => {
    const headers = new Headers();
    for (const [name, value] of out.headers) headers.append(name, codec.out(value));
    // A redirect is the origin's answer to the client, not the edge's to follow.
    const init = { method: out.method, headers, redirect: "manual" };
    if (out.body) {
      init.body = streamOf(out.body);
      init.duplex = "half";
    }
    let response;
    try {
      response = await fetch(out.origin + out.path, init);
    } catch (e) {
      const code = e?.cause?.code;
      const error = new Error(`${e.message}${code ? ` (${code})` : ""}`);
      error.connect = CONNECT_CODES.has(code) || /connect|refused|resolve|dns/i.test(String(e?.message));
      throw error;
    }
    return {
      status: response.status,
      headers: headerPairs(response.headers, codec),
      body: response.body,
      cancel: () => response.body?.cancel(),
    };
  };
}

/** A machine's answer (or relayed response) as a Fetch Response. */
export function toResponse(answer, codec = LATIN1) {
  const headers = new Headers();
  for (const [name, value] of answer.headers) headers.append(name, codec.out(value));
  const bodyless = answer.status === 204 || answer.status === 304 || answer.status < 200;
  return new Response(bodyless ? null : answer.body, { status: answer.status, headers });
}

function streamChunks(stream) {
  if (!stream) return null;
  const reader = stream.getReader();
  return {
    [Symbol.asyncIterator]() {
      return {
        next: () => reader.read(),
        return: async () => {
          await reader.cancel();
          return { done: true, value: undefined };
        },
      };
    },
  };
}

/**
 * The request target and authority of a Fetch request. Runtimes build
 * `request.url` from the Host header and the raw target without resolving
 * dot segments (workerd does; a runtime that parses it first cannot keep the
 * dot-segment rule): when the URL is the scheme, the Host value and a
 * target, those are the facts; otherwise the URL goes to the machine as an
 * absolute-form target, whose authority it checks like a Host.
 */
function targetOf(request) {
  const url = request.url;
  const host = request.headers.get("host");
  const scheme = /^https?:\/\//i.exec(url)?.[0] ?? "";
  const rest = url.slice(scheme.length);
  if (host !== null && rest.startsWith(host)) {
    return { target: rest.slice(host.length), authority: host };
  }
  return { target: url, authority: undefined };
}

/**
 * Handles one Fetch API request. options.clientIp is the client address when
 * the runtime knows it other than by Cloudflare's `cf-connecting-ip`;
 * options.headerEncoding is "utf-8" on Cloudflare's runtime (worker.mjs sets
 * it), else the Fetch standard's byte strings.
 */
export async function handleRequest(request, env, options = {}) {
  const codec = codecFor(options.headerEncoding);
  const { target, authority } = targetOf(request);
  const facts = {
    method: request.method,
    target,
    authority,
    headers: headerPairs(request.headers, codec).filter(([name]) => name !== "host"),
    client_ip: options.clientIp ?? request.headers.get("cf-connecting-ip") ?? null,
    https: /^https:/i.test(request.url),
  };
  const answer = await serve(facts, streamChunks(request.body), env, fetchSender(codec));
  return toResponse(answer, codec);
}
