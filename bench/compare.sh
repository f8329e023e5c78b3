#!/usr/bin/env bash
# Compares `duplex serve`'s /echo with echo servers on tokio-tungstenite, fastwebsockets and
# Node's ws, and with a plain TCP echo (the ceiling), under the same load from `duplex bench`.
#
#   bench/compare.sh            # everything, about 8 minutes on 2 cores
#   ROUNDS=1 DURATION=2s bench/compare.sh   # a quick look
#
# Every server runs alone on the machine, restarted for each run; the servers take turns
# (the order rotates every round), and each (scenario, server) is measured ROUNDS times. The
# ranking figure is messages per server CPU-second (utime + stime of the server process during
# the measured interval): on a 2-core machine the load generator needs about as much CPU as a
# fast server, so raw messages/s mostly measure the generator.
#
# Results: $OUT/results.jsonl (one `duplex bench --json` object per run, with "server",
# "scenario" and "round" added), $OUT/summary.md (tables of medians) and docs/benchmarks.svg.
#
# Settings (environment):
#   DURATION=3s WARMUP=1s ROUNDS=3     measured time, warm-up, repetitions
#   SERVERS="duplex tokio-tungstenite fastwebsockets node-ws tcp"
#   SCENARIOS="1x20B 100x20B 10x16KiB 1000x1KiB"
#   IDLE_CONNECTIONS=10000             connections for the memory-per-connection run (0: skip;
#                                      tokio-floor, the runtime's own floor, runs here too, and
#                                      duplex-chat: duplex's connections in a chat room)
#   FANOUT="1000 10000"                subscriber counts for the fan-out runs ("": skip)
#   OUT=target/bench-compare           where results go
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
DURATION=${DURATION:-3s}
WARMUP=${WARMUP:-1s}
ROUNDS=${ROUNDS:-3}
SERVERS=${SERVERS:-"duplex tokio-tungstenite fastwebsockets node-ws tcp"}
SCENARIOS=${SCENARIOS:-"1x20B 100x20B 10x16KiB 1000x1KiB"}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}
FANOUT=${FANOUT-"1000 10000"}
OUT=${OUT:-$root/target/bench-compare}
target=${CARGO_TARGET_DIR:-$root/target}

log() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }

# Enough file descriptors for 10,000 connections (and the server's side, in its own process).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fds=$(ulimit -n)
if [ "$IDLE_CONNECTIONS" -gt $((fds - 100)) ]; then
  log "ulimit -n is $fds: idle run with $((fds - 100)) connections instead of $IDLE_CONNECTIONS"
  IDLE_CONNECTIONS=$((fds - 100))
fi

log "building duplex and the peer servers (release)"
cargo build --release -q -p duplex-cli
(cd bench/peers && CARGO_TARGET_DIR="$target/peers" cargo build --release -q)
duplex="$target/release/duplex"
peers="$target/peers/release"
have_node=false
if command -v node >/dev/null && command -v npm >/dev/null; then
  (cd bench/node && npm ci --silent --no-audit --no-fund) && have_node=true
fi
$have_node || log "node/npm not found: skipping node-ws"

mkdir -p "$OUT"
results="$OUT/results.jsonl"
: >"$results"
work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# start_server NAME: starts it on a free port; sets server_pid and url (echo endpoint).
start_server() {
  local name=$1 out="$work/server.out"
  : >"$out"
  case $name in
    duplex)
      rm -rf "$work/data"
      RUST_LOG=warn "$duplex" serve --host 127.0.0.1 --port 0 --data "$work/data" \
        --rate-limit 0 --max-connections 30000 >"$out" 2>"$work/server.err" &
      ;;
    tokio-tungstenite) "$peers/tungstenite-echo" 0 >"$out" 2>"$work/server.err" & ;;
    fastwebsockets) "$peers/fastwebsockets-echo" 0 >"$out" 2>"$work/server.err" & ;;
    node-ws) node bench/node/echo.js 0 >"$out" 2>"$work/server.err" & ;;
    tcp) "$peers/tcp-echo" 0 >"$out" 2>"$work/server.err" & ;;
    tokio-floor) "$peers/tokio-floor" 0 >"$out" 2>"$work/server.err" & ;;
    *) echo "unknown server $name" >&2; return 1 ;;
  esac
  server_pid=$!
  for _ in $(seq 100); do
    grep -q 'ws://' "$out" && break
    sleep 0.05
  done
  url=$(grep -o 'ws://[^ ]*' "$out" | tail -n 1)
  [ -n "$url" ] || { echo "$name did not start:" >&2; cat "$work/server.err" >&2; return 1; }
}

stop_server() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=
}

scenario_args() {
  case $1 in
    1x20B) echo "-c 1 -s 20 --in-flight 1" ;;
    100x20B) echo "-c 100 -s 20 --in-flight 4" ;;
    10x16KiB) echo "-c 10 -s 16384 --binary --in-flight 4" ;;
    1000x1KiB) echo "-c 1000 -s 1024 --in-flight 1" ;;
    *) echo "unknown scenario $1" >&2; return 1 ;;
  esac
}

# record SERVER SCENARIO ROUND JSON: appends one result line.
record() {
  python3 -c 'import json,sys; r=json.loads(sys.argv[4]); r.update(server=sys.argv[1], scenario=sys.argv[2], round=int(sys.argv[3])); print(json.dumps(r))' \
    "$1" "$2" "$3" "$4" >>"$results"
}

servers=()
for s in $SERVERS; do
  if [ "$s" = node-ws ] && ! $have_node; then continue; fi
  servers+=("$s")
done

for round in $(seq "$ROUNDS"); do
  # Rotate the order so that no server always runs first (or right after the build).
  n=${#servers[@]}
  order=()
  for i in $(seq 0 $((n - 1))); do order+=("${servers[$(((i + round - 1) % n))]}"); done
  for scenario in $SCENARIOS; do
    for server in "${order[@]}"; do
      start_server "$server"
      mode=()
      [ "$server" = tcp ] && mode=(--raw-tcp)
      log "round $round/$ROUNDS  $scenario  $server"
      # shellcheck disable=SC2046
      if json=$("$duplex" bench "$url" $(scenario_args "$scenario") "${mode[@]}" -d "$DURATION" \
        --warmup "$WARMUP" --server-pid "$server_pid" --json); then
        record "$server" "$scenario" "$round" "$json"
      else
        log "$server failed in $scenario"
      fi
      stop_server
    done
  done
done

if [ "$IDLE_CONNECTIONS" -gt 0 ]; then
  # tokio-floor: a handshake and a task waiting on the socket, nothing else; the least any
  # tokio server with a task per connection holds (idle run only: it does not echo).
  for server in "${servers[@]}" tokio-floor; do
    [ "$server" = tcp ] && continue
    start_server "$server"
    log "idle memory: $IDLE_CONNECTIONS connections to $server"
    if json=$("$duplex" bench "$url" --idle -c "$IDLE_CONNECTIONS" --server-pid "$server_pid" \
      --warmup 2s --json); then
      record "$server" "idle" 1 "$json"
    fi
    stop_server
  done
  # duplex-chat: the same idle connections in one chat room (split halves, an outbox, the
  # broker's member list), which are not parked.
  if [[ " ${servers[*]} " == *" duplex "* ]]; then
    start_server duplex
    log "idle memory: $IDLE_CONNECTIONS connections in a duplex chat room"
    if json=$("$duplex" bench "${url%/echo}/rooms/idle" --idle -c "$IDLE_CONNECTIONS" \
      --server-pid "$server_pid" --warmup 2s --json); then
      record duplex-chat "idle" 1 "$json"
    fi
    stop_server
  fi
fi

for subscribers in $FANOUT; do
  start_server duplex
  room=${url%/echo}/rooms/bench
  log "fan-out: 1 publisher to $subscribers subscribers"
  if json=$("$duplex" bench "$room" --fanout -c "$subscribers" -s 64 --in-flight 4 \
    -d "$DURATION" --warmup 2s --server-pid "$server_pid" --json); then
    record duplex "fanout-$subscribers" 1 "$json"
  fi
  stop_server
done

python3 bench/report.py "$results" --svg docs/benchmarks.svg >"$OUT/summary.md"
cat "$OUT/summary.md"
log "results in $results, tables in $OUT/summary.md, chart in docs/benchmarks.svg"
