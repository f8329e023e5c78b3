// Starts Debian's Chromium (never a downloaded browser) through playwright-core, each
// instance with its own fresh profile directory, so two instances are two independent users.
import { chromium } from "playwright-core";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** A browser with a fresh --user-data-dir (and `extraArgs`); `close()` removes the profile
 * again. */
export async function launch(extraArgs = []) {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} not found: install Debian's chromium package (apt-get install chromium)`);
  }
  const profile = await mkdtemp(join(tmpdir(), "duplex-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [...ARGS, ...extraArgs],
    viewport: { width: 1040, height: 640 },
    deviceScaleFactor: 1,
  });
  return {
    context,
    async close() {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}

/** Opens `url` and signs in as `name` through the page's welcome dialog. */
export async function openChat(context, url, name) {
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(15000);
  await page.goto(url);
  await page.fill("#name-input", name);
  await page.click("#name-form button");
  await page.waitForSelector('#status[data-state="online"]');
  return page;
}

/** Types a message and sends it with Enter. */
export async function say(page, text) {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
}

/** Waits until a message with exactly `text` is shown. */
export async function waitForMessage(page, text) {
  await page.waitForFunction(
    (t) => [...document.querySelectorAll("#messages .msg .text")].some((e) => e.textContent === t),
    text,
  );
}

/** The shown messages as "from: text". */
export async function shownMessages(page) {
  return page.$$eval("#messages .msg", (items) =>
    items.map((li) => `${li.querySelector(".from").textContent}: ${li.querySelector(".text").textContent}`),
  );
}
