// The JavaScript client library (clients/js, served by the hub at /duplex-client.js) in
// Debian's Chromium, with the browser's own WebSocket, against a real `duplex serve` that this
// test restarts (DUPLEX_BIN, from run.sh). While the page is away, the hub runs for a moment on
// another port with the same --data and a Node client speaks there: when the page's hub is back,
// what was said must come to the page in its replay, exactly once.
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { launch, openChat, say, waitForMessage, shownMessages } from "./browser.mjs";
import { DuplexClient } from "../../clients/js/duplex-client.js";
import { startHub, tempDir, removeDir } from "../../clients/js/test/hub.mjs";

/** Runs the hub briefly on another port (same data) and says `texts` there as `name`. */
async function sayElsewhere(data, room, name, texts) {
  const side = await startHub({ data });
  const client = new DuplexClient(side.url, { WebSocket, name });
  try {
    await client.join(room);
    return await Promise.all(texts.map((t) => client.send(room, t)));
  } finally {
    client.close();
    const exit = await side.stop("SIGTERM");
    assert.equal(exit.code, 0);
  }
}

test("the library in Chromium: offline queue, restart, replay of what was missed, size limit", { timeout: 90000 }, async () => {
  const data = await tempDir();
  let hub = await startHub({ data });
  const browser = await launch();
  try {
    const page = browser.context.pages()[0] || (await browser.context.newPage());
    page.setDefaultTimeout(20000);
    // Any page of the hub's origin can import the module; /healthz has no CSP of its own.
    await page.goto(`${hub.http}/healthz`);
    await page.evaluate(async (url) => {
      const { DuplexClient } = await import("/duplex-client.js");
      const client = new DuplexClient(url, {
        name: "chromium",
        maxMessageSize: 4096,
        backoff: { initial: 300, max: 1000 },
      });
      window.seen = [];
      window.states = [];
      const add = (m) => window.seen.push(`${m.seq} ${m.from}: ${m.text}`);
      client.on("message", add);
      client.on("history", (h) => h.messages.forEach(add));
      client.on("state", (s) => window.states.push(s.state));
      window.client = client;
      await client.join("lab");
      window.first = await Promise.all(["c1", "c2"].map((t) => client.send("lab", t)));
    }, hub.url);
    assert.deepEqual(await page.evaluate(() => window.first), [1, 2]);

    // Too large: refused in the page, before anything is sent; the connection stays.
    const refused = await page.evaluate(() =>
      window.client.send("lab", "x".repeat(5000)).then(() => "sent", (e) => `${e.code}: ${e.message}`),
    );
    assert.match(refused, /^too_large: message is 5038 bytes as sent, over the limit of 4096/);

    await hub.stop("SIGKILL");
    await page.waitForFunction(() => window.client.state === "reconnecting");
    // Offline: queued in the page.
    await page.evaluate(() => {
      window.queued = ["q1", "q2"].map((t) => window.client.send("lab", t));
    });
    assert.equal(await page.evaluate(() => window.client.queued), 2);
    assert.deepEqual(await sayElsewhere(data, "lab", "node", ["n1", "n2", "n3"]), [3, 4, 5]);

    hub = await startHub({ data, port: hub.port });
    assert.deepEqual(await page.evaluate(() => Promise.all(window.queued)), [6, 7]);
    assert.deepEqual(await page.evaluate(() => window.seen), [
      "1 chromium: c1",
      "2 chromium: c2",
      "3 node: n1",
      "4 node: n2",
      "5 node: n3",
      "6 chromium: q1",
      "7 chromium: q2",
    ]);
    const states = await page.evaluate(() => window.states);
    assert.deepEqual([states[0], states[1]], ["connecting", "open"]);
    assert.ok(states.includes("reconnecting") && states.at(-1) === "open", states.join(","));
    await page.evaluate(() => window.client.close());
  } finally {
    await browser.close();
    await hub.stop("SIGKILL");
    await removeDir(data);
  }
});

test("the chat page across server restarts: the indicator, the missed messages once, what was typed offline, the gap notice", { timeout: 90000 }, async () => {
  const data = await tempDir();
  const fresh = await tempDir();
  let hub = await startHub({ data });
  const browser = await launch();
  try {
    const page = await openChat(browser.context, `${hub.http}/rooms/resume`, "Alice");
    await say(page, "before the restart");
    await waitForMessage(page, "before the restart");

    await hub.stop("SIGKILL");
    await page.waitForSelector('#status:not([data-state="online"])');
    // The composer stays usable: what is typed now waits in the library's queue.
    await say(page, "typed while offline");
    assert.deepEqual(await sayElsewhere(data, "resume", "Bob", ["missed 1", "missed 2"]), [2, 3]);

    hub = await startHub({ data, port: hub.port });
    await page.waitForSelector('#status[data-state="online"]', { timeout: 30000 });
    await waitForMessage(page, "typed while offline");
    // Nothing twice, nothing missing, in the order of the room.
    assert.deepEqual(await shownMessages(page), [
      "Alice: before the restart",
      "Bob: missed 1",
      "Bob: missed 2",
      "Alice: typed while offline",
    ]);
    assert.deepEqual(
      await page.$$eval("#messages .msg", (items) => items.map((li) => Number(li.dataset.seq))),
      [1, 2, 3, 4],
    );
    // Still live both ways after the restart.
    const bob = new DuplexClient(hub.url, { WebSocket, name: "Bob" });
    await bob.join("resume");
    await page.waitForFunction(() => document.querySelector("#members").textContent.includes("Bob"));
    await bob.send("resume", "welcome back");
    await waitForMessage(page, "welcome back");
    bob.close();

    // The history lost (a new --data directory: a new epoch): the rejoin's reply says so, and
    // the page shows the gap notice.
    await hub.stop("SIGKILL");
    hub = await startHub({ data: fresh, port: hub.port });
    await page.waitForFunction(() =>
      [...document.querySelectorAll("#messages .notice")].some((e) => e.textContent.includes("history was lost")),
      null,
      { timeout: 30000 },
    );
    await say(page, "a new beginning");
    await page.waitForFunction(() => document.querySelector('#messages .msg:last-child')?.dataset.seq === "1");
  } finally {
    await browser.close();
    await hub.stop("SIGKILL");
    await removeDir(data);
    await removeDir(fresh);
  }
});
