// Takes the README's screenshots of the dashboard (docs/dashboard-*.png) at
// 1280 px, against `rollout up --scenario bad-canary`: a canary plan whose
// new origin fails 20 % of requests, caught by its probe check and rolled
// back, then a few versions by hand and a rollback.
//
//   node control/ui/screenshots.mjs
//
// Needs the debug `rollout` and `rollout-host`, the release edge component
// and /usr/bin/chromium, as the browser tests do.

import { join } from 'node:path';
import { up, browser, page, signIn, pageUrl, REPO } from './test/env.mjs';

const out = (name) => join(REPO, 'docs', `dashboard-${name}.png`);
const ready = (p, view) => p.waitForFunction((v) => (document.documentElement.dataset.ready || '').split(' ').includes(v), view);

const env = await up({ scenario: 'bad-canary' });
const b = await browser();
try {
  const url = await pageUrl(env);
  const api = env.api();
  const plan = (await api.get('/v1/plans?route=web&limit=1')).plans[0];
  const p = await page(b, { width: 1280, height: 800 });
  await signIn(p, url, env.tokens.deploy);

  // Routes: the plan at 10 %, its check's first failed interval in.
  await api.waitFor(async (a) => (await a.get(`/v1/plans/${plan.id}`)).checks.some((c) => c.fails >= 1), 40_000, 'a failed interval');
  await p.goto(`${url}/#/routes`);
  await ready(p, 'routes');
  await p.waitForSelector('.plan .verdict-fail');
  await p.waitForTimeout(300);
  await p.screenshot({ path: out('routes'), fullPage: true });
  console.log(`wrote ${out('routes')}`);

  // The plan rolls back; then a person tries again by hand and rolls back.
  await api.waitFor(async (a) => (await a.get(`/v1/plans/${plan.id}`)).phase === 'aborted', 60_000, 'the plan rolls back');
  await api.converged((await api.setWeight('web', 2, 'ci: build 4812, new at 2 % with the fix for the 500s')).version);
  await new Promise((r) => setTimeout(r, 2000));
  await api.converged((await api.setWeight('web', 5, 'ci: build 4812 at 5 %')).version);
  await new Promise((r) => setTimeout(r, 2000));
  const cur = await api.current();
  const rb = await api.post('/v1/rollback', { expected_version: cur.version, to: cur.version - 2, reason: 'errors on checkout, back to before build 4812' });
  await api.converged(rb.json.version);

  // Edges: the two real edges and one that was registered but never answers.
  const dead = 'http://127.0.0.1:9';
  await api.post('/v1/edges', { url: dead });
  await api.waitFor(async (a) => (await a.get('/v1/status')).edges.some((e) => e.url === dead && e.error), 20_000, 'the dead edge errs');
  await p.goto(`${url}/#/edges`);
  await ready(p, 'edges');
  await p.waitForSelector(`tr[data-edge="${dead}"]`);
  await p.waitForTimeout(1200);
  await p.screenshot({ path: out('edges'), fullPage: true });
  console.log(`wrote ${out('edges')}`);
  await api.del(`/v1/edges?url=${encodeURIComponent(dead)}`);

  // History: weight over time with the plan's and the person's rollbacks,
  // the check's error rates under it, the timeline.
  await p.goto(`${url}/#/history`);
  await ready(p, 'history');
  await p.waitForSelector('.checks-chart svg.chart');
  await p.waitForTimeout(1200);
  await p.screenshot({ path: out('history'), fullPage: true });
  console.log(`wrote ${out('history')}`);
  if (p.problems.length) throw new Error(p.problems.join('\n'));
} finally {
  await b.close();
  await env.stop();
}
