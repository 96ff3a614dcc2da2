// Bad input from the page: the service's own error is shown in the dialog
// and nothing is written. Text from CI is shown as text and runs nothing.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { up, browser, page, signIn, pageUrl, text, shows } from './env.mjs';

let env;
let b;
let url;

before(async () => {
  env = await up();
  url = await pageUrl(env);
  b = await browser();
});

after(async () => {
  await b?.close();
  await env?.stop();
});


/** Opens the set-weight dialog on route web with the page on the current version. */
async function openSetWeight(p) {
  const cur = await env.api().current();
  await shows(p, cur.version);
  await p.click('article[data-route=web] [data-action=set-weight]');
  await p.waitForSelector('#dlg[open] #dlg-weight');
  return cur;
}

/** What the service answers to this set_weight request itself (a refused one writes nothing). */
async function serverSays(expected, percent, reason) {
  const r = await env.api().post('/v1/versions', { expected_version: expected, reason, patch: { op: 'set_weight', route: 'web', percent } });
  assert.ok(r.status >= 400, `expected a refusal, got ${r.status}`);
  return r.json;
}

test('weight 101 and an empty reason: the service\'s error in place, nothing written', async () => {
  const p = await page(b);
  await signIn(p, url, env.tokens.deploy);
  const cur = await openSetWeight(p);

  await p.fill('#dlg-weight', '101');
  await p.fill('#dlg-reason', 'too far');
  await p.click('#dlg [data-role=confirm]');
  await p.waitForSelector('#dlg-error [data-role=server-error]');
  const says = await serverSays(cur.version, 101, 'too far');
  assert.equal(await text(p, '#dlg-error [data-role=server-error]'), says.error);
  assert.match(await text(p, '#dlg-error'), /^Refused, nothing was written\. 400: /);
  if (says.field) assert.match(await text(p, '#dlg-error'), new RegExp(`field ${says.field.replace(/[[\].]/g, '\\$&')}`));
  assert.ok(await p.isVisible('#dlg'), 'the dialog stays open');

  // An empty reason reaches the service as typed.
  await p.fill('#dlg-weight', '20');
  await p.fill('#dlg-reason', '');
  await p.click('#dlg [data-role=confirm]');
  await p.waitForFunction(() => !document.getElementById('dlg').open
    || /reason/.test(document.querySelector('#dlg-error')?.textContent || ''));
  assert.equal((await env.api().current()).version, cur.version, 'the service accepted an empty reason: a version was written');
  const empty = await serverSays(cur.version, 20, '');
  assert.match(empty.error, /must not be empty/);
  assert.equal(await text(p, '#dlg-error [data-role=server-error]'), empty.error);
  assert.match(await text(p, '#dlg-error'), /field reason/);

  assert.equal((await env.api().current()).version, cur.version, 'nothing was written');
  assert.equal((await env.api().get('/v1/versions?limit=50')).versions.length, cur.version);
  await p.click('#dlg [data-role=cancel]');
  assert.deepEqual(p.problems, []);
  await p.context().close();
});

test('a stale version: "someone changed this first", nothing written, reload shows theirs', async () => {
  const p = await page(b);
  await signIn(p, url, env.tokens.deploy);
  const cur = await openSetWeight(p);
  // Someone else pushes while the dialog is open.
  const theirs = await env.api().setWeight('web', 15, 'someone else');
  await p.fill('#dlg-weight', '30');
  await p.fill('#dlg-reason', 'mine');
  await p.click('#dlg [data-role=confirm]');
  await p.waitForSelector('#dlg-error strong');
  const says = await serverSays(cur.version, 30, 'mine');
  assert.match(await text(p, '#dlg-error'), /Someone changed this first: reload\./);
  assert.ok((await text(p, '#dlg-error')).includes(says.error), 'the service\'s message is shown');
  assert.match(await text(p, '#dlg-error'), new RegExp(`Version ${theirs.version} is now current`));
  const now = await env.api().current();
  assert.equal(now.version, theirs.version, 'nothing was written');
  assert.equal(now.reason, 'someone else');
  await p.click('#dlg-error [data-role=reload]');
  await p.waitForSelector('#dlg', { state: 'hidden' });
  await shows(p, theirs.version);
  assert.equal(await text(p, 'article[data-route=web] [data-role=weight]'), '15 %');
  assert.deepEqual(p.problems, []);
  await p.context().close();
});

test('a reason with markup is shown as text everywhere and runs nothing', async () => {
  const evil = '<img src=x onerror=alert(1)>';
  const v = await env.api().setWeight('web', 11, evil);
  await env.api().converged(v.version);
  const p = await page(b);
  await signIn(p, url, env.tokens.deploy);
  await shows(p, v.version);
  assert.equal(await text(p, '.toolbar .reason'), evil);
  const top = await env.api().setWeight('web', 12, 'on top');
  await env.api().converged(top.version);
  await p.goto(`${url}/#/history`);
  await p.waitForSelector(`li[data-version="${top.version}"]`);
  assert.equal(await text(p, `li[data-version="${v.version}"] .reason`), evil);
  await p.waitForFunction((e) => [...document.querySelectorAll('.audit td.detail')].some((td) => td.textContent.includes(e)), evil);
  // In the rollback dialog's choices and its preview too.
  await p.goto(`${url}/#/routes`);
  await shows(p, top.version);
  await p.click('.toolbar [data-action=rollback]');
  await p.waitForSelector('#dlg[open] #dlg-version');
  const options = await p.locator('#dlg-version option').allTextContents();
  assert.ok(options.some((o) => o.includes(evil)), options.join('\n'));
  await p.check('#dlg input[name=dlg-target][value=version]');
  await p.selectOption('#dlg-version', String(v.version));
  await p.waitForFunction((e) => document.querySelector('#dlg .preview q.reason')?.textContent === e, evil);
  await p.click('#dlg [data-role=cancel]');
  await p.waitForTimeout(1500);
  assert.equal(await p.locator('img').count(), 0, 'no element was made from the text');
  assert.equal(await p.evaluate(() => document.body.innerHTML.includes('<img')), false);
  assert.deepEqual(p.problems, [], 'no alert, no error');
  await p.context().close();
});
