#!/usr/bin/env bash
# crossnode.sh - one chat room fanned out over two nodes that share it through one Redis:
# `duplex serve --redis` against Socket.IO 4 with @socket.io/redis-adapter
# (bench/peers/socketio/server.js), the same load from `duplex bench --crossnode`, rounds
# alternating between the two.
#
#   bench/crossnode.sh                 # SUBS="1000 2000" ROUNDS=3 DURATION=5s WARMUP=2s
#                                      # IN_FLIGHT=4 SIZE=64 RATE=0 PUBLISHERS=1
#   DELIVERY_RATE=50000 IN_FLIGHT=64 bench/crossnode.sh   # the same deliveries/s for all
#
# Both nodes of a system and Redis are pinned to CPU 0, the load generator to CPU 1 (a
# two-core machine: the servers and Redis share one core, as they would share a small VM).
# The subscribers alternate between the two nodes; the publishers are on the first, so half
# the deliveries cross Redis to the other node. RATE=0: each publisher stays IN_FLIGHT
# messages ahead of its slowest delivery (as fast as the servers allow); RATE=N: N messages
# per second in all (the window still holds); DELIVERY_RATE=D: D / subscribers messages per
# second, the same delivery rate at every room size (latency and CPU at an equal load).
#
# Prints one line per run, then a table of medians over the rounds: deliveries per second,
# deliveries per server CPU-second (both nodes + Redis, and both nodes alone), p50 and p99,
# and the duplex / Socket.IO ratio. Each run's JSON report is kept in $OUT (a temporary
# file unless set). When the duplex binary has no --redis yet, duplex runs as ONE node
# (no Redis, both URLs pointing at it) and the table says so.
#
# Needs: a release build of duplex (built if missing), Debian's redis-server (installed with
# apt-get when missing and run as root), Node.js and npm (bench/peers/socketio is installed
# with `npm ci` when its node_modules is missing), taskset, python3.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
duplex=${DUPLEX:-$target/release/duplex}
peer=$root/bench/peers/socketio
SUBS=${SUBS:-1000 2000}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-2s}
IN_FLIGHT=${IN_FLIGHT:-4}
SIZE=${SIZE:-64}
RATE=${RATE:-0}
DELIVERY_RATE=${DELIVERY_RATE:-}
PUBLISHERS=${PUBLISHERS:-1}
SYSTEMS=${SYSTEMS:-duplex socketio}
OUT=${OUT:-$(mktemp /tmp/crossnode.XXXXXX.jsonl)}
: >"$OUT"

if [ ! -x "$duplex" ]; then
  (cd "$root" && cargo build --release -p duplex-cli)
fi
if ! command -v redis-server >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "crossnode.sh: redis-server is missing (apt-get install redis-server)" >&2
    exit 1
  fi
fi
if [ ! -d "$peer/node_modules" ]; then
  (cd "$peer" && npm ci --no-audit --no-fund --loglevel=error)
fi
ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d)
pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
cleanup() {
  stop_all
  if [ -n "${redis_pid:-}" ]; then
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for FILE PATTERN: until the server printed its banner (10 s at most).
wait_for() {
  for _ in $(seq 200); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "crossnode.sh: no '$2' in $1:" >&2
  cat "$1" >&2
  return 1
}

redis_port=$(free_port)
# Redis as a cache for pub/sub and streams: no snapshots, no append-only file.
taskset -c 0 redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  >"$work/redis.log" 2>&1 &
redis_pid=$!
wait_for "$work/redis.log" "Ready to accept connections"
redis_url=redis://127.0.0.1:$redis_port

serve_help=$("$duplex" serve --help)
if [[ $serve_help == *--redis* ]]; then
  duplex_nodes=2
else
  duplex_nodes=1
  echo "crossnode.sh: $duplex has no --redis: duplex runs as one node (no Redis)" >&2
fi

# start SYSTEM RUN: starts the system's nodes; sets urls and server_pids.
start() {
  local system=$1 run=$2 a b
  a=$(free_port)
  b=$(free_port)
  case $system in
    duplex)
      if [ "$duplex_nodes" = 2 ]; then
        for port in "$a" "$b"; do
          RUST_LOG=warn taskset -c 0 "$duplex" serve --host 127.0.0.1 --port "$port" \
            --data "$work/data-$run-$port" --redis "$redis_url" --rate-limit 0 \
            --max-connections 30000 >"$work/node-$port.log" 2>&1 &
          pids+=($!)
          wait_for "$work/node-$port.log" "ws://"
        done
      else
        RUST_LOG=warn taskset -c 0 "$duplex" serve --host 127.0.0.1 --port "$a" \
          --data "$work/data-$run-$a" --rate-limit 0 --max-connections 30000 \
          >"$work/node-$a.log" 2>&1 &
        pids+=($!)
        wait_for "$work/node-$a.log" "ws://"
        b=$a
      fi
      ;;
    socketio)
      for port in "$a" "$b"; do
        taskset -c 0 node "$peer/server.js" "$port" "$redis_url" >"$work/node-$port.log" 2>&1 &
        pids+=($!)
        wait_for "$work/node-$port.log" "listening"
      done
      ;;
  esac
  urls="ws://127.0.0.1:$a/,ws://127.0.0.1:$b/"
  server_pids=()
  for pid in "${pids[@]}"; do server_pids+=(--server-pid "$pid"); done
  server_pids+=(--server-pid "$redis_pid")
}

echo "system subscribers round: deliveries/s, per server CPU-s (nodes+Redis), p50 us, p99 us"
run=0
for round in $(seq "$ROUNDS"); do
  for subs in $SUBS; do
    for system in $SYSTEMS; do
      run=$((run + 1))
      command -v redis-cli >/dev/null && redis-cli -p "$redis_port" flushall >/dev/null
      start "$system" "$run"
      rate=$RATE
      if [ -n "$DELIVERY_RATE" ]; then
        rate=$(python3 -c "print($DELIVERY_RATE / $subs)")
      fi
      if json=$(taskset -c 1 "$duplex" bench --crossnode --protocol "$system" "$urls" \
        -c "$subs" -s "$SIZE" --in-flight "$IN_FLIGHT" --rate "$rate" --publishers "$PUBLISHERS" \
        --room "bench-$run" -d "$DURATION" --warmup "$WARMUP" "${server_pids[@]}" --json \
        2>"$work/bench.err"); then
        echo "$json" | python3 -c "
import json, sys
j = json.load(sys.stdin)
j.update(system='$system', subs=$subs, round=$round, duplex_nodes=$duplex_nodes)
print(json.dumps(j))" >>"$OUT"
        tail -n1 "$OUT" | python3 -c "
import json, sys
j = json.load(sys.stdin); l = j['latency_us']
print(j['system'], j['subs'], j['round'], ': %.0f/s, %.0f, %.0f, %.0f%s' % (
    j['messages_per_sec'], j['messages_per_server_cpu_sec'], l['p50'], l['p99'],
    '  errors %d: %s' % (j['errors'], j['first_error']) if j['errors'] else ''))"
      else
        echo "$system $subs $round: bench failed: $(tail -n3 "$work/bench.err")"
      fi
      stop_all
    done
  done
done

python3 - "$OUT" "$duplex_nodes" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
one_node = sys.argv[2] == "1"
def med(xs):
    return statistics.median(xs) if xs else float("nan")
table = {}
for r in rows:
    each = r.get("server_cpu_secs_each") or []
    nodes_cpu = sum(each[:-1]) if len(each) > 1 else float("nan")
    t = table.setdefault((r["subs"], r["system"]), {"rate": [], "all": [], "nodes": [], "p50": [], "p99": [], "redis": [], "errors": 0})
    t["rate"].append(r["messages_per_sec"])
    t["all"].append(r["messages_per_server_cpu_sec"])
    t["nodes"].append(r["messages"] / max(nodes_cpu, 1e-9))
    t["redis"].append(each[-1] if each else float("nan"))
    t["p50"].append(r["latency_us"]["p50"])
    t["p99"].append(r["latency_us"]["p99"])
    t["errors"] += r["errors"]
print()
print("medians over %d round(s); server CPU = both nodes + Redis (all on CPU 0)" % max(r["round"] for r in rows))
print("publishers %s, in flight %s, rate %s msg/s, %s B" % (rows[0]["publishers"], rows[0]["in_flight"], sorted({r["rate"] for r in rows}), rows[0]["size"]))
if one_node:
    print("duplex: ONE node without Redis (this binary has no --redis): not a cross-node figure")
print("| subscribers | system | deliveries/s | per server CPU-s (nodes+Redis) | per node CPU-s (nodes only) | Redis CPU-s | p50 ms | p99 ms | errors |")
print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
for (subs, system), t in sorted(table.items()):
    print("| %d | %s | %.0f | %.0f | %.0f | %.2f | %.2f | %.2f | %d |" % (
        subs, system, med(t["rate"]), med(t["all"]), med(t["nodes"]), med(t["redis"]),
        med(t["p50"]) / 1e3, med(t["p99"]) / 1e3, t["errors"]))
for subs in sorted({s for s, _ in table}):
    d, s = table.get((subs, "duplex")), table.get((subs, "socketio"))
    if d and s:
        print("%d subscribers: duplex / Socket.IO = %.2fx deliveries per server CPU-s (nodes+Redis), %.2fx nodes only, p99 %.2fx" % (
            subs, med(d["all"]) / med(s["all"]), med(d["nodes"]) / med(s["nodes"]), med(d["p99"]) / med(s["p99"])))
print("reports:", sys.argv[1])
EOF
