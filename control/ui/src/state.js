// What the page knows, shared by the views.

export const S = {
  /** An Api for the signed-in token, or null. */
  api: null,
  /** {name, role} from /v1/whoami. */
  me: null,
  /** Bumped at each sign-in and sign-out: replies for an older session are dropped. */
  session: 0,
  /** `routes`, `edges` or `history`. */
  view: 'routes',
  /** /v1/status, polled every second. */
  status: null,
  /** /v1/current (with config and hooks), fetched when the version changes. */
  current: null,
  /** Whether /v1/current answered (404 while nothing is committed). */
  currentLoaded: false,
  /** /v1/plans, newest first. */
  plans: null,
  /** History view data: timeline (oldest first), audit, plans, for `historyVersion`. */
  history: null,
  historyVersion: null,
  /** How many versions the history list shows. */
  historyShown: 50,
  /** plan id → /v1/plans/{id}/checks points. */
  checks: new Map(),
  /** Chosen plan per route in the history charts. */
  chartPlan: new Map(),
  /** The last diff asked for: {a, b, rows} or {error}. */
  diff: null,
  /** Fetch /v1/current at the next poll even if the version did not move. */
  refetch: false,
  /** Why the last poll failed, if it did. */
  pollError: null,
  /** Views already reported as rendered (performance marks). */
  marked: new Set(),
};

/** Whether the signed-in token may act (deploy or admin). */
export function canAct() {
  return !!S.me && (S.me.role === 'deploy' || S.me.role === 'admin');
}

/** Whether a plan still runs. */
export function active(plan) {
  return !!plan && !['promoted', 'aborted', 'failed'].includes(plan.phase);
}

/** The newest plan on a route, from the polled list. */
export function planOf(routeId, plans = S.plans) {
  return (plans || []).find((p) => p.route === routeId) || null;
}
