// A canary plan from the dashboard (`rollout up --scenario good-canary`):
// its step, time left and checks on the route, then pause, resume and
// promote through their confirmations; the audit log records who.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { up, browser, page, signIn, pageUrl, text } from './env.mjs';

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

  // What a change by hand would do to the plan, said in its confirmation.
  await p.click('article[data-route=web] [data-action=set-weight]');
  await p.waitForSelector('#dlg[open] #dlg-weight');
  await p.fill('#dlg-weight', '42.5');
  await p.waitForSelector('#dlg [data-role=plan-effect]');
  assert.match(await text(p, '#dlg [data-role=plan-effect]'), new RegExp(`^Plan ${plan.id} is running on route web: this weight holds it`));
  await p.click('#dlg [data-role=cancel]');
  await api.waitFor(async (a) => (await a.count()) >= 2, 20_000, 'the plan pushed its first step');
  await p.waitForFunction(() => Number((document.querySelector('.toolbar .current strong')?.textContent || '').replace('Version ', '')) >= 2);
  await p.click('.toolbar [data-action=rollback]');
  await p.waitForSelector('#dlg[open] .preview table.diff');
  assert.match(await text(p, '#dlg .preview [data-role=plan-effect]'), new RegExp(`^Plan ${plan.id} is running on route web: this rollback changes the route, so it aborts the plan\\.`));
  await p.click('#dlg [data-role=cancel]');
  assert.equal((await api.get(`/v1/plans/${plan.id}`)).held, null, 'nothing was sent');

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

test('promoting a dry run: the confirmation says it pushes nothing, and it does not', async () => {
  const api = env.api();
  const last = (await api.get('/v1/plans?route=web&limit=1')).plans[0];
  const started = await api.post('/v1/plans', { route: 'web', plan: { ...last.doc, dry_run: true }, reason: 'ci: measure only' });
  assert.equal(started.status, 201, JSON.stringify(started.json));
  const plan = started.json;
  const before = await api.current();
  const p = await page(b);
  await signIn(p, url, env.tokens.deploy);
  await p.waitForFunction((id) => /dry run/.test(document.querySelector('article[data-route=web] section.plan h3')?.textContent || '')
    && document.querySelector('article[data-route=web] section.plan h3')?.textContent.includes(`Plan ${id}`), plan.id);
  await p.click('article[data-route=web] [data-action=promote]');
  await p.waitForSelector('#dlg[open] [data-role=dry-run]');
  assert.match(await text(p, '#dlg [data-role=dry-run]'), new RegExp(`^Plan ${plan.id} is a dry run: promoting ends it as promoted and pushes nothing`));
  assert.equal(await p.locator('#dlg table.diff').count(), 0, 'no diff for a push that does not happen');
  await confirm(p);
  await api.waitFor(async (a) => (await a.get(`/v1/plans/${plan.id}`)).phase === 'promoted', 30_000, 'the dry run is promoted');
  const after = await api.current();
  assert.equal(after.version, before.version, 'a dry run pushed a version');
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
