#!/usr/bin/env bash
# The local Kafka-protocol broker (Tansu, SQLite storage) on 127.0.0.1:$KAFKA_PORT.
#   scripts/broker.sh start|stop|status
# Data lives in .run/broker-$KAFKA_PORT/ (topics and committed offsets survive restarts).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DIR="$RUN_DIR/broker-$KAFKA_PORT"
PIDFILE="$DIR/tansu.pid"
URL="tcp://127.0.0.1:$KAFKA_PORT"

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
# Tansu's own client retries a refused connection for about 20 s before it gives up: ask it
# only once the port accepts connections.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null; }
answering() { listening && "$TANSU" topic list --broker "$URL" >/dev/null 2>&1; }

case "${1:-}" in
start)
    [ -x "$TANSU" ] || { echo "tansu is not installed: run scripts/setup.sh" >&2; exit 1; }
    if running && answering; then
        log "broker already running on 127.0.0.1:$KAFKA_PORT"
        exit 0
    fi
    if answering; then
        echo "another process already serves 127.0.0.1:$KAFKA_PORT; stop it or set KAFKA_PORT" >&2
        exit 1
    fi
    mkdir -p "$DIR"
    (
        cd "$DIR"
        # setsid: the broker outlives this script and ignores the caller's Ctrl-C.
        setsid "$TANSU" broker \
            --listener-url "$URL" --advertised-listener-url "$URL" \
            --storage-engine "sqlite://tansu-$KAFKA_PORT.db" \
            >"$DIR/tansu.log" 2>&1 </dev/null &
        echo $! >"$PIDFILE"
    )
    for _ in $(seq 1 100); do
        if running && answering; then
            log "broker ready on 127.0.0.1:$KAFKA_PORT (log: $DIR/tansu.log)"
            exit 0
        fi
        running || break
        sleep 0.1
    done
    echo "broker did not start; see $DIR/tansu.log:" >&2
    tail -20 "$DIR/tansu.log" >&2 || true
    exit 1
    ;;
stop)
    if running; then
        pid=$(cat "$PIDFILE")
        kill "$pid"
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        log "broker stopped"
    fi
    rm -f "$PIDFILE"
    ;;
status)
    if running && answering; then
        echo "running on 127.0.0.1:$KAFKA_PORT (pid $(cat "$PIDFILE"))"
    else
        echo "not running"
        exit 1
    fi
    ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
