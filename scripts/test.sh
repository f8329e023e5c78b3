#!/usr/bin/env bash
# test.sh - the whole test suite: formatting, lints, unit/integration/property/doc tests, and
# the Autobahn|TestSuite in both roles. This is what CI runs (through .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "cargo test"
cargo test --workspace --quiet

step "cargo doc (warnings are errors: broken links in the API docs)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

step "fuzz every target for 60 s (scripts/fuzz.sh; docs/FUZZING.md)"
bash scripts/fuzz.sh 60

step "end to end: the JavaScript client in Node and Chromium, the chat page, the seeds' clients (tests/browser/run.sh)"
bash tests/browser/run.sh

step "Autobahn|TestSuite, server and client roles"
bash scripts/autobahn.sh all

printf '\nall tests passed\n'
