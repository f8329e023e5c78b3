// The chat page in two independent Chromium instances: sign in under two names, chat both
// ways, see each other's presence, reload and find the history. DUPLEX_URL is the server.
import { test } from "node:test";
import assert from "node:assert/strict";
import { launch, openChat, say, waitForMessage, shownMessages } from "./browser.mjs";

const base = process.env.DUPLEX_URL;
const screenshot = process.env.DUPLEX_SCREENSHOT;

test("two browsers chat in a room, and a reload shows the history", { timeout: 90000 }, async () => {
  assert.ok(base, "DUPLEX_URL is set by run.sh");
  const alice = await launch();
  const bob = await launch();
  try {
    const room = `${base}/rooms/team`;
    const a = await openChat(alice.context, room, "Alice");
    const b = await openChat(bob.context, room, "Bob");

    // Presence: each sees the other in the member list.
    await a.waitForFunction(() => document.querySelector("#members").textContent.includes("Bob"));
    await b.waitForFunction(() => document.querySelector("#members").textContent.includes("Alice"));

    await say(a, "Hi Bob! The new duplex server is up");
    await waitForMessage(b, "Hi Bob! The new duplex server is up");
    await say(b, "Hi Alice, I can see you from the other browser.");
    await waitForMessage(a, "Hi Alice, I can see you from the other browser.");
    await say(a, "Messages get a sequence number and are stored before delivery.");
    await waitForMessage(b, "Messages get a sequence number and are stored before delivery.");

    // The sender's name and the time are shown with each message.
    const meta = await b.$eval("#messages .msg .meta", (e) => e.textContent);
    assert.match(meta, /Alice\s*\d{1,2}:\d{2}/);

    // Bob reloads: same name (remembered), same room, and the history is back.
    await b.reload();
    await b.waitForSelector('#status[data-state="online"]');
    await waitForMessage(b, "Messages get a sequence number and are stored before delivery.");
    assert.deepEqual(await shownMessages(b), [
      "Alice: Hi Bob! The new duplex server is up",
      "Bob: Hi Alice, I can see you from the other browser.",
      "Alice: Messages get a sequence number and are stored before delivery.",
    ]);
    assert.equal(await b.$eval("#room-title", (e) => e.textContent), "# team");

    // Still live after the reload, both ways.
    await say(b, "Reloaded, and nothing was lost.");
    await waitForMessage(a, "Reloaded, and nothing was lost.");
    await say(a, "Resume works after a dropped connection too.");
    await waitForMessage(b, "Resume works after a dropped connection too.");

    // The room list shows the room with its member count.
    await a.waitForSelector('#rooms li.current[data-room="team"]');

    // Alice's member list follows Bob's leave and rejoin (the server sends names that come and
    // go; only a joiner gets the whole list), and his leaving for good.
    const members = (page) =>
      page.$$eval("#members li", (items) => items.map((li) => li.textContent).join(","));
    const until = async (page, want) => {
      await page.waitForFunction(
        (w) => [...document.querySelectorAll("#members li")].map((li) => li.textContent).join(",") === w,
        want,
      );
      assert.equal(await members(page), want);
    };
    await until(a, "Alice,Bob");
    await until(b, "Alice,Bob");

    if (screenshot) {
      await a.screenshot({ path: screenshot });
    }
    await b.close();
    await until(a, "Alice");
  } finally {
    await alice.close();
    await bob.close();
  }
});
