# syntax=docker/dockerfile:1
# anomalyd's container image (CPU). Two stages:
#  - build: a Rust toolchain plus python3-venv; scripts/build-release.sh installs libtorch from
#    the pinned PyPI torch wheel (as scripts/setup.sh does), runs `cargo build --release
#    --locked` and stages /out/{bin,lib,config} with exactly the wheel's shared libraries the
#    binary loads (its RUNPATH rewritten to $ORIGIN/../lib);
#  - runtime: debian:bookworm-slim with /opt/anomalyd only, a non-root user, and
#    `anomalyd --version` run at build time as a smoke test.
# There is no container engine in CI: scripts/check-image.sh runs the same build script on the
# machine and checks the staged result the way this image uses it.
#
#   docker build -t anomalyd:0.1.0 .
#   docker run --rm -p 9464:9464 -v $PWD/my.toml:/etc/anomalyd/anomalyd.toml:ro \
#       anomalyd:0.1.0 run --config /etc/anomalyd/anomalyd.toml

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv patchelf binutils \
        libssl-dev libzstd-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The libtorch wheel, the crates and the target folder are cached between builds (BuildKit).
ENV ANOMALYD_CACHE=/cache
RUN --mount=type=cache,target=/cache \
    --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    scripts/build-release.sh /out

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# bookworm-slim has most system libraries the binary needs (libc6, libstdc++6, libgcc-s1,
# zlib1g, libzstd1); librdkafka's TLS needs libssl3, and ca-certificates lets it trust the
# public CAs of managed Kafka services. libtorch's own libraries come from the build stage.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl3 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 anomalyd \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin anomalyd
COPY --from=build /out /opt/anomalyd
ENV LD_LIBRARY_PATH=/opt/anomalyd/lib \
    PATH=/opt/anomalyd/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    ANOMALYD__HTTP__LISTEN=0.0.0.0:9464 \
    ANOMALYD__MODEL__DEVICE=cpu
# Build-time smoke test: the binary starts and finds libtorch.
RUN ["/opt/anomalyd/bin/anomalyd", "--version"]
USER 10001:10001
EXPOSE 9464
ENTRYPOINT ["/opt/anomalyd/bin/anomalyd"]
CMD ["run"]

# CUDA variant (not built in CI: no GPU, and the wheels are several GB):
#  - build stage: install the full CUDA torch wheel, i.e. the same `pip install torch==2.11.0`
#    WITH its dependencies (nvidia-cublas, nvidia-cudnn, nvidia-nccl, nvidia-cusparse, ...
#    for CUDA 13), instead of the light `--no-deps` install in build-release.sh;
#  - staging: libtorch_cuda.so is not a link-time dependency (src/model/device.rs dlopens it
#    from the folder of libtorch_cpu.so), so ldd on the binary does not list it: also copy
#    libtorch_cuda.so, libc10_cuda.so and the closure of `ldd libtorch_cuda.so` from the
#    nvidia wheels into /out/lib;
#  - runtime stage: FROM nvidia/cuda:13.0.x-base-ubuntu24.04 (or keep bookworm-slim: the CUDA
#    runtime libraries are staged from the wheels, and the driver's libcuda.so is mounted by the
#    NVIDIA Container Toolkit); drop ANOMALYD__MODEL__DEVICE=cpu (model.device = "auto" picks
#    cuda:0); run with `--gpus all` (Kubernetes: resources.limits nvidia.com/gpu: 1 and the
#    NVIDIA device plugin).
