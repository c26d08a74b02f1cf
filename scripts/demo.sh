#!/usr/bin/env bash
# The demo: installs what is missing, starts the local broker, streams a labelled NAB series
# into a fresh input topic, runs anomalyd on it, and prints what it found.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
"$ROOT/scripts/setup.sh"
"$ROOT/scripts/broker.sh" start
exec "$CACHE/demo-venv/bin/python" "$ROOT/scripts/demo.py" \
    --brokers "127.0.0.1:$KAFKA_PORT" --binary "$ROOT/target/release/anomalyd" "$@"
