// The seeds' clients, unchanged, against `duplex serve` on ws://localhost:8080 (the address
// they have built in): two copies of the Node readline client (seeds_client.js, npm `ws`)
// driven through stdin, and the browser snippet (seeds_browser_snippet.js) run in Chromium.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { launch } from "./browser.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const base = process.env.DUPLEX_SEEDS_URL || "http://localhost:8080";

/** One run of the seeds' readline client, with its output collected line by line. */
function startClient() {
  const child = spawn(process.execPath, [join(here, "seeds_client.js")], {
    cwd: here,
    stdio: ["pipe", "pipe", "inherit"],
  });
  const client = { child, lines: [], waiters: [] };
  let partial = "";
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (chunk) => {
    partial += chunk;
    const parts = partial.split("\n");
    partial = parts.pop();
    for (const line of parts) {
      client.lines.push(line);
      client.waiters = client.waiters.filter((w) => !w());
    }
  });
  return client;
}

/** Resolves when the client has printed `line` (fails after 10 s). */
function waitForLine(client, line) {
  return new Promise((resolve, reject) => {
    const check = () => {
      if (client.lines.includes(line)) {
        clearTimeout(timer);
        resolve();
        return true;
      }
      return false;
    };
    const timer = setTimeout(
      () => reject(new Error(`no line ${JSON.stringify(line)}; got ${JSON.stringify(client.lines)}`)),
      10000,
    );
    if (!check()) client.waiters.push(check);
  });
}

function type(client, line) {
  client.child.stdin.write(`${line}\n`);
}

test("the seeds' Node readline clients chat through duplex serve", { timeout: 60000 }, async () => {
  const alice = startClient();
  const bob = startClient();
  try {
    await waitForLine(alice, "Please enter user name:");
    await waitForLine(bob, "Please enter user name:");
    type(alice, "alice");
    await waitForLine(alice, "Welcome alice! You can start chatting now.");
    // The seeds' client also sends its first line ("alice: alice") as a message.
    await waitForLine(bob, "Message from server: alice: alice");
    type(bob, "bob");
    await waitForLine(alice, "Message from server: bob: bob");

    type(alice, "hello bob");
    await waitForLine(bob, "Message from server: alice: hello bob");
    type(bob, "hi alice, got you");
    await waitForLine(alice, "Message from server: bob: hi alice, got you");
    // Nobody hears their own words back.
    assert.ok(!alice.lines.includes("Message from server: alice: hello bob"), alice.lines.join("\n"));
  } finally {
    for (const c of [alice, bob]) c.child.kill();
  }
});

test("the seeds' browser snippet connects and its greeting reaches a Node client", { timeout: 60000 }, async () => {
  const listener = startClient();
  const browser = await launch();
  try {
    await waitForLine(listener, "Connected to server");
    const page = browser.context.pages()[0] || (await browser.context.newPage());
    await page.goto(`${base}/healthz`);
    const connected = page.waitForEvent("console", {
      predicate: (msg) => msg.text() === "✅ Connected to local server",
      timeout: 10000,
    });
    const snippet = await readFile(join(here, "seeds_browser_snippet.js"), "utf8");
    await page.addScriptTag({ content: snippet });
    await connected;
    await waitForLine(listener, "Message from server: Hello from browser!");
  } finally {
    listener.child.kill();
    await browser.close();
  }
});
