// dash-client.js: the dash-stream WebSocket client (docs/protocol.md, subprotocol dash.v1.json).
//
// An ES module with no dependencies, for browsers and Node >= 22 (global WebSocket). Typings are
// in dash-client.d.ts beside this file.
//
//   import { DashClient } from "/web/dash-client.js";
//   const client = new DashClient("ws://127.0.0.1:8080/v1/ws", { token });
//   await client.connect();
//   const sub = client.subscribe(["swarm.>"], { snapshot: true });
//   for await (const event of sub) console.log(event.topic, event.type);
//
// What it does for you:
// - auth: sends the token in an `auth` op (never in the URL); with `tokenProvider` it fetches a
//   fresh token for every connection and sends `refresh` before the current one expires.
// - reconnect: after 1001, 1006 and 4000-4499 (and other transient codes) it waits the close
//   reason's `retry_after_ms` (else a capped, jittered backoff), reconnects and resubscribes every
//   subscription from its last cursor; 4500-4999 and the "fix the client" codes stop it.
// - exactly-once delivery to the application: events at or before a subscription's cursor are
//   dropped (duplicate suppression), so a resume never repeats an event.
// - publish with acks: every event gets an `id` if it has none, so a publish re-sent after a
//   reconnect is deduplicated by the server; the promise resolves with the ack.
// - snapshot subscriptions: the `snapshot` frame comes first; when a resume cannot be honoured
//   (`recovered: false`) it asks for a fresh snapshot instead of replaying a partial history.

export const SUBPROTOCOL = "dash.v1.json";

const FATAL_STANDARD = new Set([1002, 1003, 1007, 1008, 1009, 1010]);
const MAX_DELAY_MS = 120_000;

/** An error from the server (an `error` frame or a close) or from the client itself. */
export class DashError extends Error {
  constructor(code, message, { retryable = false, retryAfterMs = null, closeCode = null } = {}) {
    super(message);
    this.name = "DashError";
    this.code = code;
    this.retryable = retryable;
    this.retryAfterMs = retryAfterMs;
    this.closeCode = closeCode;
  }
}

// ---------------------------------------------------------------- cursors

/**
 * Parse a cursor `<epoch>.<partition>-<position>[...]` (opaque to applications; the client reads
 * it only to suppress duplicates). Positions are BigInts: Redis positions exceed 2^53.
 */
export function parseCursor(text) {
  if (typeof text !== "string" || text.length === 0) return null;
  const parts = text.split(".");
  const epoch = parts.shift();
  if (!/^[a-z0-9]{1,32}$/.test(epoch) || parts.length === 0) return null;
  const positions = new Map();
  for (const part of parts) {
    const m = /^([0-9]{1,6})-([0-9]{1,20})$/.exec(part);
    if (!m) return null;
    positions.set(Number(m[1]), BigInt(m[2]));
  }
  return { epoch, positions };
}

function formatCursor({ epoch, positions }) {
  const parts = [...positions.entries()].sort((a, b) => a[0] - b[0]).map(([p, pos]) => `${p}-${pos}`);
  return parts.length ? `${epoch}.${parts.join(".")}` : epoch;
}

/** True when the event at `offset` lies at or before `cursor` (same epoch): already delivered. */
export function covers(cursor, offset) {
  const here = parseCursor(cursor);
  const event = parseCursor(offset);
  if (!here || !event || here.epoch !== event.epoch) return false;
  for (const [p, pos] of event.positions) {
    const mine = here.positions.get(p);
    if (mine === undefined || mine < pos) return false;
  }
  return true;
}

/** The later of two cursors (per-partition maximum); one of another epoch replaces the other. */
export function later(cursor, other) {
  if (other == null) return cursor ?? null;
  const here = parseCursor(cursor);
  const there = parseCursor(other);
  if (!here || !there || here.epoch !== there.epoch) return other;
  const merged = new Map(here.positions);
  for (const [p, pos] of there.positions) {
    const mine = merged.get(p);
    if (mine === undefined || mine < pos) merged.set(p, pos);
  }
  return formatCursor({ epoch: here.epoch, positions: merged });
}

/** The cursor after the event at `offset`. */
export const advance = later;

// ---------------------------------------------------------------- close codes

/** Whether a close code means "reconnect with the last cursor" (PROTOCOL.md section 3). */
export function shouldReconnect(code) {
  if (code >= 4000 && code < 4500) return true;
  if (code >= 4500) return false;
  return !FATAL_STANDARD.has(code);
}

/** `{code, retryAfterMs, message}` from a JSON close reason; nulls where absent. */
export function parseCloseReason(reason) {
  let doc = null;
  try {
    doc = reason ? JSON.parse(reason) : null;
  } catch {
    return { code: null, retryAfterMs: null, message: reason || null };
  }
  if (!doc || typeof doc !== "object") return { code: null, retryAfterMs: null, message: reason || null };
  const retry = doc.retry_after_ms;
  return {
    code: typeof doc.code === "string" ? doc.code : null,
    retryAfterMs: typeof retry === "number" && retry >= 0 ? retry : null,
    message: typeof doc.message === "string" ? doc.message : null,
  };
}

function randomId(random) {
  const c = globalThis.crypto;
  if (c && typeof c.getRandomValues === "function") {
    const b = c.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }
  return `${Date.now().toString(16)}-${Math.floor(random() * 2 ** 48).toString(16)}`;
}

// ---------------------------------------------------------------- subscription

/** One subscription; iterate it (`for await`) or pass callbacks. Created by `DashClient.subscribe`. */
export class Subscription {
  constructor(client, sub, topics, options) {
    this.client = client;
    this.sub = sub;
    this.topics = [...topics];
    this.where = options.where ?? null;
    this.options = options;
    this.cursor = options.cursor ?? null;
    this.recovered = null;
    this.reason = null;
    this.replayed = 0;
    this.snapshot = null;
    this.closed = false;
    this.error = null;
    this._started = false; // a `subscribed` arrived at least once
    this._awaitingSnapshot = Boolean(options.snapshot);
    this._discard = false; // drop frames of a subscription being replaced (re-snapshot, pause)
    this._paused = false; // iterator mode: stopped on the server until the application catches up
    this._queue = [];
    this._consumed = this.cursor;
    this._waiters = [];
    this._callbackMode = Boolean(options.onEvent || options.onBatch);
    this._maxBuffered = options.maxBufferedEvents ?? 10_000;
    this.ready = new Promise((resolve, reject) => {
      this._resolveReady = resolve;
      this._rejectReady = reject;
    });
    this.ready.catch(() => {}); // an unobserved failure is reported through onError / iteration
  }

  /** The frame that (re)starts this subscription on a connection. */
  _frame(id) {
    const frame = { op: "subscribe", id, sub: this.sub, topics: this.topics };
    if (this.where) frame.where = this.where;
    if (this._started && this.cursor) {
      frame.cursor = this.cursor;
    } else if (this._awaitingSnapshot || (!this._started && this.options.snapshot)) {
      frame.snapshot = true;
    } else if (this.cursor) {
      frame.cursor = this.cursor;
    } else if (this.options.from) {
      frame.from = this.options.from;
    }
    return frame;
  }

  _onSubscribed(frame, resuming) {
    this._discard = false;
    const first = !this._started;
    this._started = true;
    this.recovered = frame.recovered;
    this.reason = frame.reason ?? null;
    this.replayed = frame.replayed;
    if (frame.recovered) {
      this.cursor = later(this.cursor, frame.cursor);
    } else {
      this.cursor = frame.cursor; // the server starts live from now: older cursors are void
    }
    if (!this._queue.length) this._consumed = this.cursor; // the iterator has taken everything
    this._call("onSubscribed", { cursor: frame.cursor, recovered: frame.recovered, reason: this.reason, replayed: frame.replayed, resumed: resuming });
    if (!frame.recovered && (resuming || this.options.cursor)) {
      // events were lost to us: tell the app; a state mirror needs a fresh snapshot
      this._call("onGap", { reason: this.reason, cursor: frame.cursor });
      this.client._emit("gap", { sub: this.sub, reason: this.reason });
      if (this.options.snapshot && resuming) {
        this._awaitingSnapshot = true;
        this._discard = true;
        this.client._resnapshot(this);
        return;
      }
    }
    if (!this._awaitingSnapshot && first) this._resolveReady(this._info());
  }

  _onSnapshot(frame) {
    this._awaitingSnapshot = false;
    this.snapshot = frame;
    this.cursor = frame.cursor;
    this._consumed = frame.cursor;
    this._call("onSnapshot", frame);
    this._resolveReady(this._info());
  }

  _onEvents(frame) {
    if (this._discard || this.closed) return;
    const before = this.cursor;
    const fresh = [];
    let cursor = this.cursor;
    for (const event of frame.events) {
      if (event.offset && covers(cursor, event.offset)) continue; // a duplicate
      fresh.push(event);
      cursor = advance(cursor, event.offset);
    }
    this.cursor = later(cursor, frame.cursor);
    if (this._callbackMode) {
      for (const event of fresh) this._call("onEvent", event);
      if (fresh.length || this.options.onBatch) this._call("onBatch", fresh, this.cursor);
      return;
    }
    if (!fresh.length) {
      if (!this._queue.length) this._consumed = this.cursor;
      return;
    }
    if (this._queue.length && this._queue.length + fresh.length > this._maxBuffered) {
      // the application is not keeping up: stop the flow on the server and keep what is queued;
      // once the iterator has taken it all, resubscribe from there (no event lost, memory bounded)
      this.cursor = before;
      this._paused = true;
      this._discard = true;
      this.client._pause(this);
      return;
    }
    for (const event of fresh) this._queue.push(event);
    this._wake();
  }

  _fail(error) {
    if (this.closed) return;
    this.closed = true;
    this.error = error;
    this._rejectReady(error);
    if (error) this._call("onError", error);
    this._wake();
  }

  _end() {
    if (this.closed) return;
    this.closed = true;
    this._rejectReady(new DashError("closed", `subscription ${this.sub} ended`));
    this._wake();
  }

  _info() {
    return { sub: this.sub, cursor: this.cursor, recovered: this.recovered, reason: this.reason, replayed: this.replayed, snapshot: this.snapshot };
  }

  _call(name, ...args) {
    const fn = this.options[name];
    if (typeof fn !== "function") return;
    try {
      fn(...args, this);
    } catch (e) {
      this.client._emit("error", e);
    }
  }

  _wake() {
    const waiters = this._waiters;
    this._waiters = [];
    for (const w of waiters) w();
  }

  /** Stop this subscription (resolves once the server confirmed, or at once when offline). */
  async unsubscribe() {
    if (this.closed) return;
    this.closed = true;
    this._wake();
    await this.client._unsubscribe(this);
  }

  async *[Symbol.asyncIterator]() {
    if (this._callbackMode) throw new DashError("bad_request", "this subscription delivers to callbacks");
    while (true) {
      if (this._queue.length) {
        const event = this._queue.shift();
        this._consumed = advance(this._consumed, event.offset);
        if (!this._queue.length) {
          this._consumed = later(this._consumed, this.cursor);
          if (this._paused && !this.closed) {
            this._paused = false;
            this.client._resume(this);
          }
        }
        yield event;
        continue;
      }
      if (this.closed) {
        if (this.error) throw this.error;
        return;
      }
      await new Promise((resolve) => this._waiters.push(resolve));
    }
  }
}

// ---------------------------------------------------------------- client

/**
 * A dash-stream WebSocket client. States: `idle`, `connecting`, `unauthorized` (needs a token:
 * call `setToken`), `open`, `reconnecting`, `closed` (by `close()`), `failed` (a 4500+ close).
 */
export class DashClient {
  constructor(url, options = {}) {
    this.url = DashClient.websocketUrl(url);
    this.options = options;
    this.state = "idle";
    this.session = null;
    this.welcome = null;
    this.principal = null; // {sub, exp} from the last `authed`
    this.reconnects = 0;
    this.lastClose = null; // {code, reason}
    this._token = options.token ?? null;
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this._random = options.random ?? Math.random;
    this._initialMs = options.backoff?.initialMs ?? 250;
    this._maxMs = options.backoff?.maxMs ?? 30_000;
    this._requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
    this._maxInFlight = options.maxInFlight ?? 1000;
    this._attempt = 0;
    this._ids = 0;
    this._ws = null;
    this._subs = new Map();
    this._pending = new Map(); // request id -> {frame, resolve, reject, timer, kind}
    this._listeners = new Map();
    this._timers = new Set();
    this._reconnectTimer = null;
    this._refreshTimer = null;
    this._heartbeat = null;
    this._lastFrameAt = 0;
    this._pingOutstanding = false;
    this._closedByUser = false;
    this._opened = null;
    if (!this._WebSocket) throw new DashError("bad_request", "no WebSocket implementation: pass options.WebSocket");
  }

  /** `http(s)://host[:port][/path]` or `ws(s)://…` → the `/v1/ws` WebSocket URL. */
  static websocketUrl(url) {
    const u = new URL(url, globalThis.location?.href);
    if (u.protocol === "http:") u.protocol = "ws:";
    if (u.protocol === "https:") u.protocol = "wss:";
    if (u.pathname === "/" || u.pathname === "") u.pathname = "/v1/ws";
    return u.toString();
  }

  // ------------------------------------------------------------ events

  /** Listen to `state`, `welcome`, `authed`, `gap`, `error`; returns a function that stops listening. */
  on(type, fn) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(fn);
    return () => this._listeners.get(type)?.delete(fn);
  }

  _emit(type, detail) {
    for (const fn of this._listeners.get(type) ?? []) {
      try {
        fn(detail);
      } catch (e) {
        if (type !== "error") this._emit("error", e);
      }
    }
  }

  _setState(state, detail = {}) {
    this.state = state;
    this._emit("state", { state, ...detail });
  }

  // ------------------------------------------------------------ connection

  /** Connect; resolves once the connection is open (authenticated when the server needs it). */
  connect() {
    if (this.state === "idle" || this.state === "closed" || this.state === "failed") {
      this._closedByUser = false;
      this._opened = this._deferred();
      this._open();
    }
    return this._opened.promise;
  }

  _deferred() {
    const d = {};
    d.promise = new Promise((resolve, reject) => {
      d.resolve = resolve;
      d.reject = reject;
    });
    d.promise.catch(() => {});
    return d;
  }

  _open() {
    this._reconnectTimer = null;
    this._setState(this.reconnects || this._attempt ? "reconnecting" : "connecting", { attempt: this._attempt });
    let ws;
    try {
      ws = new this._WebSocket(this.url, [SUBPROTOCOL]);
    } catch (e) {
      this._scheduleReconnect(1006, "", String(e));
      return;
    }
    this._ws = ws;
    ws.onmessage = (ev) => {
      if (this._ws === ws) this._onMessage(ev.data);
    };
    ws.onclose = (ev) => {
      if (this._ws === ws) this._onClose(ev.code, ev.reason || "");
    };
    ws.onerror = () => {}; // a close event always follows
  }

  _send(frame) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  _onMessage(data) {
    this._lastFrameAt = Date.now();
    this._pingOutstanding = false;
    let frame;
    try {
      frame = JSON.parse(typeof data === "string" ? data : new TextDecoder().decode(data));
    } catch {
      return;
    }
    switch (frame.op) {
      case "welcome":
        return this._onWelcome(frame);
      case "events":
        return this._subs.get(frame.sub)?._onEvents(frame);
      case "snapshot":
        return this._subs.get(frame.sub)?._onSnapshot(frame);
      case "subscribed": {
        const req = this._take(frame.id);
        const sub = this._subs.get(frame.sub);
        if (sub && (!req || req.sub === sub)) sub._onSubscribed(frame, Boolean(req?.resuming));
        return;
      }
      case "error":
        return this._onError(frame);
      default: {
        const req = this._take(frame.id);
        if (req) req.resolve(frame);
      }
    }
  }

  async _onWelcome(frame) {
    this.welcome = frame;
    this.session = frame.session;
    this._emit("welcome", frame);
    this._startHeartbeat((frame.heartbeat_s || 25) * 1000);
    if (frame.auth !== "required") return this._ready();
    let token = this._token;
    if (this.options.tokenProvider) {
      try {
        token = this._token = await this.options.tokenProvider();
      } catch (e) {
        this._emit("error", e);
      }
    }
    if (!token) {
      this._setState("unauthorized", { error: new DashError("unauthorized", "the server needs a token") });
      return;
    }
    this._authenticate(token);
  }

  _authenticate(token) {
    const ws = this._ws;
    this._request({ op: "auth", token }, "auth").then(
      (authed) => {
        if (this._ws !== ws) return;
        this._onAuthed(authed);
        this._ready();
      },
      (error) => {
        if (this._ws !== ws) return;
        this._setState("unauthorized", { error });
        this._emit("error", error);
      },
    );
  }

  _onAuthed(frame) {
    this.principal = { sub: frame.sub, exp: frame.exp ?? null };
    this._emit("authed", this.principal);
    clearTimeout(this._refreshTimer);
    this._refreshTimer = null;
    if (frame.exp && this.options.tokenProvider) {
      const lifetime = frame.exp * 1000 - Date.now();
      this._refreshTimer = setTimeout(() => this._refreshFromProvider(), Math.max(0, lifetime * 0.8));
    }
  }

  async _refreshFromProvider() {
    try {
      await this.refresh(await this.options.tokenProvider());
    } catch (e) {
      this._emit("error", e);
    }
  }

  /** Send a `refresh` op with a new token (for the same subject); resolves with the `authed` frame. */
  async refresh(token) {
    this._token = token;
    const authed = await this._request({ op: "refresh", token }, "refresh");
    this._onAuthed(authed);
    return authed;
  }

  /** Give the client a token: authenticates now when it waits for one, else refreshes. */
  setToken(token) {
    this._token = token;
    if (this.state === "unauthorized" && this._ws && this._ws.readyState === 1) {
      this._authenticate(token);
    } else if (this.state === "unauthorized" || this.state === "failed") {
      this._closedByUser = false;
      if (!this._opened) this._opened = this._deferred();
      this._open();
    } else if (this.state === "open" && this.welcome?.auth === "required") {
      this.refresh(token).catch((e) => this._emit("error", e));
    }
  }

  _ready() {
    this._attempt = 0;
    const waiting = [...this._subs.values()]; // listeners of "open" may subscribe: those go out at once
    this._setState("open", { session: this.session });
    for (const sub of waiting) {
      if (!sub.closed && !sub._paused && this._subs.get(sub.sub) === sub) this._subscribeOnWire(sub);
    }
    for (const [id, req] of this._pending) {
      if (req.kind === "publish" && !req.sentOn) {
        req.sentOn = this._ws;
        this._send({ ...req.frame, id });
      }
    }
    this._opened?.resolve(this);
  }

  _onClose(code, reason) {
    const ws = this._ws;
    this._ws = null;
    this._stopHeartbeat();
    clearTimeout(this._refreshTimer);
    this.lastClose = { code, reason };
    // requests that cannot survive a reconnect fail; publishes are re-sent (their ids dedup)
    for (const [id, req] of this._pending) {
      if (req.kind === "publish") {
        if (req.sentOn === ws) req.sentOn = null;
      } else {
        this._take(id);
        req.reject(new DashError("disconnected", `connection closed (${code}) before the answer`, { retryable: true }));
      }
    }
    if (this._closedByUser) return;
    const parsed = parseCloseReason(reason);
    if (code === 4501 && !this.options.tokenProvider) {
      this._setState("unauthorized", { closeCode: code, reason, error: new DashError("unauthorized", parsed.message || "unauthorized", { closeCode: code }) });
      return;
    }
    if (shouldReconnect(code) || (code === 4501 && this.options.tokenProvider)) {
      this._scheduleReconnect(code, reason, parsed.message, parsed.retryAfterMs);
      return;
    }
    const error = new DashError(parsed.code || "closed", `server closed the connection with ${code}${parsed.message ? `: ${parsed.message}` : ""}`, { closeCode: code });
    this._failAll(error);
    this._setState("failed", { closeCode: code, reason, error });
    this._emit("error", error);
  }

  _scheduleReconnect(code, reason, message, retryAfterMs = null) {
    this._attempt += 1;
    this.reconnects += 1;
    let delayMs;
    if (retryAfterMs != null) {
      delayMs = Math.min(retryAfterMs, MAX_DELAY_MS); // the server already jittered it
    } else if (code === 1001) {
      delayMs = 500 + this._random() * 4500;
    } else {
      const ceiling = Math.min(this._maxMs, this._initialMs * 2 ** Math.min(this._attempt - 1, 20));
      delayMs = ceiling / 2 + (this._random() * ceiling) / 2;
    }
    this._setState("reconnecting", { closeCode: code, reason, message, delayMs: Math.round(delayMs), attempt: this._attempt });
    this._reconnectTimer = setTimeout(() => this._open(), delayMs);
  }

  _failAll(error) {
    for (const [id, req] of this._pending) {
      this._take(id);
      req.reject(error);
    }
    for (const sub of this._subs.values()) sub._fail(error);
    this._subs.clear();
    this._opened?.reject(error);
  }

  /** Close for good: subscriptions end, pending requests fail. */
  close() {
    this._closedByUser = true;
    clearTimeout(this._reconnectTimer);
    clearTimeout(this._refreshTimer);
    this._stopHeartbeat();
    const ws = this._ws;
    this._ws = null;
    if (ws && ws.readyState <= 1) ws.close(1000, "client closed");
    for (const [id, req] of this._pending) {
      this._take(id);
      req.reject(new DashError("closed", "client closed"));
    }
    for (const sub of this._subs.values()) sub._end();
    this._subs.clear();
    this._opened?.reject(new DashError("closed", "client closed"));
    this._setState("closed");
  }

  // ------------------------------------------------------------ heartbeat

  _startHeartbeat(intervalMs) {
    this._stopHeartbeat();
    this._lastFrameAt = Date.now();
    const ws = this._ws;
    this._heartbeat = setInterval(() => {
      if (this._ws !== ws) return;
      const idle = Date.now() - this._lastFrameAt;
      if (idle > 2 * intervalMs && this._pingOutstanding) {
        ws.close(4002, "heartbeat timeout"); // our side: no answer to the ping, reconnect
        this._onClose(4002, JSON.stringify({ code: "heartbeat_timeout" }));
      } else if (idle > intervalMs && !this._pingOutstanding) {
        this._pingOutstanding = this._send({ op: "ping", id: this._nextId() });
      }
    }, Math.max(250, intervalMs / 2));
  }

  _stopHeartbeat() {
    clearInterval(this._heartbeat);
    this._heartbeat = null;
  }

  // ------------------------------------------------------------ requests

  _nextId() {
    this._ids += 1;
    return `c${this._ids}`;
  }

  _request(frame, kind, extra = {}) {
    const id = this._nextId();
    return new Promise((resolve, reject) => {
      const req = { frame, resolve, reject, kind, sentOn: null, ...extra };
      req.timer = setTimeout(() => {
        if (this._take(id)) reject(new DashError("timeout", `no answer to ${frame.op} within ${this._requestTimeoutMs} ms`, { retryable: true }));
      }, this._requestTimeoutMs);
      this._pending.set(id, req);
      if (this._send({ ...frame, id })) {
        req.sentOn = this._ws;
      } else if (kind !== "publish") {
        // only publishes wait for the next connection (their ids make the re-send safe)
        this._take(id);
        reject(new DashError("disconnected", `not connected: ${frame.op} not sent`, { retryable: true }));
      }
    });
  }

  _take(id) {
    if (id == null) return null;
    const req = this._pending.get(id);
    if (!req) return null;
    this._pending.delete(id);
    clearTimeout(req.timer);
    return req;
  }

  _onError(frame) {
    const error = new DashError(frame.code, frame.message, { retryable: frame.retryable, retryAfterMs: frame.retry_after_ms ?? null });
    const req = this._take(frame.id);
    if (!req) {
      this._emit("error", error);
      return;
    }
    if (req.kind === "subscribe") {
      const sub = req.sub;
      if (error.retryable && !sub.closed && this._subs.get(sub.sub) === sub) {
        const t = setTimeout(() => {
          this._timers.delete(t);
          if (!sub.closed && this.state === "open") this._subscribeOnWire(sub);
        }, error.retryAfterMs ?? 1000);
        this._timers.add(t);
        return;
      }
      this._subs.delete(sub.sub);
      sub._fail(error);
      return;
    }
    req.reject(error);
  }

  // ------------------------------------------------------------ subscriptions

  /**
   * Subscribe to topic patterns. Options: `where` (filter), `cursor` or `from` ("latest" |
   * "earliest"), `snapshot` (start with the live swarm state), and callbacks `onEvent`, `onBatch`,
   * `onSnapshot`, `onSubscribed`, `onGap`, `onError`; without onEvent/onBatch, iterate it.
   */
  subscribe(topics, options = {}) {
    if (!Array.isArray(topics) || topics.length === 0) throw new DashError("bad_request", "topics: at least one pattern");
    if (options.snapshot && (options.cursor || options.from)) throw new DashError("bad_request", "snapshot starts at the snapshot's cursor: give no cursor or from");
    const id = options.id ?? `s${this._subs.size + 1}-${randomId(this._random).slice(0, 8)}`;
    if (this._subs.has(id)) throw new DashError("conflict", `subscription ${id} exists`);
    const sub = new Subscription(this, id, topics, options);
    this._subs.set(id, sub);
    if (this.state === "open") this._subscribeOnWire(sub);
    return sub;
  }

  _subscribeOnWire(sub) {
    const resuming = sub._started;
    const frame = sub._frame(null);
    delete frame.id;
    this._request(frame, "subscribe", { sub, resuming }).catch(() => {});
  }

  _resnapshot(sub) {
    // the resume was not honoured: replace the subscription by one that starts with a snapshot
    this._send({ op: "unsubscribe", id: this._nextId(), sub: sub.sub });
    sub._started = false;
    sub.cursor = null;
    this._subscribeOnWire(sub);
  }

  _pause(sub) {
    this._send({ op: "unsubscribe", id: this._nextId(), sub: sub.sub });
  }

  _resume(sub) {
    // the iterator caught up: resubscribe from its cursor (frames until `subscribed` are dropped)
    if (this._subs.get(sub.sub) === sub && this.state === "open") this._subscribeOnWire(sub);
  }

  async _unsubscribe(sub) {
    if (this._subs.get(sub.sub) !== sub) return;
    this._subs.delete(sub.sub);
    if (this.state !== "open") return;
    try {
      await this._request({ op: "unsubscribe", sub: sub.sub }, "unsubscribe");
    } catch (e) {
      if (e.code !== "not_found" && e.code !== "disconnected") throw e;
    }
  }

  // ------------------------------------------------------------ publish

  /**
   * Publish one event; resolves with `{offset, duplicate}` once the server acknowledged it. The
   * event gets an `id` when it has none, so a publish re-sent after a reconnect is deduplicated.
   */
  publish(event) {
    if (!event || typeof event !== "object") return Promise.reject(new DashError("bad_request", "event: expected an object"));
    const inFlight = [...this._pending.values()].filter((r) => r.kind === "publish").length;
    if (inFlight >= this._maxInFlight) return Promise.reject(new DashError("rate_limited", `more than ${this._maxInFlight} publishes in flight`, { retryable: true }));
    const withId = event.id ? event : { ...event, id: randomId(this._random) };
    return this._request({ op: "publish", event: withId }, "publish").then((ack) => ({ offset: ack.offset, duplicate: Boolean(ack.duplicate), id: withId.id }));
  }

  /** A round trip to the server. */
  async ping() {
    await this._request({ op: "ping" }, "ping");
  }
}
