// The database restore point in the confirmations: a `rollout serve` whose
// hook records one for each version (as a pg_create_restore_point hook
// would print it); set weight shows the current version's, a rollback the
// one of the version it restores, as they are when the dialog opens (not
// as they were when the page first read the version).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { serve, browser, page, signIn, pageUrl, text, twoVersions } from './env.mjs';

let env;
let b;
let url;

const hooks = {
  hooks: [{
    name: 'pg-restore-point',
    on: ['version'],
    // Slow enough that the page reads a new version while its hook still runs.
    command: ['sh', '-c', 'sleep 2; echo "restore_point=rollout-v$ROLLOUT_VERSION lsn=0/30000$ROLLOUT_VERSION"'],
    timeout: '10s',
  }],
};

before(async () => {
  env = await serve({ 'hooks.json': JSON.stringify(hooks) });
  url = await pageUrl(env);
  b = await browser();
  const api = await twoVersions(env);
  await api.waitFor(async (a) => {
    const runs = await Promise.all([1, 2].map(async (n) => (await a.get(`/v1/versions/${n}`)).hooks || []));
    return runs.every((r) => r.some((h) => h.status === 'ok'));
  }, 20_000, 'both versions have their restore point');
});

after(async () => {
  await b?.close();
  await env?.stop();
});


test('the confirmations name the restore point that matches', async () => {
  const p = await page(b);
  await signIn(p, url, env.tokens.deploy);
  await p.waitForFunction(() => document.querySelector('.toolbar .current strong')?.textContent === 'Version 2');
  await p.click('article[data-route=web] [data-action=set-weight]');
  await p.waitForSelector('#dlg[open] .restore');
  assert.match(await text(p, '#dlg .restore'), /current version 2, hook pg-restore-point \(version\): restore_point=rollout-v2 lsn=0\/300002/);
  await p.click('#dlg [data-role=cancel]');

  await p.click('.toolbar [data-action=rollback]');
  await p.waitForSelector('#dlg[open] .preview .restore');
  assert.match(await text(p, '#dlg .preview .restore'), /version 1, hook pg-restore-point \(version\): restore_point=rollout-v1 lsn=0\/300001/);
  await p.fill('#dlg-reason', 'back to 10 %');
  await p.click('#dlg [data-role=confirm]');
  await p.waitForSelector('#dlg', { state: 'hidden' });
  const cur = await env.api().current();
  assert.equal(cur.version, 3);
  assert.equal(cur.config.routes[0].new_weight, 10);
  assert.deepEqual(p.problems, []);
  await p.context().close();
});

test('a confirmation shows the restore point of a hook that finished after the page read the version', async () => {
  const p = await page(b);
  await signIn(p, url, env.tokens.deploy);
  const before = await env.api().current();
  await p.waitForFunction((n) => document.querySelector('.toolbar .current strong')?.textContent === `Version ${n}`, before.version);
  const v = await env.api(env.tokens.deploy).setWeight('web', 25, 'ci: canary 25 %');
  // The page reads the new version at once, while its hook sleeps.
  await p.waitForFunction((n) => document.querySelector('.toolbar .current strong')?.textContent === `Version ${n}`, v.version);
  await env.api().waitFor(async (a) => ((await a.get(`/v1/versions/${v.version}`)).hooks || []).some((h) => h.status === 'ok'), 20_000, 'the restore point of the new version');
  await p.click('article[data-route=web] [data-action=set-weight]');
  await p.waitForSelector('#dlg[open] .restore');
  await p.waitForFunction((n) => document.querySelector('#dlg .restore')?.textContent.includes(`restore_point=rollout-v${n} `), v.version);
  assert.doesNotMatch(await text(p, '#dlg .restore'), /Still running/);
  await p.click('#dlg [data-role=cancel]');
  assert.deepEqual(p.problems, []);
  await p.context().close();
});
