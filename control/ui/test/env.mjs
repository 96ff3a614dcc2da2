// A real environment for the browser tests, the benchmark and the
// screenshots: `rollout up` (a control service, two rollout-host edges
// running the edge component, two demo origins, a canary on route web) on
// free ports in a scratch directory, and Debian's chromium driven by
// playwright-core.

import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const ROLLOUT = process.env.ROLLOUT_BIN || join(REPO, 'target/debug/rollout');
export const CHROMIUM = process.env.ROLLOUT_CHROMIUM || '/usr/bin/chromium';
export const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts `rollout up` and returns {url, edges, tokens: {admin, deploy, read},
 * api(token), stop()}. `scenario`: `bad-canary` or `good-canary`.
 */
export async function up({ scenario, canary } = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'rollout-ui-'));
  const args = ['up', '--dir', dir, '--control-port', '0', '--edge-ports', '0,0', '--origin-ports', '0,0'];
  if (scenario) args.push('--scenario', scenario);
  if (canary != null) args.push('--canary', String(canary));
  const child = spawn(ROLLOUT, args, { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { err += d; });
  const exited = new Promise((r) => child.on('exit', r));
  const deadline = Date.now() + 60_000;
  while (!out.includes('Ctrl-C stops everything')) {
    if (child.exitCode != null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`rollout up did not start:\n${out}\n${err}`);
    }
    await sleep(50);
  }
  const url = /control service\s+(http:\/\/\S+)/.exec(out)[1];
  const edges = [...out.matchAll(/edge \d+\s+(http:\/\/\S+)/g)].map((m) => m[1]);
  const token = async (name) => (await readFile(join(dir, `${name}.token`), 'utf8')).trim();
  const tokens = { admin: await token('admin'), deploy: await token('deploy'), read: await token('read') };
  const env = {
    dir,
    url,
    edges,
    tokens,
    api: (tok = tokens.admin) => client(url, tok),
    async stop() {
      if (child.exitCode == null) {
        child.kill('SIGINT');
        const done = await Promise.race([exited.then(() => true), sleep(10_000).then(() => false)]);
        // Whatever is left of its process group (its edges), by the group's id.
        if (!done) try { process.kill(-child.pid, 'SIGKILL'); } catch { /* gone */ }
      }
      await rm(dir, { recursive: true, force: true });
    },
    output: () => out + err,
  };
  // Every edge holds the first version before a test starts.
  await env.api().waitFor(async (a) => {
    const st = await a.get('/v1/status');
    return st.version > 0 && st.edges.length === edges.length && st.edges.every((e) => e.state === 'ACK');
  }, 30_000, 'edges converge on the first version');
  return env;
}

/**
 * `rollout serve` alone (no edges), with a deploy and a read token and the
 * extra files given (name → content, written in its directory; `hooks.json`
 * is passed as --hooks). Returns the same shape as `up`.
 */
export async function serve(files = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'rollout-ui-serve-'));
  const tokens = { admin: 'ui-admin-token', deploy: 'ui-deploy-token', read: 'ui-read-token' };
  await writeFile(join(dir, 'tokens'), `admin admin ${tokens.admin}\ndeploy deployer ${tokens.deploy}\nread viewer ${tokens.read}\n`);
  for (const [name, content] of Object.entries(files)) await writeFile(join(dir, name), content);
  const keygen = spawn(ROLLOUT, ['keygen', '--out', join(dir, 'control.key')], { stdio: 'ignore' });
  await new Promise((r) => keygen.on('exit', r));
  const args = ['serve', '--db', join(dir, 'control.sqlite'), '--listen', '127.0.0.1:0', '--key', join(dir, 'control.key'), '--tokens', join(dir, 'tokens')];
  if (files['hooks.json']) args.push('--hooks', join(dir, 'hooks.json'));
  const child = spawn(ROLLOUT, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: 'warn' } });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { out += d; });
  const exited = new Promise((r) => child.on('exit', r));
  const deadline = Date.now() + 30_000;
  let m;
  while (!(m = /listening on (http:\/\/\S+)/.exec(out))) {
    if (child.exitCode != null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`rollout serve did not start:\n${out}`);
    }
    await sleep(50);
  }
  const url = m[1];
  return {
    dir,
    url,
    edges: [],
    tokens,
    api: (tok = tokens.admin) => client(url, tok),
    async stop() {
      if (child.exitCode == null) {
        child.kill('SIGTERM');
        await Promise.race([exited, sleep(5_000).then(() => child.kill('SIGKILL'))]);
      }
      await rm(dir, { recursive: true, force: true });
    },
    output: () => out,
  };
}

/** A small API client, as a test's own hands (not the page's). */
export function client(url, token) {
  const call = async (method, path, body) => {
    const res = await fetch(url + path, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    const json = text ? JSON.parse(text) : null;
    return { status: res.status, json };
  };
  const api = {
    call,
    async get(path) {
      const r = await call('GET', path);
      if (r.status !== 200) throw new Error(`GET ${path}: ${r.status} ${JSON.stringify(r.json)}`);
      return r.json;
    },
    post: (path, body) => call('POST', path, body),
    del: (path) => call('DELETE', path),
    current: () => api.get('/v1/current'),
    async setWeight(route, percent, reason = `test: ${route} at ${percent} %`) {
      const cur = await api.current();
      const r = await call('POST', '/v1/versions', {
        expected_version: cur.version,
        reason,
        patch: { op: 'set_weight', route, percent },
      });
      if (r.status !== 201) throw new Error(`set_weight: ${r.status} ${JSON.stringify(r.json)}`);
      return r.json;
    },
    async count() {
      return (await api.get('/v1/status')).version;
    },
    /** Waits until the `urls` edges (default: all) hold `version`. */
    async converged(version, urls) {
      await api.waitFor(async (a) => {
        const st = await a.get('/v1/status');
        const edges = st.edges.filter((e) => !urls || urls.includes(e.url));
        return st.version >= version && edges.every((e) => e.state === 'ACK');
      }, 20_000, `edges hold version ${version}`);
    },
    async waitFor(cond, ms, what) {
      const end = Date.now() + ms;
      for (;;) {
        if (await cond(api)) return;
        if (Date.now() > end) throw new Error(`timed out: ${what}`);
        await sleep(100);
      }
    },
  };
  return api;
}

/** Debian's chromium, headless. */
export function browser() {
  return chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
}

/**
 * A page at `width`, recording page errors, console errors (a CSP refusal
 * is one) and JavaScript dialogs (alert() would be one).
 */
export async function page(b, { width = 1280, height = 900 } = {}) {
  const context = await b.newContext({ viewport: { width, height } });
  const p = await context.newPage();
  const problems = [];
  p.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  p.on('console', (m) => {
    if (m.type() === 'error' && !/Failed to load resource: the server responded with a status of (400|401|403|404|409)/.test(m.text())) {
      problems.push(`console error: ${m.text()}`);
    }
  });
  p.on('dialog', (d) => {
    problems.push(`a JavaScript ${d.type()} opened: ${d.message()}`);
    d.dismiss().catch(() => {});
  });
  p.problems = problems;
  return p;
}

/**
 * Seeds a `rollout serve` from `serve()` with route `web` (10 %) as version 1
 * and 20 % as version 2, with the deploy token; its API client.
 */
export async function twoVersions(env) {
  const api = env.api(env.tokens.deploy);
  const config = { schema: 1, routes: [{ id: 'web', old: 'http://127.0.0.1:1', new: 'http://127.0.0.1:2', new_weight: 10, key: ['header:x-user-id'] }] };
  const first = await api.post('/v1/versions', { expected_version: 0, reason: 'first', config });
  assert.equal(first.status, 201, JSON.stringify(first.json));
  await api.setWeight('web', 20, 'ci: canary 20 %');
  return api;
}

/** Opens the page and signs in with `token`. */
export async function signIn(p, url, token) {
  await p.goto(`${url}/`);
  await p.fill('#token', token);
  await p.click('#signin-form button[type=submit]');
  await p.waitForSelector('#nav:not([hidden])');
}

/**
 * The page's address. The page is what `rollout serve` embeds; with
 * ROLLOUT_UI_FROM_DIST=1 it is served from control/ui/dist on disk instead
 * (with the same headers), every other request passed to the service: for
 * working on the page without rebuilding the binary. The tests' verdict is
 * the embedded page's.
 */
export async function pageUrl(env) {
  if (process.env.ROLLOUT_UI_FROM_DIST !== '1') return env.url;
  const http = await import('node:http');
  const files = { '/': ['index.html', 'text/html'], '/ui/app.js': ['app.js', 'text/javascript'], '/ui/app.css': ['app.css', 'text/css'] };
  const server = http.createServer(async (req, res) => {
    const path = req.url.split('?')[0];
    if (req.method === 'GET' && files[path]) {
      const [name, type] = files[path];
      const body = await readFile(join(REPO, 'control/ui/dist', name));
      res.writeHead(200, { 'content-type': `${type}; charset=utf-8`, 'content-security-policy': CSP, 'cache-control': 'no-cache' });
      res.end(body);
      return;
    }
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const headers = { ...req.headers };
    delete headers.host;
    const r = await fetch(env.url + req.url, { method: req.method, headers, body: chunks.length ? Buffer.concat(chunks) : undefined });
    const out = {};
    r.headers.forEach((v, k) => { if (!['content-encoding', 'transfer-encoding', 'content-length'].includes(k)) out[k] = v; });
    res.writeHead(r.status, out);
    res.end(Buffer.from(await r.arrayBuffer()));
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const stop = env.stop;
  env.stop = async () => { server.close(); await stop(); };
  return `http://127.0.0.1:${server.address().port}`;
}

/** The text of the first element `sel` matches on page `p`. */
export const text = (p, sel) => p.locator(sel).first().textContent();

/** Waits until the page shows version `n` as the current one. */
export const shows = (p, n, timeout = 30_000) =>
  p.waitForFunction((v) => document.querySelector('.toolbar .current strong')?.textContent === `Version ${v}`, n, { timeout });
