# Shared paths for anomalyd's scripts. Sourced, not run.
# Everything installed lives outside the repo (ANOMALYD_CACHE) so fresh clones on the same
# machine reuse it; every script recreates what is missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${ANOMALYD_CACHE:-$HOME/.cache/anomalyd}"
TORCH_VERSION="2.11.0"
TANSU_VERSION="0.6.0"
TORCH_VENV="$CACHE/torch-$TORCH_VERSION"
TANSU_ROOT="$CACHE/tansu-$TANSU_VERSION"
TANSU="$TANSU_ROOT/bin/tansu"
KAFKA_PORT="${KAFKA_PORT:-9092}"
RUN_DIR="$ROOT/.run"

log() { printf '==> %s\n' "$*" >&2; }
