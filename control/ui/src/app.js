// The rollout dashboard: sign-in, polling, navigation and delegated actions.
// It talks to the control service through the same /v1 API as the CLI.

import { Api } from './api.js';
import { h, fill, render } from './dom.js';
import { S, canAct } from './state.js';
import { routesView } from './routes.js';
import { edgesView, strip } from './edges.js';
import { historyView, loadHistory, loadChecks, refreshRunning, keepShown, runDiff } from './history.js';
import { initDialogs, setWeight, promote, planCommand, rollback, announce } from './dialogs.js';

const TOKEN_KEY = 'rollout.token';
const POLL_MS = 1000;
const VIEWS = ['routes', 'edges', 'history'];

const $ = (id) => document.getElementById(id);
let timer = null;
let polling = false;
let again = false;

function viewFromHash() {
  const v = location.hash.replace(/^#\/?/, '');
  return VIEWS.includes(v) ? v : 'routes';
}

function showSignedIn(on) {
  $('signin').hidden = on;
  $('nav').hidden = !on;
  $('who').hidden = !on;
  $('strip').hidden = !on;
  for (const v of VIEWS) $(`view-${v}`).hidden = !on || v !== S.view;
}

function renderNav() {
  for (const a of $('nav').querySelectorAll('a')) {
    if (a.dataset.view === S.view) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

function ready(view) {
  return view === 'routes' ? S.currentLoaded && S.plans != null
    : view === 'edges' ? S.status != null
    : S.history != null;
}

function renderAll() {
  if (!S.api) return;
  fill($('who-text'), h('span', { class: 'actor' }, S.me.name), ` (${S.me.role})`);
  render($('strip'), strip());
  renderNav();
  const body = $(`${S.view}-body`);
  if (S.view === 'routes') render(body, routesView());
  else if (S.view === 'edges') render(body, edgesView());
  else {
    render(body, historyView());
    const a = $('diff-a');
    const b = $('diff-b');
    if (a && b && !a.value && !b.value && S.history && S.history.timeline.length) {
      const tl = S.history.timeline;
      b.value = tl[tl.length - 1].version;
      a.value = tl.length > 1 ? tl[tl.length - 2].version : b.value;
    }
  }
  if (ready(S.view) && !S.marked.has(S.view)) {
    S.marked.add(S.view);
    performance.mark(`rollout:${S.view}`);
    document.documentElement.dataset.ready = [...S.marked].join(' ');
  }
}

/**
 * Renders, never throwing: a view that fails to render says so in place
 * (and polling goes on), rather than stopping the page.
 */
function draw() {
  const out = $('render-error');
  try {
    renderAll();
    if (out.firstChild) fill(out);
  } catch (e) {
    fill(out, `Could not render the ${S.view} view: ${e && e.message ? e.message : e}`);
  }
}

/** One round: status every time; the config when the version moved; what the view needs. */
async function fetchRound(session) {
  try {
    const status = await S.api.status();
    if (session !== S.session) return;
    S.status = status;
    S.pollError = null;
    if (S.refetch || !S.currentLoaded || !S.current || S.current.version !== status.version) {
      S.refetch = false;
      let current = null;
      try {
        current = await S.api.current();
      } catch (e) {
        if (e.status !== 404) throw e;
      }
      if (session !== S.session) return;
      S.current = current;
      S.currentLoaded = true;
    }
    if (S.view === 'routes') {
      const { plans } = await S.api.plans(50);
      if (session !== S.session) return;
      S.plans = plans;
    }
    if (S.view === 'history') {
      if (S.historyVersion !== status.version || !S.history) await loadHistory();
      else await refreshRunning();
    }
  } catch (e) {
    if (session !== S.session) return;
    if (e.status === 401) {
      signOut('The service no longer accepts this token (401). Sign in again.');
      return;
    }
    S.pollError = e.message;
  }
}

/**
 * Polls: one round at a time (every call fails after TIMEOUT_MS at most),
 * then the next one is scheduled whenever the tab is signed in, whatever
 * happened, with one timer at a time. A call during a round asks for
 * another right after it.
 */
async function poll() {
  clearTimeout(timer);
  timer = null;
  if (!S.api) return;
  if (polling) {
    again = true;
    return;
  }
  polling = true;
  again = false;
  const session = S.session;
  try {
    await fetchRound(session);
    if (session === S.session) draw();
  } finally {
    polling = false;
    if (S.api) {
      clearTimeout(timer);
      timer = setTimeout(poll, again || session !== S.session ? 0 : POLL_MS);
    }
  }
}

/** Reloads everything the current view shows, now. */
function refresh() {
  S.historyVersion = null;
  S.refetch = true;
  poll();
}

async function signIn(token) {
  const api = new Api(token);
  const me = await api.whoami();
  sessionStorage.setItem(TOKEN_KEY, token);
  S.session++;
  S.api = api;
  S.me = me;
  S.status = null;
  S.current = null;
  S.currentLoaded = false;
  S.plans = null;
  S.history = null;
  S.historyVersion = null;
  S.checks.clear();
  S.diff = null;
  document.body.dataset.role = me.role;
  showSignedIn(true);
  draw();
  poll();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(timer);
  S.session++;
  S.api = null;
  S.me = null;
  S.status = null;
  S.current = null;
  S.history = null;
  delete document.body.dataset.role;
  S.plans = null;
  S.checks.clear();
  for (const id of ['strip', 'routes-body', 'edges-body', 'history-body', 'who-text', 'notice', 'render-error']) fill($(id));
  const dlg = $('dlg');
  if (dlg.open) dlg.close();
  showSignedIn(false);
  fill($('signin-error'), message || '');
  $('token').value = '';
  $('token').focus();
}

function navigate() {
  S.view = viewFromHash();
  if (!S.api) return;
  showSignedIn(true);
  draw();
  poll();
}

function onClick(ev) {
  const el = ev.target.closest('[data-action]');
  if (!el || el.tagName === 'FORM' || el.tagName === 'SELECT') return;
  const d = el.dataset;
  switch (d.action) {
    case 'set-weight':
      if (canAct()) setWeight(d.route);
      break;
    case 'promote':
      if (canAct()) promote(d.route);
      break;
    case 'pause':
    case 'resume':
      if (canAct()) planCommand(d.plan, d.action);
      break;
    case 'rollback':
      if (canAct()) rollback(d.to != null ? Number(d.to) : undefined);
      break;
    case 'diff':
      $('diff-a').value = d.a;
      $('diff-b').value = d.b;
      runDiff(d.a, d.b).then(() => {
        draw();
        $('diff-title')?.scrollIntoView({ block: 'start' });
      });
      break;
    case 'more-versions':
      S.historyShown += 100;
      draw();
      break;
    default:
  }
}

function onSubmit(ev) {
  const form = ev.target;
  if (form.dataset.action !== 'diff-form') return;
  ev.preventDefault();
  const a = form.elements.a.value.trim();
  const b = form.elements.b.value.trim();
  if (!a || !b) {
    S.diff = { error: 'Give two version numbers.' };
    draw();
    return;
  }
  runDiff(a, b).then(draw);
}

function onChange(ev) {
  const el = ev.target;
  if (el.dataset.action !== 'chart-plan' || !S.history) return;
  S.chartPlan.set(el.dataset.route, Number(el.value));
  const hist = S.history;
  loadChecks(hist, el.dataset.route).then(() => {
    keepShown(hist);
    draw();
  }, (e) => announce(`Cannot load the checks: ${e.message}`));
}

function init() {
  initDialogs(refresh);
  S.view = viewFromHash();
  $('signin-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const token = $('token').value.trim();
    const button = ev.target.querySelector('button');
    button.disabled = true;
    fill($('signin-error'));
    try {
      await signIn(token);
      $('token').value = '';
    } catch (e) {
      fill($('signin-error'), e.status === 401 ? `This token is not accepted (401): ${e.message}` : `Cannot sign in: ${e.message}`);
    } finally {
      button.disabled = false;
    }
  });
  $('sign-out').addEventListener('click', () => signOut('Signed out.'));
  $('main').addEventListener('click', onClick);
  $('main').addEventListener('submit', onSubmit);
  $('main').addEventListener('change', onChange);
  window.addEventListener('hashchange', navigate);
  let resizing;
  window.addEventListener('resize', () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => { if (S.view === 'history') draw(); }, 150);
  });
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    signIn(saved).catch((e) => signOut(e.status === 401 ? 'The saved token is no longer accepted. Sign in again.' : `Cannot sign in: ${e.message}`));
  } else {
    showSignedIn(false);
  }
}

init();
