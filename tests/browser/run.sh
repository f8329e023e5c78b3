#!/usr/bin/env bash
# run.sh - end-to-end tests of `duplex serve` with real clients:
#   chat.test.mjs   the chat page in Debian's Chromium (playwright-core, never a downloaded
#                   browser): two users chat both ways, one reloads and sees the history
#   seeds.test.mjs  the seeds' Node readline client (npm ws) and browser snippet, unchanged,
#                   against ws://localhost:8080 (the address they have built in)
#   identity.test.mjs  the page opened with a signed token (/?token=, a third server with
#                   --jwt-secret-file): it shows the token's name and cannot change it
#   http2.test.mjs  the page over HTTPS with HTTP/2 (a fourth server with a certificate made
#                   here): its WebSocket is a stream of the page's HTTP/2 connection
#   client.test.mjs the JavaScript client library (clients/js) in Chromium, and the page that
#                   uses it, across restarts of a server of its own
# and first the client library's own tests in Node (clients/js/test: unit tests, and
# integration tests that start and restart `duplex serve` themselves).
#
# Builds the release binary if needed, installs the pinned npm packages if missing, starts one
# server on a free loopback port and one on localhost:8080 (each with a temporary --data
# directory), runs the tests, stops the servers with SIGTERM and checks they exit 0.
# DUPLEX_SCREENSHOT=PATH saves a screenshot of the page (docs/chat.png comes from here).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
log() { echo "tests/browser/run.sh: $*" >&2; }

if [[ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]]; then
  log "Chromium not found at ${CHROMIUM:-/usr/bin/chromium} (apt-get install chromium)"
  exit 1
fi
if [[ ! -d "$here/node_modules/playwright-core" || ! -d "$here/node_modules/ws" ]]; then
  (cd "$here" && npm ci --no-audit --no-fund)
fi
if [[ ! -d "$root/clients/js/node_modules/ws" ]]; then
  (cd "$root/clients/js" && npm ci --no-audit --no-fund)
fi
(cd "$root" && cargo build --release --quiet -p duplex-cli --bin duplex)
bin="${CARGO_TARGET_DIR:-$root/target}/release/duplex"

# The client library's tests start their own servers (they restart them), so they need no
# port of the ones below.
log "JavaScript client (clients/js): unit and integration tests"
(cd "$root/clients/js" && DUPLEX_BIN="$bin" node --test --test-concurrency=1 test/*.test.mjs)

tmp="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

# start NAME ARGS...: runs `duplex serve ARGS` (a child of this shell, so that `stop` can wait
# for it) and sets $url to the http:// URL of its first line.
start() {
  local name="$1"; shift
  "$bin" serve --data "$tmp/$name-data" "$@" > "$tmp/$name.out" 2> "$tmp/$name.log" &
  pids+=($!)
  echo $! > "$tmp/$name.pid"
  for _ in $(seq 100); do
    if [[ -s "$tmp/$name.out" ]]; then
      url="$(grep -o 'https\?://[^ ]*' "$tmp/$name.out" | head -1 | sed 's,/$,,')"
      return 0
    fi
    sleep 0.1
  done
  log "the $name server did not start:"; cat "$tmp/$name.log" >&2
  return 1
}

# stop NAME: SIGTERM, then the graceful shutdown must end with exit status 0.
stop() {
  local pid status=0
  pid="$(cat "$tmp/$1.pid")"
  kill -TERM "$pid"
  wait "$pid" || status=$?
  if [[ $status -ne 0 ]]; then
    log "the $1 server exited with $status after SIGTERM:"; cat "$tmp/$1.log" >&2
    return 1
  fi
}

if (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; then
  log "port 8080 is in use; the seeds' clients need ws://localhost:8080"
  exit 1
fi
start chat --host 127.0.0.1 --port 0
chat_url="$url"
start seeds --host localhost --port 8080
seeds_url="$url"
# A random HS256 secret for the signed-token test (the test signs its tokens with it).
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$tmp/jwt.secret"
start jwt --host 127.0.0.1 --port 0 --jwt-secret-file "$tmp/jwt.secret"
jwt_url="$url"
# HTTPS with a certificate made here: the page over HTTP/2 (ALPN h2), and its WebSocket as a
# stream of that connection (RFC 8441).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -keyout "$tmp/h2.key" -out "$tmp/h2.crt" -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
start h2 --host 127.0.0.1 --port 0 --tls-cert "$tmp/h2.crt" --tls-key "$tmp/h2.key"
h2_url="$url"
log "chat page test against $chat_url, seeds' clients against $seeds_url, signed tokens against $jwt_url, HTTP/2 against $h2_url"

status=0
(cd "$here" && DUPLEX_URL="$chat_url" DUPLEX_SEEDS_URL="$seeds_url" DUPLEX_BIN="$bin" \
  DUPLEX_JWT_URL="$jwt_url" E2E_JWT_SECRET_FILE="$tmp/jwt.secret" DUPLEX_H2_URL="$h2_url" \
  node --test --test-concurrency=1 chat.test.mjs seeds.test.mjs identity.test.mjs \
  client.test.mjs http2.test.mjs) || status=$?
stop chat || status=1
stop seeds || status=1
stop jwt || status=1
stop h2 || status=1
exit $status
