// Charts drawn as inline SVG: a route's weight over time with rollbacks
// marked, and a plan's check measurements (error rate of new against old).

import { s } from './dom.js';
import { clock, time, percent, rate } from './fmt.js';

const M = { l: 46, r: 14, t: 12, b: 26 };

function scaleX(W, t0, t1) {
  const span = t1 - t0 || 60_000;
  return (t) => M.l + ((t - t0) / span) * (W - M.l - M.r);
}

function scaleY(h, max) {
  return (v) => h - M.b - (v / max) * (h - M.t - M.b);
}

function xLabel(t, t0, t1) {
  return t1 - t0 > 20 * 3600_000 ? time(new Date(t).toISOString()).slice(5, 16) : clock(t);
}

function axes(W, h, t0, t1, x, y, yTicks, yLabel) {
  const g = s('g', { class: 'axes', 'aria-hidden': 'true' });
  for (const v of yTicks) {
    const yy = y(v);
    g.append(
      s('line', { x1: M.l, x2: W - M.r, y1: yy, y2: yy, class: 'grid' }),
      s('text', { x: M.l - 6, y: yy + 4, 'text-anchor': 'end' }, yLabel(v)),
    );
  }
  const n = W < 520 ? 2 : 4;
  let last = '';
  for (let i = 0; i <= n; i++) {
    const t = t0 + ((t1 - t0) * i) / n;
    const label = xLabel(t, t0, t1);
    if (label === last) continue;
    last = label;
    const anchor = i === 0 ? 'start' : i === n ? 'end' : 'middle';
    g.append(s('text', { x: x(t), y: h - 8, 'text-anchor': anchor }, label));
  }
  g.append(s('line', { x1: M.l, x2: W - M.r, y1: h - M.b, y2: h - M.b, class: 'axis' }));
  return g;
}

const ms = (iso) => new Date(iso).getTime();

/**
 * One route's weight over the timeline (oldest first), as a step line up
 * to `now`; versions are dots, rollbacks red markers.
 */
export function weightChart(timeline, routeId, now, W = 720) {
  const h = 190;
  const pts = [];
  for (const v of timeline) {
    const r = (v.routes || []).find((x) => x.id === routeId);
    if (r) pts.push({ t: ms(v.issued_at), w: r.new_weight, v });
  }
  const rollbacks = pts.filter((p) => p.v.rollback);
  const t0 = pts.length ? pts[0].t : now - 60_000;
  const t1 = Math.max(now, pts.length ? pts[pts.length - 1].t : now);
  const x = scaleX(W, t0, t1);
  const y = scaleY(h, 100);
  const last = pts[pts.length - 1];
  const svg = s('svg', {
    class: 'chart',
    viewBox: `0 0 ${W} ${h}`,
    role: 'img',
    'aria-label': `Weight of route ${routeId} over ${pts.length} versions, ${rollbacks.length} rollback${rollbacks.length === 1 ? '' : 's'}; now ${last ? percent(last.w) : 'none'}`,
  });
  svg.append(axes(W, h, t0, t1, x, y, [0, 25, 50, 75, 100], (v) => `${v} %`));
  if (pts.length) {
    let d = `M${x(pts[0].t).toFixed(1)},${y(pts[0].w).toFixed(1)}`;
    for (let i = 1; i < pts.length; i++) d += `H${x(pts[i].t).toFixed(1)}V${y(pts[i].w).toFixed(1)}`;
    d += `H${x(t1).toFixed(1)}`;
    svg.append(s('path', { d, class: 'line weight' }));
  }
  // Dots only while they stay apart; a long history is the line alone.
  if (pts.length <= (W - M.l - M.r) / 5) {
    for (const p of pts) {
      if (p.v.rollback) continue;
      svg.append(
        s('circle', { cx: x(p.t), cy: y(p.w), r: 3, class: 'dot' },
          s('title', null, `v${p.v.version} ${time(p.v.issued_at)}: ${percent(p.w)} (${p.v.actor})`)),
      );
    }
  }
  for (const p of rollbacks) {
    const xx = x(p.t);
    svg.append(
      s('g', { class: 'rollback' },
        s('title', null, `v${p.v.version} rollback ${time(p.v.issued_at)} by ${p.v.actor}: ${p.v.reason}`),
        s('line', { x1: xx, x2: xx, y1: M.t, y2: h - M.b }),
        s('path', { d: `M${xx - 5},${M.t}h10l-5,8z` }),
        s('circle', { cx: xx, cy: y(p.w), r: 4 })),
    );
  }
  return svg;
}

/**
 * A check's measurements (oldest first): the error rate of old and of new
 * at each interval, with failed intervals marked.
 */
export function checkChart(points, name, W = 720) {
  const h = 170;
  const pts = points.filter((p) => p.name === name).map((p) => ({ ...p, t: ms(p.at) }));
  const rates = pts.flatMap((p) => [p.old_error_rate, p.new_error_rate]).filter((r) => r != null);
  const top = Math.max(0.01, ...rates);
  // A round top: 1 %, 2 %, 5 %, 10 %, 20 %, 50 %, 100 %.
  const max = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1].find((m) => m >= top) ?? top;
  const t0 = pts.length ? pts[0].t : 0;
  const t1 = pts.length ? pts[pts.length - 1].t : 60_000;
  const x = scaleX(W, t0, t1 > t0 ? t1 : t0 + 60_000);
  const y = scaleY(h, max);
  const fails = pts.filter((p) => p.verdict === 'fail').length;
  const svg = s('svg', {
    class: 'chart',
    viewBox: `0 0 ${W} ${h}`,
    role: 'img',
    'aria-label': `Check ${name}: error rate of new against old over ${pts.length} measurements, ${fails} failed`,
  });
  svg.append(axes(W, h, t0, t1 > t0 ? t1 : t0 + 60_000, x, y, [0, max / 2, max], (v) => rate(v)));
  for (const [arm, key] of [['old', 'old_error_rate'], ['new', 'new_error_rate']]) {
    let d = '';
    for (const p of pts) {
      if (p[key] == null) continue;
      d += `${d ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(p[key]).toFixed(1)}`;
    }
    if (d) svg.append(s('path', { d, class: `line ${arm}` }));
    for (const p of pts) {
      if (p[key] == null) continue;
      svg.append(
        s('circle', { cx: x(p.t), cy: y(p[key]), r: p.verdict === 'fail' && arm === 'new' ? 5 : 3, class: `dot ${arm} ${p.verdict || ''}` },
          s('title', null, `${clock(p.t)} ${arm} ${rate(p[key])}: ${p.verdict || 'not judged'}${p.detail ? ` (${p.detail})` : ''}`)),
      );
    }
  }
  return svg;
}
