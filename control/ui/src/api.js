// The control service's API, as the CLI uses it: the same paths, the same
// bearer token, the same error bodies ({error, field?, current_version?}).
// Only a JSON reply counts as the service's: a redirect (to a login page,
// say) is an error, and so is a reply of any other type.

/** How long a call may take, reply included, before it is given up. */
export const TIMEOUT_MS = 10_000;

export class ApiError extends Error {
  /** `json`: the reply was the service's JSON (its error body). */
  constructor(status, body, json = false) {
    super(body && typeof body.error === 'string' ? body.error : `HTTP ${status}`);
    this.status = status;
    this.json = json;
    this.field = body && body.field != null ? String(body.field) : null;
    this.currentVersion = body && body.current_version != null ? body.current_version : null;
  }

  /** 409 from the service: the expected version is no longer current. */
  get conflict() {
    return this.status === 409 && this.json;
  }

  /** The service refused the request (a 4xx in its own JSON words): nothing was written. */
  get refused() {
    return this.status >= 400 && this.status < 500 && this.json;
  }
}

function unreachable(e) {
  if (e && e.name === 'TimeoutError') return `no reply from the control service within ${TIMEOUT_MS / 1000} s`;
  return `the control service cannot be reached, or it redirected the request (${e && e.message})`;
}

export class Api {
  constructor(token) {
    this.token = token;
  }

  async call(method, path, body) {
    const headers = { authorization: `Bearer ${this.token}`, accept: 'application/json' };
    const init = {
      method,
      headers,
      cache: 'no-store',
      credentials: 'omit',
      redirect: 'error',
      signal: AbortSignal.timeout(TIMEOUT_MS),
    };
    if (body !== undefined) {
      headers['content-type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    let text;
    try {
      res = await fetch(path, init);
      text = await res.text();
    } catch (e) {
      throw new ApiError(0, { error: unreachable(e) });
    }
    const type = res.headers.get('content-type') || '';
    if (type.split(';')[0].trim().toLowerCase() !== 'application/json') {
      const said = /^text\/plain/i.test(type) && text.trim() ? `: ${text.trim().slice(0, 300)}` : '';
      throw new ApiError(res.status, {
        error: `not a reply of the control service: HTTP ${res.status} with ${type ? `content type ${type}` : 'no content type'}, not application/json${said}`,
      });
    }
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        throw new ApiError(res.status, { error: `HTTP ${res.status}: the reply is not valid JSON` });
      }
    }
    if (!res.ok) throw new ApiError(res.status, data || { error: `HTTP ${res.status} ${res.statusText}` }, true);
    return data;
  }

  get(path) {
    return this.call('GET', path);
  }

  post(path, body) {
    return this.call('POST', path, body);
  }

  whoami() {
    return this.get('/v1/whoami');
  }
  status() {
    return this.get('/v1/status');
  }
  current() {
    return this.get('/v1/current');
  }
  version(n) {
    return this.get(`/v1/versions/${encodeURIComponent(n)}`);
  }
  versions(limit, before) {
    const q = new URLSearchParams({ limit: String(limit) });
    if (before != null) q.set('before', String(before));
    return this.get(`/v1/versions?${q}`);
  }
  at(time) {
    return this.get(`/v1/at?${new URLSearchParams({ time })}`);
  }
  timeline(limit) {
    return this.get(`/v1/timeline?${new URLSearchParams({ limit: String(limit) })}`);
  }
  plans(limit) {
    return this.get(`/v1/plans?${new URLSearchParams({ limit: String(limit) })}`);
  }
  planChecks(id, limit) {
    return this.get(`/v1/plans/${encodeURIComponent(id)}/checks?${new URLSearchParams({ limit: String(limit) })}`);
  }
  planCommand(id, command) {
    return this.post(`/v1/plans/${encodeURIComponent(id)}/${command}`);
  }
  audit() {
    return this.get('/v1/audit');
  }
  createVersion(body) {
    return this.post('/v1/versions', body);
  }
  rollback(body) {
    return this.post('/v1/rollback', body);
  }
}

/** A write's reply must name the version it committed; anything else leaves the outcome unknown. */
export function committed(reply) {
  if (!reply || typeof reply.version !== 'number') {
    throw new ApiError(200, { error: 'the reply names no committed version' });
  }
  return reply;
}

/** A plan command's reply must be the plan. */
export function planReply(reply) {
  if (!reply || typeof reply.id !== 'number' || typeof reply.phase !== 'string') {
    throw new ApiError(200, { error: 'the reply is not a plan' });
  }
  return reply;
}
