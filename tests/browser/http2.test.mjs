// The chat page over HTTPS with HTTP/2 (DUPLEX_H2_URL, a hub with a certificate made by
// run.sh): Chromium loads it over h2 (ALPN) and opens its WebSocket as a stream of that same
// connection (RFC 8441), which the server's metrics count under version 2.
import { test } from "node:test";
import assert from "node:assert/strict";
import { launch, openChat, say, waitForMessage } from "./browser.mjs";

const base = process.env.DUPLEX_H2_URL;

test("the page over HTTP/2 carries its WebSocket over HTTP/2", { timeout: 60000 }, async () => {
  assert.ok(base && base.startsWith("https://"), "DUPLEX_H2_URL is set by run.sh");
  // The certificate is made for this test and trusted by no one.
  const browser = await launch(["--ignore-certificate-errors"]);
  try {
    const page = await openChat(browser.context, `${base}/rooms/h2`, "Hanna");
    const protocol = await page.evaluate(() => performance.getEntriesByType("navigation")[0].nextHopProtocol);
    assert.equal(protocol, "h2", "the page came over HTTP/2");
    await say(page, "carried by a stream");
    await waitForMessage(page, "carried by a stream");
    const metrics = await page.evaluate(() => fetch("/metrics").then((r) => r.text()));
    const over2 = Number(/duplex_websockets_total\{version="2"\} (\d+)/.exec(metrics)?.[1]);
    const over11 = Number(/duplex_websockets_total\{version="1.1"\} (\d+)/.exec(metrics)?.[1]);
    assert.ok(over2 >= 1, `the page's WebSocket went over HTTP/2:\n${metrics}`);
    assert.equal(over11, 0, "and none over HTTP/1.1");
  } finally {
    await browser.close();
  }
});
