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
# TANSU: another build of the broker to run instead (scripts/broker_compare.py sets it).
TANSU="${TANSU:-$TANSU_ROOT/bin/tansu}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
RUN_DIR="$ROOT/.run"

log() { printf '==> %s\n' "$*" >&2; }

# libtorch: the CPU-capable "light" install of the pinned torch wheel (libtorch itself plus
# the two CUDA runtime libraries libtorch_cpu.so links against), and the .libtorch link that
# .cargo/config.toml points LIBTORCH at. Used by setup.sh and build-release.sh.
install_libtorch() {
    local site
    if [ ! -f "$TORCH_VENV/.complete" ]; then
        log "installing libtorch from the torch==$TORCH_VERSION wheel into $TORCH_VENV (~550 MB download)"
        rm -rf "$TORCH_VENV"
        python3 -m venv "$TORCH_VENV"
        # The light install: libtorch itself plus the two CUDA runtime libraries that
        # libtorch_cpu.so links against. Python `import torch` is not needed.
        "$TORCH_VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps \
            "torch==$TORCH_VERSION" nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
        touch "$TORCH_VENV/.complete"
    fi
    site="$("$TORCH_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    ln -sfn "$site/torch" "$ROOT/.libtorch"
}

# Installs Debian packages, refreshing the package lists only when the first try fails.
apt_install() {
    apt-get install -y -qq "$@" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$@" >/dev/null; }
}

# A Python venv for a script: the pinned packages, plus a full torch $TORCH_VERSION for
# `import torch`: linked with a .pth file from a cache venv that already holds one
# (torch-full-venv, pyod-venv, bench-venv), else installed from PyPI (2.7 GB).
#   python_venv VENV "import a, b, torch" PIN...
python_venv() {
    local venv="$1" imports="$2" site other
    shift 2
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$imports" 2>/dev/null; then
        return 0
    fi
    log "installing $* into $venv"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$@"
    site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    if ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
        for other in "$CACHE/torch-full-venv" "$CACHE/pyod-venv" "$CACHE/bench-venv"; do
            [ "$other" != "$venv" ] && [ -x "$other/bin/python" ] || continue
            if "$other/bin/python" -c "import torch; assert torch.__version__.startswith('$TORCH_VERSION')" 2>/dev/null; then
                "$other/bin/python" -c 'import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))' \
                    >"$site/zz-torch-from-cache.pth"
                break
            fi
        done
    fi
    if ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
        log "installing torch==$TORCH_VERSION into $venv (large download)"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "torch==$TORCH_VERSION"
    fi
    "$venv/bin/python" -c "$imports" || { echo "the Python environment in $venv does not import" >&2; exit 1; }
}
