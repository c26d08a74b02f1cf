#!/usr/bin/env bash
# Runs anomalyd's whole test suite: installs what is missing (scripts/setup.sh), starts a
# broker on a test port, checks formatting and lints, and runs `cargo test`.
# Idempotent; a second run reuses the installs and the build.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

SETUP_SKIP_BUILD=1 "$ROOT/scripts/setup.sh"

export KAFKA_PORT="${TEST_KAFKA_PORT:-19092}"
export ANOMALYD_TEST_BROKERS="127.0.0.1:$KAFKA_PORT"
started_broker=0
if ! "$ROOT/scripts/broker.sh" status >/dev/null 2>&1; then
    "$ROOT/scripts/broker.sh" start
    started_broker=1
fi
cleanup() { [ "$started_broker" = 1 ] && "$ROOT/scripts/broker.sh" stop || true; }
trap cleanup EXIT

mkdir -p "$RUN_DIR"
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
log "cargo test"
RUST_TEST_THREADS="${TEST_THREADS:-2}" cargo test --all-targets 2>&1 | tee "$RUN_DIR/test.log"
status=${PIPESTATUS[0]}
passed=$(grep -Eo '[0-9]+ passed' "$RUN_DIR/test.log" | awk '{s+=$1} END{print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$RUN_DIR/test.log" | awk '{s+=$1} END{print s+0}')
echo "all test binaries: $passed passed, $failed failed"
exit "$status"
