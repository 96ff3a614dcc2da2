// A canary plan from the dashboard (`rollout up --scenario good-canary`):
// its step, time left and checks on the route, then pause, resume and
// promote through their confirmations; the audit log records who.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { up, browser, page, signIn, pageUrl } from './env.mjs';

let env;
let b;
let url;

before(async () => {
  env = await up({ scenario: 'good-canary' });
  url = await pageUrl(env);
  b = await browser();
});

after(async () => {
  await b?.close();
  await env?.stop();
});

const text = (p, sel) => p.locator(sel).first().textContent();

async function confirm(p) {
  await p.waitForSelector('#dlg[open] [data-role=confirm]');
  await p.click('#dlg [data-role=confirm]');
  await p.waitForSelector('#dlg', { state: 'hidden' });
}

test('a running plan: pause, resume and promote it from the route', async () => {
  const api = env.api();
  const plan = (await api.get('/v1/plans?route=web&limit=1')).plans[0];
  const p = await page(b);
  await signIn(p, url, env.tokens.deploy);
  const block = 'article[data-route=web] section.plan';
  await p.waitForSelector(`${block} table.checks tbody tr[data-key=errors]`);
  assert.match(await text(p, `${block} h3`), new RegExp(`Plan ${plan.id}`));
  assert.match(await text(p, `${block} .plan-step`), /Step \d of 5: /);

  await p.click('article[data-route=web] [data-action=pause]');
  await confirm(p);
  await api.waitFor(async (a) => (await a.get(`/v1/plans/${plan.id}`)).held != null, 10_000, 'the plan is held');
  await p.waitForSelector(`${block} p.warn`);
  assert.match(await text(p, `${block} p.warn`), /^Held: /);

  await p.waitForSelector('article[data-route=web] [data-action=resume]');
  await p.click('article[data-route=web] [data-action=resume]');
  await confirm(p);
  await api.waitFor(async (a) => (await a.get(`/v1/plans/${plan.id}`)).held == null, 10_000, 'the plan goes on');

  await p.waitForSelector('article[data-route=web] [data-action=promote]');
  await p.click('article[data-route=web] [data-action=promote]');
  await p.waitForSelector('#dlg[open] table.diff');
  assert.match(await text(p, '#dlg table.diff tbody'), /routes\[web\]\.new_weight.*100/);
  await confirm(p);
  await api.waitFor(async (a) => (await a.get(`/v1/plans/${plan.id}`)).phase === 'promoted', 30_000, 'the plan is promoted');
  await api.waitFor(async (a) => (await a.current()).config.routes[0].new_weight === 100, 10_000, 'weight 100 %');
  await p.waitForFunction(() => document.querySelector('article[data-route=web] [data-role=weight]')?.textContent === '100 %');
  await p.waitForSelector(`${block}.phase-promoted`);

  // The promotion's version names who asked for it.
  const audit = (await api.get('/v1/audit')).audit;
  assert.ok(audit.some((a) => a.detail.includes(`plan ${plan.id} promoted by deployer`)), JSON.stringify(audit[0]));
  assert.deepEqual(p.problems, []);
  await p.context().close();
});

test('the plan commands the page sent are in the audit log, by who sent them', async () => {
  const audit = (await env.api().get('/v1/audit')).audit;
  for (const command of ['pause', 'resume', 'promote']) {
    assert.ok(audit.some((a) => a.actor === 'deployer' && `${a.action} ${a.detail}`.includes(command)),
      `the audit log has no ${command} by deployer: ${JSON.stringify(audit.slice(0, 4))}`);
  }
});
