// The history view: each route's weight over time (rollbacks marked) with
// its plans' check measurements under it, the versions as a timeline, a
// diff of any two versions, and the audit log.

import { h } from './dom.js';
import * as fmt from './fmt.js';
import { diff } from './diff.js';
import { diffTable } from './dialogs.js';
import { weightChart, checkChart } from './charts.js';
import { S, canAct, active } from './state.js';

/** How often the history view reloads the plans and the check points while a plan runs. */
const RUNNING_MS = 5000;

/** Loads what the history view shows, for the committed version. */
export async function loadHistory() {
  const version = S.status ? S.status.version : null;
  const [tl, audit, plans] = await Promise.all([S.api.timeline(2000), S.api.audit(), S.api.plans(50)]);
  const history = { timeline: tl.versions, audit: audit.audit, plans: plans.plans, checkedAt: Date.now() };
  await Promise.all(routeIds(history).map((id) => loadChecks(history, id)));
  S.history = history;
  S.historyVersion = version;
  keepShown(history);
}

/**
 * While a plan runs, every RUNNING_MS: the plans again, and the check
 * points of the plans on the charts that ran at the last look (so a plan
 * that just ended gets its last points too).
 */
export async function refreshRunning() {
  const hist = S.history;
  if (!hist || !hist.plans.some(active) || Date.now() - hist.checkedAt < RUNNING_MS) return;
  const { plans } = await S.api.plans(50);
  const next = { ...hist, plans, checkedAt: Date.now() };
  await Promise.all(routeIds(next).map((id) => {
    const was = chartPlan(hist, id);
    return loadChecks(next, id, !!was && active(was));
  }));
  if (S.history !== hist) return;
  S.history = next;
  keepShown(next);
}

function routeIds(history) {
  const ids = [];
  for (const v of history.timeline) for (const r of v.routes || []) if (!ids.includes(r.id)) ids.push(r.id);
  return ids;
}

function chartPlan(history, routeId) {
  const plans = history.plans.filter((p) => p.route === routeId);
  const chosen = S.chartPlan.get(routeId);
  return plans.find((p) => p.id === chosen) || plans[0] || null;
}

/** Fetches the check points of the plan chosen for a route (again while it runs, or when `again`). */
export async function loadChecks(history, routeId, again = false) {
  const plan = chartPlan(history, routeId);
  if (!plan || (S.checks.has(plan.id) && !active(plan) && !again)) return;
  const r = await S.api.planChecks(plan.id, 500);
  S.checks.set(plan.id, r.checks);
}

/** Forgets the check points of every plan not on the charts. */
export function keepShown(history) {
  if (!history) return;
  const shown = new Set(routeIds(history).map((id) => chartPlan(history, id)?.id));
  for (const id of S.checks.keys()) if (!shown.has(id)) S.checks.delete(id);
}

function legend(items) {
  return h('ul', { class: 'legend' }, items.map(([cls, text]) => h('li', null, h('span', { class: `swatch ${cls}`, 'aria-hidden': 'true' }), text)));
}

function routeCharts(history, routeId, now, width) {
  const plans = history.plans.filter((p) => p.route === routeId);
  const plan = chartPlan(history, routeId);
  const points = plan ? S.checks.get(plan.id) || [] : [];
  const names = [...new Set(points.map((p) => p.name))];
  return h('section', { class: 'card chart-card', 'data-key': routeId, 'aria-labelledby': `chart-${routeId}` },
    h('h3', { id: `chart-${routeId}` }, `Route ${routeId}: weight to new`),
    weightChart(history.timeline, routeId, now, width),
    legend([['weight', 'weight to new'], ['rollback', 'rollback']]),
    plan
      ? h('div', { class: 'checks-chart' },
          h('div', { class: 'chart-head' },
            h('h4', null, `Checks of plan ${plan.id}: error rate, new against old`),
            plans.length > 1
              ? h('label', { class: 'inline' }, 'Plan ',
                  h('select', { 'data-action': 'chart-plan', 'data-route': routeId },
                    plans.map((p) => h('option', { value: p.id, selected: p.id === plan.id }, `${p.id} (${p.phase}, ${fmt.time(p.started_at)})`))))
              : null),
          names.length
            ? [names.map((n) => h('figure', { 'data-key': n }, h('figcaption', null, `Check ${n}`), checkChart(points, n, width))),
               legend([['old', 'old'], ['new', 'new'], ['fail', 'failed interval']])]
            : h('p', { class: 'muted' }, 'No measurement recorded yet.'))
      : null);
}

function versionItem(v, prev) {
  return h('li', { class: `version${v.rollback ? ' is-rollback' : ''}`, 'data-key': String(v.version), 'data-version': v.version },
    h('div', { class: 'v-head' },
      h('strong', { class: 'v-num' }, `v${v.version}`),
      v.action && !(v.rollback && v.action === 'rollback') ? h('span', { class: 'badge' }, v.action) : null,
      v.rollback ? h('span', { class: 'badge rollback' }, 'rollback') : null,
      h('time', { datetime: v.issued_at }, fmt.time(v.issued_at)),
      h('span', null, 'by ', h('span', { class: 'actor' }, v.actor)),
      h('span', { class: 'muted' }, v.converged_ms != null ? `converged in ${fmt.ms(v.converged_ms)}` : 'not converged')),
    h('p', { class: 'reason' }, v.reason),
    h('div', { class: 'v-actions' },
      prev ? h('button', { type: 'button', class: 'link', 'data-action': 'diff', 'data-a': prev.version, 'data-b': v.version }, `Diff with v${prev.version}`) : null,
      canAct() && S.status && v.version !== S.status.version
        ? h('button', { type: 'button', class: 'link', 'data-action': 'rollback', 'data-to': v.version }, `Roll back to v${v.version}…`)
        : null));
}

function diffSection() {
  const d = S.diff;
  return h('section', { class: 'card', 'aria-labelledby': 'diff-title' },
    h('h2', { id: 'diff-title' }, 'Diff two versions'),
    h('form', { class: 'diff-form', 'data-action': 'diff-form', novalidate: true },
      h('label', { for: 'diff-a' }, 'From version'),
      h('input', { id: 'diff-a', name: 'a', type: 'number', min: 1, inputmode: 'numeric' }),
      h('label', { for: 'diff-b' }, 'to version'),
      h('input', { id: 'diff-b', name: 'b', type: 'number', min: 1, inputmode: 'numeric' }),
      h('button', { type: 'submit' }, 'Show diff')),
    h('div', { id: 'diff-out', 'aria-live': 'polite' },
      !d ? null
        : d.error ? h('p', { class: 'error' }, d.error)
        : diffTable(d.rows, `From version ${d.a} to version ${d.b}`)));
}

/** Fetches two versions and diffs their configs. */
export async function runDiff(a, b) {
  try {
    const [va, vb] = await Promise.all([S.api.version(a), S.api.version(b)]);
    S.diff = { a: va.version, b: vb.version, rows: diff(va.config, vb.config) };
  } catch (e) {
    S.diff = { error: `${e.message}` };
  }
}

function auditSection(history) {
  const rows = history.audit.slice(0, 25);
  return h('section', { class: 'card', 'aria-labelledby': 'audit-title' },
    h('h2', { id: 'audit-title' }, 'Audit log'),
    rows.length
      ? h('table', { class: 'audit stack' },
          h('caption', { class: 'vh' }, 'Newest first'),
          h('thead', null, h('tr', null, ['When', 'Who', 'Action', 'Detail'].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', null, rows.map((a, i) => h('tr', { 'data-key': `${a.at}/${i}` },
            h('td', { 'data-label': 'When' }, h('time', { datetime: a.at }, fmt.time(a.at))),
            h('td', { 'data-label': 'Who', class: 'actor' }, a.actor),
            h('td', { 'data-label': 'Action' }, a.action),
            h('td', { 'data-label': 'Detail', class: 'detail' }, a.detail)))))
      : h('p', { class: 'muted' }, 'Nothing yet.'));
}

/** The history view's content. */
export function historyView() {
  const hist = S.history;
  if (!hist) return h('p', { class: 'muted' }, 'Loading…');
  const now = Date.now();
  // Charts are drawn at the width they are shown at, so their text keeps its size.
  const body = document.getElementById('history-body');
  const width = Math.max(300, Math.min(1200, Math.round((body ? body.clientWidth : 720) - 32)));
  const newest = hist.timeline.slice().reverse();
  const shown = newest.slice(0, S.historyShown);
  return [
    h('section', { class: 'charts', 'aria-labelledby': 'charts-title' },
      h('h2', { id: 'charts-title' }, 'Weight over time'),
      routeIds(hist).map((id) => routeCharts(hist, id, now, width))),
    h('section', { class: 'card', 'aria-labelledby': 'versions-title' },
      h('h2', { id: 'versions-title' }, `Versions (${hist.timeline.length})`),
      h('ol', { class: 'timeline', reversed: true }, shown.map((v, i) => versionItem(v, newest[i + 1]))),
      newest.length > shown.length
        ? h('button', { type: 'button', 'data-action': 'more-versions' }, `Show more (${newest.length - shown.length} older)`)
        : null),
    diffSection(),
    auditSection(hist),
  ];
}
