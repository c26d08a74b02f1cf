#!/usr/bin/env bash
# Builds anomalyd for release with the pinned libtorch and stages a relocatable install:
#
#   scripts/build-release.sh OUTDIR
#     OUTDIR/bin/anomalyd   RUNPATH rewritten to $ORIGIN/../lib (no path of this machine)
#     OUTDIR/lib/           exactly the shared libraries the binary loads from the torch wheel
#                           (libtorch_cpu, libc10, libgomp, libcudart, libcupti), symlinks resolved
#     OUTDIR/config/        the repository's config/ (default.toml documents every key)
#
# The Dockerfile's build stage runs it; scripts/check-image.sh runs it on this machine and
# checks the result. Steps: libtorch from the torch wheel exactly as scripts/setup.sh
# installs it (the broker and the demo client are not needed), `cargo build --release
# --locked`, staging. SKIP_BUILD=1 stages the existing target/release/anomalyd instead of
# building (for trying the staging while another build runs).
#
# Needs python3 with venv, cargo, ldd, readelf and patchelf (Debian: python3-venv, patchelf).
# CUDA variant: see the comments at the end of the Dockerfile.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OUT="${1:?usage: scripts/build-release.sh OUTDIR}"
mkdir -p "$CACHE"


for tool in ldd readelf patchelf; do
    command -v "$tool" >/dev/null || { echo "build-release.sh needs $tool (Debian: apt-get install patchelf binutils)" >&2; exit 1; }
done

install_libtorch
TORCH_LIB="$(readlink -f "$ROOT/.libtorch")/lib"
WHEEL_ROOT="$(readlink -f "$TORCH_VENV")"

if [ "${SKIP_BUILD:-0}" = 1 ]; then
    log "SKIP_BUILD=1: staging the existing target/release/anomalyd"
else
    log "building anomalyd (release)"
    (cd "$ROOT" && cargo build --release --locked --quiet)
fi
BIN="$ROOT/target/release/anomalyd"
[ -x "$BIN" ] || { echo "no $BIN" >&2; exit 1; }

log "staging into $OUT"
rm -rf "${OUT:?}/bin" "${OUT:?}/lib" "${OUT:?}/config"
mkdir -p "$OUT/bin" "$OUT/lib"
cp "$BIN" "$OUT/bin/anomalyd"
cp -r "$ROOT/config" "$OUT/config"

# Every library the dynamic loader resolves into the torch venv (torch/lib and the nvidia
# wheels next to it) is copied; the rest must come from the base image (libc, libstdc++,
# libgcc_s, libz: all in debian:bookworm-slim). `ldd` follows the libraries' own RPATHs, so
# this is the binary's full closure. libtorch_cuda.so is dlopen'ed only when present (not
# staged: the CPU image).
LD_LIBRARY_PATH="$TORCH_LIB" ldd "$BIN" >"$OUT/.ldd" || { cat "$OUT/.ldd" >&2; exit 1; }
if grep -q 'not found' "$OUT/.ldd"; then
    grep 'not found' "$OUT/.ldd" >&2
    exit 1
fi
awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' "$OUT/.ldd" | while read -r name path; do
    real="$(readlink -f "$path")"
    case "$real" in
    "$WHEEL_ROOT"/*)
        cp "$real" "$OUT/lib/$name"
        chmod 0644 "$OUT/lib/$name"
        ;;
    esac
done
rm -f "$OUT/.ldd"
[ -f "$OUT/lib/libtorch_cpu.so" ] || { echo "libtorch_cpu.so was not staged" >&2; exit 1; }

# The build bakes this machine's .libtorch into the binary's RUNPATH (build.rs); the staged
# binary finds its libraries next to it instead. The wheel's libraries only use
# $ORIGIN-relative RPATHs, so they find each other in lib/.
# shellcheck disable=SC2016 # a literal $ORIGIN for the loader
patchelf --set-rpath '$ORIGIN/../lib' "$OUT/bin/anomalyd"

log "staged: $(du -sh "$OUT" | cut -f1) ($(cd "$OUT/lib" && echo *))"
