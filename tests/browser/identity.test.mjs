// The chat page opened with a signed token (`/?token=`, a hub started with
// --jwt-secret-file): it shows the token's name, never asks for one, and cannot speak under
// another, neither through the page nor through a join of its own. DUPLEX_JWT_URL is that
// hub, E2E_JWT_SECRET_FILE its HS256 secret (both set by run.sh).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import { launch, say, waitForMessage, shownMessages } from "./browser.mjs";

const base = process.env.DUPLEX_JWT_URL;
const secretFile = process.env.E2E_JWT_SECRET_FILE;

/** An HS256 JWT made with node's crypto (no JWT package: the format is three base64url parts). */
function hs256(claims, secret) {
  const part = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");
  const signed = `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}`;
  const signature = createHmac("sha256", secret).update(signed).digest("base64url");
  return `${signed}.${signature}`;
}

test("the page opened with a token shows the token's name and cannot change it", { timeout: 60000 }, async () => {
  assert.ok(base && secretFile, "DUPLEX_JWT_URL and E2E_JWT_SECRET_FILE are set by run.sh");
  const secret = readFileSync(secretFile, "utf8").trim();
  const exp = Math.floor(Date.now() / 1000) + 3600;
  const token = hs256({ sub: "user-42", name: "Rita Token", exp }, secret);

  const browser = await launch();
  try {
    // A name this browser chose on an earlier visit (the page remembers it) must not be used.
    await browser.context.addInitScript(() => localStorage.setItem("duplex.name", "Mallory"));
    const page = browser.context.pages()[0] || (await browser.context.newPage());
    page.setDefaultTimeout(15000);
    await page.goto(`${base}/rooms/signed?token=${encodeURIComponent(token)}`);
    await page.waitForSelector('#status[data-state="online"]');

    // The token's name is shown, marked as fixed, and the page never asked for one.
    await page.waitForFunction(() => document.querySelector("#me").textContent === "signed in as Rita Token");
    assert.equal(await page.$eval("#me", (e) => e.dataset.fixed), "true");
    assert.equal(await page.$eval("#me", (e) => e.hidden), false);
    assert.equal(await page.$eval("#welcome", (e) => e.open), false, "no name dialog");
    await page.waitForFunction(() => document.querySelector("#members").textContent.includes("Rita Token"));
    assert.equal(
      await page.$$eval("#members li", (items) => items.map((li) => li.textContent).join(",")),
      "Rita Token",
    );

    // The name form cannot change it: opened and submitted by hand, it is ignored.
    await page.evaluate(() => document.querySelector("#welcome").showModal());
    await page.fill("#name-input", "Mallory");
    await page.click("#name-form button");
    assert.equal(await page.$eval("#me", (e) => e.textContent), "signed in as Rita Token");
    await page.keyboard.press("Escape");
    await page.waitForFunction(() => !document.querySelector("#welcome").open);

    // What the page says goes out under the token's name.
    await say(page, "who am I?");
    await waitForMessage(page, "who am I?");
    assert.deepEqual(await shownMessages(page), ["Rita Token: who am I?"]);

    // And the hub itself refuses a join under another name on a connection with this token,
    // made from the page (so through the page's own origin and CSP).
    const refusal = await page.evaluate(
      (t) =>
        new Promise((resolve, reject) => {
          const ws = new WebSocket(`ws://${location.host}/rooms/signed?token=${encodeURIComponent(t)}`, "duplex.v1");
          const got = [];
          ws.onopen = () => ws.send(JSON.stringify({ type: "join", room: "signed", name: "Mallory" }));
          ws.onmessage = (e) => {
            const m = JSON.parse(e.data);
            got.push(m);
            if (m.type === "error") {
              ws.close();
              resolve(got);
            }
          };
          ws.onerror = () => reject(new Error("the WebSocket failed"));
          setTimeout(() => reject(new Error(`no error in time: ${JSON.stringify(got)}`)), 10000);
        }),
      token,
    );
    assert.equal(refusal[0].type, "identity");
    assert.equal(refusal[0].name, "Rita Token");
    assert.equal(refusal.at(-1).code, "identity", JSON.stringify(refusal));
    // Nobody called Mallory ever joined.
    const members = await page.$$eval("#members li", (items) => items.map((li) => li.textContent));
    assert.deepEqual(members, ["Rita Token"]);
    assert.ok(!(await shownMessages(page)).some((m) => m.startsWith("Mallory")));
  } finally {
    await browser.close();
  }
});

test("the page with a token the hub did not sign gets no connection", { timeout: 60000 }, async () => {
  assert.ok(base, "DUPLEX_JWT_URL is set by run.sh");
  const forged = hs256({ sub: "user-42", name: "Rita Token", exp: Math.floor(Date.now() / 1000) + 3600 },
    "not the hub's secret, but long enough to sign with");
  const browser = await launch();
  try {
    const page = browser.context.pages()[0] || (await browser.context.newPage());
    page.setDefaultTimeout(15000);
    await page.goto(`${base}/?token=${encodeURIComponent(forged)}`);
    // The upgrade gets 401: the page never goes online and never shows the claimed name.
    await page.waitForTimeout(1500);
    assert.notEqual(await page.$eval("#status", (e) => e.dataset.state), "online");
    assert.notEqual(await page.$eval("#me", (e) => e.textContent), "signed in as Rita Token");
  } finally {
    await browser.close();
  }
});
