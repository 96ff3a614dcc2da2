// Accessibility and layout: axe-core finds no serious or critical
// violation, and no view scrolls sideways, at 375 px and at 1280 px; with a
// canary plan running, so the plan, its checks and their chart are there,
// and a route whose id is 64 characters without a break point and whose
// host is as long as a host gets.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { readFile } from 'node:fs/promises';
import { up, browser, page, signIn, pageUrl } from './env.mjs';

const require = createRequire(import.meta.url);
/** 64 characters, the most a route id may have, and no break point. */
const LONG_ID = 'abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz01';
let axeSource;
let env;
let b;
let url;

before(async () => {
  axeSource = await readFile(require.resolve('axe-core/axe.min.js'), 'utf8');
  env = await up({ scenario: 'good-canary' });
  url = await pageUrl(env);
  b = await browser();
  // A check measurement for the history's chart (the probe's interval is 10 s).
  const plan = (await env.api().get('/v1/plans?route=web&limit=1')).plans[0];
  await env.api().waitFor(async (a) => (await a.get(`/v1/plans/${plan.id}/checks`)).checks.length > 0, 40_000, 'a check measurement');
  // A few versions by hand and a rollback, for the timeline.
  await env.api().setWeight('web', 20, 'by hand');
  const cur = await env.api().current();
  await env.api().post('/v1/rollback', { expected_version: cur.version, to: cur.version - 1, reason: 'undo' });
  // The longest route id there is, and a long host, ahead of the default route.
  const now = await env.api().current();
  const web = now.config.routes.find((r) => r.id === 'web');
  const long = {
    id: LONG_ID,
    match: { host: `${'h'.repeat(63)}.${'k'.repeat(63)}.example.com`, path_prefix: `/${'p'.repeat(80)}` },
    old: web.old,
    new: web.new,
    new_weight: 12.5,
    key: ['header:x-user-id'],
  };
  const pushed = await env.api().post('/v1/versions', {
    expected_version: now.version,
    reason: 'a route with a long id',
    config: { ...now.config, routes: [long, ...now.config.routes] },
  });
  assert.equal(pushed.status, 201, JSON.stringify(pushed.json));
});

after(async () => {
  await b?.close();
  await env?.stop();
});

/**
 * axe-core's serious and critical violations on the page as it is. The
 * page's CSP admits no injected <script>, so axe is evaluated through the
 * DevTools protocol.
 */
async function violations(p) {
  await p.evaluate(axeSource);
  const result = await p.evaluate(() => window.axe.run(document));
  assert.ok(result.passes.length > 10, `axe ran ${result.passes.length} rules that passed`);
  return result.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.impact} ${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).slice(0, 3).join(', ')})`);
}

const sideways = (p) => p.evaluate(() => ({
  scroll: document.documentElement.scrollWidth,
  client: document.documentElement.clientWidth,
  body: document.body.scrollWidth,
}));

for (const width of [375, 1280]) {
  test(`${width} px: every view passes axe and has no horizontal scroll`, async () => {
    const p = await page(b, { width, height: 800 });
    await p.goto(`${url}/`);
    assert.deepEqual(await violations(p), [], 'sign-in');
    await signIn(p, url, env.tokens.deploy);
    for (const view of ['routes', 'edges', 'history']) {
      await p.goto(`${url}/#/${view}`);
      await p.waitForFunction((v) => (document.documentElement.dataset.ready || '').split(' ').includes(v), view);
      if (view === 'routes') {
        await p.waitForSelector('.plan table.checks');
        await p.waitForSelector(`article[data-route="${LONG_ID}"]`);
      }
      if (view === 'history') await p.waitForSelector('.checks-chart svg.chart');
      assert.deepEqual(await violations(p), [], view);
      const w = await sideways(p);
      assert.ok(w.scroll <= w.client && w.body <= w.client, `${view} scrolls sideways at ${width} px: ${JSON.stringify(w)}`);
    }
    // The confirmation dialog too.
    await p.goto(`${url}/#/routes`);
    await p.waitForSelector('.toolbar [data-action=rollback]');
    await p.click('.toolbar [data-action=rollback]');
    await p.waitForSelector('#dlg[open] .preview table.diff, #dlg[open] .preview p');
    await p.fill('#dlg-reason', '');
    assert.deepEqual(await violations(p), [], 'rollback dialog');
    const w = await sideways(p);
    assert.ok(w.scroll <= w.client, `the dialog scrolls sideways at ${width} px: ${JSON.stringify(w)}`);
    await p.click('#dlg [data-role=cancel]');
    // The set-weight dialog of the long route: its title and diff wrap.
    await p.click(`article[data-route="${LONG_ID}"] [data-action=set-weight]`);
    await p.waitForSelector('#dlg[open] #dlg-weight');
    await p.fill('#dlg-weight', '25');
    await p.waitForSelector('#dlg table.diff');
    const d = await sideways(p);
    assert.ok(d.scroll <= d.client, `the set-weight dialog scrolls sideways at ${width} px: ${JSON.stringify(d)}`);
    const dlg = await p.evaluate(() => ({ scroll: document.getElementById('dlg').scrollWidth, client: document.getElementById('dlg').clientWidth }));
    assert.ok(dlg.scroll <= dlg.client, `the set-weight dialog's content is wider than it at ${width} px: ${JSON.stringify(dlg)}`);
    await p.click('#dlg [data-role=cancel]');
    assert.deepEqual(p.problems, []);
    await p.context().close();
  });
}
