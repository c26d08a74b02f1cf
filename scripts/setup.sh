#!/usr/bin/env bash
# Installs what anomalyd needs on a fresh machine, idempotently:
#  - libtorch (torch 2.11.0 from PyPI, CPU-capable "light" install) and the .libtorch link;
#  - the Tansu 0.6.0 Kafka-protocol broker (SQLite engine) for the demo and the tests;
#  - the release build of anomalyd.
# A second run finds everything in place and takes seconds.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
mkdir -p "$CACHE"

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

install_tansu() {
    if [ ! -x "$TANSU" ]; then
        log "building the Tansu $TANSU_VERSION broker from crates.io (about 10 minutes on 2 cores, once per machine)"
        cargo install tansu --version "$TANSU_VERSION" --locked --no-default-features \
            --features libsql --root "$TANSU_ROOT" --quiet
    fi
}

install_demo_client() {
    # The demo's producer/consumer (Python confluent-kafka, bundles a recent librdkafka).
    if [ ! -x "$CACHE/demo-venv/bin/python" ] || ! "$CACHE/demo-venv/bin/python" -c 'import confluent_kafka' 2>/dev/null; then
        log "installing the demo's Kafka client (confluent-kafka from PyPI)"
        python3 -m venv "$CACHE/demo-venv"
        "$CACHE/demo-venv/bin/pip" install --quiet --disable-pip-version-check "confluent-kafka==2.12.1"
    fi
}

install_libtorch
install_tansu
install_demo_client
if [ "${SETUP_SKIP_BUILD:-0}" != 1 ]; then
    log "building anomalyd (release)"
    (cd "$ROOT" && cargo build --release --quiet)
fi
log "setup complete"
