// Formatting of numbers, times and durations for people.

const pad = (n, w = 2) => String(n).padStart(w, '0');

/** `2026-11-27 09:00:05` in the browser's time zone, or '' for none. */
export function time(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** `09:00:05`. */
export function clock(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** `4 s ago`, `3 min ago`, `2 h ago`. */
export function ago(iso, now = Date.now()) {
  if (!iso) return 'never';
  const t = new Date(iso).getTime();
  if (Number.isNaN(t)) return String(iso);
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 90) return `${s} s ago`;
  if (s < 90 * 60) return `${Math.round(s / 60)} min ago`;
  if (s < 36 * 3600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** A duration in seconds: `45 s`, `2 min 5 s`, `1 h 3 min`. */
export function seconds(sec) {
  if (sec == null) return '';
  const s = Math.max(0, Math.round(sec));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min${s % 60 ? ` ${s % 60} s` : ''}`;
  return `${Math.floor(s / 3600)} h${s % 3600 >= 60 ? ` ${Math.floor((s % 3600) / 60)} min` : ''}`;
}

/** Milliseconds: `3.1 ms`, `120 ms`, `2.4 s`. */
export function ms(v) {
  if (v == null) return '';
  if (v < 10) return `${v.toFixed(1)} ms`;
  if (v < 1000) return `${Math.round(v)} ms`;
  return `${(v / 1000).toFixed(1)} s`;
}

/** A percentage as the config writes it: `12.5 %`. */
export function percent(p) {
  if (p == null) return '';
  return `${Number(p.toFixed(4))} %`;
}

/** An error proportion (0..1) as a percentage with one decimal. */
export function rate(r) {
  if (r == null) return 'n/a';
  return `${(r * 100).toFixed(1)} %`;
}

/** A value of a config, shown in a diff. */
export function value(v) {
  return v === undefined ? '(absent)' : v;
}
