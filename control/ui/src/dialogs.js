// Confirmation dialogs for every action. Each shows what it will push (the
// diff against the current config), what it does to a plan running on the
// route, the matching database restore point when hooks recorded one, and a
// reason field; it sends the same request the CLI sends and shows the
// service's error in place when it refuses, or says that the outcome is
// unknown when no answer of the service says either way.

import { h, fill } from './dom.js';
import { diff } from './diff.js';
import * as fmt from './fmt.js';
import { committed, planReply } from './api.js';
import { S, active, planOf } from './state.js';

let dlg;
let onDone = () => {};

export function initDialogs(refresh) {
  dlg = document.getElementById('dlg');
  onDone = refresh;
  dlg.addEventListener('close', () => fill(dlg));
}

/** A table of config changes, or a line saying there are none. */
export function diffTable(rows, caption) {
  if (!rows.length) return h('p', { class: 'muted' }, 'No change to the config.');
  return h('table', { class: 'diff stack' },
    h('caption', null, caption),
    h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Field'), h('th', { scope: 'col' }, 'Before'), h('th', { scope: 'col' }, 'After'))),
    h('tbody', null, rows.map((r) => h('tr', null,
      h('th', { scope: 'row', class: 'mono', 'data-label': 'Field' }, r.path),
      h('td', { class: 'mono before', 'data-label': 'Before' }, fmt.value(r.before)),
      h('td', { class: 'mono after', 'data-label': 'After' }, fmt.value(r.after))))));
}

/** The restore points (ok hook runs' output) of a version, and any hook still running. */
export function restorePoints(version, label) {
  const runs = (version && version.hooks) || [];
  const ok = runs.filter((r) => r.status === 'ok' && r.output && r.output.trim());
  const pending = runs.filter((r) => r.status === 'queued' || r.status === 'running');
  const bad = runs.filter((r) => r.status === 'failed' || r.status === 'timeout');
  return h('div', { class: 'restore' },
    h('h3', null, 'Database restore point'),
    ok.length
      ? h('ul', null, ok.map((r) => h('li', null,
          h('span', null, `${label}, hook ${r.hook} (${r.event}${r.plan != null ? `, plan ${r.plan}` : ''}): `),
          h('code', null, r.output.trim()))))
      : h('p', { class: 'muted' }, runs.length ? `No restore point recorded for ${label}.` : `No hooks ran for ${label}: no restore point.`),
    pending.length ? h('p', { class: 'muted' }, `Still running: ${pending.map((r) => `${r.hook} (${r.status})`).join(', ')}.`) : null,
    bad.length ? h('p', { class: 'warn' }, `Failed: ${bad.map((r) => `${r.hook} (${r.status})`).join(', ')}.`) : null);
}

/**
 * The restore points of `version` as they are now: its hook runs are
 * fetched again when the dialog opens (S.current was fetched when the
 * version changed, maybe while a hook still ran).
 */
function restoreBox(version, label) {
  const box = h('div', { class: 'restore-box' }, restorePoints(version, label));
  S.api.version(version.version).then(
    (v) => fill(box, restorePoints(v, label)),
    (e) => box.append(h('p', { class: 'muted small' }, `Could not reload the hook runs (${e.message}): this may be out of date.`)));
  return box;
}

/** What a version that changes `routeId` does to the plan running on it, if one does. */
function planEffect(plan, text) {
  return plan ? h('p', { class: 'warn', 'data-role': 'plan-effect' }, text) : null;
}

/**
 * What a failed submit means. Only a refusal in the service's own words (a
 * 4xx JSON reply) says that nothing was written; no reply, a timeout, a 5xx
 * or a reply that is not the service's leave the outcome unknown.
 */
function errorLines(e, inDialog = true) {
  if (e && e.local) return [h('strong', null, 'Not sent: '), e.message];
  if (e && e.conflict) {
    return [
      h('strong', null, 'Someone changed this first: reload.'),
      ` ${e.currentVersion != null ? `Version ${e.currentVersion} is now current. ` : ''}The service said: `,
      h('q', null, e.message),
      inDialog ? ' ' : null,
      inDialog ? h('button', { type: 'button', class: 'link', 'data-role': 'reload', onclick: () => { dlg.close(); onDone(); } }, 'Reload') : null,
    ];
  }
  if (e && e.refused) {
    return [
      h('strong', null, 'Refused, nothing was written. '),
      `${e.status}: `,
      h('span', { 'data-role': 'server-error' }, e.message),
      e.field ? h('span', { class: 'field' }, ` (field ${e.field})`) : null,
    ];
  }
  return [
    h('strong', { 'data-role': 'unknown' }, 'Outcome unknown: '),
    'this may or may not have been written. ',
    e && e.json ? `${e.status}: ` : '',
    h('span', { 'data-role': 'server-error' }, e ? e.message : 'unknown error'),
    '. Reload the page and check the history before trying again.',
  ];
}

/**
 * Opens the dialog: `body` holds the fields, `submit()` sends the request
 * and returns a line to announce; while `ready()` is false it cannot be
 * confirmed. Returns `sync()`, to call when `ready()` may have changed.
 */
function open(title, { intro, confirmLabel, body, submit, reason = true, ready = () => true }) {
  const err = h('div', { class: 'error', role: 'alert', id: 'dlg-error' });
  const reasonBox = reason
    ? h('textarea', { id: 'dlg-reason', rows: 2, maxlength: 1024, 'aria-describedby': 'dlg-reason-help', spellcheck: 'true' })
    : null;
  const confirm = h('button', { type: 'submit', class: 'primary', 'data-role': 'confirm' }, confirmLabel);
  const cancel = h('button', { type: 'button', 'data-role': 'cancel', onclick: () => dlg.close() }, 'Cancel');
  const form = h('form', { novalidate: true },
    h('h2', { id: 'dlg-title' }, title),
    intro ? h('p', null, intro) : null,
    body,
    reason
      ? h('div', { class: 'field' },
          h('label', { for: 'dlg-reason' }, 'Reason (required)'),
          reasonBox,
          h('p', { id: 'dlg-reason-help', class: 'muted small' }, 'Recorded in the version and the audit log.'))
      : null,
    err,
    h('div', { class: 'buttons' }, cancel, confirm));
  let busy = false;
  const sync = () => { confirm.disabled = busy || !ready(); };
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (busy || !ready()) return;
    busy = true;
    sync();
    fill(err);
    try {
      const said = await submit(reasonBox ? reasonBox.value : undefined);
      // Closed meanwhile (Esc), maybe another dialog open now: leave it be.
      if (form.isConnected) dlg.close();
      announce(said);
      onDone();
    } catch (e) {
      if (form.isConnected) fill(err, errorLines(e));
      else announce(`${title}: `, errorLines(e, false));
    } finally {
      busy = false;
      sync();
    }
  });
  fill(dlg, form);
  dlg.showModal();
  sync();
  return sync;
}

/** Says something in the page's status area. */
export function announce(...text) {
  const n = document.getElementById('notice');
  if (!n) return;
  fill(n, ...text);
}

function route(id) {
  return S.current && S.current.config.routes.find((r) => r.id === id);
}

function parseNumber(text) {
  const t = text.trim();
  return /^-?\d+(\.\d+)?$/.test(t) ? Number(t) : t;
}

/** Set weight (or promote: weight 100) of a route, as a new version. */
export function setWeight(routeId, preset) {
  const cur = S.current;
  const r = route(routeId);
  if (!cur || !r) return;
  const expected = cur.version;
  const plan = planOf(routeId);
  const running = active(plan) ? plan : null;
  const input = h('input', { id: 'dlg-weight', type: 'text', inputmode: 'decimal', autocomplete: 'off', value: String(preset ?? r.new_weight), 'aria-describedby': 'dlg-weight-help' });
  const diffBox = h('div', { class: 'diffbox' });
  const effect = h('div', { class: 'effect' });
  const update = () => {
    const next = structuredClone(cur.config);
    next.routes.find((x) => x.id === routeId).new_weight = parseNumber(input.value);
    const rows = diff(cur.config, next);
    fill(diffBox, diffTable(rows, `What version ${expected + 1} changes`));
    // A patch of only the weight a plan ramps holds the plan; any other change to its route aborts it.
    fill(effect, rows.length && running
      ? planEffect(running, running.flag
        ? `Plan ${running.id} is running on route ${routeId} (it ramps flag ${running.flag}): changing the route's weight aborts it.`
        : `Plan ${running.id} is running on route ${routeId}: this weight holds it (paused, it does not ramp again until resumed).`)
      : null);
  };
  input.addEventListener('input', update);
  update();
  const promoting = preset === 100;
  open(promoting ? `Promote route ${routeId}` : `Set the weight of route ${routeId}`, {
    intro: `Pushes a new version on top of version ${expected} (send to new: ${fmt.percent(r.new_weight)} now).`,
    confirmLabel: promoting ? 'Promote' : 'Push weight',
    body: [
      h('div', { class: 'field' },
        h('label', { for: 'dlg-weight' }, 'Weight to new (%)'),
        input,
        h('p', { id: 'dlg-weight-help', class: 'muted small' }, '0 to 100, at most 4 decimals.')),
      diffBox,
      effect,
      restoreBox(cur, `current version ${expected}`),
    ],
    submit: async (reason) => {
      const percent = parseNumber(input.value);
      const v = committed(await S.api.createVersion({
        expected_version: expected,
        reason,
        patch: { op: 'set_weight', route: routeId, percent },
      }));
      return `Version ${v.version} committed: route ${routeId} at ${fmt.percent(percent)}; pushing to the edges.`;
    },
  });
  input.focus();
}

/** Promote: through the running plan when there is one, else weight 100 %. */
export function promote(routeId) {
  const plan = planOf(routeId);
  if (!active(plan)) return setWeight(routeId, 100);
  const cur = S.current;
  if (!cur) return;
  let body;
  if (plan.dry_run) {
    // A dry run pushes nothing, its promotion included.
    body = h('p', { 'data-role': 'dry-run' }, `Plan ${plan.id} is a dry run: promoting ends it as promoted and pushes nothing. The config stays as it is (route ${routeId} keeps ${fmt.percent(route(routeId)?.new_weight)} to new).`);
  } else {
    const next = structuredClone(cur.config);
    const r = next.routes.find((x) => x.id === routeId);
    if (plan.flag) {
      const f = (r.flags || []).find((x) => x.name === plan.flag);
      if (f) f.percent = 100;
    } else {
      r.new_weight = 100;
    }
    body = diffTable(diff(cur.config, next), 'What the plan will push');
  }
  open(`Promote plan ${plan.id} on route ${routeId}`, {
    intro: plan.dry_run
      ? `Plan ${plan.id} only measures. A plan command carries no reason: the audit log records who.`
      : `Plan ${plan.id} stops ramping and sets ${plan.flag ? `flag ${plan.flag}` : 'the weight'} to 100 % as its next version. A plan command carries no reason: the audit log records who.`,
    confirmLabel: 'Promote',
    reason: false,
    body: [body, restoreBox(cur, `current version ${cur.version}`)],
    submit: async () => {
      const p = planReply(await S.api.planCommand(plan.id, 'promote'));
      return `Plan ${p.id} promoted (${p.phase}).`;
    },
  });
}

/** Pause or resume a plan. */
export function planCommand(planId, command) {
  const plan = S.plans && S.plans.find((p) => String(p.id) === String(planId));
  if (!plan) return;
  const pausing = command === 'pause';
  open(`${pausing ? 'Pause' : 'Resume'} plan ${plan.id} on route ${plan.route}`, {
    intro: pausing
      ? `The plan holds at ${plan.weight != null ? fmt.percent(plan.weight) : 'its current weight'} until it is resumed: nothing is pushed now. A plan command carries no reason: the audit log records who.`
      : `The plan goes on from step ${plan.step} of ${plan.steps} (${plan.step_text}). A plan command carries no reason: the audit log records who.`,
    confirmLabel: pausing ? 'Pause plan' : 'Resume plan',
    reason: false,
    body: [h('p', { class: 'muted' }, 'No change to the config now.'), S.current ? restoreBox(S.current, `current version ${S.current.version}`) : null],
    submit: async () => {
      const p = planReply(await S.api.planCommand(plan.id, command));
      return `Plan ${p.id} ${pausing ? 'paused' : 'resumed'} (${p.phase}).`;
    },
  });
}

/** Plans running on a route that restoring `to` over `from` changes: the rollback aborts them. */
function rollbackEffects(from, to, running) {
  const hit = running.filter((p) => {
    const a = from.routes.find((r) => r.id === p.route);
    const b = ((to && to.routes) || []).find((r) => r.id === p.route);
    return a && (!b || diff(a, b).length > 0);
  });
  return hit.map((p) => planEffect(p, `Plan ${p.id} is running on route ${p.route}: this rollback changes the route, so it aborts the plan.`));
}

/** Roll back: to the previous version, a chosen one, or the one live at a time. */
export async function rollback(preset) {
  const cur = S.current;
  if (!cur) return;
  const expected = cur.version;
  let page;
  let plans;
  try {
    [page, plans] = await Promise.all([S.api.versions(100), S.api.plans(50)]);
  } catch (e) {
    announce(`Cannot open the rollback: ${e.message}`);
    return;
  }
  const running = plans.plans.filter(active);
  const older = page.versions.filter((v) => v.version < expected);
  const prev = older[0];
  const radio = (value, label, checked) => h('label', { class: 'radio' },
    h('input', { type: 'radio', name: 'dlg-target', value, checked }), ' ', label);
  const select = h('select', { id: 'dlg-version', 'aria-label': 'Version to restore' },
    older.map((v) => h('option', { value: v.version, selected: preset != null && v.version === preset },
      `v${v.version} · ${fmt.time(v.issued_at)} · ${v.actor}: ${v.reason.length > 60 ? `${v.reason.slice(0, 60)}…` : v.reason}`)));
  if (preset != null && !older.some((v) => v.version === preset)) {
    select.prepend(h('option', { value: preset, selected: true }, `v${preset}`));
  }
  const when = h('input', { id: 'dlg-at', type: 'datetime-local', step: 1, 'aria-label': 'Time whose version to restore' });
  const preview = h('div', { class: 'preview', 'aria-live': 'polite' });
  const fieldset = h('fieldset', null,
    h('legend', null, 'Restore'),
    radio('previous', prev ? `the previous version, v${prev.version} (${fmt.time(prev.issued_at)}, ${prev.actor})` : 'the previous version (there is none)', preset == null && !!prev),
    h('div', { class: 'radio-row' }, radio('version', 'version', preset != null || !prev), select),
    h('div', { class: 'radio-row' }, radio('at', 'as it was at', false), when));
  // What the confirmation sends: set only once its preview is shown.
  let target = null;
  let seq = 0;
  let sync = () => {};
  const choice = () => fieldset.querySelector('input[name=dlg-target]:checked')?.value;
  const refresh = async () => {
    const n = ++seq;
    const c = choice();
    target = null;
    sync();
    let req;
    if (c === 'previous' && prev) req = { to: prev.version, load: () => S.api.version(prev.version) };
    else if (c === 'version' && select.value) req = { to: Number(select.value), load: () => S.api.version(select.value) };
    else if (c === 'at' && when.value) {
      const d = new Date(when.value);
      if (Number.isNaN(d.getTime())) return fill(preview, h('p', { class: 'muted' }, 'Choose a time.'));
      const at = d.toISOString().replace(/\.\d+Z$/, 'Z');
      req = { at, load: () => S.api.at(at) };
    } else {
      return fill(preview, h('p', { class: 'muted' }, c === 'at' ? 'Choose a time.' : 'Choose a version.'));
    }
    fill(preview, h('p', { class: 'muted' }, 'Loading…'));
    try {
      const v = await req.load();
      if (n !== seq) return;
      fill(preview,
        h('p', null, `Restores the config of version ${v.version} (${fmt.time(v.issued_at)}, by `, h('span', { class: 'actor' }, v.actor), '): ', h('q', { class: 'reason' }, v.reason)),
        diffTable(diff(cur.config, v.config), `What version ${expected + 1} changes`),
        rollbackEffects(cur.config, v.config, running),
        restorePoints(v, `version ${v.version}`));
      target = req.to != null ? { to: req.to } : { at: req.at };
      sync();
    } catch (e) {
      if (n !== seq) return;
      // Not confirmable without seeing what it restores.
      fill(preview, h('p', { class: 'error' }, `Cannot show what this restores: ${e.message}`));
    }
  };
  // Focusing a choice's field chooses it: the preview follows at once.
  const pick = (value) => {
    const r = fieldset.querySelector(`input[value=${value}]`);
    if (!r.checked) {
      r.checked = true;
      refresh();
    }
  };
  fieldset.addEventListener('change', refresh);
  select.addEventListener('focus', () => pick('version'));
  when.addEventListener('focus', () => pick('at'));
  when.addEventListener('input', refresh);
  sync = open('Roll back', {
    intro: `Restores an earlier config as a new version on top of version ${expected}.`,
    confirmLabel: 'Roll back',
    body: [fieldset, preview],
    ready: () => target != null,
    submit: async (reason) => {
      if (!target) throw Object.assign(new Error('choose what to restore, and wait for its preview.'), { local: true });
      const v = committed(await S.api.rollback({ expected_version: expected, ...target, reason }));
      return `Version ${v.version} committed: rolled back (${v.reason}); pushing to the edges.`;
    },
  });
  refresh();
}
