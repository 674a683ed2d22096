// src/urls.ts
var Endpoints = class {
  constructor(url, page = pageLocation()) {
    const parsed = page === void 0 ? new URL(url) : new URL(url, page);
    if (parsed.protocol === "ws:") parsed.protocol = "http:";
    if (parsed.protocol === "wss:") parsed.protocol = "https:";
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
      throw new TypeError(`Herald url must be http(s) or ws(s), got ${parsed.protocol}`);
    }
    parsed.search = "";
    parsed.hash = "";
    this.base = parsed;
    this.prefix = parsed.pathname.replace(/\/+$/, "");
  }
  /** A key naming this server, for the lock and channel tabs share. */
  get origin() {
    return this.base.origin + this.prefix;
  }
  http(path, query = {}) {
    return this.build(path, query).toString();
  }
  ws(path, query = {}) {
    const url = this.build(path, query);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return url.toString();
  }
  build(path, query) {
    const url = new URL(this.base.toString());
    url.pathname = this.prefix + path;
    for (const [key, value] of Object.entries(query)) {
      if (value !== void 0) url.searchParams.set(key, value);
    }
    return url;
  }
};
function topicSegment(topic) {
  return encodeURIComponent(topic).replace(/%3A/gi, ":");
}
function pageLocation() {
  const location = globalThis.location;
  return typeof location?.href === "string" ? location.href : void 0;
}

// src/rest.ts
var HttpError = class extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
    this.name = "HttpError";
  }
};
var RestApi = class {
  constructor(endpoints, fetcher, getToken) {
    this.endpoints = endpoints;
    this.fetcher = fetcher;
    this.getToken = getToken;
  }
  list(options = {}) {
    if (options.page !== void 0 && options.before !== void 0) {
      return Promise.reject(new TypeError("list(): page and before cannot be combined"));
    }
    return this.json("GET", "/api/v1/notifications", {
      page: options.page?.toString(),
      before: options.before,
      limit: options.limit?.toString(),
      unread: options.unread === void 0 ? void 0 : String(options.unread)
    });
  }
  async unreadCount() {
    const body = await this.json("GET", "/api/v1/notifications/unread-count");
    return body.unread_count;
  }
  markRead(id) {
    return this.json("POST", `/api/v1/notifications/${encodeURIComponent(id)}/read`);
  }
  async markAllRead() {
    const body = await this.json("POST", "/api/v1/notifications/read-all");
    return body.updated;
  }
  /** The topic's state, or null when the topic is unknown or expired (404). */
  async topicState(topic) {
    try {
      return await this.json("GET", `/api/v1/topics/${topicSegment(topic)}`);
    } catch (error) {
      if (error instanceof HttpError && error.status === 404) return null;
      throw error;
    }
  }
  /** The state and the events after `since`; an unknown topic reads as no state and no events. */
  async topicHistory(topic, since) {
    try {
      return await this.json("GET", `/api/v1/topics/${topicSegment(topic)}/events`, {
        since: String(since)
      });
    } catch (error) {
      if (error instanceof HttpError && error.status === 404) return { topic, state: null, events: [], gone: false };
      throw error;
    }
  }
  /** Whether the token may watch `topic`: false on 403 only, so a network failure never refuses a topic. */
  async mayWatch(topic) {
    try {
      await this.topicState(topic);
      return true;
    } catch (error) {
      return !(error instanceof HttpError && error.status === 403);
    }
  }
  /**
   * Asks the server about `token`. A browser shows a WebSocket refused with 401 only as close code 1006, the
   * same as a network failure, so after a socket fails before opening this tells the two apart.
   */
  async tokenVerdict(token) {
    try {
      const response = await this.fetcher(this.endpoints.http("/api/v1/notifications/unread-count"), {
        headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
        cache: "no-store"
      });
      if (response.status === 401) return "refused";
      return response.ok ? "accepted" : "unknown";
    } catch {
      return "unknown";
    }
  }
  async json(method, path, query) {
    const token = await this.getToken();
    const response = await this.fetcher(this.endpoints.http(path, query), {
      method,
      headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
      cache: "no-store"
    });
    if (!response.ok) throw await httpError(response);
    return await response.json();
  }
};
async function httpError(response) {
  let code = `http_${response.status}`;
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    const error = body?.error;
    if (typeof error?.code === "string") code = error.code;
    if (typeof error?.message === "string") message = error.message;
  } catch {
  }
  return new HttpError(response.status, code, message);
}

// src/timers.ts
var systemTimers = {
  setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle)
};
var Timer = class {
  constructor(timers) {
    this.timers = timers;
    this.armed = false;
  }
  get pending() {
    return this.armed;
  }
  start(ms, callback) {
    this.cancel();
    this.armed = true;
    this.handle = this.timers.setTimeout(() => {
      this.armed = false;
      callback();
    }, ms);
  }
  cancel() {
    if (this.armed) this.timers.clearTimeout(this.handle);
    this.armed = false;
  }
};

// src/types.ts
var CloseCode = {
  goingAway: 1001,
  abnormal: 1006,
  internal: 1011,
  idleTimeout: 4e3,
  tokenExpired: 4001,
  slowConsumer: 4008,
  resync: 4009
};

// src/transports/poll-topics.ts
var TopicPoller = class {
  constructor(rest, emit, onError) {
    this.rest = rest;
    this.emit = emit;
    this.onError = onError;
    this.topics = /* @__PURE__ */ new Map();
  }
  /** Starts (or restarts, as a re-subscribe does) watching `topic`, and reads it now. */
  subscribe(topic, since) {
    const entry = { seq: void 0, since, busy: false };
    this.topics.set(topic, entry);
    return this.read(topic, entry);
  }
  unsubscribe(topic) {
    this.topics.delete(topic);
  }
  /** One read of every watched topic. */
  async poll() {
    await Promise.all([...this.topics].map(([topic, entry]) => this.read(topic, entry)));
  }
  async read(topic, entry) {
    if (entry.busy) return;
    entry.busy = true;
    try {
      if (entry.seq === void 0 && entry.since === void 0) {
        const state = await this.rest.topicState(topic);
        if (!this.current(topic, entry)) return;
        this.emit({ type: "subscribed", topic, state });
        entry.seq = state?.seq ?? 0;
        return;
      }
      const first = entry.seq === void 0;
      const history = await this.rest.topicHistory(topic, entry.seq ?? entry.since ?? 0);
      if (this.current(topic, entry)) this.apply(topic, entry, history, first);
    } catch (error) {
      if (!this.current(topic, entry)) return;
      if (error instanceof HttpError && error.status === 403) {
        this.topics.delete(topic);
        this.emit({ type: "error", code: "forbidden", message: error.message, topic });
        return;
      }
      this.onError(error instanceof Error ? error : new Error(String(error)));
    } finally {
      entry.busy = false;
    }
  }
  apply(topic, entry, history, first) {
    if (history.gone) {
      this.emit({ type: "error", code: "history_gone", message: "history no longer reaches back", topic });
    }
    if (first || history.gone) this.emit({ type: "subscribed", topic, state: history.state });
    let seq = entry.seq ?? entry.since ?? 0;
    if (history.gone) seq = history.state?.seq ?? 0;
    for (const event2 of history.events) {
      if (event2.seq <= seq) continue;
      this.emit({ type: "event", topic, seq: event2.seq, event: event2 });
      seq = event2.seq;
    }
    entry.seq = seq;
  }
  /** A read still matters only if the topic was not unsubscribed or re-subscribed meanwhile. */
  current(topic, entry) {
    return this.topics.get(topic) === entry;
  }
};

// src/transports/poll.ts
var FIRST_PAGE = 100;
function pollTransport(options) {
  return {
    kind: "poll",
    topicsAtConnect: false,
    create: (params, handlers) => new PollTransport(options, params, handlers)
  };
}
var PollTransport = class {
  constructor(options, params, handlers) {
    this.options = options;
    this.handlers = handlers;
    this.kind = "poll";
    /** The read flags of the newest items, to notice ones read elsewhere. */
    this.readFlags = /* @__PURE__ */ new Map();
    this.opened = false;
    this.done = false;
    this.lastId = params.since;
    this.timer = new Timer(options.timers);
    this.topics = new TopicPoller(
      options.rest,
      (frame) => this.emit(frame),
      (error) => {
        if (!this.done) handlers.onError(error);
      }
    );
    void this.tick();
  }
  send(frame) {
    if (this.done) return "unavailable";
    if (frame.type === "subscribe") {
      void this.topics.subscribe(frame.topic, frame.since);
      return "sent";
    }
    if (frame.type === "unsubscribe") {
      this.topics.unsubscribe(frame.topic);
      return "sent";
    }
    return "unavailable";
  }
  close() {
    this.done = true;
    this.timer.cancel();
  }
  async tick() {
    try {
      await this.pollInbox();
    } catch (error) {
      if (this.done) return;
      if (!this.opened || error instanceof HttpError && error.status === 401) {
        this.done = true;
        this.handlers.onClose({
          code: CloseCode.abnormal,
          reason: error instanceof Error ? error.message : String(error),
          opened: this.opened,
          authRefused: error instanceof HttpError && error.status === 401
        });
        return;
      }
      this.handlers.onError(error instanceof Error ? error : new Error(String(error)));
    }
    if (this.done) return;
    await this.topics.poll();
    if (!this.done) this.timer.start(this.options.intervalMs, () => void this.tick());
  }
  async pollInbox() {
    const first = !this.opened;
    const { items, fetched, page, cut } = first && this.lastId === void 0 ? await this.newestPage() : await this.newerThan(this.lastId, first ? FIRST_PAGE : this.options.pageSize);
    if (this.done) return;
    if (first) {
      this.opened = true;
      this.handlers.onOpen();
      this.emit({ type: "unread_count", unread_count: page.unread_count });
    }
    const oldestFirst = [...items].reverse();
    if (first) {
      const backlog = this.lastId === void 0 ? oldestFirst.filter((n) => !n.read) : oldestFirst;
      this.emit({ type: "notifications", items: backlog, more: false });
    } else {
      for (const notification of oldestFirst) this.emit({ type: "notification", data: notification });
    }
    const turnedRead = fetched.filter((n) => n.read && this.readFlags.get(n.id) === false).map((n) => n.id);
    if (!first && turnedRead.length > 0) this.emit({ type: "read", ids: turnedRead });
    if (!first) this.emit({ type: "unread_count", unread_count: page.unread_count });
    this.readFlags = new Map(fetched.map((n) => [n.id, n.read]));
    const newest = page.items[0]?.id;
    if (newest !== void 0 && (this.lastId === void 0 || newest > this.lastId)) this.lastId = newest;
    if (cut) {
      this.handlers.onError(new Error(`polling: more than ${items.length} new notifications; older ones skipped`));
    }
  }
  /** The first poll without `since`: the newest page, whose unread items are the backlog. */
  async newestPage() {
    const page = await this.options.rest.list({ limit: FIRST_PAGE });
    return { items: page.items, fetched: page.items, page, cut: false };
  }
  /**
   * Everything newer than `lastId` (all of the newest page when there is none), newest first. A catch-up
   * reads full pages, so it reaches as far back as the WebSocket's (1,000).
   */
  async newerThan(lastId, limit) {
    const first = await this.options.rest.list({ limit });
    const items = [];
    const fetched = [];
    let page = first;
    for (let pages = 1; ; pages += 1) {
      fetched.push(...page.items);
      const older = page.items.findIndex((n) => lastId !== void 0 && n.id <= lastId);
      items.push(...older < 0 ? page.items : page.items.slice(0, older));
      const before = page.next_before ?? null;
      if (older >= 0 || before === null || lastId === void 0 || this.done) {
        return { items, fetched, page: first, cut: false };
      }
      if (pages >= this.options.maxPages) return { items, fetched, page: first, cut: true };
      page = await this.options.rest.list({ limit, before });
    }
  }
  emit(frame) {
    if (!this.done) this.handlers.onFrame(frame);
  }
};

// src/frames.ts
var isObject = (value) => typeof value === "object" && value !== null && !Array.isArray(value);
var isString = (value) => typeof value === "string";
var isNumber = (value) => typeof value === "number" && Number.isFinite(value);
var isStringArray = (value) => Array.isArray(value) && value.every(isString);
var isNotification = (value) => isObject(value) && isString(value["id"]);
var shapes = {
  hello: (f) => isNumber(f["unread_count"]),
  notifications: (f) => Array.isArray(f["items"]) && f["items"].every(isNotification),
  notification: (f) => isNotification(f["data"]),
  read: (f) => isStringArray(f["ids"]),
  read_all: () => true,
  pong: () => true,
  resync: () => true,
  error: (f) => isString(f["code"]),
  subscribed: (f) => isString(f["topic"]) && (f["state"] === null || isObject(f["state"])),
  unsubscribed: (f) => isString(f["topic"]),
  event: (f) => isString(f["topic"]) && isNumber(f["seq"]) && isObject(f["event"]),
  close: (f) => isNumber(f["code"])
};
function decodeFrame(text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    return void 0;
  }
  return asFrame(value);
}
function asFrame(value) {
  if (!isObject(value) || !isString(value["type"])) return void 0;
  const check = shapes[value["type"]];
  return check?.(value) ? value : void 0;
}

// src/transports/liveness.ts
var Liveness = class {
  constructor(timers, timeoutMs, onSilent) {
    this.timeoutMs = timeoutMs;
    this.onSilent = onSilent;
    this.timer = new Timer(timers);
  }
  /** Something arrived: the connection is alive for another `timeoutMs`. */
  kick() {
    this.timer.start(this.timeoutMs, this.onSilent);
  }
  stop() {
    this.timer.cancel();
  }
};

// src/transports/sse-parser.ts
var SseParser = class {
  constructor() {
    this.pending = "";
    this.skipLeadingLf = false;
    this.started = false;
    this.eventType = "";
    this.data = [];
  }
  /** Parses a chunk; returns the events it completed. */
  push(chunk) {
    let text = chunk;
    if (!this.started && text.length > 0) {
      this.started = true;
      if (text.charCodeAt(0) === 65279) text = text.slice(1);
    }
    if (this.skipLeadingLf && text.startsWith("\n")) text = text.slice(1);
    this.skipLeadingLf = false;
    const events = [];
    let buffer = this.pending + text;
    for (; ; ) {
      const end = buffer.search(/[\r\n]/);
      if (end < 0) break;
      const line = buffer.slice(0, end);
      let rest = end + 1;
      if (buffer[end] === "\r") {
        if (end + 1 === buffer.length) this.skipLeadingLf = true;
        else if (buffer[end + 1] === "\n") rest += 1;
      }
      buffer = buffer.slice(rest);
      const event2 = this.line(line);
      if (event2 !== void 0) events.push(event2);
    }
    this.pending = buffer;
    return events;
  }
  line(line) {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return void 0;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (field) {
      case "event":
        this.eventType = value;
        break;
      case "data":
        this.data.push(value);
        break;
      case "id":
        if (!value.includes("\0")) this.lastId = value;
        break;
      default:
        break;
    }
    return void 0;
  }
  dispatch() {
    const data = this.data;
    const event2 = this.eventType || "message";
    this.data = [];
    this.eventType = "";
    if (data.length === 0) return void 0;
    return { event: event2, data: data.join("\n"), id: this.lastId };
  }
};

// src/transports/sse.ts
function sseTransport(options) {
  return {
    kind: "sse",
    topicsAtConnect: true,
    create: (params, handlers) => new SseTransport(options, params, handlers)
  };
}
var SseTransport = class {
  constructor(options, params, handlers) {
    this.options = options;
    this.handlers = handlers;
    this.kind = "sse";
    this.abort = new AbortController();
    this.parser = new SseParser();
    this.opened = false;
    this.done = false;
    this.liveness = new Liveness(
      options.timers,
      options.idleTimeoutMs,
      () => this.finish({ code: CloseCode.abnormal, reason: "no data from the server in time", opened: this.opened })
    );
    void this.run(params);
  }
  send(frame) {
    if (frame.type === "subscribe") return "reconnect";
    if (frame.type === "unsubscribe") return "sent";
    return "unavailable";
  }
  close() {
    if (this.done) return;
    this.done = true;
    this.liveness.stop();
    this.abort.abort();
  }
  async run(params) {
    const url = this.options.endpoints.http("/api/v1/stream", {
      since: params.since,
      topics: params.topics.length > 0 ? params.topics.join(",") : void 0
    });
    let response;
    try {
      response = await this.options.fetch(url, {
        headers: { Authorization: `Bearer ${params.token}`, Accept: "text/event-stream" },
        cache: "no-store",
        signal: this.abort.signal
      });
    } catch (error) {
      this.finish({ code: CloseCode.abnormal, reason: describe(error), opened: false });
      return;
    }
    if (this.done) return;
    const type = response.headers.get("content-type") ?? "";
    if (!response.ok || response.body === null || !type.includes("text/event-stream")) {
      void response.body?.cancel().catch(() => void 0);
      this.finish({
        code: CloseCode.abnormal,
        reason: `HTTP ${response.status}`,
        opened: false,
        authRefused: response.status === 401,
        status: response.status
      });
      return;
    }
    this.opened = true;
    this.liveness.kick();
    this.handlers.onOpen();
    await this.read(response.body);
  }
  async read(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    try {
      while (!this.done) {
        const { value, done } = await reader.read();
        if (done || this.done) break;
        this.liveness.kick();
        for (const event2 of this.parser.push(decoder.decode(value, { stream: true }))) {
          this.event(event2);
          if (this.done) break;
        }
      }
    } catch (error) {
      this.finish({ code: CloseCode.abnormal, reason: describe(error), opened: true });
      return;
    } finally {
      reader.releaseLock();
    }
    this.finish({ code: CloseCode.abnormal, reason: "the stream ended", opened: true });
  }
  event(event2) {
    const frame = decodeFrame(event2.data);
    if (frame === void 0) return;
    if (frame.type === "close") {
      this.finish({ code: frame.code, reason: frame.reason, opened: true });
      return;
    }
    this.handlers.onFrame(frame);
  }
  finish(info) {
    if (this.done) return;
    this.done = true;
    this.liveness.stop();
    this.abort.abort();
    this.handlers.onClose(info);
  }
};
function describe(error) {
  return error instanceof Error ? error.message : String(error);
}

// src/transports/websocket.ts
var OPEN = 1;
function websocketTransport(options) {
  return {
    kind: "websocket",
    topicsAtConnect: false,
    create: (params, handlers) => new WebSocketTransport(options, params, handlers)
  };
}
var WebSocketTransport = class {
  constructor(options, params, handlers) {
    this.options = options;
    this.handlers = handlers;
    this.kind = "websocket";
    this.opened = false;
    this.done = false;
    this.heartbeat = new Timer(options.timers);
    this.liveness = new Liveness(options.timers, options.idleTimeoutMs, () => this.silent());
    this.socket = new options.WebSocket(options.endpoints.ws("/ws", { token: params.token, since: params.since }));
    this.socket.onopen = () => this.open();
    this.socket.onmessage = (event2) => this.message(event2.data);
    this.socket.onclose = (event2) => this.finish({ code: event2.code, reason: event2.reason, opened: this.opened });
    this.socket.onerror = () => void 0;
  }
  send(frame) {
    if (this.done || this.socket.readyState !== OPEN) return "unavailable";
    this.socket.send(JSON.stringify(frame));
    return "sent";
  }
  close() {
    if (this.done) return;
    this.done = true;
    this.stop();
    this.socket.close(1e3, "client closed");
  }
  open() {
    if (this.done) return;
    this.opened = true;
    this.liveness.kick();
    this.schedulePing();
    this.handlers.onOpen();
  }
  message(data) {
    if (this.done) return;
    this.liveness.kick();
    if (typeof data !== "string") return;
    const frame = decodeFrame(data);
    if (frame !== void 0) this.handlers.onFrame(frame);
  }
  schedulePing() {
    this.heartbeat.start(this.options.heartbeatMs, () => {
      this.send({ type: "ping" });
      this.schedulePing();
    });
  }
  /** A dead connection may take minutes to report its close, so it is reported now. */
  silent() {
    this.socket.close(1e3, "no frame from the server");
    this.finish({ code: CloseCode.abnormal, reason: "no frame from the server in time", opened: this.opened });
  }
  finish(info) {
    if (this.done) return;
    this.done = true;
    this.stop();
    this.handlers.onClose(info);
  }
  stop() {
    this.heartbeat.cancel();
    this.liveness.stop();
    this.socket.onopen = null;
    this.socket.onmessage = null;
    this.socket.onclose = null;
    this.socket.onerror = null;
  }
};

// src/chain.ts
var POLL_MAX_PAGES = 10;
function transportChain(settings2, endpoints, rest) {
  const env = settings2.environment;
  const poll = () => pollTransport({
    rest,
    timers: env.timers,
    intervalMs: settings2.pollIntervalMs,
    pageSize: settings2.pollPageSize,
    maxPages: POLL_MAX_PAGES
  });
  const chain = [];
  for (const kind of settings2.transports) {
    if (kind === "websocket" && env.WebSocket !== void 0) {
      chain.push(
        websocketTransport({
          endpoints,
          WebSocket: env.WebSocket,
          timers: env.timers,
          heartbeatMs: settings2.heartbeatMs,
          idleTimeoutMs: settings2.idleTimeoutMs
        })
      );
    } else if (kind === "sse" && typeof ReadableStream !== "undefined") {
      chain.push(
        sseTransport({ endpoints, fetch: env.fetch, timers: env.timers, idleTimeoutMs: settings2.idleTimeoutMs })
      );
    } else if (kind === "poll") {
      chain.push(poll());
    }
  }
  return chain.length > 0 ? chain : [poll()];
}

// src/emitter.ts
var Emitter = class {
  constructor() {
    this.listeners = {};
  }
  on(event2, listener) {
    const set = this.listeners[event2] ?? /* @__PURE__ */ new Set();
    this.listeners[event2] = set;
    set.add(listener);
    return () => {
      set.delete(listener);
    };
  }
  emit(event2, ...args) {
    const set = this.listeners[event2];
    if (set === void 0) return;
    for (const listener of [...set]) {
      try {
        listener(...args);
      } catch (error) {
        rethrowLater(error);
      }
    }
  }
  clear() {
    this.listeners = {};
  }
};
function rethrowLater(error) {
  queueMicrotask(() => {
    throw error;
  });
}

// src/events.ts
var AuthError = class extends Error {
  constructor(message) {
    super(message);
    this.name = "AuthError";
  }
};
var ServerError = class extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
    this.name = "ServerError";
  }
};

// src/dedupe.ts
var RecentIds = class {
  constructor(capacity) {
    this.capacity = capacity;
    this.ids = /* @__PURE__ */ new Set();
    if (!(capacity >= 1)) throw new RangeError("RecentIds needs a capacity of at least 1");
  }
  get size() {
    return this.ids.size;
  }
  has(id) {
    return this.ids.has(id);
  }
  /** Remembers `id`; returns whether it is new. Seeing an id again makes it the most recent. */
  add(id) {
    const seen = this.ids.delete(id);
    this.ids.add(id);
    if (this.ids.size > this.capacity) {
      const oldest = this.ids.values().next();
      if (!oldest.done) this.ids.delete(oldest.value);
    }
    return !seen;
  }
};

// src/inbox.ts
var Inbox = class {
  constructor(options, sink) {
    this.options = options;
    this.sink = sink;
    this.unread = /* @__PURE__ */ new Map();
    this.seen = new RecentIds(options.dedupeSize);
    this.knownRead = new RecentIds(options.dedupeSize);
  }
  /** The newest notification id seen: where a new connection resumes (`since`). */
  get lastId() {
    return this.newest;
  }
  get unreadCount() {
    return this.count;
  }
  apply(frame) {
    switch (frame.type) {
      case "hello":
        this.setCount(frame.unread_count);
        break;
      case "unread_count":
        this.setCount(frame.unread_count);
        break;
      case "notifications":
        this.backlog(frame.items, frame.more);
        break;
      case "notification":
        if (this.admit(frame.data, false) && !frame.data.read && this.count !== void 0) {
          this.setCount(this.count + 1);
        }
        break;
      case "read":
        this.read(frame.ids);
        break;
      case "read_all":
        this.unread.clear();
        this.sink.read({ ids: [], all: true });
        this.setCount(0);
        break;
    }
  }
  snapshot() {
    const unread = [...this.unread.values()].sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
    return { lastId: this.newest, unreadCount: this.count, unread };
  }
  /** Starts from another tab's snapshot: its unread notifications arrive as a backlog. */
  restore(snapshot2) {
    this.advance(snapshot2.lastId);
    if (snapshot2.unreadCount !== void 0) this.setCount(snapshot2.unreadCount);
    this.backlog(snapshot2.unread, false);
  }
  backlog(items, more) {
    let count = 0;
    for (const notification of items) {
      if (this.admit(notification, true)) count += 1;
    }
    this.sink.backlog({ count, more });
  }
  /** Emits a notification not seen before; returns whether it was new. */
  admit(notification, backlog) {
    this.advance(notification.id);
    if (!this.seen.add(notification.id)) return false;
    if (notification.read) this.knownRead.add(notification.id);
    else this.keepUnread(notification);
    this.sink.notification(notification, { backlog });
    return true;
  }
  read(ids) {
    const newly = ids.filter((id) => this.knownRead.add(id));
    if (newly.length === 0) return;
    for (const id of newly) this.unread.delete(id);
    this.sink.read({ ids: newly, all: false });
    if (this.count !== void 0) this.setCount(Math.max(0, this.count - newly.length));
  }
  keepUnread(notification) {
    this.unread.set(notification.id, notification);
    if (this.unread.size <= this.options.unreadKept) return;
    let oldest;
    for (const id of this.unread.keys()) if (oldest === void 0 || id < oldest) oldest = id;
    if (oldest !== void 0) this.unread.delete(oldest);
  }
  advance(id) {
    if (id !== void 0 && (this.newest === void 0 || id > this.newest)) this.newest = id;
  }
  setCount(count) {
    if (count === this.count) return;
    this.count = count;
    this.sink.unreadCount(count);
  }
};

// src/jwt.ts
function tokenSubject(token) {
  const payload = token.split(".")[1];
  if (payload === void 0) return void 0;
  try {
    const base64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(base64 + "=".repeat((4 - base64.length % 4) % 4));
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    if (typeof claims === "object" && claims !== null && "sub" in claims) {
      const sub = claims.sub;
      return typeof sub === "string" && sub !== "" ? sub : void 0;
    }
  } catch {
  }
  return void 0;
}

// src/backoff.ts
function fullJitterDelay(attempt, options) {
  const ceiling = Math.min(options.capMs, options.baseMs * 2 ** attempt);
  return Math.floor(options.random() * ceiling);
}
var Backoff = class {
  constructor(options) {
    this.options = options;
    this.attempts = 0;
  }
  /** How many delays were handed out since the last reset. */
  get attempt() {
    return this.attempts;
  }
  next() {
    const delay = fullJitterDelay(this.attempts, this.options);
    this.attempts = Math.min(this.attempts + 1, 32);
    return delay;
  }
  reset() {
    this.attempts = 0;
  }
};

// src/frame-router.ts
function routeFrame(frame, to) {
  switch (frame.type) {
    case "hello":
    case "notification":
    case "read":
    case "read_all":
    case "unread_count":
      to.sink.frame(frame);
      return "done";
    case "notifications": {
      const before = to.since();
      to.sink.frame(frame);
      return frame.more && to.since() !== before ? "fetch-more" : "done";
    }
    case "subscribed":
    case "unsubscribed":
    case "event": {
      const update = to.watchList.translate(frame);
      if (update !== void 0) to.sink.topic(update);
      return "done";
    }
    case "error": {
      if (frame.topic === void 0) {
        to.sink.error(new ServerError(frame.code, frame.message));
        return "done";
      }
      const update = to.watchList.translate({ ...frame, topic: frame.topic });
      if (update !== void 0) to.sink.topic(update);
      return "done";
    }
    case "resync":
    case "pong":
    case "close":
      return "done";
  }
}

// src/retry.ts
var SERVER_ASKED = /* @__PURE__ */ new Set([
  CloseCode.goingAway,
  CloseCode.idleTimeout,
  CloseCode.tokenExpired,
  CloseCode.slowConsumer,
  CloseCode.resync
]);
function nextTry(place, ended, chain) {
  if (ended.requested) return { ...place, wait: "now", fellBack: false };
  const failed = !ended.opened || !ended.stable && !SERVER_ASKED.has(ended.code);
  if (!failed) return { ...place, wait: "backoff", fellBack: false };
  const failures = place.failures + 1;
  if (failures >= chain.fallbackAfter && place.level < chain.length - 1) {
    return { level: place.level + 1, failures: 0, wait: "now", fellBack: true };
  }
  return { level: place.level, failures, wait: "backoff", fellBack: false };
}

// src/connection.ts
var Connection = class {
  constructor(options, sink) {
    this.options = options;
    this.sink = sink;
    this.level = 0;
    this.failures = 0;
    this.stopped = true;
    this.everOpened = false;
    if (options.transports.length === 0) throw new TypeError("Connection needs at least one transport");
    this.backoff = new Backoff({ baseMs: options.backoffBaseMs, capMs: options.backoffCapMs, random: options.random });
    this.retry = new Timer(options.timers);
    this.stable = new Timer(options.timers);
    this.probeTimer = new Timer(options.timers);
    this.soon = new Timer(options.timers);
  }
  start() {
    if (!this.stopped) return;
    this.stopped = false;
    void this.connect();
  }
  stop() {
    if (this.stopped) return;
    this.stopped = true;
    for (const timer of [this.retry, this.stable, this.probeTimer, this.soon]) timer.cancel();
    this.primary?.transport?.close();
    this.probe?.transport?.close();
    this.primary = void 0;
    this.probe = void 0;
    this.sink.status({ state: "offline", transport: null, failures: 0 });
  }
  /** Whether a WebSocket or SSE stream is open, so the server will echo reads to every connection. */
  get streaming() {
    return this.primary?.opened === true && this.primary.factory.kind !== "poll";
  }
  /** Sends over the open transport, if it carries this frame. */
  send(frame) {
    const transport = this.primary?.opened ? this.primary.transport : void 0;
    return transport?.send(frame) ?? "unavailable";
  }
  /** The network is back (the browser says so): try the best transport now rather than after the wait. */
  retryNow() {
    if (this.stopped || this.primary?.opened) return;
    this.primary?.transport?.close();
    this.primary = void 0;
    this.retry.cancel();
    this.level = 0;
    this.failures = 0;
    this.backoff.reset();
    void this.connect();
  }
  /** The tabs' topics changed: subscribe, unsubscribe or refresh over the open transport. */
  watchChanged(change) {
    const attempt = this.primary;
    if (attempt?.transport === void 0 || !attempt.opened) return;
    for (const topic of change.removed) attempt.transport.send({ type: "unsubscribe", topic });
    let reconnect = false;
    for (const topic of [...change.added, ...change.refresh]) {
      if (this.subscribe(attempt, topic) === "reconnect") reconnect = true;
    }
    if (reconnect) this.reconnectSoon(attempt);
  }
  async connect() {
    const attempt = this.newAttempt(this.level);
    this.primary = attempt;
    this.report(this.tryingState(attempt));
    const token = await this.token();
    if (this.stopped || this.primary !== attempt) return;
    if (token === void 0) {
      void this.closed(attempt, { code: CloseCode.abnormal, reason: "getToken failed", opened: false });
      return;
    }
    this.open(attempt, token);
  }
  async startProbe(level) {
    if (this.stopped || level >= this.level || this.probe !== void 0) return;
    const attempt = this.newAttempt(level);
    this.probe = attempt;
    const token = await this.token();
    if (this.stopped || this.probe !== attempt) return;
    if (token === void 0) {
      this.probeFailed(attempt);
      return;
    }
    this.open(attempt, token);
  }
  newAttempt(level) {
    const factory = this.options.transports[level];
    if (factory === void 0) throw new RangeError(`no transport at level ${level}`);
    return { factory, level, topics: [], opened: false, stable: false, requested: false };
  }
  async token() {
    try {
      return await this.options.getToken();
    } catch (error) {
      this.sink.error(error instanceof Error ? error : new Error(String(error)));
      return void 0;
    }
  }
  open(attempt, token) {
    attempt.token = token;
    attempt.topics = attempt.factory.topicsAtConnect ? this.options.watchList.names() : [];
    attempt.transport = attempt.factory.create(
      { token, since: this.options.since(), topics: attempt.topics },
      {
        onOpen: () => this.opened(attempt),
        onFrame: (frame) => this.frame(attempt, frame),
        onClose: (info) => void this.closed(attempt, info),
        onError: (error) => {
          if (attempt === this.primary) this.sink.error(error);
        }
      }
    );
  }
  opened(attempt) {
    if (attempt === this.probe) {
      this.promote(attempt);
      return;
    }
    if (attempt !== this.primary) return;
    attempt.opened = true;
    this.everOpened = true;
    this.retry.cancel();
    this.report(attempt.factory.kind === "poll" ? "polling" : "open");
    this.stable.start(this.options.stableAfterMs, () => {
      if (attempt !== this.primary) return;
      attempt.stable = true;
      this.backoff.reset();
      this.failures = 0;
    });
    this.watchAll(attempt);
    if (attempt.level > 0) this.scheduleProbe();
  }
  /** A better transport opened in the background: it becomes the connection, the old one is closed. */
  promote(attempt) {
    this.probe = void 0;
    const old = this.primary;
    this.primary = attempt;
    old?.transport?.close();
    this.retry.cancel();
    this.soon.cancel();
    this.level = attempt.level;
    this.failures = 0;
    this.backoff.reset();
    this.opened(attempt);
  }
  watchAll(attempt) {
    const watchList = this.options.watchList;
    if (attempt.factory.topicsAtConnect) {
      for (const topic of attempt.topics) watchList.subscribing(topic, void 0);
      if (watchList.names().some((topic) => !attempt.topics.includes(topic))) this.reconnectSoon(attempt);
      return;
    }
    for (const topic of watchList.names()) this.subscribe(attempt, topic);
  }
  subscribe(attempt, topic) {
    const since = this.options.watchList.since(topic);
    const frame = since === void 0 ? { type: "subscribe", topic } : { type: "subscribe", topic, since };
    const result = attempt.transport?.send(frame);
    if (result === "sent") this.options.watchList.subscribing(topic, since);
    return result;
  }
  frame(attempt, frame) {
    if (attempt !== this.primary) return;
    const route = routeFrame(frame, { sink: this.sink, watchList: this.options.watchList, since: this.options.since });
    if (route === "fetch-more") this.reconnectSoon(attempt);
  }
  /** Closes `attempt` to connect again at once (after the current frame is handled). */
  reconnectSoon(attempt) {
    this.soon.start(0, () => {
      if (attempt !== this.primary) return;
      attempt.requested = true;
      attempt.transport?.close();
      void this.closed(attempt, { code: 1e3, reason: "reconnecting to resume", opened: attempt.opened });
    });
  }
  async closed(attempt, info) {
    if (attempt === this.probe) {
      this.probeFailed(attempt);
      return;
    }
    if (attempt !== this.primary) return;
    this.primary = void 0;
    this.stable.cancel();
    if (info.authRefused) {
      this.refuse(`the server refused the token (${info.reason})`);
      return;
    }
    if (info.status === 403 && attempt.topics.length > 0) {
      const refused = await this.refusedTopics(attempt.topics);
      if (this.stopped || this.primary !== void 0) return;
      if (refused > 0) attempt.requested = true;
    }
    if (!info.opened && attempt.factory.kind === "websocket" && attempt.token !== void 0) {
      const verdict = await this.options.tokenVerdict(attempt.token);
      if (this.stopped || this.primary !== void 0) return;
      if (verdict === "refused") {
        this.refuse("the server refused the token (401)");
        return;
      }
    }
    this.scheduleRetry(attempt, info);
  }
  /**
   * Finds the topics the token may not watch, and refuses them as a socket would (`forbidden`, which the watch
   * list remembers, so the next connect leaves them out). Returns how many.
   */
  async refusedTopics(topics) {
    const allowed = await Promise.all(topics.map((topic) => this.options.mayWatch(topic)));
    const refused = topics.filter((_, i) => allowed[i] === false);
    for (const topic of refused) {
      const frame = { type: "error", code: "forbidden", message: "the token may not watch this topic", topic };
      routeFrame(frame, { sink: this.sink, watchList: this.options.watchList, since: this.options.since });
    }
    return refused.length;
  }
  scheduleRetry(attempt, info) {
    const next = nextTry(
      { level: this.level, failures: this.failures },
      { code: info.code, opened: info.opened, stable: attempt.stable, requested: attempt.requested },
      { length: this.options.transports.length, fallbackAfter: this.options.fallbackAfter }
    );
    this.level = next.level;
    this.failures = next.failures;
    if (next.fellBack) this.backoff.reset();
    const delay = next.wait === "now" ? 0 : this.backoff.next();
    this.report(this.kindAt(this.level) === "poll" ? "polling" : "reconnecting", delay);
    this.retry.start(delay, () => void this.connect());
  }
  scheduleProbe() {
    if (this.stopped || this.level === 0 || this.probe !== void 0 || this.probeTimer.pending) return;
    this.probeTimer.start(this.options.probeAfterMs, () => void this.startProbe(0));
  }
  probeFailed(attempt) {
    this.probe = void 0;
    const next = attempt.level + 1;
    if (next < this.level) void this.startProbe(next);
    else this.scheduleProbe();
  }
  refuse(message) {
    this.stop();
    this.sink.authError(message);
  }
  tryingState(attempt) {
    if (attempt.factory.kind === "poll") return "polling";
    return this.everOpened || this.failures > 0 || attempt.level > 0 ? "reconnecting" : "connecting";
  }
  kindAt(level) {
    return this.options.transports[level]?.kind;
  }
  report(state, retryInMs) {
    const status = { state, transport: this.kindAt(this.level) ?? null, failures: this.failures };
    if (retryInMs !== void 0) status.retryInMs = retryInMs;
    this.sink.status(status);
  }
};

// src/marking.ts
var AT_ONCE = 4;
async function markEachOverRest(rest, ids) {
  const outcome = { marked: [], failures: [] };
  let next = 0;
  const worker = async () => {
    for (let id = ids[next++]; id !== void 0; id = ids[next++]) {
      try {
        await rest.markRead(id);
        outcome.marked.push(id);
      } catch (error) {
        outcome.failures.push(error);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(AT_ONCE, ids.length) }, worker));
  return outcome;
}

// src/watch-list.ts
var WatchList = class {
  constructor() {
    this.topics = /* @__PURE__ */ new Map();
  }
  /** Sets what `owner` wants; the place it reports seeds a topic the connection did not watch yet. */
  set(owner, requests) {
    const change = { added: [], removed: [], refresh: [] };
    const wanted = new Set(requests.map((r) => r.topic));
    for (const request of requests) {
      const entry = this.topics.get(request.topic);
      if (entry === void 0) {
        this.topics.set(request.topic, {
          owners: /* @__PURE__ */ new Set([owner]),
          seq: request.seq,
          refused: false,
          resuming: false,
          gone: false
        });
        change.added.push(request.topic);
        continue;
      }
      const isNewOwner = !entry.owners.has(owner);
      entry.owners.add(owner);
      if (entry.refused && isNewOwner) {
        entry.refused = false;
        change.added.push(request.topic);
      } else if (request.fresh && !entry.refused) {
        change.refresh.push(request.topic);
      }
    }
    for (const [topic, entry] of this.topics) {
      if (!entry.owners.has(owner) || wanted.has(topic)) continue;
      entry.owners.delete(owner);
      if (entry.owners.size === 0) {
        this.topics.delete(topic);
        change.removed.push(topic);
      }
    }
    return change;
  }
  /** Drops an owner that went away (a tab that closed). */
  forget(owner) {
    return this.set(owner, []);
  }
  /** The topics to ask for on a connect. */
  names() {
    return [...this.topics].filter(([, entry]) => !entry.refused).map(([topic]) => topic);
  }
  /** Where to resume `topic`: its `since`, if the connection has read any of it. */
  since(topic) {
    return this.topics.get(topic)?.seq;
  }
  /** Records that a subscribe is on its way, with or without a `since`. */
  subscribing(topic, since) {
    const entry = this.topics.get(topic);
    if (entry === void 0) return;
    entry.resuming = since !== void 0;
    entry.gone = false;
  }
  /** What a topic frame means, or undefined for a topic nobody watches any more. */
  translate(frame) {
    const entry = this.topics.get(frame.topic);
    if (entry === void 0) return void 0;
    switch (frame.type) {
      case "subscribed": {
        const resumed = entry.resuming && !entry.gone;
        entry.resuming = false;
        entry.gone = false;
        if (!resumed) entry.seq = frame.state?.seq ?? 0;
        return { kind: "snapshot", topic: frame.topic, state: frame.state, resumed };
      }
      case "event":
        if (entry.seq === void 0 || frame.seq > entry.seq) entry.seq = frame.seq;
        return { kind: "event", topic: frame.topic, seq: frame.seq, event: frame.event };
      case "unsubscribed":
        return void 0;
      case "error":
        if (frame.code === "history_gone") entry.gone = true;
        if (frame.code === "forbidden" || frame.code === "too_many_subscriptions") entry.refused = true;
        return { kind: "error", topic: frame.topic, code: frame.code, message: frame.message };
    }
  }
};

// src/owner.ts
var MARK_READ_FRAME_IDS = 1e3;
var ConnectionOwner = class {
  constructor(options, publish, onError) {
    this.options = options;
    this.publish = publish;
    this.watchList = new WatchList();
    this.connection = new Connection(
      {
        ...options,
        watchList: this.watchList,
        tokenVerdict: (token) => options.rest.tokenVerdict(token),
        mayWatch: (topic) => options.rest.mayWatch(topic)
      },
      {
        frame: (frame) => publish({ kind: "frame", frame }),
        topic: (update) => publish({ kind: "topic", update }),
        status: (status) => publish({ kind: "status", status }),
        authError: (message) => publish({ kind: "authError", message }),
        error: onError
      }
    );
  }
  start() {
    this.connection.start();
  }
  stop() {
    this.connection.stop();
  }
  /** The browser is back online. */
  retryNow() {
    this.connection.retryNow();
  }
  /** Sets what one tab (`owner`) watches. */
  watch(owner, requests) {
    this.connection.watchChanged(this.watchList.set(owner, requests));
  }
  /** A tab went away: its topics go with it. */
  forget(owner) {
    this.connection.watchChanged(this.watchList.forget(owner));
  }
  async markRead(ids) {
    const unique = [...new Set(ids)];
    const rest = [];
    for (let i = 0; i < unique.length; i += MARK_READ_FRAME_IDS) {
      const chunk = unique.slice(i, i + MARK_READ_FRAME_IDS);
      if (this.connection.send({ type: "mark_read", ids: chunk }) !== "sent") rest.push(...chunk);
    }
    if (rest.length > 0) await this.markReadOverRest(rest);
  }
  async markAllRead() {
    if (this.connection.send({ type: "mark_all_read" }) === "sent") return;
    const streamedBefore = this.connection.streaming;
    await this.options.rest.markAllRead();
    if (!(streamedBefore && this.connection.streaming)) this.publish({ kind: "frame", frame: { type: "read_all" } });
  }
  async markReadOverRest(ids) {
    const streamedBefore = this.connection.streaming;
    const { marked, failures } = await markEachOverRest(this.options.rest, ids);
    if (marked.length > 0 && !(streamedBefore && this.connection.streaming)) {
      this.publish({ kind: "frame", frame: { type: "read", ids: marked } });
      const count = await this.options.rest.unreadCount().catch(() => void 0);
      if (count !== void 0) this.publish({ kind: "frame", frame: { type: "unread_count", unread_count: count } });
    }
    if (failures.length > 0) throw failures[0];
  }
};

// src/link.ts
var DirectLink = class {
  constructor(options, host) {
    this.host = host;
    this.shared = false;
    this.owner = new ConnectionOwner(options, (update) => host.apply(update), (error) => host.error(error));
  }
  start() {
    this.host.setLeader(true);
    this.watchChanged();
    this.owner.start();
  }
  markRead(ids) {
    return this.owner.markRead(ids);
  }
  markAllRead() {
    return this.owner.markAllRead();
  }
  watchChanged() {
    this.owner.watch(this.host.tabId, this.host.watchRequests());
  }
  online() {
    this.owner.retryNow();
  }
  close() {
    this.owner.stop();
  }
};

// src/options.ts
function settings(options) {
  if (typeof options.getToken !== "function") throw new TypeError("createClient: getToken is required");
  const capMs = positive("backoffCapMs", options.backoffCapMs, 3e4);
  const getToken = options.getToken;
  return {
    url: options.url,
    getToken: async () => getToken(),
    transports: options.transports ?? ["websocket", "sse", "poll"],
    shareConnection: options.shareConnection ?? true,
    backoffBaseMs: positive("backoffBaseMs", options.backoffBaseMs, 500),
    backoffCapMs: capMs,
    fallbackAfter: positive("fallbackAfter", options.fallbackAfter, 3),
    stableAfterMs: positive("stableAfterMs", options.stableAfterMs, 1e4),
    probeAfterMs: positive("probeAfterMs", options.probeAfterMs, capMs),
    pollIntervalMs: positive("pollIntervalMs", options.pollIntervalMs, 5e3),
    pollPageSize: Math.min(100, positive("pollPageSize", options.pollPageSize, 20)),
    heartbeatMs: positive("heartbeatMs", options.heartbeatMs, 25e3),
    idleTimeoutMs: positive("idleTimeoutMs", options.idleTimeoutMs, 7e4),
    dedupeSize: positive("dedupeSize", options.dedupeSize, 1e3),
    requestTimeoutMs: positive("requestTimeoutMs", options.requestTimeoutMs, 5e3),
    environment: environment(options.environment ?? {})
  };
}
function positive(name, value, fallback) {
  if (value === void 0) return fallback;
  if (!(Number.isFinite(value) && value > 0)) throw new RangeError(`createClient: ${name} must be a positive number`);
  return value;
}
function environment(given) {
  const global = globalThis;
  const random = given.random ?? Math.random;
  return {
    WebSocket: "WebSocket" in given ? given.WebSocket : global.WebSocket,
    fetch: given.fetch ?? ((input, init) => globalThis.fetch(input, init)),
    BroadcastChannel: "BroadcastChannel" in given ? given.BroadcastChannel : global.BroadcastChannel,
    locks: "locks" in given ? given.locks : global.navigator?.locks,
    timers: given.timers ?? systemTimers,
    random,
    onlineEvents: "onlineEvents" in given ? given.onlineEvents : typeof global.addEventListener === "function" ? globalThis : void 0,
    tabId: given.tabId ?? global.crypto?.randomUUID?.() ?? random().toString(36).slice(2) + Date.now().toString(36)
  };
}

// src/tabs/browser.ts
function holdLock(locks, name, options) {
  locks.request(name, { signal: options.signal }, async () => {
    options.onGranted();
    await options.released;
  }).catch(() => void 0);
}

// src/tabs/messages.ts
var KINDS = /* @__PURE__ */ new Set([
  "leader",
  "update",
  "sync",
  "snapshot",
  "watch",
  "request",
  "response",
  "bye"
]);
function isTabMessage(value) {
  if (typeof value !== "object" || value === null) return false;
  const { kind, from } = value;
  return typeof kind === "string" && KINDS.has(kind) && typeof from === "string";
}

// src/tabs/shared-link.ts
var SharedLink = class {
  constructor(options, host) {
    this.options = options;
    this.host = host;
    this.shared = true;
    /** Withdraws the lock requests still waiting when this tab closes. */
    this.abort = new AbortController();
    this.release = () => void 0;
    this.synced = false;
    this.closing = false;
    this.watchedTabs = /* @__PURE__ */ new Set();
    this.pending = /* @__PURE__ */ new Map();
    this.nextRequest = 0;
    this.channel = new options.BroadcastChannel(options.name);
    this.released = new Promise((resolve) => {
      this.release = resolve;
    });
  }
  start() {
    this.host.setLeader(false);
    this.channel.onmessage = (event2) => {
      if (isTabMessage(event2.data)) this.receive(event2.data);
    };
    const hold = { signal: this.abort.signal, released: this.released };
    holdLock(this.options.locks, tabLock(this.options.name, this.host.tabId), { ...hold, onGranted: () => void 0 });
    holdLock(this.options.locks, this.options.name, { ...hold, onGranted: () => this.lead() });
    this.post({ kind: "sync", from: this.host.tabId });
  }
  /** Whether this tab holds the connection. */
  get leading() {
    return this.owner !== void 0;
  }
  markRead(ids) {
    return this.forward({ op: "markRead", ids: [...ids] });
  }
  markAllRead() {
    return this.forward({ op: "markAllRead" });
  }
  watchChanged() {
    if (this.owner !== void 0) this.owner.watch(this.host.tabId, this.host.watchRequests());
    else this.post({ kind: "watch", from: this.host.tabId, topics: this.host.watchRequests() });
  }
  online() {
    this.owner?.retryNow();
  }
  close() {
    if (this.closing) return;
    this.closing = true;
    this.post({ kind: "bye", from: this.host.tabId });
    this.owner?.stop();
    this.owner = void 0;
    this.abort.abort();
    this.release();
    for (const pending of this.pending.values()) pending.settle(Promise.reject(new Error("the client was closed")));
    this.channel.onmessage = null;
    this.channel.close();
  }
  lead() {
    if (this.closing) return;
    const owner = new ConnectionOwner(
      this.options.owner,
      (update) => this.publish(update),
      (error) => this.host.error(error)
    );
    this.owner = owner;
    this.leaderId = this.host.tabId;
    this.synced = true;
    this.host.setLeader(true);
    owner.watch(this.host.tabId, this.host.watchRequests());
    this.post({ kind: "leader", from: this.host.tabId });
    owner.start();
    for (const pending of this.pending.values()) pending.settle(this.perform(pending.request));
  }
  /** Broadcast before applying: applying an `authError` closes this link. */
  publish(update) {
    if (!this.closing) this.post({ kind: "update", from: this.host.tabId, update });
    this.host.apply(update);
  }
  receive(message) {
    if (this.closing || message.from === this.host.tabId) return;
    if ("to" in message && message.to !== this.host.tabId) return;
    const owner = this.owner;
    switch (message.kind) {
      case "leader":
        this.leaderId = message.from;
        if (owner === void 0) {
          this.watchChanged();
          if (!this.synced) this.post({ kind: "sync", from: this.host.tabId });
        }
        return;
      case "update":
        if (message.update.kind === "authError") {
          this.host.apply(message.update);
          return;
        }
        if (owner !== void 0) return;
        this.leaderId = message.from;
        if (message.update.kind === "frame" && !this.synced) return;
        this.host.apply(message.update);
        return;
      case "snapshot":
        if (owner !== void 0 || this.synced) return;
        this.synced = true;
        this.leaderId = message.from;
        this.host.restore(message.inbox);
        this.host.apply({ kind: "status", status: message.status });
        this.watchChanged();
        return;
      case "sync":
        if (owner === void 0) return;
        this.watchTab(message.from);
        this.post({
          kind: "snapshot",
          from: this.host.tabId,
          to: message.from,
          inbox: this.host.inboxSnapshot(),
          status: this.host.status()
        });
        return;
      case "watch":
        if (owner === void 0) return;
        this.watchTab(message.from);
        owner.watch(message.from, message.topics);
        return;
      case "request":
        if (owner !== void 0) void this.answer(message.from, message.id, message.request);
        return;
      case "response":
        this.pending.get(message.id)?.settle(message.error === void 0 ? Promise.resolve() : Promise.reject(revive(message.error)));
        return;
      case "bye":
        owner?.forget(message.from);
        if (message.from === this.leaderId) this.leaderId = void 0;
        return;
    }
  }
  /** Learns, through the follower's own lock, when it goes away, to drop its topics. */
  watchTab(tab) {
    if (this.watchedTabs.has(tab)) return;
    this.watchedTabs.add(tab);
    this.options.locks.request(tabLock(this.options.name, tab), { signal: this.abort.signal }, () => {
      this.watchedTabs.delete(tab);
      this.owner?.forget(tab);
    }).catch(() => void 0);
  }
  forward(request) {
    if (this.owner !== void 0) return this.perform(request);
    const leader = this.leaderId;
    if (leader === void 0 || this.closing) return this.markOverRest(request);
    return new Promise((resolve, reject) => {
      const id = ++this.nextRequest;
      const timer = new Timer(this.options.timers);
      const settle = (result) => {
        if (!this.pending.delete(id)) return;
        timer.cancel();
        result.then(resolve, reject);
      };
      this.pending.set(id, { request, settle });
      timer.start(this.options.requestTimeoutMs, () => settle(this.perform(request)));
      this.post({ kind: "request", from: this.host.tabId, to: leader, id, request });
    });
  }
  async answer(to, id, request) {
    try {
      await this.perform(request);
      this.post({ kind: "response", from: this.host.tabId, to, id });
    } catch (error) {
      this.post({ kind: "response", from: this.host.tabId, to, id, error: carry(error) });
    }
  }
  /** As the leader through the connection; as a follower without a leader, over REST. */
  perform(request) {
    const owner = this.owner;
    if (owner === void 0) return this.markOverRest(request);
    return request.op === "markRead" ? owner.markRead(request.ids) : owner.markAllRead();
  }
  /** A follower on its own: marks over REST and tells its own inbox (the leader's stream may echo it too). */
  async markOverRest(request) {
    const rest = this.options.owner.rest;
    if (request.op === "markAllRead") {
      await rest.markAllRead();
      this.host.apply({ kind: "frame", frame: { type: "read_all" } });
      return;
    }
    const { marked, failures } = await markEachOverRest(rest, request.ids);
    if (marked.length > 0) this.host.apply({ kind: "frame", frame: { type: "read", ids: marked } });
    if (failures.length > 0) throw failures[0];
  }
  post(message) {
    try {
      this.channel.postMessage(message);
    } catch {
    }
  }
};
function tabLock(name, tab) {
  return `${name}:tab:${tab}`;
}
function carry(error) {
  if (error instanceof HttpError) {
    return { name: error.name, message: error.message, status: error.status, code: error.code };
  }
  if (error instanceof Error) return { name: error.name, message: error.message };
  return { name: "Error", message: String(error) };
}
function revive(error) {
  if (error.status !== void 0) {
    return new HttpError(error.status, error.code ?? `http_${error.status}`, error.message);
  }
  const revived = new Error(error.message);
  revived.name = error.name;
  return revived;
}

// src/topics.ts
var MAX_HELD = 1e3;
var TopicRouter = class {
  constructor() {
    this.topics = /* @__PURE__ */ new Map();
  }
  /** Adds a handler; returns the function that removes it. */
  add(topic, handler, report) {
    const watcher = { handler: guarded(handler, report), seq: void 0, held: [] };
    let set = this.topics.get(topic);
    if (set === void 0) {
      set = /* @__PURE__ */ new Set();
      this.topics.set(topic, set);
    }
    set.add(watcher);
    return () => {
      set.delete(watcher);
      if (set.size === 0 && this.topics.get(topic) === set) this.topics.delete(topic);
    };
  }
  watchRequests() {
    return [...this.topics].map(([topic, watchers]) => {
      const places = [...watchers].map((w) => w.seq).filter((seq) => seq !== void 0);
      return {
        topic,
        seq: places.length > 0 ? Math.min(...places) : void 0,
        fresh: [...watchers].some((w) => w.seq === void 0)
      };
    });
  }
  deliver(update) {
    const watchers = this.topics.get(update.topic);
    if (watchers === void 0) return;
    for (const watcher of [...watchers]) {
      if (update.kind === "snapshot") snapshot(watcher, update);
      else if (update.kind === "event") event(watcher, update);
      else watcher.handler({ type: "error", topic: update.topic, code: update.code, message: update.message });
    }
  }
};
function snapshot(watcher, update) {
  const seq = update.state?.seq ?? 0;
  if (watcher.seq === void 0) {
    watcher.seq = seq;
    watcher.handler({ type: "state", topic: update.topic, state: update.state });
    const held = watcher.held.sort((a, b) => a.seq - b.seq);
    watcher.held = [];
    for (const e of held) event(watcher, e);
    return;
  }
  if (update.resumed) return;
  if (update.state === null ? watcher.seq !== 0 : seq > watcher.seq) {
    watcher.seq = seq;
    watcher.handler({ type: "state", topic: update.topic, state: update.state });
  }
}
function event(watcher, update) {
  if (watcher.seq === void 0) {
    if (watcher.held.length >= MAX_HELD) watcher.held.shift();
    watcher.held.push(update);
    return;
  }
  if (update.seq <= watcher.seq) return;
  watcher.seq = update.seq;
  watcher.handler({ type: "event", topic: update.topic, seq: update.seq, event: update.event });
}
function guarded(handler, report) {
  return (message) => {
    try {
      handler(message);
    } catch (error) {
      report(error);
    }
  };
}

// src/client.ts
function createClient(options) {
  return new Client(settings(options));
}
var TOPIC = /^[a-z0-9_-]+:[A-Za-z0-9._:-]{1,128}$/;
var Client = class {
  constructor(settings2) {
    this.settings = settings2;
    this.emitter = new Emitter();
    this.router = new TopicRouter();
    this.connection = { state: "connecting", transport: null, failures: 0 };
    this.leader = false;
    this.closed = false;
    this.online = () => this.link?.online();
    const env = settings2.environment;
    this.tabId = env.tabId;
    this.endpoints = new Endpoints(settings2.url);
    this.rest = new RestApi(this.endpoints, env.fetch, settings2.getToken);
    this.inbox = new Inbox(
      { dedupeSize: settings2.dedupeSize, unreadKept: 100 },
      {
        notification: (notification, meta) => this.emitter.emit("notification", notification, meta),
        backlog: (info) => this.emitter.emit("backlog", info),
        read: (event2) => this.emitter.emit("read", event2),
        unreadCount: (count) => this.emitter.emit("unreadCount", count)
      }
    );
    this.ready = this.connect();
  }
  get state() {
    return this.detail();
  }
  get unreadCount() {
    return this.inbox.unreadCount;
  }
  get lastId() {
    return this.inbox.lastId;
  }
  on(event2, listener) {
    return this.emitter.on(event2, listener);
  }
  subscribe(topic, handler) {
    if (!TOPIC.test(topic)) throw new TypeError(`not a topic name (namespace:id): ${JSON.stringify(topic)}`);
    const remove = this.router.add(topic, handler, rethrowLater);
    this.link?.watchChanged();
    let subscribed = true;
    return () => {
      if (!subscribed) return;
      subscribed = false;
      remove();
      this.link?.watchChanged();
    };
  }
  async markRead(ids) {
    const list = typeof ids === "string" ? [ids] : [...ids];
    if (list.length === 0) return;
    const link = await this.ready;
    if (link === void 0 || this.closed) throw new Error("the client is closed");
    await link.markRead(list);
  }
  async markAllRead() {
    const link = await this.ready;
    if (link === void 0 || this.closed) throw new Error("the client is closed");
    await link.markAllRead();
  }
  list(options) {
    return this.rest.list(options);
  }
  close() {
    if (this.closed) return;
    this.closed = true;
    this.settings.environment.onlineEvents?.removeEventListener("online", this.online);
    this.link?.close();
    this.connection = { state: "offline", transport: null, failures: 0 };
    this.emitState();
    this.emitter.clear();
  }
  // Host: what the link calls back.
  apply(update) {
    if (this.closed) return;
    switch (update.kind) {
      case "frame":
        this.inbox.apply(update.frame);
        return;
      case "topic":
        this.router.deliver(update.update);
        return;
      case "status":
        this.connection = update.status;
        this.emitState();
        return;
      case "authError":
        this.emitter.emit("authError", new AuthError(update.message));
        this.close();
        return;
    }
  }
  watchRequests() {
    return this.router.watchRequests();
  }
  inboxSnapshot() {
    return this.inbox.snapshot();
  }
  restore(snapshot2) {
    this.inbox.restore(snapshot2);
  }
  status() {
    return this.connection;
  }
  setLeader(leader) {
    this.leader = leader;
    this.emitState();
  }
  error(error) {
    this.emitter.emit("error", error);
  }
  /** Names the shared lock after the token's user, so two users of one browser never share. */
  async connect() {
    await Promise.resolve();
    const env = this.settings.environment;
    let user;
    if (this.settings.shareConnection && env.locks !== void 0 && env.BroadcastChannel !== void 0) {
      user = await this.settings.getToken().then(tokenSubject, (error) => {
        this.error(error instanceof Error ? error : new Error(String(error)));
        return void 0;
      });
    }
    if (this.closed) return void 0;
    const owner = this.ownerOptions();
    const link = user !== void 0 && env.locks !== void 0 && env.BroadcastChannel !== void 0 ? new SharedLink(
      {
        owner,
        locks: env.locks,
        BroadcastChannel: env.BroadcastChannel,
        name: `herald/v1|${this.endpoints.origin}|${user}`,
        timers: env.timers,
        requestTimeoutMs: this.settings.requestTimeoutMs
      },
      this
    ) : new DirectLink(owner, this);
    this.link = link;
    env.onlineEvents?.addEventListener("online", this.online);
    link.start();
    this.emitState();
    return link;
  }
  ownerOptions() {
    const s = this.settings;
    const env = s.environment;
    return {
      transports: transportChain(s, this.endpoints, this.rest),
      rest: this.rest,
      getToken: s.getToken,
      since: () => this.inbox.lastId,
      timers: env.timers,
      random: env.random,
      backoffBaseMs: s.backoffBaseMs,
      backoffCapMs: s.backoffCapMs,
      fallbackAfter: s.fallbackAfter,
      stableAfterMs: s.stableAfterMs,
      probeAfterMs: s.probeAfterMs
    };
  }
  detail() {
    return { ...this.connection, leader: this.leader, shared: this.link?.shared ?? false };
  }
  emitState() {
    const detail = this.detail();
    const last = this.emitted;
    if (last !== void 0 && last.state === detail.state && last.transport === detail.transport && last.failures === detail.failures && last.retryInMs === detail.retryInMs && last.leader === detail.leader && last.shared === detail.shared) {
      return;
    }
    this.emitted = detail;
    this.emitter.emit("state", detail);
  }
};
export {
  AuthError,
  HttpError,
  ServerError,
  createClient
};
