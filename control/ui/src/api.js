// The control service's API, as the CLI uses it: the same paths, the same
// bearer token, the same error bodies ({error, field?, current_version?}).

export class ApiError extends Error {
  constructor(status, body) {
    super(body && typeof body.error === 'string' ? body.error : `HTTP ${status}`);
    this.status = status;
    this.field = body && body.field != null ? String(body.field) : null;
    this.currentVersion = body && body.current_version != null ? body.current_version : null;
  }

  /** 409: the expected version is no longer current. */
  get conflict() {
    return this.status === 409;
  }
}

export class Api {
  constructor(token) {
    this.token = token;
  }

  async call(method, path, body) {
    const headers = { authorization: `Bearer ${this.token}`, accept: 'application/json' };
    const init = { method, headers, cache: 'no-store', credentials: 'omit' };
    if (body !== undefined) {
      headers['content-type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, { error: `the control service cannot be reached (${e.message})` });
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = { error: text.trim().slice(0, 500) };
      }
    }
    if (!res.ok) throw new ApiError(res.status, data || { error: `HTTP ${res.status} ${res.statusText}` });
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
