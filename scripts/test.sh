#!/usr/bin/env bash
# Runs anomalyd's whole test suite: installs what is missing (scripts/setup.sh), starts a
# broker on a test port, checks formatting and lints, and runs `cargo test` over the
# workspace (the libtorch-free anomalyd-detect crate and the anomalyd crate).
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
log "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
log "cargo test --workspace (anomalyd-detect, then anomalyd with the broker)"
set +e
RUST_TEST_THREADS="${TEST_THREADS:-2}" cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee "$RUN_DIR/test.log"
status=${PIPESTATUS[0]}

# The architecture's import rules (check-layers), then the operations checks (issue 5):
# real promtool, Prometheus, kubectl kustomize + kubernetes-validate, and the container
# recipe run on this machine.
for check in check-layers check-deploy check-dashboard check-image; do
    log "scripts/$check.sh"
    ANOMALYD_BIN="$ROOT/target/debug/anomalyd" "$ROOT/scripts/$check.sh" 2>&1 | tee "$RUN_DIR/$check.log"
    rc=${PIPESTATUS[0]}
    [ "$rc" = 0 ] || { echo "scripts/$check.sh failed ($rc)"; status=1; }
done
set -e

# Counted from the runners' own closing lines only (cargo's `test result:` lines and the
# checks' final `N passed, M failed`), never from log text that happens to hold the words.
summary() {
    { grep -E '^test result: ' "$RUN_DIR"/test.log || true
      grep -hE '^[0-9]+ passed, [0-9]+ failed$' "$RUN_DIR"/check-*.log || true; }
}
passed=$(summary | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END{print s+0}')
failed=$(summary | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END{print s+0}')
echo
echo "total: $passed passed, $failed failed"
exit "$status"
