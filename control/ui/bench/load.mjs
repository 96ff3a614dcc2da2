// Measures how long the dashboard takes to load against a service with 100
// edges and 1 000 versions. Not a timed test: it prints what it measured
// and how.
//
//   node control/ui/bench/load.mjs [--loads 10] [--versions 1000] [--edges 100]
//
// The environment is `rollout up` (a control service, two rollout-host
// edges, demo origins) in a scratch directory; the versions are set_weight
// patches through the API (every 50th a rollback), and the other edges are
// registered loopback URLs nothing answers at (127.0.0.N:9), which the
// service shows as STALE, then UNREACHABLE. Each load is a fresh browser
// context (Debian's chromium, headless) already signed in (the token put in
// session storage before the page runs), navigated to /#/VIEW; the figure is
// the page's own `rollout:VIEW` performance mark, set when the view is first
// rendered with all its data (routes: config and plans; edges: status; history:
// timeline, audit, plans, check points, charts), in ms from the start of the
// navigation.

import { up, browser, pageUrl } from '../test/env.mjs';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const LOADS = arg('loads', 10);
const VERSIONS = arg('versions', 1000);
const EDGES = arg('edges', 100);

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const f1 = (x) => x.toFixed(1);

const env = await up();
try {
  const api = env.api();
  let t = performance.now();
  let version = (await api.current()).version;
  while (version < VERSIONS) {
    const rollback = version % 50 === 0;
    const r = rollback
      ? await api.post('/v1/rollback', { expected_version: version, to: version - 1, reason: `bench: rollback ${version}` })
      : await api.post('/v1/versions', {
          expected_version: version,
          reason: `bench: step ${version} of a long history`,
          patch: { op: 'set_weight', route: 'web', percent: (version * 7) % 101 },
        });
    if (r.status !== 201) throw new Error(`version ${version + 1}: ${r.status} ${JSON.stringify(r.json)}`);
    version = r.json.version;
  }
  await api.converged(version);
  console.log(`setup: ${version} versions in ${f1((performance.now() - t) / 1000)} s`);
  t = performance.now();
  for (let i = 0; i < EDGES - env.edges.length; i++) {
    const r = await api.post('/v1/edges', { url: `http://127.0.0.${i + 2}:9` });
    if (r.status !== 201) throw new Error(`edge ${i}: ${r.status} ${JSON.stringify(r.json)}`);
  }
  const status = await api.get('/v1/status');
  console.log(`setup: ${status.edges.length} edges (${env.edges.length} real) in ${f1((performance.now() - t) / 1000)} s`);

  const sizes = {};
  for (const path of ['/v1/status', '/v1/current', '/v1/timeline?limit=2000', '/v1/audit', '/v1/plans?limit=50']) {
    const r = await fetch(env.url + path, { headers: { authorization: `Bearer ${env.tokens.read}` } });
    sizes[path] = (await r.arrayBuffer()).byteLength;
  }
  console.log(`replies (bytes): ${Object.entries(sizes).map(([p, n]) => `${p} ${n}`).join(', ')}`);

  const url = await pageUrl(env);
  const b = await browser();
  const results = {};
  try {
    for (const view of ['routes', 'edges', 'history']) {
      const times = [];
      let nodes = 0;
      for (let i = 0; i <= LOADS; i++) {
        const context = await b.newContext({ viewport: { width: 1280, height: 900 } });
        await context.addInitScript((token) => sessionStorage.setItem('rollout.token', token), env.tokens.read);
        const p = await context.newPage();
        await p.goto(`${url}/#/${view}`);
        const mark = `rollout:${view}`;
        await p.waitForFunction((m) => performance.getEntriesByName(m).length > 0, mark, { timeout: 30_000 });
        const ms = await p.evaluate((m) => performance.getEntriesByName(m)[0].startTime, mark);
        nodes = await p.evaluate(() => document.getElementsByTagName('*').length);
        if (i > 0) times.push(ms); // the first load warms the browser and the service
        await context.close();
      }
      results[view] = { times, nodes };
    }
  } finally {
    await b.close();
  }
  console.log(`\ndashboard load, ${LOADS} loads per view after one warm-up, ${version} versions, ${status.edges.length} edges (ms from navigation start to the view rendered with its data):`);
  console.log('view     median    min    max   elements');
  for (const [view, { times, nodes }] of Object.entries(results)) {
    console.log(`${view.padEnd(8)} ${f1(median(times)).padStart(6)} ${f1(Math.min(...times)).padStart(6)} ${f1(Math.max(...times)).padStart(6)}   ${nodes}`);
  }
} finally {
  await env.stop();
}
