// Unit tests of duplex-client.js against a fake WebSocket (test/fake.mjs): the backoff's
// bounds and jitter on computed delays (never on time), the close-code policy, frame parsing
// and sizes, the offline queue's bounds and order, resume positions, gaps and error routing.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  DuplexClient,
  DuplexError,
  TokenBucket,
  backoffDelay,
  parseFrame,
  roomAllowed,
  shouldReconnect,
  utf8Length,
  PROTOCOL,
} from "../duplex-client.js";
import { fakeHub, msg, tick, collect } from "./fake.mjs";

// A small seeded generator, so that the jitter checks see many values, the same every run.
function lcg(seed) {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

test("backoff: exponential caps, bounded by max, full jitter within [0, cap]", () => {
  const b = { initial: 500, max: 8000, factor: 2, jitter: 1 };
  const caps = [500, 1000, 2000, 4000, 8000, 8000, 8000];
  caps.forEach((cap, attempt) => {
    assert.equal(backoffDelay(attempt, b, () => 0), cap, `attempt ${attempt}, random 0: the cap`);
    assert.equal(backoffDelay(attempt, b, () => 0.999999), 0, `attempt ${attempt}, random ~1: ~0`);
  });
  const random = lcg(42);
  for (let attempt = 0; attempt < 60; attempt++) {
    const cap = Math.min(8000, 500 * 2 ** attempt);
    const delays = Array.from({ length: 200 }, () => backoffDelay(attempt, b, random));
    for (const d of delays) {
      assert.ok(Number.isFinite(d) && d >= 0 && d <= cap, `attempt ${attempt}: ${d} outside [0, ${cap}]`);
    }
    // Jittered: spread over the range, not one value (a restart must not bring every
    // client back at the same instant).
    const mean = delays.reduce((a, d) => a + d, 0) / delays.length;
    assert.ok(Math.abs(mean - cap / 2) < cap * 0.1, `attempt ${attempt}: mean ${mean} not near ${cap / 2}`);
    assert.ok(new Set(delays).size > 100, `attempt ${attempt}: too few distinct delays`);
  }
  // Far past the cap, factor ** attempt is Infinity: still max.
  assert.equal(backoffDelay(5000, b, () => 0), 8000);
});

test("backoff: partial and no jitter", () => {
  const none = { initial: 100, max: 1000, factor: 3, jitter: 0 };
  assert.deepEqual([0, 1, 2, 3].map((a) => backoffDelay(a, none, Math.random)), [100, 300, 900, 1000]);
  const half = { initial: 1000, max: 1000, factor: 2, jitter: 0.5 };
  const random = lcg(7);
  for (let i = 0; i < 500; i++) {
    const d = backoffDelay(0, half, random);
    assert.ok(d >= 500 && d <= 1000, `${d}`);
  }
  // Defaults fill in what is not given.
  assert.equal(backoffDelay(1, { jitter: 0 }), 1000);
});

test("close codes: which reconnect", () => {
  for (const code of [1000, 1001, 1005, 1006, 1011, 1012, 1013, 1014, 4000]) {
    assert.equal(shouldReconnect(code), true, `${code} reconnects`);
  }
  for (const code of [1002, 1003, 1007, 1008, 1009, 1010, 4001, 4401, 4999]) {
    assert.equal(shouldReconnect(code), false, `${code} stops`);
  }
});

test("utf8Length counts bytes as the hub does", () => {
  for (const s of ["", "hello", "Zoë", "日本語", "emoji 👋🏽 ok", "a\u0000b", "\ud83d", "x\udc00y"]) {
    // JSON.stringify writes lone surrogates as \u escapes; what is sent is its output.
    const frame = JSON.stringify({ type: "send", room: "r", text: s });
    assert.equal(utf8Length(frame), Buffer.byteLength(frame, "utf8"), JSON.stringify(s));
    if (!/[\ud800-\udfff]/.test(s)) assert.equal(utf8Length(s), Buffer.byteLength(s), s);
  }
});

test("parseFrame: objects with a type only", () => {
  assert.deepEqual(parseFrame('{"type":"message","seq":1}'), { type: "message", seq: 1 });
  assert.deepEqual(parseFrame(Buffer.from('{"type":"rooms","rooms":[]}')), { type: "rooms", rooms: [] });
  for (const bad of ["", "not json", "[1,2]", "null", "42", '{"kind":"x"}', '{"type":5}']) {
    assert.equal(parseFrame(bad), null, bad);
  }
});

test("room patterns of a token, as the hub reads them", () => {
  const p = ["team.*", "lobby"];
  assert.deepEqual(["team.a", "team.", "team", "lobby", "lobby2", "x"].map((r) => roomAllowed(p, r)), [true, false, false, true, false, false]);
  assert.equal(roomAllowed(null, "anything"), true);
});

test("token bucket: bursts of capacity, then the rate", () => {
  const b = new TokenBucket(10, 3, 0);
  assert.deepEqual([b.take(0), b.take(0), b.take(0), b.take(0)], [true, true, true, false]);
  assert.equal(b.wait(0), 100);
  assert.equal(b.take(50), false);
  assert.equal(b.wait(50), 50);
  assert.equal(b.take(100), true);
  assert.equal(b.take(10000) && b.take(10000) && b.take(10000), true);
  assert.equal(b.take(10000), false, "never more than capacity after a pause");
  const off = new TokenBucket(0, 0, 0);
  assert.ok(Array.from({ length: 1000 }, () => off.take(0)).every(Boolean));
});

test("options are checked with clear errors", () => {
  const { WebSocket } = fakeHub();
  assert.throws(() => new DuplexClient("ws://h/", { WebSocket, backoff: { max: 1 } }), /backoff.max must be >= backoff.initial/);
  assert.throws(() => new DuplexClient("ws://h/", { WebSocket, backoff: { jitter: 2 } }), /jitter must be in \[0, 1\]/);
  assert.throws(() => new DuplexClient("ws://h/", { WebSocket, maxQueue: -1 }), /maxQueue/);
  assert.throws(() => new DuplexClient("not a url", { WebSocket }), /Invalid URL/);
  const saved = globalThis.WebSocket;
  try {
    globalThis.WebSocket = undefined;
    assert.throws(() => new DuplexClient("ws://h/"), /no WebSocket constructor: pass \{ WebSocket \}/);
  } finally {
    globalThis.WebSocket = saved;
  }
});

const fast = { initial: 1, max: 1, factor: 2, jitter: 0 };

async function connected(options = {}) {
  const hub = fakeHub();
  const client = new DuplexClient("http://hub.test/rooms/general", {
    WebSocket: hub.WebSocket,
    name: "me",
    backoff: fast,
    rateLimit: 0,
    ...options,
  });
  const joined = client.join("general");
  const ws = await hub.next();
  ws.accept();
  return { hub, client, ws, joined };
}

test("join, send and acknowledge: the seq comes back with the message", async () => {
  const { client, ws, joined } = await connected({ token: "s3cret" });
  assert.equal(ws.url, "ws://hub.test/rooms/general?token=s3cret");
  assert.equal(ws.requested, PROTOCOL);
  // With a token the first join carries no name: a signed token names the connection.
  assert.deepEqual(ws.take("join"), [{ type: "join", room: "general" }]);
  ws.deliver({ type: "error", code: "bad_name", message: "say who you are" });
  // A shared token after all: the same join again with our name, without bothering anyone.
  assert.deepEqual(ws.take("join"), [{ type: "join", room: "general", name: "me" }]);
  const messages = collect(client, "message");
  const history = collect(client, "history");
  ws.joined("general", { messages: [msg("general", 1, "bob", "hi"), msg("general", 2, "bob", "there")], members: ["bob", "me"] });
  const result = await joined;
  assert.deepEqual(result, { room: "general", members: ["bob", "me"], lastSeq: 2, epoch: "e1" });
  assert.equal(history[0].messages.length, 2);

  const sent = client.send("general", "hello");
  assert.deepEqual(ws.take("send"), [{ type: "send", room: "general", text: "hello" }]);
  ws.deliver({ type: "message", ...msg("general", 3, "me", "hello") });
  assert.equal(await sent, 3);
  assert.equal(messages.length, 1);
  assert.equal(messages[0].mine, true);
  // A duplicate (seq already seen) is dropped.
  ws.deliver({ type: "message", ...msg("general", 3, "me", "hello") });
  assert.equal(messages.length, 1);
});

test("a signed token's identity: joins carry no name, the token's name is ours", async () => {
  const hub = fakeHub();
  const client = new DuplexClient("ws://hub.test/", { WebSocket: hub.WebSocket, token: "jwt", name: "stored", rateLimit: 0 });
  const ids = collect(client, "identity");
  client.connect();
  const ws = await hub.next();
  ws.accept();
  ws.deliver({ type: "identity", sub: "u1", name: "Ann", rooms: ["team.*"], publish: true });
  assert.equal(client.name, "Ann");
  assert.deepEqual(ids, [{ sub: "u1", name: "Ann", rooms: ["team.*"], publish: true }]);
  const allowed = client.join("team.a");
  assert.deepEqual(ws.take("join"), [{ type: "join", room: "team.a" }]);
  // Once the identity is known, what it forbids is refused without asking the hub.
  await assert.rejects(client.join("other"), (e) => e instanceof DuplexError && e.code === "forbidden_room");
  assert.deepEqual(ws.take(), []);
  ws.joined("team.a", { members: ["Ann"] });
  await allowed;
  client.close();
});

test("joins written before the identity came: a forbidden_room goes to the right one", async () => {
  const hub = fakeHub();
  const client = new DuplexClient("ws://hub.test/", { WebSocket: hub.WebSocket, token: "jwt", rateLimit: 0 });
  const a = client.join("team.a");
  const b = client.join("other");
  const ws = await hub.next();
  ws.accept();
  assert.equal(ws.take("join").length, 2);
  ws.deliver({ type: "identity", sub: "u1", name: "Ann", rooms: ["team.*"], publish: false });
  // The token's check answers before the broker's reply to the earlier join.
  ws.deliver({ type: "error", code: "forbidden_room", message: "this token does not allow room \"other\"" });
  await assert.rejects(b, (e) => e.code === "forbidden_room" && e.room === "other");
  ws.joined("team.a", { members: ["Ann"] });
  await a;
  assert.deepEqual(client.joined().map((r) => r.room), ["team.a"], "a forbidden room is not rejoined");
  await assert.rejects(client.send("team.a", "hi"), (e) => e.code === "read_only");
  client.close();
});

test("reconnect: rejoin with since and epoch, replay deduplicated, state events", async () => {
  const { hub, client, ws, joined } = await connected();
  ws.take();
  ws.joined("general", { messages: [msg("general", 7, "bob", "a")], epoch: "ep" });
  await joined;
  ws.deliver({ type: "message", ...msg("general", 8, "bob", "b") });
  const states = collect(client, "state");
  const closes = collect(client, "close");
  ws.drop(1001, "server shutting down");
  assert.deepEqual(closes, [{ code: 1001, reason: "server shutting down", wasClean: true, reconnect: true, delay: 1 }]);
  const ws2 = await hub.next(1);
  assert.deepEqual(states, [{ state: "reconnecting", attempt: 1, delay: 1 }]);
  ws2.accept();
  assert.equal(states.at(-1).state, "open");
  assert.deepEqual(ws2.take("join"), [{ type: "join", room: "general", name: "me", since: 8, epoch: "ep" }]);
  const history = collect(client, "history");
  ws2.joined("general", { messages: [msg("general", 8, "bob", "b"), msg("general", 9, "bob", "c")], epoch: "ep" });
  assert.deepEqual(history[0].messages.map((m) => m.seq), [9], "seq 8 was seen already");
  assert.equal(client.joined()[0].lastSeq, 9);
  client.close();
});

test("offline queue: bounded, drained in order after the rejoin, before later sends", async () => {
  const { hub, client, ws, joined } = await connected({ maxQueue: 3 });
  ws.take();
  ws.joined("general");
  await joined;
  ws.drop();
  const sends = ["one", "two", "three"].map((t) => client.send("general", t));
  assert.equal(client.queued, 3);
  await assert.rejects(client.send("general", "four"), (e) => e.code === "queue_full" && /maxQueue 3/.test(e.message));
  const ws2 = await hub.next(1);
  ws2.accept();
  // Only the join until the room is back: sends before it would race the replay.
  assert.deepEqual(ws2.sent.map((f) => f.type), ["join"]);
  ws2.take();
  ws2.joined("general");
  assert.deepEqual(ws2.take("send").map((f) => f.text), ["one", "two", "three"]);
  const later = client.send("general", "five");
  assert.deepEqual(ws2.take("send").map((f) => f.text), ["five"]);
  ["one", "two", "three", "five"].forEach((t, i) => ws2.deliver({ type: "message", ...msg("general", i + 1, "me", t) }));
  assert.deepEqual(await Promise.all([...sends, later]), [1, 2, 3, 4]);
  assert.equal(client.queued, 0);
  client.close();
});

test("a message in flight when the connection dropped: matched in the replay, or sent again", async () => {
  const { hub, client, ws, joined } = await connected();
  ws.take();
  ws.joined("general");
  await joined;
  const stored = client.send("general", "stored before the drop");
  const lost = client.send("general", "lost with the connection");
  assert.equal(ws.take("send").length, 2);
  ws.drop();
  const ws2 = await hub.next(1);
  ws2.accept();
  ws2.take();
  ws2.joined("general", { messages: [msg("general", 1, "me", "stored before the drop")] });
  assert.equal(await stored, 1);
  assert.deepEqual(ws2.take("send").map((f) => f.text), ["lost with the connection"], "only the lost one again");
  ws2.deliver({ type: "message", ...msg("general", 2, "me", "lost with the connection") });
  assert.equal(await lost, 2);
  client.close();
});

test("gap: reported, and numbering that starts over is followed", async () => {
  const { hub, client, ws, joined } = await connected();
  ws.take();
  ws.joined("general", { messages: [msg("general", 40, "bob", "old")], epoch: "old" });
  await joined;
  ws.drop();
  const ws2 = await hub.next(1);
  const gaps = collect(client, "gap");
  const history = collect(client, "history");
  ws2.accept();
  assert.deepEqual(ws2.take("join")[0], { type: "join", room: "general", name: "me", since: 40, epoch: "old" });
  ws2.joined("general", { messages: [msg("general", 1, "bob", "new")], epoch: "new", gap: true, firstSeq: 1 });
  assert.deepEqual(gaps, [{ room: "general", firstSeq: 1, epoch: "new" }]);
  assert.deepEqual(history[0].messages.map((m) => m.text), ["new"], "seq 1 of the new epoch is not a duplicate");
  assert.deepEqual(client.joined()[0], { room: "general", lastSeq: 1, epoch: "new", ready: true, members: ["me"] });
  client.close();
});

test("too large: refused locally with the sizes, nothing written, the connection stays", async () => {
  const { client, ws, joined } = await connected({ maxMessageSize: 100 });
  ws.take();
  ws.joined("general");
  await joined;
  const text = "é".repeat(40); // 80 bytes of text, 122 as a frame
  await assert.rejects(client.send("general", text), (e) => {
    assert.equal(e.code, "too_large");
    assert.equal(e.size, 122);
    assert.equal(e.limit, 100);
    assert.match(e.message, /122 bytes as sent, over the limit of 100/);
    return true;
  });
  assert.deepEqual(ws.take("send"), []);
  assert.equal(client.state, "open");
  await assert.rejects(client.send("nowhere", "x"), (e) => e.code === "not_joined");
  client.close();
});

test("the hub's error for a send rejects that send", async () => {
  const { client, ws, joined } = await connected();
  ws.take();
  ws.joined("general");
  await joined;
  const errors = collect(client, "error");
  const refused = client.send("general", "x");
  const ok = client.send("general", "y");
  ws.deliver({ type: "error", code: "unavailable", message: "Redis is unreachable" });
  await assert.rejects(refused, (e) => e.code === "unavailable" && e.request === "send" && e.text === "x");
  ws.deliver({ type: "message", ...msg("general", 1, "me", "y") });
  assert.equal(await ok, 1);
  assert.equal(errors.length, 1);
  client.close();
});

test("close codes that stop: 1009 does not reconnect, pending sends fail", async () => {
  const { hub, client, ws, joined } = await connected();
  ws.take();
  ws.joined("general");
  await joined;
  const pending = client.send("general", "x");
  const closes = collect(client, "close");
  ws.drop(1009, "message too big");
  assert.equal(client.state, "closed");
  assert.equal(closes[0].reconnect, false);
  await assert.rejects(pending, (e) => e.code === "closed" && e.closeCode === 1009);
  await tick(20);
  assert.equal(hub.sockets.length, 1, "no new connection");
});

test("4000 (too slow) reconnects and resumes", async () => {
  const { hub, ws, joined, client } = await connected();
  ws.take();
  ws.joined("general", { messages: [msg("general", 3, "bob", "x")] });
  await joined;
  ws.drop(4000, "too slow");
  const ws2 = await hub.next(1);
  ws2.accept();
  assert.equal(ws2.take("join")[0].since, 3);
  client.close();
});

test("a custom policy overrides the close codes", async () => {
  const { hub, ws, client } = await connected({ shouldReconnect: () => true });
  ws.drop(1008, "rate limit exceeded");
  await hub.next(1);
  client.close();
});

test("pacing: no more than the rate limit's burst at once", async () => {
  const { client, ws, joined } = await connected({ rateLimit: 10 });
  ws.joined("general");
  await joined;
  for (let i = 0; i < 15; i++) client.send("general", `m${i}`);
  // The bucket holds 10; the join took one.
  assert.equal(ws.sent.filter((f) => f.type === "send").length, 9);
  await tick(800);
  assert.deepEqual(ws.take("send").map((f) => f.text), Array.from({ length: 15 }, (_, i) => `m${i}`));
  client.close();
});

test("close(): pending requests fail, no reconnect", async () => {
  const { hub, client, ws } = await connected();
  const states = collect(client, "state");
  const pending = client.send("general", "never");
  const rooms = client.rooms();
  client.close();
  await assert.rejects(pending, (e) => e.code === "closed");
  await assert.rejects(rooms, (e) => e.code === "closed");
  assert.deepEqual(states, [{ state: "closed" }]);
  await tick(20);
  assert.equal(ws.readyState, 3);
  assert.equal(hub.sockets.length, 1);
});

test("rooms(): asked once connected, answered to every caller", async () => {
  const hub = fakeHub();
  const client = new DuplexClient("ws://hub.test/", { WebSocket: hub.WebSocket, name: "me", rateLimit: 0 });
  const a = client.rooms();
  const b = client.rooms();
  const ws = await hub.next();
  ws.accept();
  assert.deepEqual(ws.take(), [{ type: "rooms" }]);
  ws.deliver({ type: "rooms", rooms: [{ name: "general", members: 2, last_seq: 43 }] });
  assert.deepEqual(await a, [{ name: "general", members: 2, last_seq: 43 }]);
  assert.deepEqual(await b, await a);
  client.close();
});

test("a name asked for later: setName joins the waiting rooms", async () => {
  const hub = fakeHub();
  const client = new DuplexClient("ws://hub.test/", { WebSocket: hub.WebSocket, rateLimit: 0 });
  const errors = collect(client, "error");
  const first = client.join("general");
  const ws = await hub.next();
  ws.accept();
  assert.deepEqual(ws.take(), [{ type: "join", room: "general" }]);
  ws.deliver({ type: "error", code: "bad_name", message: "say who you are: join with a name" });
  await assert.rejects(first, (e) => e.code === "bad_name");
  assert.equal(errors[0].code, "bad_name");
  client.setName("  Zoë ");
  assert.deepEqual(ws.take(), [{ type: "join", room: "general", name: "Zoë" }]);
  ws.joined("general", { members: ["Zoë"] });
  assert.deepEqual(await client.join("general"), { room: "general", members: ["Zoë"], lastSeq: 0, epoch: "e1" });
  client.close();
});

test("presence: the list is kept from the joiner's own and the names that come and go", async () => {
  const { client, ws, joined } = await connected();
  const seen = collect(client, "presence");
  ws.joined("general", { members: ["bob", "me"] });
  await joined;
  ws.deliver({ type: "presence", room: "general", event: "joined", name: "carol", count: 3 });
  ws.deliver({ type: "presence", room: "general", event: "left", name: "bob", count: 2 });
  assert.deepEqual(seen.map((p) => [p.name, p.self, p.members.join(",")]), [
    ["me", true, "bob,me"],
    ["carol", false, "bob,me,carol"],
    ["bob", false, "me,carol"],
  ]);
  client.close();
});

test("a token function is asked on every attempt", async () => {
  const hub = fakeHub();
  let n = 0;
  const client = new DuplexClient("ws://hub.test/", {
    WebSocket: hub.WebSocket,
    token: async () => `t${++n}`,
    backoff: fast,
    rateLimit: 0,
  });
  client.connect();
  const ws = await hub.next();
  assert.equal(ws.url, "ws://hub.test/?token=t1");
  ws.accept();
  ws.drop();
  const ws2 = await hub.next(1);
  assert.equal(ws2.url, "ws://hub.test/?token=t2");
  client.close();
});

test("a listener that throws does not break the client", async () => {
  const { client, ws, joined } = await connected();
  const thrown = [];
  const saved = process.listeners("uncaughtException");
  process.removeAllListeners("uncaughtException");
  process.on("uncaughtException", (e) => thrown.push(e.message));
  try {
    client.on("presence", () => {
      throw new Error("listener bug");
    });
    ws.joined("general");
    assert.ok(await joined);
    await tick(5);
    assert.deepEqual(thrown, ["listener bug"]);
  } finally {
    process.removeAllListeners("uncaughtException");
    for (const l of saved) process.on("uncaughtException", l);
    client.close();
  }
});
