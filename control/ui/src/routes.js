// The routes view: each route's origins, weight, flags and plan, with the
// actions a deploy token may take.

import { h, widthPercent } from './dom.js';
import * as fmt from './fmt.js';
import { S, canAct, active, planOf } from './state.js';

const hidden = (text) => h('span', { class: 'vh' }, text);

function matchText(r) {
  const m = r.match;
  if (!m) return 'default route: takes every request no other route matches';
  const parts = [];
  if (m.host) parts.push(`host ${m.host}`);
  if (m.path_prefix) parts.push(`path ${m.path_prefix}`);
  if (m.methods && m.methods.length) parts.push(m.methods.join(' '));
  return `matches ${parts.join(', ')}`;
}

function fact(name, ...value) {
  return h('div', { class: 'fact' }, h('dt', null, name), h('dd', null, ...value));
}

export function meter(percent, label) {
  const fillEl = widthPercent(h('span', { class: 'meter-fill' }), percent);
  return h('span', {
    class: 'meter',
    role: 'meter',
    'aria-valuemin': 0,
    'aria-valuemax': 100,
    'aria-valuenow': percent,
    'aria-label': label,
  }, fillEl);
}

function verdict(v) {
  return h('span', { class: `badge verdict-${v || 'none'}` }, v || 'not measured');
}

function counts(c) {
  if (!c || !c.samples) return 'no samples';
  return `${fmt.rate(c.errors / c.samples)} (${c.errors}/${c.samples})`;
}

function checksTable(plan) {
  if (!plan.checks.length) return h('p', { class: 'muted' }, 'No check running.');
  return h('table', { class: 'checks stack' },
    h('caption', { class: 'vh' }, `Checks of plan ${plan.id}`),
    h('thead', null, h('tr', null,
      ['Check', 'Verdict', 'Last measurement', 'Fails', 'Old errors', 'New errors', 'Next'].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', null, plan.checks.map((c) => h('tr', { 'data-key': c.name },
      h('th', { scope: 'row', 'data-label': 'Check' }, h('span', null, c.name, h('span', { class: 'muted small' }, ` ${c.kind}`))),
      h('td', { 'data-label': 'Verdict' }, verdict(c.verdict)),
      h('td', { 'data-label': 'Last measurement', class: 'detail' }, c.detail || 'none yet'),
      h('td', { 'data-label': 'Fails', class: 'num' }, `${c.fails} of ${c.failure_limit}`),
      h('td', { 'data-label': 'Old errors', class: 'num' }, counts(c.old)),
      h('td', { 'data-label': 'New errors', class: 'num' }, counts(c.new)),
      h('td', { 'data-label': 'Next', class: 'num' }, active(plan) ? `in ${fmt.seconds(c.next_in_s)}` : '')))));
}

function planBlock(plan, route) {
  const running = active(plan);
  const what = plan.flag ? `flag ${plan.flag}` : 'weight';
  return h('section', { class: `plan phase-${plan.phase}`, 'aria-label': `Plan ${plan.id} on route ${route.id}` },
    h('h3', null, `${running ? 'Plan' : 'Last plan'} ${plan.id} `, h('span', { class: `badge phase phase-${plan.phase}` }, plan.phase),
      plan.dry_run ? h('span', { class: 'badge' }, 'dry run') : null),
    h('p', { class: 'plan-step' },
      h('span', null, `Step ${Math.min(plan.step, plan.steps)} of ${plan.steps}: `),
      h('span', { class: 'step-text' }, plan.step_text),
      plan.weight != null ? h('span', null, ` · ${what} ${fmt.percent(plan.weight)}`) : null,
      running && plan.time_left_s != null ? h('span', { class: 'time-left' }, ` · ${fmt.seconds(plan.time_left_s)} left`) : null),
    plan.held ? h('p', { class: 'warn' }, 'Held: ', h('span', null, plan.held)) : null,
    plan.waiting_for_hook ? h('p', { class: 'warn' }, 'Waiting for hook run ', h('span', null, plan.waiting_for_hook)) : null,
    plan.reason ? h('p', { class: running ? 'muted' : 'warn' }, 'Ended: ', h('span', { class: 'reason' }, plan.reason)) : null,
    h('p', { class: 'muted small' }, 'Started by ', h('span', { class: 'actor' }, plan.actor), ` ${fmt.ago(plan.started_at)} (${fmt.time(plan.started_at)})`),
    checksTable(plan));
}

function actions(route, plan) {
  const id = route.id;
  const running = active(plan);
  return h('div', { class: 'actions', role: 'group', 'aria-label': `Actions on route ${id}` },
    h('button', { type: 'button', 'data-action': 'set-weight', 'data-route': id }, 'Set weight', hidden(` of ${id}`), '…'),
    h('button', { type: 'button', 'data-action': 'promote', 'data-route': id }, 'Promote', hidden(` ${id}`), '…'),
    running && !plan.held
      ? h('button', { type: 'button', 'data-action': 'pause', 'data-plan': plan.id }, 'Pause plan', hidden(` ${plan.id}`), '…')
      : null,
    running && (plan.held || (plan.phase === 'paused' && plan.time_left_s == null))
      ? h('button', { type: 'button', 'data-action': 'resume', 'data-plan': plan.id }, 'Resume plan', hidden(` ${plan.id}`), '…')
      : null);
}

function routeCard(route) {
  const plan = planOf(route.id);
  const flags = route.flags || [];
  return h('article', { class: 'card route', 'data-key': route.id, 'data-route': route.id, 'aria-labelledby': `route-${route.id}` },
    h('header', { class: 'card-head' },
      h('h2', { id: `route-${route.id}` }, route.id),
      h('span', { class: 'muted match' }, matchText(route))),
    h('dl', { class: 'facts' },
      fact('Old origin', h('span', { class: 'mono url' }, route.old)),
      fact('New origin', h('span', { class: 'mono url' }, route.new)),
      fact('Weight to new',
        h('span', { class: 'weight', 'data-role': 'weight' }, fmt.percent(route.new_weight)),
        meter(route.new_weight, `Weight of route ${route.id} to new`)),
      fact('Flags', flags.length
        ? h('ul', { class: 'flags' }, flags.map((f) => h('li', { 'data-key': f.name },
            h('span', { class: 'mono' }, f.name), ` ${fmt.percent(f.percent)}`,
            f.allow && f.allow.length ? h('span', { class: 'muted' }, ` + ${f.allow.length} allowed`) : null)))
        : h('span', { class: 'muted' }, 'none')),
      fact('Key', h('span', { class: 'mono' }, (route.key || []).join(', ') || 'none (everyone gets old)'))),
    plan ? planBlock(plan, route) : h('p', { class: 'muted' }, 'No plan has run on this route.'),
    canAct() ? actions(route, plan) : null);
}

/** The routes view's content. */
export function routesView() {
  const cur = S.current;
  if (!S.currentLoaded) return h('p', { class: 'muted' }, 'Loading…');
  if (!cur) return h('p', null, 'Nothing is committed yet: push a first config with the CLI (rollout push FILE).');
  return [
    h('div', { class: 'toolbar' },
      h('p', { class: 'current' },
        h('strong', null, `Version ${cur.version}`), ` · ${fmt.time(cur.issued_at)} · by `,
        h('span', { class: 'actor' }, cur.actor), ': ', h('span', { class: 'reason' }, cur.reason)),
      canAct() ? h('button', { type: 'button', 'data-action': 'rollback' }, 'Roll back…') : null),
    canAct() ? null : h('p', { class: 'muted small', 'data-role': 'read-only' }, 'Signed in with a read token: actions are hidden.'),
    h('div', { class: 'routes' }, cur.config.routes.map(routeCard)),
  ];
}
