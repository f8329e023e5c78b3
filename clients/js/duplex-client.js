// duplex-client.js - a reconnecting client for the duplex hub's JSON chat protocol
// (subprotocol "duplex.v1"; README, "Chat protocol"). One ES module with no dependencies and
// no build step: it runs as is in browsers (the hub serves it at /duplex-client.js) and in
// Node 18+ (pass a WebSocket constructor, e.g. the `ws` package, before Node 22).
//
// What it does for an application: joins rooms and remembers, per room, the last `seq` seen and
// the history's `epoch`; when the connection drops it reconnects with exponential backoff and
// full jitter, rejoins every room with `since`/`epoch` so that the hub replays exactly what was
// missed (a `gap` event when the hub no longer holds it), and sends what was queued while
// offline, in order, once the room is back. `send()` resolves with the message's `seq` when the
// hub hands the message back (that is how the protocol acknowledges).

/** The subprotocol of the JSON chat protocol. */
export const PROTOCOL = "duplex.v1";

/** Reconnect delays: `initial` ms, times `factor` per failed attempt, at most `max` ms. */
export const DEFAULT_BACKOFF = Object.freeze({ initial: 500, max: 10000, factor: 2, jitter: 1 });

const DEFAULTS = Object.freeze({
  maxQueue: 100,
  // The hub's default --max-message-size: a larger message would close the connection (1009).
  maxMessageSize: 65536,
  // The hub's default --rate-limit (messages per second, bursts of twice that); going over it
  // closes the connection (1008), so the client paces what it writes (see TokenBucket).
  rateLimit: 20,
  connectTimeout: 10000,
});

// Room names as the hub accepts them (protocol.rs, valid_room): checked here so that a typo
// fails at the call, not as a server error later.
const ROOM_NAME = /^[A-Za-z0-9._-]{1,64}$/;

// Error codes a `join` can get and a `send` cannot, and the other way round (protocol.rs);
// the rest (`unavailable`, `busy`, `storage`, `bad_request`) can answer either.
const JOIN_ERRORS = new Set(["bad_name", "bad_room", "too_many_rooms", "identity", "forbidden_room"]);
const SEND_ERRORS = new Set(["not_joined", "read_only"]);

const OPEN = 1; // WebSocket.OPEN, the same in browsers and in `ws`

/**
 * An error of the client or of the hub. `code` is the hub's error code (`not_joined`,
 * `forbidden_room`, `unavailable`, ...) or one of the client's own: `too_large`, `queue_full`,
 * `bad_room`, `not_joined`, `left`, `closed`, `transport`, `protocol`.
 */
export class DuplexError extends Error {
  constructor(code, message, details = undefined) {
    super(message);
    this.name = "DuplexError";
    this.code = code;
    if (details) Object.assign(this, details);
  }
}

/**
 * The delay before reconnect attempt `attempt` (0 for the first retry), in ms: exponential
 * (`initial * factor ** attempt`, capped at `max`) with jitter. With `jitter` 1 ("full jitter")
 * the delay is uniform in [0, cap], so clients dropped together by a restart do not come back
 * together; with 0 it is the cap itself. A pure function of its arguments: `random` returns a
 * number in [0, 1) (Math.random by default), so tests can pass their own.
 */
export function backoffDelay(attempt, backoff = DEFAULT_BACKOFF, random = Math.random) {
  const { initial, max, factor, jitter } = { ...DEFAULT_BACKOFF, ...backoff };
  // `factor ** attempt` overflows to Infinity after enough attempts; min() then caps it.
  const cap = Math.min(max, initial * factor ** Math.max(0, attempt));
  return Math.round(cap - jitter * random() * cap);
}

/**
 * Whether a connection closed with `code` should be reopened by itself. Not after a close
 * that the same client would only provoke again: 1002/1007 (protocol errors), 1003 (binary
 * data on chat), 1008 (policy: over the rate limit, or a read-only token), 1009 (a message
 * over the hub's limit), 1010, and application codes 4001-4999 this client does not know.
 * Everything else reconnects: 1000/1005 from a proxy, 1001 (the hub shuts down or restarts),
 * 1006 (the connection dropped, or the handshake failed: a browser does not say why, so a
 * refused token looks like a dropped connection), 1011, 1012, 1013 (try again later), 1014,
 * and 4000 (this client read too slowly; it resumes from history).
 */
export function shouldReconnect(code) {
  if ([1002, 1003, 1007, 1008, 1009, 1010].includes(code)) return false;
  if (code > 4000 && code <= 4999) return false;
  return true;
}

/** The length in bytes of `text` encoded as UTF-8, without encoding it. */
export function utf8Length(text) {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) bytes += 1;
    else if (c < 0x800) bytes += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        bytes += 4; // a surrogate pair is one code point of 4 bytes
        i++;
      } else bytes += 3;
    } else bytes += 3; // lone surrogates are sent as U+FFFD, 3 bytes
  }
  return bytes;
}

/**
 * Parses one text frame from the hub: the object, or null when it is not a JSON object with a
 * string `type` (such a frame is ignored rather than trusted).
 */
export function parseFrame(data) {
  if (typeof data !== "string") data = String(data); // `ws` may hand over a Buffer
  let msg;
  try {
    msg = JSON.parse(data);
  } catch {
    return null;
  }
  if (msg === null || typeof msg !== "object" || Array.isArray(msg) || typeof msg.type !== "string") {
    return null;
  }
  return msg;
}

/**
 * Whether a signed token's `rooms` (exact names, or `prefix.*`) let it join `room`, as the hub
 * decides (identity.rs, RoomPatterns::allows); `null`: every room.
 */
export function roomAllowed(patterns, room) {
  if (!Array.isArray(patterns)) return true;
  return patterns.some((p) => {
    if (!p.endsWith("*")) return p === room;
    const prefix = p.slice(0, -1);
    return room.length > prefix.length && room.startsWith(prefix);
  });
}

/**
 * A token bucket like the hub's (crates/hub/src/rate.rs): `rate` tokens per second, at most
 * `capacity` at once, full at the start. `take(now)` spends one if there is one; `wait(now)` is
 * how many ms until there is. Times are in ms (any monotonic clock).
 */
export class TokenBucket {
  constructor(rate, capacity, now) {
    this.rate = rate;
    this.capacity = capacity;
    this.tokens = capacity;
    this.last = now;
  }

  #refill(now) {
    const elapsed = Math.max(0, now - this.last) / 1000;
    this.last = now;
    this.tokens = Math.min(this.capacity, this.tokens + elapsed * this.rate);
  }

  take(now) {
    if (this.rate <= 0) return true;
    this.#refill(now);
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return true;
    }
    return false;
  }

  wait(now) {
    if (this.rate <= 0) return 0;
    this.#refill(now);
    return this.tokens >= 1 ? 0 : Math.ceil(((1 - this.tokens) / this.rate) * 1000);
  }
}

const now = () => (globalThis.performance ? performance.now() : Date.now());

function check(condition, message) {
  if (!condition) throw new TypeError(`DuplexClient: ${message}`);
}

// A promise that is not reported as an unhandled rejection when the caller ignores it: every
// failure is also an `error` event or the caller's own refusal, and in Node an ignored
// rejection would otherwise end the process.
function settled(executor) {
  const p = new Promise(executor);
  p.catch(() => {});
  return p;
}

/** The WebSocket URL for `url`: http(s) becomes ws(s), relative URLs resolve against the page. */
function socketUrl(url, token) {
  const base = globalThis.location ? globalThis.location.href : undefined;
  const u = new URL(url, base);
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  // Browsers cannot set headers on a WebSocket: the hub takes the token from the query too.
  if (token) u.searchParams.set("token", token);
  return u.href;
}

/**
 * A connection to a duplex hub that reconnects by itself. See index.d.ts for the API and
 * README.md ("JavaScript client") for an example.
 */
export class DuplexClient {
  #url;
  #options;
  #WebSocket;
  #listeners = new Map();
  #state = "idle";
  #ws = null;
  #conn = 0; // counts connections, to tell a message sent on an earlier one
  #attempt = 0;
  #retryTimer = null;
  #openTimer = null;
  #paceTimer = null;
  #bucket = null;
  #identity = null;
  #name;
  // Whether joins carry our name. Without a token always; with one, not at first: a signed
  // token names the connection (and a join under another name would be refused), and its
  // `identity` frame may still be on its way when the first join goes. A hub with a shared
  // token answers such a join with `bad_name`, and from then on the name is sent.
  #useName;
  /** name -> { name, lastSeq, epoch, resume, ready, needsName, members, waiters } */
  #rooms = new Map();
  /** Every message not yet acknowledged, in the order of send(): queued, outbox, inflight. */
  #sends = [];
  /** Frames waiting for the rate limit, in order: { frame, record }. */
  #outbox = [];
  /** Requests written on this connection and not yet answered, in order. */
  #outstanding = [];
  #roomsWaiters = [];
  #roomsAsked = false;

  /**
   * @param {string} url ws://, wss://, http:// or https:// URL of the hub (any chat path).
   * @param {object} [options] see index.d.ts
   */
  constructor(url, options = {}) {
    check(typeof url === "string" || url instanceof URL, "url must be a string or a URL");
    const backoff = { ...DEFAULT_BACKOFF, ...(options.backoff || {}) };
    check(backoff.initial > 0, "backoff.initial must be > 0 ms");
    check(backoff.max >= backoff.initial, "backoff.max must be >= backoff.initial");
    check(backoff.factor >= 1, "backoff.factor must be >= 1");
    check(backoff.jitter >= 0 && backoff.jitter <= 1, "backoff.jitter must be in [0, 1]");
    const o = { ...DEFAULTS, ...options, backoff };
    check(Number.isInteger(o.maxQueue) && o.maxQueue >= 0, "maxQueue must be an integer >= 0");
    check(o.maxMessageSize > 0, "maxMessageSize must be > 0 bytes");
    check(o.rateLimit >= 0, "rateLimit must be >= 0 (0: not paced)");
    const WS = options.WebSocket || globalThis.WebSocket;
    check(
      typeof WS === "function",
      "no WebSocket constructor: pass { WebSocket } (in Node before 22: import WebSocket from \"ws\")",
    );
    this.#url = String(url);
    this.#options = o;
    this.#WebSocket = WS;
    this.#name = typeof o.name === "string" && o.name.trim() ? o.name.trim() : null;
    this.#useName = !o.token;
    socketUrl(this.#url); // a malformed URL is an error here, not at the first reconnect
  }

  // ---- events ---------------------------------------------------------------------------

  /** Calls `fn(detail)` on every event `type`; returns a function that removes it. */
  on(type, fn) {
    check(typeof fn === "function", "a listener must be a function");
    if (!this.#listeners.has(type)) this.#listeners.set(type, new Set());
    this.#listeners.get(type).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    this.#listeners.get(type)?.delete(fn);
  }

  #emit(type, detail) {
    for (const fn of [...(this.#listeners.get(type) || [])]) {
      try {
        fn(detail);
      } catch (e) {
        // A listener's bug must not break the client's bookkeeping: report it the way
        // EventTarget does, outside this call.
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }

  // ---- state ----------------------------------------------------------------------------

  /** `idle`, `connecting`, `open`, `reconnecting` or `closed`. */
  get state() {
    return this.#state;
  }

  /** The identity from a signed token (`{sub, name, rooms, publish}`), or null. */
  get identity() {
    return this.#identity;
  }

  /** The name this client speaks under: the token's, else the one it was given. */
  get name() {
    return this.#identity ? this.#identity.name : this.#name;
  }

  /** Messages accepted by send() and not yet written to the hub. */
  get queued() {
    return this.#sends.filter((e) => e.state !== "inflight").length;
  }

  /** The rooms joined, with what the client knows of each. */
  joined() {
    return [...this.#rooms.values()].map((r) => ({
      room: r.name,
      lastSeq: r.lastSeq,
      epoch: r.epoch,
      ready: r.ready,
      members: [...r.members],
    }));
  }

  #setState(state, extra = {}) {
    const changed = state !== this.#state;
    this.#state = state;
    if (changed || state === "reconnecting") this.#emit("state", { state, ...extra });
  }

  // ---- connecting -----------------------------------------------------------------------

  /** Opens the connection (join() does it too). Also reopens a client after close(). */
  connect() {
    if (this.#state !== "idle" && this.#state !== "closed") return;
    this.#attempt = 0;
    this.#setState("connecting");
    this.#dial();
  }

  async #dial() {
    const conn = ++this.#conn;
    let token = this.#options.token;
    if (typeof token === "function") {
      // A function is asked on every attempt, so that a short-lived token can be renewed.
      try {
        token = await token();
      } catch (e) {
        this.#emit("error", new DuplexError("transport", `token: ${e && e.message ? e.message : e}`));
        if (conn === this.#conn && this.#state !== "closed") this.#retry();
        return;
      }
      if (conn !== this.#conn || this.#state === "closed") return;
    }
    let ws;
    try {
      ws = new this.#WebSocket(socketUrl(this.#url, token), PROTOCOL);
    } catch (e) {
      this.#emit("error", new DuplexError("transport", `cannot open ${this.#url}: ${e.message}`));
      this.#retry();
      return;
    }
    this.#ws = ws;
    ws.onopen = () => this.#opened(ws);
    ws.onmessage = (event) => {
      if (ws === this.#ws) this.#received(event.data);
    };
    ws.onerror = (event) => {
      if (ws !== this.#ws || this.#state === "closed") return;
      // Browsers say nothing more than "error"; `ws` gives the reason (e.g. "Unexpected
      // server response: 401" for a refused token).
      const why = event && event.message ? event.message : "the WebSocket failed";
      this.#emit("error", new DuplexError("transport", why));
    };
    ws.onclose = (event) => this.#closed(ws, event.code, event.reason || "", event.wasClean);
    this.#openTimer = setTimeout(() => {
      if (ws === this.#ws && ws.readyState !== OPEN) {
        this.#closed(ws, 1006, "connection timed out", false);
      }
    }, this.#options.connectTimeout);
  }

  #opened(ws) {
    if (ws !== this.#ws) return;
    clearTimeout(this.#openTimer);
    if (ws.protocol !== PROTOCOL) {
      // Without the subprotocol the hub would take us for a plain-text client and relay our
      // JSON as chat. Browsers and `ws` refuse such a handshake already; this is the backstop.
      this.#emit("error", new DuplexError("protocol", `the server does not speak ${PROTOCOL}`));
      this.#fail(1002, `no ${PROTOCOL} subprotocol`);
      return;
    }
    // The hub's bucket starts full on every connection; ours holds half of its burst, so that
    // network jitter bunching our frames together cannot push the hub's over.
    const rate = this.#options.rateLimit;
    this.#bucket = new TokenBucket(rate, Math.max(1, rate), now());
    this.#outstanding = [];
    // The rejoins go first, before listeners of the `open` state may join or send (which
    // would otherwise write a second join of the same room).
    this.#state = "open";
    if (this.#rooms.size === 0) this.#attempt = 0;
    for (const room of this.#rooms.values()) this.#sendJoin(room);
    if (this.#roomsWaiters.length) this.#askRooms();
    this.#emit("state", { state: "open" });
  }

  /** The connection `ws` ended: reconnect or stop, and put what was on its way back in line. */
  #closed(ws, code, reason, wasClean) {
    if (ws !== this.#ws) return;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    if (ws.readyState !== 3) {
      try {
        ws.close();
      } catch {
        // already closing
      }
    }
    this.#ws = null;
    clearTimeout(this.#openTimer);
    clearTimeout(this.#paceTimer);
    this.#paceTimer = null;
    this.#outbox = [];
    this.#outstanding = [];
    this.#roomsAsked = false;
    for (const room of this.#rooms.values()) room.ready = false;
    // Not written yet: back in the queue. Written but not acknowledged ("inflight"): kept, and
    // matched against the replay after the rejoin (see #ready).
    for (const e of this.#sends) if (e.state === "outbox") e.state = "queued";
    if (this.#state === "closed") {
      this.#emit("close", { code, reason, wasClean, reconnect: false });
      return;
    }
    const policy = this.#options.shouldReconnect || shouldReconnect;
    if (!policy(code, reason)) {
      this.#emit("close", { code, reason, wasClean, reconnect: false });
      this.#fail(code, reason);
      return;
    }
    const delay = this.#retry(false);
    this.#emit("close", { code, reason, wasClean, reconnect: true, delay });
  }

  #retry(emitNow = true) {
    const delay = backoffDelay(this.#attempt, this.#options.backoff);
    this.#attempt += 1;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => this.#dial(), delay);
    const report = () => {
      if (this.#state !== "closed") this.#setState("reconnecting", { attempt: this.#attempt, delay });
    };
    // After a close the `close` event goes first, then the state.
    if (emitNow) report();
    else queueMicrotask(report);
    return delay;
  }

  /** Stops for good after a close that reconnecting would not fix; pending requests fail. */
  #fail(code, reason) {
    const error = new DuplexError(
      "closed",
      `the hub closed the connection with ${code}${reason ? ` (${reason})` : ""}; not reconnecting`,
      { closeCode: code },
    );
    this.#shutdown(error);
    if (this.#ws) {
      const ws = this.#ws;
      this.#ws = null;
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      try {
        ws.close(1000);
      } catch {
        // already closing
      }
    }
  }

  /** Closes the connection (1000) and stops reconnecting; what is pending fails with `closed`. */
  close(code = 1000, reason = "") {
    if (this.#state === "closed" || this.#state === "idle") {
      this.#state = "closed";
      return;
    }
    this.#shutdown(new DuplexError("closed", "the client was closed"));
    if (this.#ws) {
      try {
        this.#ws.close(code, reason);
      } catch {
        // a CONNECTING socket in some implementations: it is dropped below anyway
      }
    }
  }

  #shutdown(error) {
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#openTimer);
    clearTimeout(this.#paceTimer);
    this.#paceTimer = null;
    const sends = this.#sends;
    this.#sends = [];
    for (const e of sends) e.reject(error);
    for (const room of this.#rooms.values()) {
      room.ready = false;
      for (const w of room.waiters.splice(0)) w.reject(error);
    }
    for (const w of this.#roomsWaiters.splice(0)) w.reject(error);
    this.#setState("closed");
  }

  // ---- writing --------------------------------------------------------------------------

  #open() {
    return this.#ws !== null && this.#ws.readyState === OPEN && this.#state === "open";
  }

  /** Queues a frame for the connection; `record` is what answers it (see #outstanding). */
  #write(frame, record) {
    this.#outbox.push({ frame, record });
    this.#pump();
  }

  #pump() {
    if (this.#paceTimer) return;
    while (this.#outbox.length && this.#open()) {
      if (!this.#bucket.take(now())) {
        this.#paceTimer = setTimeout(() => {
          this.#paceTimer = null;
          this.#pump();
        }, this.#bucket.wait(now()));
        return;
      }
      const { frame, record } = this.#outbox.shift();
      this.#ws.send(frame);
      if (record) {
        if (record.kind === "send") {
          record.entry.state = "inflight";
          record.entry.conn = this.#conn;
        }
        this.#outstanding.push(record);
      }
    }
  }

  #sendJoin(room) {
    const msg = { type: "join", room: room.name };
    const named = this.#useName && !this.#identity && Boolean(this.#name);
    if (named) msg.name = this.#name;
    // Once the client has a position in the room (from `since`, or from an earlier join), it
    // asks for what came after it; the first join of a room asks for its recent history.
    if (room.resume) {
      msg.since = room.lastSeq;
      if (room.epoch) msg.epoch = room.epoch;
    }
    room.needsName = false;
    this.#write(JSON.stringify(msg), { kind: "join", room: room.name, named });
  }

  #askRooms() {
    if (this.#roomsAsked) return;
    this.#roomsAsked = true;
    this.#write(JSON.stringify({ type: "rooms" }), { kind: "rooms" });
  }

  /** Sends the room's queued messages, in the order send() took them. */
  #drain(room) {
    for (const e of this.#sends) {
      if (e.room === room.name && e.state === "queued") {
        e.state = "outbox";
        this.#outbox.push({ frame: e.frame, record: { kind: "send", entry: e } });
      }
    }
    this.#pump();
  }

  // ---- requests -------------------------------------------------------------------------

  /**
   * Joins `room` (again after every reconnect, until leave()). Resolves when the hub has
   * replayed its history and listed its members. `since`/`epoch` start from a position the
   * application kept (e.g. across a reload): the hub then replays what came after it.
   */
  join(room, { since, epoch } = {}) {
    if (typeof room !== "string" || !ROOM_NAME.test(room)) {
      return settled((_, reject) =>
        reject(new DuplexError("bad_room", `bad room name ${JSON.stringify(room)}: 1 to 64 of A-Z a-z 0-9 - _ .`)),
      );
    }
    if (since !== undefined) {
      check(Number.isInteger(since) && since >= 0, "since must be an integer >= 0");
    }
    if (this.#identity && !roomAllowed(this.#identity.rooms, room)) {
      return settled((_, reject) =>
        reject(new DuplexError("forbidden_room", `this token does not allow room ${JSON.stringify(room)}`, { room })),
      );
    }
    return settled((resolve, reject) => {
      let r = this.#rooms.get(room);
      if (r && r.ready) {
        resolve(this.#joinResult(r));
        return;
      }
      if (!r) {
        r = {
          name: room,
          lastSeq: since ?? 0,
          epoch: epoch ?? null,
          resume: since !== undefined,
          ready: false,
          needsName: false,
          members: [],
          waiters: [],
        };
        this.#rooms.set(room, r);
        if (this.#open()) this.#sendJoin(r);
      }
      r.waiters.push({ resolve, reject });
      if (this.#state === "idle" || this.#state === "closed") this.connect();
    });
  }

  #joinResult(r) {
    return { room: r.name, members: [...r.members], lastSeq: r.lastSeq, epoch: r.epoch };
  }

  /** Leaves `room`: no more rejoins; its messages not yet acknowledged fail with `left`. */
  leave(room) {
    if (!this.#rooms.has(room)) return;
    this.#forget(room, new DuplexError("left", `left room ${room} before the message was acknowledged`, { room }));
    if (this.#open()) this.#write(JSON.stringify({ type: "leave", room }), null);
  }

  /** Drops `room` and fails what waits for it with `error`. */
  #forget(room, error) {
    const r = this.#rooms.get(room);
    this.#rooms.delete(room);
    for (const w of r.waiters.splice(0)) w.reject(error);
    this.#outbox = this.#outbox.filter((o) => !(o.record && o.record.kind === "send" && o.record.entry.room === room));
    this.#sends = this.#sends.filter((e) => {
      if (e.room !== room) return true;
      e.reject(error);
      return false;
    });
  }

  /**
   * Sends `text` to `room`; resolves with its `seq` once the hub hands it back. While offline
   * (or before the room's rejoin is done) it waits in a queue of at most `maxQueue` messages.
   * Refused at once, with a DuplexError: `not_joined` (join the room first), `too_large` (over
   * `maxMessageSize` once encoded: the hub would close the connection with 1009), `queue_full`.
   */
  send(room, text) {
    return settled((resolve, reject) => {
      if (typeof text !== "string") {
        reject(new TypeError("DuplexClient.send: text must be a string"));
        return;
      }
      if (this.#state === "closed") {
        reject(new DuplexError("closed", "the client is closed"));
        return;
      }
      const r = this.#rooms.get(room);
      if (!r) {
        reject(new DuplexError("not_joined", `join room ${JSON.stringify(room)} before sending to it`, { room }));
        return;
      }
      if (this.#identity && !this.#identity.publish) {
        reject(new DuplexError("read_only", "this token may read but not send", { room }));
        return;
      }
      const frame = JSON.stringify({ type: "send", room, text });
      const size = utf8Length(frame);
      const limit = this.#options.maxMessageSize;
      if (size > limit) {
        reject(
          new DuplexError(
            "too_large",
            `message is ${size} bytes as sent, over the limit of ${limit} (maxMessageSize; the hub closes the connection on larger ones)`,
            { room, size, limit },
          ),
        );
        return;
      }
      if (this.queued >= this.#options.maxQueue) {
        reject(
          new DuplexError("queue_full", `${this.queued} messages are already waiting to be sent (maxQueue ${this.#options.maxQueue})`, {
            room,
          }),
        );
        return;
      }
      this.#sends.push({ room, text, frame, state: "queued", conn: 0, resolve, reject });
      if (r.ready && this.#open()) this.#drain(r);
    });
  }

  /** The hub's room list (`[{name, members, last_seq}]`), asked for once connected. */
  rooms() {
    return settled((resolve, reject) => {
      if (this.#state === "closed") {
        reject(new DuplexError("closed", "the client is closed"));
        return;
      }
      this.#roomsWaiters.push({ resolve, reject });
      if (this.#open()) this.#askRooms();
      else if (this.#state === "idle") this.connect();
    });
  }

  /**
   * Sets the name to join under (when the hub asks for one: the `bad_name` error) and joins the
   * rooms that were waiting for it. Ignored under a signed token, which names the connection.
   */
  setName(name) {
    check(typeof name === "string" && name.trim(), "a name must be a non-empty string");
    this.#name = name.trim();
    if (this.#identity) return;
    for (const r of this.#rooms.values()) {
      if (r.needsName && this.#open()) this.#sendJoin(r);
    }
  }

  // ---- reading --------------------------------------------------------------------------

  #received(data) {
    const msg = parseFrame(data);
    if (!msg) return; // not ours to interpret; the hub never sends such a frame
    switch (msg.type) {
      case "identity":
        this.#identity = { sub: msg.sub, name: msg.name, rooms: msg.rooms ?? null, publish: msg.publish !== false };
        this.#emit("identity", this.#identity);
        break;
      case "history":
        this.#history(msg);
        break;
      case "message":
        this.#message(msg);
        break;
      case "presence":
        this.#presence(msg);
        break;
      case "rooms":
        this.#roomList(msg);
        break;
      case "error":
        this.#error(msg);
        break;
      default:
        break; // a newer hub's message: ignored, as the protocol's versioning intends
    }
  }

  #history(h) {
    const r = this.#rooms.get(h.room);
    if (!r || !Array.isArray(h.messages)) return;
    const firstSeq = h.gap ? (h.first_seq ?? 1) : undefined;
    if (h.gap) {
      // The hub no longer has what came after our position (trimmed, or the history was lost
      // and numbering started over): the replay starts at first_seq.
      r.lastSeq = firstSeq - 1;
      this.#emit("gap", { room: r.name, firstSeq, epoch: h.epoch ?? null });
    }
    if (h.epoch) r.epoch = h.epoch;
    const messages = [];
    for (const m of h.messages) {
      if (typeof m.seq !== "number" || m.seq <= r.lastSeq) continue; // already seen
      r.lastSeq = m.seq;
      const mine = this.#acknowledge(m);
      messages.push({ room: r.name, seq: m.seq, from: m.from, time: m.time, text: m.text, mine });
    }
    this.#emit("history", { room: r.name, epoch: r.epoch, gap: Boolean(h.gap), firstSeq, messages });
  }

  #message(m) {
    const r = this.#rooms.get(m.room);
    if (!r || typeof m.seq !== "number" || m.seq <= r.lastSeq) return;
    r.lastSeq = m.seq;
    const mine = this.#acknowledge(m);
    this.#emit("message", { room: m.room, seq: m.seq, from: m.from, time: m.time, text: m.text, mine });
  }

  /**
   * Resolves the send() this message acknowledges, if it is ours: the hub gives a message no
   * request id, so the match is by room, sender name and text, oldest first. (Another
   * connection under the same name sending the same text at the same time could be taken for
   * ours; the seq is then that one's, and nothing is lost.)
   */
  #acknowledge(m) {
    if (m.from !== this.name) return false;
    const i = this.#sends.findIndex((e) => e.state === "inflight" && e.room === m.room && e.text === m.text);
    if (i < 0) return false;
    const [entry] = this.#sends.splice(i, 1);
    const o = this.#outstanding.findIndex((rec) => rec.kind === "send" && rec.entry === entry);
    if (o >= 0) this.#outstanding.splice(o, 1);
    entry.resolve(m.seq);
    return true;
  }

  #presence(p) {
    const r = this.#rooms.get(p.room);
    if (!r) return;
    // The joiner's own `joined` carries the whole list; after that names come and go one by
    // one (the hub sends no list to the others, see protocol.rs).
    const self = Array.isArray(p.members);
    if (self) r.members = [...p.members];
    else if (p.event === "joined") r.members.push(p.name);
    else {
      const i = r.members.indexOf(p.name);
      if (i >= 0) r.members.splice(i, 1);
    }
    if (self && !r.ready) this.#ready(r);
    this.#emit("presence", { room: r.name, event: p.event, name: p.name, count: p.count, members: [...r.members], self });
  }

  /** The room's (re)join is complete: its history is replayed and its members listed. */
  #ready(r) {
    r.ready = true;
    r.resume = true;
    this.#attempt = 0; // a connection that got this far is a good one
    const o = this.#outstanding.findIndex((rec) => rec.kind === "join" && rec.room === r.name);
    if (o >= 0) this.#outstanding.splice(o, 1);
    // Messages written on an earlier connection that the replay did not hand back were not
    // stored: send them again, ahead of the queue (they came first).
    for (const e of this.#sends) {
      if (e.room === r.name && e.state === "inflight" && e.conn !== this.#conn) e.state = "queued";
    }
    for (const w of r.waiters.splice(0)) w.resolve(this.#joinResult(r));
    this.#emit("joined", this.#joinResult(r));
    this.#drain(r);
  }

  #roomList(msg) {
    this.#roomsAsked = false;
    const o = this.#outstanding.findIndex((rec) => rec.kind === "rooms");
    if (o >= 0) this.#outstanding.splice(o, 1);
    const rooms = Array.isArray(msg.rooms) ? msg.rooms : [];
    for (const w of this.#roomsWaiters.splice(0)) w.resolve(rooms);
    this.#emit("rooms", { rooms });
  }

  /**
   * An `error` frame. It names no request, but the hub answers one connection's requests in
   * order, so it belongs to the oldest unanswered request that can get this code. Except that
   * the checks of a token (`forbidden_room`, `identity`, `read_only`) answer before the others
   * (the session makes them, not the broker): a `forbidden_room` goes to the oldest join the
   * token does not allow. (Once the identity is known such requests are refused here, before
   * they are sent; these are the ones written before it arrived.)
   */
  #error(e) {
    const code = String(e.code);
    const message = String(e.message ?? code);
    const fits = (rec) =>
      JOIN_ERRORS.has(code) ? rec.kind === "join" : SEND_ERRORS.has(code) ? rec.kind === "send" : rec.kind !== "rooms";
    let i = -1;
    if (code === "forbidden_room" && this.#identity) {
      i = this.#outstanding.findIndex((rec) => rec.kind === "join" && !roomAllowed(this.#identity.rooms, rec.room));
    }
    if (i < 0) i = this.#outstanding.findIndex(fits);
    const rec = i >= 0 ? this.#outstanding.splice(i, 1)[0] : null;
    if (rec && rec.kind === "send") {
      const entry = rec.entry;
      this.#sends = this.#sends.filter((s) => s !== entry);
      const error = new DuplexError(code, message, { room: entry.room, text: entry.text, request: "send" });
      entry.reject(error);
      this.#emit("error", error);
      return;
    }
    if (rec && rec.kind === "join") {
      const r = this.#rooms.get(rec.room);
      if (r && code === "bad_name" && !this.#identity) {
        this.#useName = true;
        if (!rec.named && this.#name) {
          // A hub with a shared token, not a signed one: it wants our name after all.
          this.#sendJoin(r);
          return;
        }
        r.needsName = true; // no name, or one the hub refused: setName() joins it again
      }
      const error = new DuplexError(code, message, { room: rec.room, request: "join" });
      if (r) {
        for (const w of r.waiters.splice(0)) w.reject(error);
        // A room the hub will not let us into is forgotten (no rejoin loop); one that only
        // waits for a name stays.
        if (!r.needsName) this.#forget(r.name, error);
      }
      this.#emit("error", error);
      return;
    }
    this.#emit("error", new DuplexError(code, message));
  }

}
