#!/usr/bin/env bash
# A server's user and system CPU time per message under one `duplex bench` load: where a
# server's cost goes (the kernel's share is the same for every server with the same system
# calls; the user share is what an implementation controls).
#
#   bench/cpu_per_message.sh SERVER [duplex bench options...]
#   bench/cpu_per_message.sh duplex -c 1000 -s 1024 -d 4s
#   bench/cpu_per_message.sh tcp -c 1 -s 20 -d 4s
#
# SERVER: duplex (`duplex serve`'s /echo; DUPLEX=path picks another build), tokio-tungstenite,
# fastwebsockets or tcp (the peer echo servers of bench/peers, built by bench/compare.sh).
# Prints messages/s, user and system microseconds per message (utime/stime of the server
# process from /proc/PID/stat, read around the run) and minor page faults per message.
# Alternate servers and repeat: one run on a shared machine is noise.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
duplex=${DUPLEX:-$target/release/duplex}
peers="$target/peers/release"
name=${1:?usage: bench/cpu_per_message.sh SERVER [duplex bench options...]}
shift
work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

case $name in
  duplex)
    RUST_LOG=warn "$duplex" serve --host 127.0.0.1 --port 0 --data "$work/data" \
      --rate-limit 0 --max-connections 30000 >"$work/out" 2>/dev/null &
    ;;
  tokio-tungstenite) "$peers/tungstenite-echo" 0 >"$work/out" & ;;
  fastwebsockets) "$peers/fastwebsockets-echo" 0 >"$work/out" & ;;
  tcp) "$peers/tcp-echo" 0 >"$work/out" & ;;
  *) echo "unknown server: $name" >&2; exit 2 ;;
esac
pid=$!
for _ in $(seq 100); do grep -q 'ws://' "$work/out" && break; sleep 0.1; done
url=$(grep -o 'ws://[^ ]*' "$work/out" | tail -n 1)
mode=()
[ "$name" = tcp ] && mode=(--raw-tcp)

# Fields 10, 14 and 15 of /proc/PID/stat: minor faults, utime, stime (in clock ticks).
read -r f0 u0 s0 < <(awk '{print $10, $14, $15}' "/proc/$pid/stat")
"$duplex" bench "$url" --json --warmup 0s "${mode[@]}" "$@" >"$work/result.json"
read -r f1 u1 s1 < <(awk '{print $10, $14, $15}' "/proc/$pid/stat")

python3 - "$name" "$work/result.json" "$(getconf CLK_TCK)" "$u1" "$u0" "$s1" "$s0" "$f1" "$f0" <<'PY'
import json
import sys

name, path, tck = sys.argv[1], sys.argv[2], int(sys.argv[3])
u1, u0, s1, s0, f1, f0 = map(int, sys.argv[4:])
d = json.load(open(path))
n = d["messages"]
us = 1e6 / tck / n
print(f"{name:18} {d['messages_per_sec']:10,.0f} msg/s   user {(u1 - u0) * us:6.2f} us/msg   "
      f"system {(s1 - s0) * us:6.2f} us/msg   total {((u1 - u0) + (s1 - s0)) * us:6.2f}   "
      f"minor faults {(f1 - f0) / n:.3f}/msg")
PY
