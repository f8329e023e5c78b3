// A stand-in for the WebSocket constructor: the tests play the hub, frame by frame, without a
// network or a timer of their own.

export function fakeHub() {
  const sockets = [];
  const waiting = [];
  class FakeWebSocket {
    constructor(url, protocol) {
      this.url = url;
      this.requested = protocol;
      this.protocol = "";
      this.readyState = 0;
      this.sent = [];
      sockets.push(this);
      const w = waiting.shift();
      if (w) w(this);
    }
    send(data) {
      if (this.readyState !== 1) throw new Error("InvalidStateError: not open");
      this.sent.push(JSON.parse(data));
    }
    close(code = 1000, reason = "") {
      if (this.readyState === 3) return;
      this.readyState = 3;
      queueMicrotask(() => this.onclose?.({ code, reason, wasClean: true }));
    }
    // ---- the hub's side
    accept() {
      this.protocol = this.requested;
      this.readyState = 1;
      this.onopen?.({});
    }
    deliver(msg) {
      this.onmessage?.({ data: typeof msg === "string" ? msg : JSON.stringify(msg) });
    }
    drop(code = 1006, reason = "") {
      this.readyState = 3;
      this.onclose?.({ code, reason, wasClean: code !== 1006 });
    }
    /** The frames sent so far of this type, and forgets them. */
    take(type) {
      const out = this.sent.filter((f) => !type || f.type === type);
      this.sent = this.sent.filter((f) => type && f.type !== type);
      return out;
    }
    /** Answers a join the way the hub does: history, then the joiner's own presence. */
    joined(room, { messages = [], epoch = "e1", members = ["me"], gap = false, firstSeq } = {}) {
      const h = { type: "history", room, epoch, messages };
      if (gap) Object.assign(h, { gap: true, first_seq: firstSeq });
      this.deliver(h);
      this.deliver({ type: "presence", room, event: "joined", name: members.at(-1), count: members.length, members });
    }
  }
  return {
    WebSocket: FakeWebSocket,
    sockets,
    /** Socket number `i` the client opens (0 the first), once it has. */
    next(i = 0) {
      if (sockets.length > i) return Promise.resolve(sockets[i]);
      return new Promise((resolve) => waiting.push((ws) => (sockets.length > i ? resolve(sockets[i]) : undefined)));
    },
  };
}

export const msg = (room, seq, from, text) => ({ room, seq, from, time: 1767225600000 + seq, text });

export const tick = (ms = 0) => new Promise((resolve) => setTimeout(resolve, ms));

/** Collects a client's events of `type`. */
export function collect(client, type) {
  const seen = [];
  client.on(type, (e) => seen.push(e));
  return seen;
}
