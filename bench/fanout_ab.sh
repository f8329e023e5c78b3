#!/usr/bin/env bash
# fanout_ab.sh - the chat hub's fan-out, two `duplex` binaries taking turns, the server pinned
# to CPU 0 and the load generator (the newer binary's `duplex bench`) to CPU 1.
#
#   bench/fanout_ab.sh OLD_BINARY NEW_BINARY      # ROUNDS="1 2 3" SUBS="1000 10000"
#
# Prints one line per run: which, subscribers, round, deliveries per server CPU-second, p50 us,
# p99 us. Build the old binary from another commit with, for instance,
# `git worktree add /tmp/old REV && CARGO_TARGET_DIR=/tmp/old-target cargo build --release -p duplex-cli`.
set -u
old=$1 new=$2
ulimit -n "$(ulimit -Hn)"
for round in ${ROUNDS:-1 2 3}; do
  for subs in ${SUBS:-1000 10000}; do
    for which in old new; do
      bin=$old; [ "$which" = new ] && bin=$new
      d=$(mktemp -d); out=$d/out
      RUST_LOG=warn taskset -c 0 "$bin" serve --host 127.0.0.1 --port 0 --data "$d/data" \
        --rate-limit 0 --max-connections 30000 >"$out" 2>"$d/err" &
      pid=$!
      for _ in $(seq 100); do grep -q 'ws://' "$out" && break; sleep 0.05; done
      url=$(grep -o 'ws://[^ ]*' "$out" | tail -n1)
      json=$(taskset -c 1 "$new" bench "${url%/echo}/rooms/bench" --fanout -c "$subs" -s 64 \
        --in-flight 4 -d 3s --warmup 2s --server-pid "$pid" --json 2>/dev/null)
      echo "$json" | python3 -c "import json,sys; j=json.load(sys.stdin); l=j['latency_us']; \
print('$which', $subs, $round, round(j['messages_per_server_cpu_sec']), round(l['p50']), round(l['p99']))"
      kill "$pid"; wait "$pid" 2>/dev/null; rm -rf "$d"
    done
  done
done
