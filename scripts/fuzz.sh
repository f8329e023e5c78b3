#!/usr/bin/env bash
# fuzz.sh [SECONDS] - run every fuzz target in fuzz/ for SECONDS each (default 60), then
# minimize its corpus (fuzz/corpus/<target>/, committed). Fails on the first crash, leak,
# timeout or oversized allocation, and prints how to reproduce it. Inputs that once crashed
# live in fuzz/regressions/<target>/ (also committed, never minimized away) and seed every run.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`; .ci/run installs it). cargo-fuzz
# passes nightly-only flags to rustc (-Zsanitizer=address, sanitizer coverage); the machine
# has only the stable toolchain, so RUSTC_BOOTSTRAP=1 lets stable rustc accept them. Without
# libFuzzer, `cargo test -p duplex-proto --test fuzz_corpus` replays the corpus on stable.
#
# Environment: FUZZ_TARGETS="frame inflate" runs only those; FUZZ_MAX_LEN (default 4096)
# bounds the inputs, and so the corpus; FUZZ_SANITIZER (default address; none is about twice
# as fast).
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
max_len=${FUZZ_MAX_LEN:-4096}
sanitizer=${FUZZ_SANITIZER:-address}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
  exit 1
fi

read -r -a targets <<<"${FUZZ_TARGETS:-$(cargo fuzz list | tr '\n' ' ')}"
# -a: debug assertions and overflow checks on, as in the unit tests.
flags=(-a --sanitizer "$sanitizer")

step() { printf '\n==> %s\n' "$*"; }

step "building ${#targets[@]} fuzz targets (sanitizer: $sanitizer)"
cargo fuzz build "${flags[@]}"

started=$SECONDS
for t in "${targets[@]}"; do
  corpus=fuzz/corpus/$t
  artifacts=fuzz/artifacts/$t
  log=fuzz/target/fuzz-$t.log
  mkdir -p "$corpus" "$artifacts" fuzz/target
  seeds=()
  if [[ -d fuzz/regressions/$t ]]; then seeds=("fuzz/regressions/$t"); fi
  before=$(find "$corpus" -type f | wc -l)
  step "$t: ${secs}s from $before inputs"
  # -malloc_limit_mb: no single allocation may reach 64 MiB; the targets' limits are at most
  # 1 MiB per message, so one that large means a length from the wire was trusted.
  if ! cargo fuzz run "${flags[@]}" "$t" "$corpus" "${seeds[@]}" -- \
    -max_total_time="$secs" -max_len="$max_len" -timeout=10 \
    -rss_limit_mb=2048 -malloc_limit_mb=64 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1; then
    grep -v '^#[0-9]' "$log" | tail -n 60 >&2
    echo "fuzz.sh: $t failed; the input is in $artifacts/ (reproduce with:" \
      "RUSTC_BOOTSTRAP=1 cargo fuzz run -a $t $artifacts/<file>; once fixed, keep the" \
      "input in fuzz/regressions/$t/)" >&2
    exit 1
  fi
  grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$log" || true
  # Keep only the inputs that add coverage.
  cargo fuzz cmin "${flags[@]}" "$t" "$corpus" -- -max_len="$max_len" \
    >"$log" 2>&1 || { tail -n 20 "$log" >&2; exit 1; }
  after=$(find "$corpus" -type f | wc -l)
  echo "$t: no crash in ${secs}s; corpus $before -> $after inputs ($(du -sh --apparent-size "$corpus" | cut -f1))"
done
echo "fuzz.sh: ${#targets[@]} targets, $((SECONDS - started))s of fuzzing, no crash"
