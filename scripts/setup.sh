#!/usr/bin/env bash
# Installs what anomalyd needs on a fresh machine, idempotently:
#  - libtorch (torch 2.11.0 from PyPI, CPU-capable "light" install) and the .libtorch link;
#  - Debian packages: libssl-dev, libzstd-dev and pkg-config (librdkafka with TLS/SASL and
#    zstd), socat and openssl (the tests' TLS listener and throwaway CA);
#  - the Tansu 0.6.0 Kafka-protocol broker (SQLite engine) for the demo and the tests;
#  - the release build of anomalyd.
# A second run finds everything in place and takes seconds.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
mkdir -p "$CACHE"


install_system_packages() {
    # OpenSSL headers for librdkafka's TLS and SASL (rdkafka feature `ssl`), libzstd's for its
    # zstd codec (`zstd-pkg-config`), pkg-config to find them, and socat: the integration
    # tests put a TLS listener in front of the broker.
    local missing=()
    dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
    dpkg -s libzstd-dev >/dev/null 2>&1 || missing+=(libzstd-dev)
    command -v pkg-config >/dev/null || missing+=(pkg-config)
    command -v socat >/dev/null || missing+=(socat)
    command -v openssl >/dev/null || missing+=(openssl)
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]} (Debian packages)"
        apt_install "${missing[@]}"
    fi
}

# Crates of the broker that a plain-TCP SQLite broker never runs (TLS and HTTP clients, the
# schema registry, scripting, object stores, telemetry export, the CLI's other tools, and
# zstd, which only a zstd-compressed batch reaches): built at opt-level 0, which takes 226
# of the build's 1175 CPU seconds off (2026-12-03, 672 s -> 554 s wall on 2 cores) with the
# broker's throughput within the noise of the full build's (scripts/broker_compare.py; the
# README's Performance section has the figures).
TANSU_UNOPTIMISED=(aws-lc-sys aws-lc-rs ring rustls rustls-webpki zstd-sys zstd-safe zstd
    rhai object_store protobuf protobuf-parse protobuf-json-mapping jsonschema apache-avro
    reqwest opentelemetry opentelemetry_sdk opentelemetry-otlp opentelemetry-proto tonic
    rama-core rama-net rama-http hickory-proto hickory-resolver h2 tansu-schema tansu-otel
    tansu-generator tansu-proxy tansu-perf tansu-cat tansu-topic)

install_tansu() {
    local profile=() crate
    [ -x "$TANSU" ] && return 0
    for crate in "${TANSU_UNOPTIMISED[@]}"; do
        profile+=(--config "profile.release.package.$crate.opt-level=0")
    done
    log "building the Tansu $TANSU_VERSION broker from crates.io (about 9 minutes on 2 cores, once per machine)"
    cargo install tansu --version "$TANSU_VERSION" --locked --no-default-features \
        --features libsql --root "$TANSU_ROOT" --quiet "${profile[@]}"
}

install_demo_client() {
    # The demo's producer/consumer (Python confluent-kafka, bundles a recent librdkafka).
    if [ ! -x "$CACHE/demo-venv/bin/python" ] || ! "$CACHE/demo-venv/bin/python" -c 'import confluent_kafka' 2>/dev/null; then
        log "installing the demo's Kafka client (confluent-kafka from PyPI)"
        python3 -m venv "$CACHE/demo-venv"
        "$CACHE/demo-venv/bin/pip" install --quiet --disable-pip-version-check "confluent-kafka==2.12.1"
    fi
}

# Everything that can run at once does: the broker's build (the long pole) and the libtorch
# download start first, the Debian packages install meanwhile, then anomalyd builds while
# the broker still builds and the demo's client installs.
pids=()
background() { "$@" & pids+=($!); }
[ -x "$TANSU" ] || background install_tansu
install_libtorch &
torch_pid=$!
install_system_packages
wait "$torch_pid" || { echo "installing libtorch failed (see above)" >&2; exit 1; }
background install_demo_client
if [ "${SETUP_SKIP_BUILD:-0}" != 1 ]; then
    log "building anomalyd (release)"
    # At a lower priority while the broker builds: the broker's build is the longer one and
    # ends in a chain of large crates built one after the other, so it keeps both cores when
    # it can use them and anomalyd's build takes the rest.
    (cd "$ROOT" && nice -n 10 cargo build --release --quiet)
fi
for pid in "${pids[@]}"; do
    wait "$pid" || { echo "setup failed (see above)" >&2; exit 1; }
done
log "setup complete"
