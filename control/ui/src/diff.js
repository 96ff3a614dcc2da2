// Field-by-field differences between two config documents, with routes and
// flags named by their ids (`routes[web].new_weight`), like `rollout diff`.

function keyed(list) {
  if (!list.length || !list.every((x) => x && typeof x === 'object' && !Array.isArray(x))) return null;
  const field = list.every((x) => typeof x.id === 'string') ? 'id' : list.every((x) => typeof x.name === 'string') ? 'name' : null;
  if (!field) return null;
  const names = list.map((x) => x[field]);
  return new Set(names).size === names.length ? names : null;
}

/** Flattens a JSON value into an ordered map of path → JSON text. */
export function flatten(value, prefix = '', out = new Map()) {
  if (Array.isArray(value)) {
    const names = keyed(value);
    if (names) {
      value.forEach((x, i) => flatten(x, `${prefix}[${names[i]}]`, out));
    } else if (value.some((x) => x && typeof x === 'object')) {
      value.forEach((x, i) => flatten(x, `${prefix}[${i}]`, out));
    } else {
      out.set(prefix, JSON.stringify(value));
    }
  } else if (value && typeof value === 'object') {
    const keys = Object.keys(value);
    if (!keys.length) out.set(prefix, '{}');
    for (const k of keys) flatten(value[k], prefix ? `${prefix}.${k}` : k, out);
  } else {
    out.set(prefix, JSON.stringify(value));
  }
  return out;
}

/** [{path, before, after}] for every path whose value differs (undefined: absent). */
export function diff(a, b) {
  const fa = flatten(a ?? {});
  const fb = flatten(b ?? {});
  const rows = [];
  for (const [path, before] of fa) {
    const after = fb.get(path);
    if (after !== before) rows.push({ path, before, after });
  }
  for (const [path, after] of fb) {
    if (!fa.has(path)) rows.push({ path, before: undefined, after });
  }
  return rows;
}
