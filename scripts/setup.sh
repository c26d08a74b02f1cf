#!/usr/bin/env bash
# Installs what anomalyd needs on a fresh machine, idempotently:
#  - libtorch (torch 2.11.0 from PyPI, CPU-capable "light" install) and the .libtorch link;
#  - Debian packages: libssl-dev and pkg-config (librdkafka with TLS/SASL), socat and
#    openssl (the tests' TLS listener and throwaway CA);
#  - the Tansu 0.6.0 Kafka-protocol broker (SQLite engine) for the demo and the tests;
#  - the release build of anomalyd.
# A second run finds everything in place and takes seconds.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
mkdir -p "$CACHE"


install_system_packages() {
    # OpenSSL headers for librdkafka's TLS and SASL (rdkafka feature `ssl`), pkg-config to
    # find them, and socat: the integration tests put a TLS listener in front of the broker.
    local missing=()
    dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
    command -v pkg-config >/dev/null || missing+=(pkg-config)
    command -v socat >/dev/null || missing+=(socat)
    command -v openssl >/dev/null || missing+=(openssl)
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]} (Debian packages)"
        apt_install "${missing[@]}"
    fi
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

install_system_packages
# The broker builds while libtorch downloads and anomalyd builds: on a fresh 2-core machine
# that measured 25.5 min to both binaries, against about 34 one after the other.
tansu_pid=""
if [ ! -x "$TANSU" ]; then
    install_tansu &
    tansu_pid=$!
fi
install_libtorch
install_demo_client
if [ "${SETUP_SKIP_BUILD:-0}" != 1 ]; then
    log "building anomalyd (release)"
    (cd "$ROOT" && cargo build --release --quiet)
fi
if [ -n "$tansu_pid" ]; then
    wait "$tansu_pid" || { echo "building the Tansu broker failed (see above)" >&2; exit 1; }
fi
log "setup complete"
