#!/usr/bin/env bash
# Checks the Grafana dashboard (deploy/grafana/anomalyd.json) against real tools: the local
# broker, a daemon fed with the NAB fixture plus a few malformed records, and a real Prometheus
# (Debian's `prometheus` package) scraping it every second with deploy/prometheus/alerts.yaml
# loaded. Then every panel target's PromQL (Grafana's $__rate_interval/$__interval = 30s,
# $__range = 5m, template variables = `.*`) goes through Prometheus' /api/v1/query and must
# succeed with a non-empty result; the template variables' label_values() must list a value and
# the annotations' queries must parse. Ends with `N passed, M failed`; exit 1 on any failure.
#
#   scripts/check-dashboard.sh    (env: ANOMALYD_BIN=target/release/anomalyd, DASHBOARD=other.json,
#                                  KAFKA_PORT=19093, KEEP_WORK=1 keeps the temp dir with the logs)
#
# Installs what is missing (Prometheus from apt; libtorch, broker and Kafka client through
# scripts/setup.sh without building anomalyd). Takes about a minute once installed.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

export KAFKA_PORT="${KAFKA_PORT:-19093}"
BROKERS="127.0.0.1:$KAFKA_PORT"
BIN="${ANOMALYD_BIN:-target/debug/anomalyd}"
PY="$CACHE/demo-venv/bin/python"
HELPER="$ROOT/scripts/check_dashboard.py"
DASHBOARD="${DASHBOARD:-$ROOT/deploy/grafana/anomalyd.json}"

# --- what it needs -------------------------------------------------------------------------
if ! command -v prometheus >/dev/null; then
    log "installing Prometheus (Debian package)"
    apt_install prometheus
fi
# Debian's package starts a Prometheus service on :9090 where an init system runs; this script
# runs its own on a free port and leaves that one alone.
if [ ! -x "$TANSU" ] || [ ! -x "$PY" ] || [ ! -e "$ROOT/.libtorch" ]; then
    SETUP_SKIP_BUILD=1 "$ROOT/scripts/setup.sh"
fi
if [ ! -x "$BIN" ]; then
    log "building $BIN"
    if [ "$BIN" = target/release/anomalyd ]; then cargo build --release --quiet; else cargo build --quiet; fi
fi

# --- processes it starts, stopped at exit ---------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/anomalyd-dashboard.XXXXXX")"
daemon_pid=""
prom_pid=""
started_broker=0
cleanup() {
    local pid
    for pid in $daemon_pid $prom_pid; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in $daemon_pid $prom_pid; do
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    if [ "$started_broker" = 1 ]; then "$ROOT/scripts/broker.sh" stop || true; fi
    if [ "${KEEP_WORK:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# A setup step failed: show the logs, count it as one failed check.
fail() {
    echo "$*" >&2
    for f in anomalyd.log prometheus.log; do
        echo "--- last lines of $f" >&2
        tail -20 "$WORK/$f" >&2 || true
    done
    echo "0 passed, 1 failed"
    exit 1
}

if ! "$ROOT/scripts/broker.sh" status >/dev/null 2>&1; then
    started_broker=1
    "$ROOT/scripts/broker.sh" start || fail "the broker did not start"
fi

read -r DAEMON_PORT PROM_PORT < <("$PY" "$HELPER" free-ports 2)
RUN="dashboard-$(date +%Y%m%d-%H%M%S)-$$"
log "producing the NAB fixture and malformed records to $RUN.metrics"
counts="$("$PY" "$HELPER" produce --brokers "$BROKERS" --prefix "$RUN")" || fail "producing the input failed"
read -r N_GOOD N_BAD <<<"$counts"

cat >"$WORK/anomalyd.toml" <<EOF
# Window mode like config/demo.toml, fresh topics and group, fast statistics, small warm-up.
[kafka]
brokers = "$BROKERS"
group_id = "$RUN"
input_topic = "$RUN.metrics"
scores_topic = "$RUN.scores"
alerts_topic = "$RUN.alerts"
dlq_topic = "$RUN.dlq"
statistics_interval = "1s"

[input]
mode = "window"
features = ["value"]
key_field = "series"
timestamp_field = "timestamp"

[model]
warmup_records = 500
epochs = 20
threads = 1

[http]
listen = "127.0.0.1:$DAEMON_PORT"
EOF

cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $ROOT/deploy/prometheus/alerts.yaml
scrape_configs:
  - job_name: anomalyd
    static_configs:
      - targets: ["127.0.0.1:$DAEMON_PORT"]
EOF

log "starting Prometheus on 127.0.0.1:$PROM_PORT"
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
    --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn >"$WORK/prometheus.log" 2>&1 &
prom_pid=$!

log "starting $BIN (metrics on 127.0.0.1:$DAEMON_PORT)"
RUST_LOG="${RUST_LOG:-warn}" "$BIN" run --config "$WORK/anomalyd.toml" >"$WORK/anomalyd.log" 2>&1 &
daemon_pid=$!


"$PY" "$HELPER" wait --metrics "http://127.0.0.1:$DAEMON_PORT/metrics" \
    --scored "$N_GOOD" --dlq "$N_BAD" --timeout 60 || fail "the daemon did not score the input"
kill -0 "$prom_pid" 2>/dev/null || fail "prometheus exited"
# Several scrapes after the last record was scored, so that every rate()/increase() window
# holds at least two samples of every series, even of those that appeared last.
"$PY" "$HELPER" wait-scrapes --prometheus "http://127.0.0.1:$PROM_PORT" --count 5 \
    --since "$(date +%s.%N)" --timeout 30 || fail "prometheus did not scrape the daemon"

"$PY" "$HELPER" check --prometheus "http://127.0.0.1:$PROM_PORT" --dashboard "$DASHBOARD"
