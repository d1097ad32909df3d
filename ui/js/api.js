// The REST and WebSocket API of the server the page talks to: the one that served it, or the
// one named by `?server=http://host:port` (an analyzer or an agent; CORS is open).

export class ApiError extends Error {
  constructor(status, body) {
    super(body ? `${status}: ${body.trim()}` : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

export class Api {
  constructor(base) {
    this.base = (base || window.location.origin).replace(/\/+$/, '');
    // The token of a login (`POST /login`), per server, for this browser tab.
    this.tokenKey = `skydive-token:${this.base}`;
    this.token = sessionStorage.getItem(this.tokenKey);
  }

  /** Logs in; the token goes with every later request (header, or query for WebSockets). */
  async login(username, password) {
    const r = await fetch(`${this.base}/login`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ username, password }),
    });
    const text = await r.text();
    if (!r.ok) throw new ApiError(r.status, text);
    const answer = JSON.parse(text);
    this.token = answer.Token;
    sessionStorage.setItem(this.tokenKey, this.token);
    return answer;
  }

  /** Forgets the token, and ends its session on the server (best effort; awaitable). */
  logout() {
    const token = this.token;
    this.token = null;
    sessionStorage.removeItem(this.tokenKey);
    if (!token) return Promise.resolve();
    return fetch(`${this.base}/logout`, { method: 'POST', headers: { 'X-Auth-Token': token } })
      .then(() => {}, () => {});
  }

  static fromLocation() {
    const p = new URLSearchParams(window.location.search);
    return new Api(p.get('server') || undefined);
  }

  async request(method, path, body) {
    const opts = { method, headers: { Accept: 'application/json' } };
    if (this.token) opts.headers['X-Auth-Token'] = this.token;
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    const r = await fetch(this.base + path, opts);
    const text = await r.text();
    if (!r.ok) throw new ApiError(r.status, text);
    if (!text) return null;
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }

  info() {
    return this.request('GET', '/api');
  }

  status() {
    return this.request('GET', '/api/status');
  }

  /** Runs a Gremlin query; a server error is thrown as it came. */
  query(gremlin) {
    return this.request('POST', '/api/topology', { GremlinQuery: gremlin });
  }

  captures() {
    return this.request('GET', '/api/capture');
  }

  createCapture(capture) {
    return this.request('POST', '/api/capture', capture);
  }

  deleteCapture(id) {
    return this.request('DELETE', `/api/capture/${encodeURIComponent(id)}`);
  }

  /** A WebSocket URL; browsers cannot set headers, so the handshake goes in the query. */
  wsUrl(path, params) {
    const u = new URL(this.base + path);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    for (const [k, v] of params) u.searchParams.append(k, v);
    if (this.token) u.searchParams.append('x-auth-token', this.token);
    return u.toString();
  }
}

/**
 * A WebSocket that reconnects (after 1 s, then up to 5 s) and reports its state. `onOpen` runs
 * after every (re)connection, `onMessage` for every message, parsed.
 */
export class Socket {
  constructor(url, { onOpen, onMessage, onState }) {
    this.url = url;
    this.onOpen = onOpen;
    this.onMessage = onMessage;
    this.onState = onState || (() => {});
    this.delay = 1000;
    this.closed = false;
    this.connect();
  }

  connect() {
    if (this.closed) return;
    this.onState('connecting');
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => {
      this.delay = 1000;
      this.onState('connected');
      this.onOpen?.(this);
    };
    ws.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      this.onMessage(msg, this);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.onState('disconnected');
      if (this.closed) return;
      setTimeout(() => this.connect(), this.delay);
      this.delay = Math.min(this.delay * 2, 5000);
    };
  }

  send(namespace, type, obj) {
    const uuid = crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2);
    if (this.ws?.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ Namespace: namespace, Type: type, UUID: uuid, Status: 200, Obj: obj }));
    }
    return uuid;
  }

  close() {
    this.closed = true;
    this.ws?.close();
  }
}
