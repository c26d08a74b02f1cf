#!/usr/bin/env bash
# Streamed NAB parity: streams the NAB corpus through the local broker into one daemon
# (window mode, one key per series, the defaults) and scores the likelihoods it produced
# with anomalyd's NAB scorer, beside `anomalyd eval` on the same files (scripts/nab_stream.py).
#   scripts/nab-stream.sh            (DATA=../shared/data/NAB, WORK=target/nab-stream)
# About 2 minutes after set-up on 2 cores.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
DATA="${DATA:-$ROOT/../shared/data/NAB}"
[ -d "$DATA/data" ] && [ -f "$DATA/labels/combined_windows.json" ] ||
    { echo "no NAB corpus in $DATA (set DATA to the folder holding data/ and labels/)" >&2; exit 1; }
WORK="${WORK:-$ROOT/target/nab-stream}"
PORT="${STREAM_PORT:-19290}"
"$ROOT/scripts/setup.sh"
# A private broker on a fresh database: Tansu's SQLite storage slows down as it fills, so a
# broker holding earlier runs' records would measure the broker, not the daemon.
BROKER="$WORK/broker"
"$ROOT/scripts/test-broker.sh" stop "$BROKER" 2>/dev/null || true
rm -rf "$BROKER"
PORT="$PORT" "$ROOT/scripts/test-broker.sh" start "$BROKER" >/dev/null
trap '"$ROOT/scripts/test-broker.sh" stop "$BROKER"' EXIT
"$CACHE/demo-venv/bin/python" "$ROOT/scripts/nab_stream.py" \
    --data "$DATA" --brokers "127.0.0.1:$PORT" --binary "$ROOT/target/release/anomalyd" \
    --work "$WORK" "$@"
