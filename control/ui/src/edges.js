// The edges view (a live table of every edge) and the convergence strip
// shown on every view.

import { h, widthPercent } from './dom.js';
import * as fmt from './fmt.js';
import { S } from './state.js';

const STATES = ['ACK', 'STALE', 'NACK', 'UNREACHABLE'];

function state(s) {
  return h('span', { class: `badge state-${s.toLowerCase()}` }, s);
}

/** The convergence bar: how many edges hold the committed version. */
export function strip() {
  const st = S.status;
  if (!st) return h('p', { class: 'muted' }, S.pollError ? `Cannot read the status: ${S.pollError}` : 'Loading status…');
  const total = st.edges.length;
  const acked = st.edges.filter((e) => e.state === 'ACK').length;
  const pct = total ? (acked / total) * 100 : 0;
  const done = total > 0 && acked === total;
  let text;
  if (!st.version) text = 'Nothing committed yet';
  else if (!total) text = `Version ${st.version}: no edges registered`;
  else if (done) text = `Version ${st.version}: all ${total} edges hold it`;
  else text = `Version ${st.version}: ${acked} of ${total} edges hold it`;
  return h('div', { class: `converge ${done ? 'done' : 'pushing'}`, 'data-version': st.version, 'data-acked': acked, 'data-total': total },
    h('span', { class: 'converge-text', 'data-role': 'converge-text' }, text),
    h('span', {
      class: 'bar',
      role: 'progressbar',
      'aria-label': `Edges holding version ${st.version}`,
      'aria-valuemin': 0,
      'aria-valuemax': total,
      'aria-valuenow': acked,
      'aria-valuetext': `${acked} of ${total}`,
    }, widthPercent(h('span', { class: 'bar-fill' }), pct)),
    h('span', { class: 'converge-time' },
      done && st.converged_ms != null ? `converged in ${fmt.ms(st.converged_ms)}` : st.issued_at ? `pushed ${fmt.ago(st.issued_at)}` : ''),
    S.pollError ? h('span', { class: 'error' }, ` · status not updated: ${S.pollError}`) : null);
}

function row(e, now) {
  return h('tr', { 'data-key': e.url, 'data-edge': e.url, 'data-state': e.state },
    h('th', { scope: 'row', 'data-label': 'Edge', class: 'mono url' }, e.url),
    h('td', { 'data-label': 'State' }, state(e.state)),
    h('td', { 'data-label': 'Version held', class: 'num', 'data-role': 'held' }, e.acked_version ? `v${e.acked_version}` : 'none'),
    h('td', { 'data-label': 'Last sent', class: 'num' }, e.sent_version ? `v${e.sent_version}` : 'none'),
    h('td', { 'data-label': 'Lag', class: 'num' }, String(e.lag)),
    h('td', { 'data-label': 'Last contact' },
      e.last_contact ? h('time', { datetime: e.last_contact, title: fmt.time(e.last_contact) }, fmt.ago(e.last_contact, now)) : 'never'),
    h('td', { 'data-label': 'Push latency', class: 'num' }, e.push_latency_ms != null ? fmt.ms(e.push_latency_ms) : ''),
    h('td', { 'data-label': 'Error', class: 'detail' }, e.error || ''));
}

/** The edges view's content. */
export function edgesView() {
  const st = S.status;
  if (!st) return h('p', { class: 'muted' }, 'Loading…');
  const now = Date.now();
  const by = new Map(STATES.map((s) => [s, 0]));
  for (const e of st.edges) by.set(e.state, (by.get(e.state) || 0) + 1);
  return [
    h('p', { class: 'summary' },
      `${st.edges.length} edge${st.edges.length === 1 ? '' : 's'}: `,
      STATES.map((s, i) => [i ? ', ' : '', h('span', { 'data-count': s }, `${by.get(s)} ${s}`)])),
    st.edges.length
      ? h('table', { class: 'edges stack' },
          h('caption', { class: 'vh' }, `Edges against version ${st.version}, updated every second`),
          h('thead', null, h('tr', null,
            ['Edge', 'State', 'Version held', 'Last sent', 'Lag', 'Last contact', 'Push latency', 'Error'].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', null, st.edges.map((e) => row(e, now))))
      : h('p', null, 'No edges registered: add one with rollout edges add URL.'),
  ];
}
