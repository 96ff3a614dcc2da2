// Accessibility and layout: axe-core finds no serious or critical
// violation, and no view scrolls sideways, at 375 px and at 1280 px; with a
// canary plan running, so the plan, its checks and their chart are there.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { readFile } from 'node:fs/promises';
import { up, browser, page, signIn, pageUrl } from './env.mjs';

const require = createRequire(import.meta.url);
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
      if (view === 'routes') await p.waitForSelector('.plan table.checks');
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
    assert.deepEqual(p.problems, []);
    await p.context().close();
  });
}
