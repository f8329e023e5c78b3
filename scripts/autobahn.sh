#!/usr/bin/env bash
# autobahn.sh - run the Autobahn|TestSuite against duplex in both roles and compare every case's
# verdict with the committed expectations in conformance/expected/.
#
#   scripts/autobahn.sh [server|client|all] [--full] [--update] [--cases LIST]
#
#   server    test `duplex serve` (its /echo endpoint) with the suite's fuzzing client
#   client    test the library's client (crates/duplex/examples/autobahn_client.rs) against the
#             suite's fuzzing server
#   all       both (the default)
#   --full    every case; by default only the first subsection of each permessage-deflate
#             section (12.1.*, 13.1.*) runs, since the full 12/13 run takes about 13 minutes per
#             role (the expectations come from a full run)
#   --update  write the verdicts of this run as the new expectations
#   --cases   only these cases (comma-separated, * wildcards); compared against the matching
#             subset of the expectations
#
# The suite runs through ../shared/conformance/autobahn.sh (a Python 3 port of wstest, installed
# into a cached virtualenv) when it exists, else through the upstream Docker image
# crossbario/autobahn-testsuite. Exit status: non-zero on any FAILED case or any difference from
# the expectations. Reports: target/autobahn/{server,client}/index.html.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
runner="${DUPLEX_AUTOBAHN:-$root/../shared/conformance/autobahn.sh}"
roles=() full=0 update=0 cases="*"
while [[ $# -gt 0 ]]; do
  case "$1" in
    server|client) roles+=("$1") ;;
    all) roles=(server client) ;;
    --full) full=1 ;;
    --update) update=1 ;;
    --cases) cases="$2"; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "autobahn.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[[ ${#roles[@]} -gt 0 ]] || roles=(server client)
exclude="12.2.*,12.3.*,12.4.*,12.5.*,13.2.*,13.3.*,13.4.*,13.5.*,13.6.*,13.7.*"
[[ $full -eq 1 ]] && exclude=""

log() { echo "scripts/autobahn.sh: $*" >&2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cargo build --release --quiet -p duplex-cli -p duplex --bin duplex --example autobahn_client

# Upstream Docker image, for machines without ../shared/conformance.
docker_server() {
  local url="$1" out="$2"
  mkdir -p "$out"
  cat > "$out/fuzzingclient.json" <<JSON
{"outdir": "/out", "servers": [{"agent": "server-under-test", "url": "$url"}],
 "cases": ["${cases//,/\",\"}"], "exclude-cases": [$( [[ -n $exclude ]] && echo "\"${exclude//,/\",\"}\"" )],
 "exclude-agent-cases": {}}
JSON
  docker run --rm --network host -v "$out:/out" crossbario/autobahn-testsuite \
    wstest -m fuzzingclient -s /out/fuzzingclient.json > "$out/wstest.log" 2>&1
}

docker_client() {
  local port="$1" out="$2"
  mkdir -p "$out"
  cat > "$out/fuzzingserver.json" <<JSON
{"url": "ws://127.0.0.1:$port", "outdir": "/out", "cases": ["${cases//,/\",\"}"],
 "exclude-cases": [$( [[ -n $exclude ]] && echo "\"${exclude//,/\",\"}\"" )], "exclude-agent-cases": {}}
JSON
  docker run -d --rm --name duplex-autobahn --network host -v "$out:/out" \
    crossbario/autobahn-testsuite wstest -m fuzzingserver -s /out/fuzzingserver.json >/dev/null
  sleep 3
  AUTOBAHN_URL="ws://127.0.0.1:$port" ./target/release/examples/autobahn_client || true
  docker stop duplex-autobahn >/dev/null || true
}

run_server() {
  local port out pid
  port="$(free_port)"
  out="$root/target/autobahn/server"
  ./target/release/duplex serve --host 127.0.0.1 --port "$port" --deflate > "$root/target/autobahn-serve.log" 2>&1 &
  pid=$!
  trap 'kill $pid 2>/dev/null || true' RETURN
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  if [[ -x "$runner" || -f "$runner" ]]; then
    bash "$runner" server "ws://127.0.0.1:$port/echo" --cases "$cases" --exclude "$exclude" --out "$out" || true
  else
    docker_server "ws://127.0.0.1:$port/echo" "$out"
  fi
}

run_client() {
  local port out
  port="$(free_port)"
  out="$root/target/autobahn/client"
  if [[ -x "$runner" || -f "$runner" ]]; then
    bash "$runner" client --port "$port" --cases "$cases" --exclude "$exclude" --out "$out" \
      -- ./target/release/examples/autobahn_client || true
  else
    docker_client "$port" "$out"
  fi
}

status=0
for role in "${roles[@]}"; do
  log "testing the $role role (cases: $cases; excluded: ${exclude:-none})"
  "run_$role"
  python3 "$root/scripts/autobahn_compare.py" "$role" "$root/target/autobahn/$role/index.json" \
    "$root/conformance/expected/$role.json" "$cases" "$exclude" "$update" || status=1
done
exit $status
