// Integration tests against a real `duplex serve` (test/hub.mjs starts it; DUPLEX_BIN names
// the binary): a restart of the server while clients are connected, the resume from the last
// seq without loss or duplicates, the offline queue, the size limit, and tokens.
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { DuplexClient } from "../duplex-client.js";
import { startHub, tempDir, removeDir, once, writeSecret, signJwt } from "./hub.mjs";

/** Every message a client is handed, live or replayed, in order, as "seq from: text". */
function record(client) {
  const seen = [];
  const add = (m) => seen.push(`${m.seq} ${m.from}: ${m.text}`);
  client.on("message", add);
  client.on("history", (h) => h.messages.forEach(add));
  return seen;
}

const client = (url, options) => new DuplexClient(url, { WebSocket, ...options });

test("a server killed and restarted: reconnect, replay of what was missed exactly once, the offline queue in order", { timeout: 60000 }, async () => {
  const data = await tempDir();
  let hub = await startHub({ data });
  const alice = client(hub.url, { name: "alice", backoff: { initial: 100, max: 400 } });
  const seen = record(alice);
  const closes = [];
  alice.on("close", (c) => closes.push(c));
  const replays = [];
  alice.on("history", (h) => replays.push(h.messages.map((m) => m.text)));
  try {
    await alice.join("team");
    assert.deepEqual(await Promise.all(["a1", "a2", "a3"].map((t) => alice.send("team", t))), [1, 2, 3]);

    const away = once(alice, "state", (s) => s.state === "reconnecting");
    await hub.stop("SIGKILL");
    await away;
    assert.equal(closes[0].code, 1006);
    assert.equal(closes[0].reconnect, true);

    // Offline: these wait in the queue.
    const queued = ["q1", "q2", "q3"].map((t) => alice.send("team", t));
    assert.equal(alice.queued, 3);

    // While alice's port stays dead, the hub runs on another port with the same data, and bob
    // speaks there: what he says must come to alice in the replay of her rejoin.
    const side = await startHub({ data });
    const bob = client(side.url, { name: "bob" });
    await bob.join("team");
    assert.deepEqual(await Promise.all(["b1", "b2", "b3"].map((t) => bob.send("team", t))), [4, 5, 6]);
    bob.close();
    assert.equal((await side.stop("SIGTERM")).code, 0);
    hub = await startHub({ data, port: hub.port });

    assert.deepEqual(await Promise.all(queued), [7, 8, 9]);
    assert.equal(alice.queued, 0);
    assert.deepEqual(seen, [
      "1 alice: a1",
      "2 alice: a2",
      "3 alice: a3",
      "4 bob: b1",
      "5 bob: b2",
      "6 bob: b3",
      "7 alice: q1",
      "8 alice: q2",
      "9 alice: q3",
    ]);
    assert.deepEqual(replays.at(-1), ["b1", "b2", "b3"], "bob's messages came in alice's replay");

    // What the hub stored: each message once (nothing was sent twice), in order.
    const carol = client(hub.url, { name: "carol" });
    const stored = record(carol);
    await carol.join("team", { since: 0 });
    assert.deepEqual(stored, seen);
    carol.close();
  } finally {
    alice.close();
    await hub.stop("SIGKILL");
    await removeDir(data);
  }
});

test("a graceful restart (1001): reconnect, the room and its member list back", { timeout: 60000 }, async () => {
  const data = await tempDir();
  let hub = await startHub({ data });
  const alice = client(hub.url, { name: "alice", backoff: { initial: 200, max: 200, jitter: 0 } });
  try {
    await alice.join("lobby");
    const closed = once(alice, "close");
    const stopped = await hub.stop("SIGTERM");
    assert.equal(stopped.code, 0, "a graceful shutdown exits 0");
    const c = await closed;
    assert.equal(c.code, 1001);
    assert.equal(c.reconnect, true);
    hub = await startHub({ data, port: hub.port });
    await once(alice, "joined", (j) => j.room === "lobby");
    assert.deepEqual(alice.joined()[0].members, ["alice"]);
    assert.equal(await alice.send("lobby", "back"), 1);
  } finally {
    alice.close();
    await hub.stop("SIGKILL");
    await removeDir(data);
  }
});

test("a message over the limit: refused locally; the hub itself would close with 1009", { timeout: 30000 }, async () => {
  const data = await tempDir();
  const hub = await startHub({ data, args: ["--max-message-size", "1024"] });
  const careful = client(hub.url, { name: "careful", maxMessageSize: 1024 });
  const careless = client(hub.url, { name: "careless", maxMessageSize: 1 << 20 });
  try {
    await careful.join("r");
    await assert.rejects(careful.send("r", "x".repeat(2000)), (e) => {
      assert.equal(e.code, "too_large");
      assert.match(e.message, /^message is 2036 bytes as sent, over the limit of 1024/);
      return true;
    });
    assert.equal(careful.state, "open");
    // The limit is the whole frame: the largest text that fits, and one byte more.
    const room = '{"type":"send","room":"r","text":""}'.length;
    assert.equal(await careful.send("r", "y".repeat(1024 - room)), 1);
    await assert.rejects(careful.send("r", "y".repeat(1025 - room)), (e) => e.code === "too_large");

    // Without the local check the hub closes the connection, and the client does not retry.
    await careless.join("r");
    const closed = once(careless, "close");
    const pending = careless.send("r", "x".repeat(2000));
    const c = await closed;
    assert.equal(c.code, 1009);
    assert.equal(c.reconnect, false);
    assert.equal(careless.state, "closed");
    await assert.rejects(pending, (e) => e.code === "closed" && e.closeCode === 1009);
  } finally {
    careful.close();
    careless.close();
    await hub.stop("SIGKILL");
    await removeDir(data);
  }
});

test("tokens: a shared one asks for our name, a signed one gives the name and the rooms", { timeout: 30000 }, async () => {
  const data = await tempDir();
  const shared = await writeSecret(data, "token", "shared-secret-token\n");
  let hub = await startHub({ data, args: ["--token-file", shared] });
  try {
    const anon = client(hub.url, { name: "dora", token: "shared-secret-token" });
    const joined = await anon.join("general");
    assert.deepEqual(joined.members, ["dora"]);
    assert.equal(await anon.send("general", "with a shared token"), 1);
    anon.close();
  } finally {
    await hub.stop("SIGKILL");
  }
  const secret = "0123456789abcdef0123456789abcdef-long-enough";
  const secretFile = await writeSecret(data, "jwt", secret);
  hub = await startHub({ data, args: ["--jwt-secret-file", secretFile] });
  try {
    const exp = Math.floor(Date.now() / 1000) + 600;
    const ann = client(hub.url, {
      name: "ignored",
      token: () => signJwt(secret, { sub: "u1", name: "Ann", rooms: ["team.*"], exp }),
    });
    const identity = once(ann, "identity");
    const joined = await ann.join("team.a");
    assert.deepEqual(await identity, { sub: "u1", name: "Ann", rooms: ["team.*"], publish: true });
    assert.deepEqual(joined.members, ["Ann"]);
    assert.equal(ann.name, "Ann");
    await assert.rejects(ann.join("general"), (e) => e.code === "forbidden_room");
    assert.equal(await ann.send("team.a", "signed"), 1);
    ann.close();
  } finally {
    await hub.stop("SIGKILL");
    await removeDir(data);
  }
});
