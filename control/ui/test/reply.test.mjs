// What the page makes of answers that are not the service's, and of none:
// a redirect to a login page, HTML, a write's reply without its version, a
// 5xx, a refused connection or a call that never returns never read as
// "committed" nor as "nothing was written"; polling goes on through a hung
// call, a sign-out and sign-in during it, and a view that fails to render;
// a dialog closed during its submit reports in the status area and leaves
// the dialog open since alone; a rollback is confirmed only with its
// preview. The replies are made up in the browser (playwright's routing);
// the service is a real `rollout serve`.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { serve, browser, page, signIn, pageUrl, text, shows, twoVersions } from './env.mjs';

let env;
let b;
let url;

before(async () => {
  env = await serve();
  url = await pageUrl(env);
  b = await browser();
  await twoVersions(env);
});

after(async () => {
  await b?.close();
  await env?.stop();
});


/** A new page signed in with the deploy token, showing the current version. */
async function signedIn() {
  const p = await page(b);
  await signIn(p, url, env.tokens.deploy);
  const cur = await env.api().current();
  await shows(p, cur.version);
  return { p, cur };
}

/** The browser's own reports of the failures these tests make on purpose are expected. */
const unexpected = (p) => p.problems.filter((m) => !/Failed to load resource|net::ERR_|Failed to fetch|[Rr]edirect/.test(m));

/** Only the page's POSTs to `path` get `reply`; everything else goes to the service. */
const onPost = (p, path, reply) => p.route(`**${path}`, (route) => (route.request().method() === 'POST' ? reply(route) : route.fallback()));

async function openSetWeight(p, weight, reason) {
  await p.click('article[data-route=web] [data-action=set-weight]');
  await p.waitForSelector('#dlg[open] #dlg-weight');
  await p.fill('#dlg-weight', weight);
  await p.fill('#dlg-reason', reason);
}

test('a redirect, HTML, or a reply without a version is never "committed"', async () => {
  const { p, cur } = await signedIn();
  await p.route('**/login', (route) => route.fulfill({ status: 200, contentType: 'text/html', body: '<!doctype html><title>Log in</title><p>Log in</p>' }));
  const cases = [
    ['a 302 to a login page', (route) => route.fulfill({ status: 302, headers: { location: '/login' } }), /cannot be reached, or it redirected the request/],
    ['the login page itself (200, HTML)', (route) => route.fulfill({ status: 200, contentType: 'text/html', body: '<p>Log in</p>' }), /HTTP 200 with content type text\/html/],
    ['201 JSON without a version', (route) => route.fulfill({ status: 201, contentType: 'application/json', body: '{}' }), /the reply names no committed version/],
  ];
  for (const [name, reply, says] of cases) {
    await onPost(p, '/v1/versions', reply);
    await openSetWeight(p, '30', name);
    await p.click('#dlg [data-role=confirm]');
    await p.waitForSelector('#dlg-error [data-role=unknown]');
    const err = await text(p, '#dlg-error');
    assert.match(err, /^Outcome unknown: /, name);
    assert.match(err, says, `${name}: ${err}`);
    assert.match(err, /Reload the page and check the history/, name);
    assert.doesNotMatch(err, /nothing was written/, name);
    assert.doesNotMatch(await text(p, '#notice'), /committed|undefined/, name);
    assert.ok(await p.isVisible('#dlg'), `${name}: the dialog stays open`);
    await p.click('#dlg [data-role=cancel]');
    await p.unroute('**/v1/versions');
  }
  assert.equal((await env.api().current()).version, cur.version, 'nothing reached the service');
  assert.deepEqual(unexpected(p), []);
  await p.context().close();
});

test('no reply or a 5xx: the outcome is unknown; a 4xx of the service: nothing was written', async () => {
  const { p, cur } = await signedIn();
  const cases = [
    ['a refused connection', (route) => route.abort('connectionrefused'), /^Outcome unknown: .*cannot be reached/],
    ['a 500 of the service', (route) => route.fulfill({ status: 500, contentType: 'application/json', body: JSON.stringify({ error: 'store: disk I/O error; see the service log' }) }),
      /^Outcome unknown: this may or may not have been written\. 500: store: disk I\/O error; see the service log\. Reload/],
    ['a 502 of a proxy', (route) => route.fulfill({ status: 502, contentType: 'text/html', body: '<h1>Bad Gateway</h1>' }), /^Outcome unknown: .*HTTP 502 with content type text\/html/],
  ];
  for (const [name, reply, says] of cases) {
    await onPost(p, '/v1/versions', reply);
    await openSetWeight(p, '30', name);
    await p.click('#dlg [data-role=confirm]');
    await p.waitForSelector('#dlg-error strong');
    const err = await text(p, '#dlg-error');
    assert.match(err, says, `${name}: ${err}`);
    assert.doesNotMatch(err, /nothing was written/, name);
    await p.click('#dlg [data-role=cancel]');
    await p.unroute('**/v1/versions');
  }
  // The service's own refusal still says so.
  await openSetWeight(p, '101', 'too far');
  await p.click('#dlg [data-role=confirm]');
  await p.waitForSelector('#dlg-error strong');
  assert.match(await text(p, '#dlg-error'), /^Refused, nothing was written\. 400: /);
  await p.click('#dlg [data-role=cancel]');
  assert.equal((await env.api().current()).version, cur.version);
  assert.deepEqual(unexpected(p), []);
  await p.context().close();
});

test('a dialog closed during its submit: the outcome goes to the status area, the dialog open since stays', async () => {
  const { p, cur } = await signedIn();

  // A call that never returns: closed with Esc, it times out into the status area.
  await onPost(p, '/v1/versions', () => {});
  await openSetWeight(p, '30', 'never answered');
  await p.click('#dlg [data-role=confirm]');
  await p.keyboard.press('Escape');
  await p.waitForSelector('#dlg', { state: 'hidden' });
  await p.waitForFunction(() => /Outcome unknown/.test(document.getElementById('notice').textContent), null, { timeout: 20_000 });
  const notice = await text(p, '#notice');
  assert.match(notice, /^Set the weight of route web: Outcome unknown: .*no reply from the control service within 10 s/, notice);
  await p.unroute('**/v1/versions');

  // A slow success after Esc, with the rollback dialog open meanwhile: that one stays open.
  await onPost(p, '/v1/versions', async (route) => {
    await new Promise((r) => setTimeout(r, 3000));
    await route.continue();
  });
  await openSetWeight(p, '31', 'slow but fine');
  await p.click('#dlg [data-role=confirm]');
  await p.keyboard.press('Escape');
  await p.waitForSelector('#dlg', { state: 'hidden' });
  await p.click('.toolbar [data-action=rollback]');
  await p.waitForSelector('#dlg[open] .preview table.diff');
  await p.waitForFunction((n) => new RegExp(`Version ${n} committed`).test(document.getElementById('notice').textContent), cur.version + 1);
  assert.ok(await p.isVisible('#dlg .preview table.diff'), 'the rollback dialog is still open');
  await p.click('#dlg [data-role=cancel]');
  await p.unroute('**/v1/versions');
  const now = await env.api().current();
  assert.equal(now.version, cur.version + 1);
  assert.equal(now.reason, 'slow but fine');
  assert.deepEqual(unexpected(p), []);
  await p.context().close();
});

test('a rollback is confirmed only with its preview; focusing the time field chooses it', async () => {
  const { p, cur } = await signedIn();
  const prev = cur.version - 1;
  // The previous version cannot be loaded: nothing to confirm.
  await p.route(`**/v1/versions/${prev}`, (route) => route.fulfill({ status: 500, contentType: 'application/json', body: '{"error":"store: busy"}' }));
  await p.click('.toolbar [data-action=rollback]');
  await p.waitForSelector('#dlg[open] .preview p.error');
  assert.match(await text(p, '#dlg .preview'), /Cannot show what this restores: store: busy/);
  assert.ok(await p.isDisabled('#dlg [data-role=confirm]'), 'confirmable without a preview');
  await p.unroute(`**/v1/versions/${prev}`);
  // Choosing it again loads the preview: now it can be confirmed.
  await p.check('#dlg input[name=dlg-target][value=version]');
  await p.waitForSelector('#dlg .preview table.diff');
  assert.ok(await p.isEnabled('#dlg [data-role=confirm]'));
  // Focusing the time field chooses "as it was at": the preview says so and nothing can be sent yet.
  await p.focus('#dlg-at');
  await p.waitForFunction(() => document.querySelector('#dlg .preview')?.textContent === 'Choose a time.');
  assert.ok(await p.isChecked('#dlg input[name=dlg-target][value=at]'));
  assert.ok(await p.isDisabled('#dlg [data-role=confirm]'));
  await p.click('#dlg [data-role=cancel]');
  assert.equal((await env.api().current()).version, cur.version);
  assert.deepEqual(unexpected(p), []);
  await p.context().close();
});

test('polling goes on through a hung call, a sign-out and sign-in during it, and a view that fails to render', async () => {
  const p = await page(b);
  await signIn(p, url, env.tokens.read);
  await shows(p, (await env.api().current()).version);
  let mode = 'pass';
  let hung;
  const hanging = new Promise((r) => { hung = r; });
  await p.route('**/v1/status', async (route) => {
    if (mode === 'hang') {
      mode = 'pass';
      hung();
      return; // never answered: the page's own timeout ends the call
    }
    if (mode === 'bad') {
      mode = 'pass';
      const r = await route.fetch();
      await route.fulfill({ response: r, json: { ...(await r.json()), edges: null } });
      return;
    }
    await route.fallback();
  });
  mode = 'hang';
  await hanging;
  await p.click('#sign-out');
  await p.waitForSelector('#signin:not([hidden])');
  await p.fill('#token', env.tokens.read);
  await p.click('#signin-form button[type=submit]');
  await p.waitForSelector('#nav:not([hidden])');
  const v = await env.api(env.tokens.deploy).setWeight('web', 33, 'while the page polls');
  await shows(p, v.version);
  assert.equal(await text(p, 'article[data-route=web] [data-role=weight]'), '33 %');

  // A status the strip cannot draw: said in place, and the next round draws again.
  mode = 'bad';
  await p.waitForSelector('#render-error:not(:empty)');
  assert.match(await text(p, '#render-error'), /^Could not render the routes view: /);
  await p.waitForSelector('#render-error:empty', { state: 'attached' });
  const w = await env.api(env.tokens.deploy).setWeight('web', 34, 'after the error');
  await shows(p, w.version);
  await p.waitForSelector('[data-role=converge-text]');
  assert.deepEqual(unexpected(p), []);
  await p.context().close();
});
