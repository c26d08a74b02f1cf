#!/usr/bin/env bash
# The architecture's import rules, checked on the source (README, "Code map"):
#  - the statistics (crates/anomalyd-detect) never link libtorch or librdkafka: its
#    Cargo.toml has neither tch nor rdkafka;
#  - the model (src/model) never knows Kafka, the pipeline, training or telemetry;
#  - training (src/train) never knows Kafka or the pipeline;
#  - telemetry (src/telemetry) imports no stage: each stage registers its own metrics;
#  - the configuration (src/config) knows no stage and no client.
# A rule is broken by any code line (comments aside) that names what it must not. Ends with
# `N passed, M failed`.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

passed=0
failed=0
ok() { echo "OK   $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }

# forbid DIR WHAT PATTERN...: no code line under DIR matches any PATTERN.
forbid() {
    local dir="$1" what="$2"
    shift 2
    local hits="" p
    for p in "$@"; do
        hits+="$(grep -rnE --include='*.rs' "$p" "$dir" | grep -vE '^[^:]+:[0-9]+:\s*//' || true)"
    done
    if [ -z "$hits" ]; then
        ok "$dir: $what"
    else
        fail "$dir: $what"
        echo "$hits" | sed 's/^/     /'
    fi
}

for dep in tch torch-sys rdkafka; do
    if grep -qE "^\s*$dep\s*=" crates/anomalyd-detect/Cargo.toml; then
        fail "crates/anomalyd-detect depends on $dep"
    else
        ok "crates/anomalyd-detect: no $dep dependency"
    fi
done
forbid src/model "no Kafka, pipeline, training or telemetry" \
    '\brdkafka\b' 'crate::(pipeline|train|telemetry|app|commands|http)\b'
forbid src/train "no Kafka or pipeline" '\brdkafka\b' 'crate::(pipeline|app|commands|http)\b'
forbid src/telemetry "no stage" 'crate::(pipeline|train|model|app|commands)\b'
forbid src/config "no stage or client" \
    '\brdkafka\b' '\btch::' 'crate::(pipeline|train|telemetry|app|commands|http)\b'

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
