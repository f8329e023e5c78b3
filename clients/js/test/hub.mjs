// Starts a real `duplex serve` for the integration tests: on a free loopback port, with its own
// --data directory, and again on the same port and directory after a kill (a restart).
// DUPLEX_BIN is the binary (default: release/duplex in $CARGO_TARGET_DIR or the workspace's
// target/).
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { createHmac } from "node:crypto";

const here = dirname(fileURLToPath(import.meta.url));
export const BIN =
  process.env.DUPLEX_BIN ||
  resolve(process.env.CARGO_TARGET_DIR || resolve(here, "../../../target"), "release/duplex");

export async function tempDir() {
  return mkdtemp(join(tmpdir(), "duplex-js-"));
}

/**
 * Runs `duplex serve` and resolves once it printed its first line ("duplex serving
 * http://127.0.0.1:PORT/ ..."). `port` 0 picks a free one; a restart passes the old one.
 */
export async function startHub({ data, port = 0, args = [] }) {
  if (!existsSync(BIN)) {
    throw new Error(`no duplex binary at ${BIN}: cargo build --release, or set DUPLEX_BIN`);
  }
  // Right after a kill the port may still be held for a moment: try again briefly.
  for (let attempt = 0; ; attempt++) {
    try {
      return await spawnHub(data, port, args);
    } catch (e) {
      if (attempt >= 20 || port === 0) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

function spawnHub(data, port, args) {
  const proc = spawn(BIN, ["serve", "--host", "127.0.0.1", "--port", String(port), "--data", data, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    // Without the caller's DUPLEX_* variables: `duplex serve` reads one for each of its flags,
    // and a test's own settings (a secret file for another server, say) must not become this
    // hub's.
    env: {
      ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("DUPLEX_"))),
      RUST_LOG: process.env.RUST_LOG || "warn",
    },
  });
  let stderr = "";
  proc.stderr.on("data", (d) => (stderr += d));
  const exited = new Promise((r) => proc.once("exit", (code, signal) => r({ code, signal })));
  return new Promise((resolveStart, reject) => {
    const lines = createInterface({ input: proc.stdout });
    const timer = setTimeout(() => {
      proc.kill("SIGKILL");
      reject(new Error(`duplex serve did not start within 10 s: ${stderr}`));
    }, 10000);
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`duplex serve exited (${code ?? signal}) before serving: ${stderr}`));
    });
    lines.once("line", (line) => {
      clearTimeout(timer);
      const m = line.match(/^duplex serving http:\/\/127\.0\.0\.1:(\d+)\//);
      if (!m) {
        proc.kill("SIGKILL");
        reject(new Error(`unexpected first line: ${line}`));
        return;
      }
      const actual = Number(m[1]);
      resolveStart({
        port: actual,
        url: `ws://127.0.0.1:${actual}`,
        http: `http://127.0.0.1:${actual}`,
        proc,
        exited,
        stderr: () => stderr,
        /** Stops it with `signal` and waits for the exit. */
        async stop(signal = "SIGTERM") {
          if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
          return exited;
        },
      });
    });
  });
}

export async function removeDir(dir) {
  await rm(dir, { recursive: true, force: true });
}

export async function writeSecret(dir, name, value) {
  const path = join(dir, name);
  await writeFile(path, value, { mode: 0o600 });
  return path;
}

/** An HS256 JWT (what a backend would sign for its user). */
export function signJwt(secret, claims) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  const signature = createHmac("sha256", secret).update(body).digest("base64url");
  return `${body}.${signature}`;
}

/** Resolves when `client` emits `type` with a detail that `pred` accepts. */
export function once(client, type, pred = () => true, timeout = 15000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${type} event within ${timeout} ms`));
    }, timeout);
    const off = client.on(type, (e) => {
      if (!pred(e)) return;
      clearTimeout(timer);
      off();
      resolve(e);
    });
  });
}
