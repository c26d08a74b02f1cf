#!/usr/bin/env bash
# The performance harness: measures anomalyd side by side with its references in one run
# and writes docs/performance.md and docs/performance.png (scripts/bench.py says what is
# measured and how). Installs what is missing (scripts/setup.sh; a Python venv with torch,
# confluent-kafka and matplotlib), builds the release binary and the perf example, starts
# two private Tansu brokers (SQLite on disk, and on tmpfs) and stops them at the end.
#   scripts/bench.sh [bench.py options]     (WORK=target/bench, OUT=docs/performance.md)
# About 6 minutes after set-up on 2 cores.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
WORK="${WORK:-$ROOT/target/bench}"
OUT="${OUT:-$ROOT/docs/performance.md}"
BENCH_VENV="$CACHE/bench-venv"

"$ROOT/scripts/setup.sh"
command -v taskset >/dev/null || apt_install util-linux
python_venv "$BENCH_VENV" "import torch, confluent_kafka, matplotlib" \
    confluent-kafka==2.12.1 matplotlib==3.11.2 numpy==2.4.6
log "building the release binary and the perf example"
cargo build --release --quiet --bin anomalyd --example perf
mkdir -p "$WORK"
exec "$BENCH_VENV/bin/python" "$ROOT/scripts/bench.py" \
    --binary "$ROOT/target/release/anomalyd" --perf "$ROOT/target/release/examples/perf" \
    --work "$WORK" --out "$OUT" "$@"
