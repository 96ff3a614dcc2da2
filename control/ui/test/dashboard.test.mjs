// The dashboard in a real browser against `rollout up`: sign-in, a push
// converging, set weight and roll back through their confirmations, the
// live edge table, and what a read token sees.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { up, browser, page, signIn, pageUrl, CSP, text, shows } from './env.mjs';

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



test('the service serves the page and its assets with a strict CSP', async () => {
  for (const [path, type] of [['/', 'text/html'], ['/ui/app.js', 'text/javascript'], ['/ui/app.css', 'text/css']]) {
    const r = await fetch(env.url + path);
    assert.equal(r.status, 200, path);
    assert.ok(r.headers.get('content-type').startsWith(type), `${path}: ${r.headers.get('content-type')}`);
    assert.equal(r.headers.get('content-security-policy'), CSP, path);
  }
  const html = await (await fetch(`${env.url}/`)).text();
  assert.match(html, /<script type="module" src="\/ui\/app.js"><\/script>/);
  assert.doesNotMatch(html, /<script>|style=/);
});

test('sign-in: a wrong token is refused in place; the token lives in session storage only', async () => {
  const p = await page(b);
  await p.goto(`${url}/`);
  await p.fill('#token', 'not-a-token');
  await p.click('#signin-form button[type=submit]');
  await p.waitForSelector('#signin-error:not(:empty)');
  assert.match(await text(p, '#signin-error'), /401/);
  assert.ok(await p.isHidden('#nav'));

  await p.fill('#token', env.tokens.deploy);
  await p.click('#signin-form button[type=submit]');
  await p.waitForSelector('#nav:not([hidden])');
  assert.match(await text(p, '#who-text'), /deployer \(deploy\)/);
  await p.waitForSelector('article[data-route=web] [data-role=weight]');
  assert.equal(await text(p, 'article[data-route=web] [data-role=weight]'), '10 %');
  const stored = await p.evaluate(() => ({ session: { ...sessionStorage }, local: localStorage.length, cookie: document.cookie }));
  assert.deepEqual(stored, { session: { 'rollout.token': env.tokens.deploy }, local: 0, cookie: '' });

  // A reload keeps the tab signed in; signing out forgets the token.
  await p.reload();
  await p.waitForSelector('#nav:not([hidden])');
  await p.click('#sign-out');
  await p.waitForSelector('#signin:not([hidden])');
  assert.equal(await p.evaluate(() => sessionStorage.length), 0);
  assert.deepEqual(p.problems, []);
  await p.context().close();
});

test('a push converges: the bar fills and the edge table shows the new version', async () => {
  const p = await page(b);
  await signIn(p, url, env.tokens.read);
  await p.goto(`${url}/#/edges`);
  await p.waitForSelector('table.edges tbody tr');
  // Every state the strip goes through, as the page renders it.
  await p.evaluate(() => {
    window.seen = [];
    new MutationObserver(() => {
      const c = document.querySelector('.converge');
      if (c) window.seen.push(`${c.dataset.version}:${c.dataset.acked}/${c.dataset.total}`);
    }).observe(document.getElementById('strip'), { subtree: true, attributes: true, childList: true });
  });
  const before = await env.api().count();
  const v = await env.api().setWeight('web', 20, 'ci: canary 20 %');
  assert.equal(v.version, before + 1);
  await p.waitForFunction((n) => {
    const c = document.querySelector('.converge');
    return c && c.dataset.version === String(n) && c.dataset.acked === '2';
  }, v.version);
  assert.equal(await p.getAttribute('.converge [role=progressbar]', 'aria-valuenow'), '2');
  assert.match(await text(p, '[data-role=converge-text]'), new RegExp(`Version ${v.version}: all 2 edges hold it`));
  for (const edge of env.edges) {
    await p.waitForFunction(([u, n]) => document.querySelector(`tr[data-edge="${u}"] [data-role=held]`)?.textContent === `v${n}`, [edge, v.version]);
  }
  const seen = await p.evaluate(() => window.seen);
  assert.ok(seen.includes(`${v.version}:2/2`), seen.join(' '));
  assert.deepEqual(p.problems, []);
  await p.context().close();
});

test('set a weight: the confirmation shows the diff and the reason, the service records who and why', async () => {
  const p = await page(b);
  await signIn(p, url, env.tokens.deploy);
  const card = 'article[data-route=web]';
  await p.waitForSelector(`${card} [data-action=set-weight]`);
  const cur = await env.api().current();
  const was = cur.config.routes.find((r) => r.id === 'web').new_weight;
  await shows(p, cur.version);
  await p.click(`${card} [data-action=set-weight]`);
  await p.waitForSelector('#dlg[open]');
  await p.fill('#dlg-weight', '35');
  // The diff is what this version will push.
  const row = await p.locator('#dlg table.diff tbody tr').allTextContents();
  assert.deepEqual(row, [`routes[web].new_weight${was}35`]);
  assert.match(await text(p, '#dlg .restore'), /No hooks ran for .*: no restore point/);
  await p.fill('#dlg-reason', 'ramp to 35 % after a quiet hour');
  await p.click('#dlg [data-role=confirm]');
  await p.waitForSelector('#dlg', { state: 'hidden' });
  await p.waitForFunction(() => document.querySelector('article[data-route=web] [data-role=weight]')?.textContent === '35 %');
  assert.match(await text(p, '#notice'), new RegExp(`Version ${cur.version + 1} committed`));

  const now = await env.api().current();
  assert.equal(now.version, cur.version + 1);
  assert.equal(now.config.routes.find((r) => r.id === 'web').new_weight, 35);
  assert.equal(now.actor, 'deployer');
  assert.equal(now.reason, 'ramp to 35 % after a quiet hour');
  const audit = (await env.api().get('/v1/audit')).audit;
  assert.ok(audit.some((a) => a.actor === 'deployer' && a.detail.includes('ramp to 35 % after a quiet hour')), JSON.stringify(audit[0]));
  await env.api().converged(now.version);
  assert.deepEqual(p.problems, []);
  await p.context().close();
});

test('roll back with confirmation: to the previous version, then to a chosen one from the history', async () => {
  const p = await page(b);
  await signIn(p, url, env.tokens.deploy);
  await env.api().converged((await env.api().setWeight('web', 42, 'ci: canary 42 %')).version);
  const before = await env.api().current();
  const prev = (await env.api().get('/v1/versions?limit=2')).versions[1];
  const prevConfig = (await env.api().get(`/v1/versions/${prev.version}`)).config;
  await shows(p, before.version);
  await p.waitForSelector('[data-action=rollback]');
  await p.click('.toolbar [data-action=rollback]');
  await p.waitForSelector('#dlg[open] #dlg-version');
  // The previous version is chosen; its diff and restore point show.
  await p.waitForSelector('#dlg .preview table.diff');
  const diffText = await text(p, '#dlg .preview table.diff tbody');
  const w0 = before.config.routes[0].new_weight;
  const w1 = prevConfig.routes[0].new_weight;
  assert.ok(diffText.includes(`routes[web].new_weight${w0}${w1}`), diffText);
  assert.match(await text(p, '#dlg .preview'), new RegExp(`version ${prev.version}`));
  await p.fill('#dlg-reason', 'errors went up');
  await p.click('#dlg [data-role=confirm]');
  await p.waitForSelector('#dlg', { state: 'hidden' });
  const rb = await env.api().current();
  assert.equal(rb.version, before.version + 1);
  assert.equal(rb.config.routes[0].new_weight, w1);
  assert.match(rb.reason, new RegExp(`^rollback to version ${prev.version}\\b.*: errors went up$`));
  await p.waitForFunction((w) => document.querySelector('article[data-route=web] [data-role=weight]')?.textContent === `${w} %`, w1);

  // From the history: the timeline marks the rollback; roll back to version 1.
  await p.goto(`${url}/#/history`);
  await p.waitForSelector(`li[data-version="${rb.version}"].is-rollback`);
  assert.ok(await p.locator('svg.chart .rollback').count() >= 1);
  await p.click('li[data-version="1"] [data-action=rollback]');
  await p.waitForSelector('#dlg[open] .preview table.diff, #dlg[open] .preview p.muted');
  assert.equal(await p.inputValue('#dlg-version'), '1');
  await p.fill('#dlg-reason', 'back to the first canary');
  await p.click('#dlg [data-role=confirm]');
  await p.waitForSelector('#dlg', { state: 'hidden' });
  const rb2 = await env.api().current();
  assert.equal(rb2.version, rb.version + 1);
  assert.match(rb2.reason, /^rollback to version 1\b.*: back to the first canary$/);
  await p.waitForSelector(`li[data-version="${rb2.version}"].is-rollback`);
  await env.api().converged(rb2.version);
  assert.deepEqual(p.problems, []);
  await p.context().close();
});

test('roll back "as of" a time: the version live then', async () => {
  const p = await page(b);
  await signIn(p, url, env.tokens.deploy);
  const v1 = await env.api().get('/v1/versions/1');
  const before = await env.api().current();
  await shows(p, before.version);
  await p.waitForSelector('.toolbar [data-action=rollback]');
  await p.click('.toolbar [data-action=rollback]');
  await p.waitForSelector('#dlg[open] #dlg-at');
  // Just after version 1 was issued, in the browser's time zone.
  const local = await p.evaluate((iso) => {
    const d = new Date(new Date(iso).getTime() + 1000);
    const pad = (n) => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }, v1.issued_at);
  await p.check('#dlg input[name=dlg-target][value=at]');
  await p.fill('#dlg-at', local);
  await p.waitForFunction(() => /Restores the config of version/.test(document.querySelector('#dlg .preview')?.textContent || ''));
  await p.fill('#dlg-reason', 'as it was');
  await p.click('#dlg [data-role=confirm]');
  await p.waitForSelector('#dlg', { state: 'hidden' });
  const now = await env.api().current();
  assert.equal(now.version, before.version + 1);
  assert.match(now.reason, /^rollback to version \d+ \(live at .*as it was$/);
  await env.api().converged(now.version);
  assert.deepEqual(p.problems, []);
  await p.context().close();
});

test('the edge table follows the edges: a new edge appears, versions move, a removed one goes', async () => {
  const p = await page(b);
  await signIn(p, url, env.tokens.read);
  await p.goto(`${url}/#/edges`);
  await p.waitForSelector('table.edges tbody tr');
  assert.equal(await p.locator('table.edges tbody tr').count(), 2);
  // An edge nobody answers at (port 9, discard: nothing listens on loopback).
  const dead = 'http://127.0.0.1:9';
  const added = await env.api().post('/v1/edges', { url: dead });
  assert.equal(added.status, 201, JSON.stringify(added.json));
  await p.waitForSelector(`tr[data-edge="${dead}"]`);
  await p.waitForFunction((u) => document.querySelector(`tr[data-edge="${u}"]`)?.dataset.state !== 'ACK', dead);
  assert.match(await text(p, `tr[data-edge="${dead}"] td[data-label=State]`), /STALE|UNREACHABLE|NACK/);
  assert.match(await text(p, '[data-role=converge-text]'), /2 of 3 edges hold it/);
  const v = await env.api().setWeight('web', 12);
  for (const edge of env.edges) {
    await p.waitForFunction(([u, n]) => document.querySelector(`tr[data-edge="${u}"] [data-role=held]`)?.textContent === `v${n}`, [edge, v.version]);
  }
  assert.notEqual(await text(p, `tr[data-edge="${dead}"] [data-role=held]`), `v${v.version}`);
  const removed = await env.api().del(`/v1/edges?url=${encodeURIComponent(dead)}`);
  assert.equal(removed.status, 200, JSON.stringify(removed.json));
  await p.waitForSelector(`tr[data-edge="${dead}"]`, { state: 'detached' });
  await p.waitForFunction(() => /all 2 edges hold it/.test(document.querySelector('[data-role=converge-text]')?.textContent));
  assert.deepEqual(p.problems, []);
  await p.context().close();
});

test('a read token sees everything and no action', async () => {
  const p = await page(b);
  await signIn(p, url, env.tokens.read);
  assert.match(await text(p, '#who-text'), /viewer \(read\)/);
  await p.waitForSelector('article[data-route=web] [data-role=weight]');
  await p.waitForSelector('[data-role=read-only]');
  for (const view of ['routes', 'edges', 'history']) {
    await p.goto(`${url}/#/${view}`);
    await p.waitForFunction((v) => (document.documentElement.dataset.ready || '').split(' ').includes(v), view);
    const acting = await p.locator('main [data-action=set-weight], main [data-action=promote], main [data-action=rollback], main [data-action=pause], main [data-action=resume]').count();
    assert.equal(acting, 0, `${view}: action buttons for a read token`);
  }
  assert.deepEqual(p.problems, []);
  await p.context().close();
});

test('history: a diff of any two versions, field by field', async () => {
  const a = await env.api().setWeight('web', 7, 'ci: diff me (a)');
  const bV = await env.api().setWeight('web', 9, 'ci: diff me (b)');
  const p = await page(b);
  await signIn(p, url, env.tokens.read);
  await p.goto(`${url}/#/history`);
  await p.waitForSelector(`li[data-version="${bV.version}"]`);
  // "Diff with the previous" on a version.
  await p.click(`li[data-version="${bV.version}"] [data-action=diff]`);
  await p.waitForFunction((t) => document.querySelector('#diff-out caption')?.textContent === t, `From version ${a.version} to version ${bV.version}`);
  assert.deepEqual(await p.locator('#diff-out tbody tr').allTextContents(), ['routes[web].new_weight79']);
  // Any two, typed in.
  await p.fill('#diff-a', '1');
  await p.fill('#diff-b', String(bV.version));
  await p.click('.diff-form button[type=submit]');
  await p.waitForFunction((t) => document.querySelector('#diff-out caption')?.textContent === t, `From version 1 to version ${bV.version}`);
  assert.deepEqual(await p.locator('#diff-out tbody tr').allTextContents(), ['routes[web].new_weight109']);
  // A version that does not exist: the service's answer, in place.
  await p.fill('#diff-b', '99999');
  await p.click('.diff-form button[type=submit]');
  await p.waitForSelector('#diff-out p.error');
  assert.deepEqual(p.problems.filter((m) => !m.includes('404')), []);
  await p.context().close();
});
