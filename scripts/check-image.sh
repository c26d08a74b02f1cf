#!/usr/bin/env bash
# The container recipe without a container engine: runs the Dockerfile's build step
# (scripts/build-release.sh) on this machine into a temporary folder, moves the result to
# another path (as COPY --from=build does), and checks it the way the runtime image uses it:
#  - the binary's RUNPATH is $ORIGIN/../lib and no staged file has an absolute RPATH/RUNPATH
#    (nothing points back into the repository or ~/.cache);
#  - with a clean environment and only the staged lib/ in LD_LIBRARY_PATH (as in the image),
#    every library the loader resolves is either staged or one of the glibc/libstdc++/libgcc/
#    zlib libraries that debian:bookworm-slim has; same without LD_LIBRARY_PATH;
#  - `anomalyd --version` (the Dockerfile's smoke test) and `check-config` on the staged
#    configs run;
#  - `anomalyd score` trains and scores the NAB fixture with libtorch, and LD_DEBUG shows
#    every library actually initialised (dlopen included) came from lib/ or the system.
# Ends with `N passed, M failed`. Builds the release binary (cargo build --release --locked);
# SKIP_BUILD=1 stages the existing target/release/anomalyd instead.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

if ! command -v patchelf >/dev/null || ! command -v readelf >/dev/null; then
    log "installing patchelf and binutils (Debian packages)"
    apt_install patchelf binutils
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/anomalyd-image.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
"$ROOT/scripts/build-release.sh" "$WORK/stage"
# A different path than the one it was staged to, like /opt/anomalyd in the image.
mkdir -p "$WORK/opt"
mv "$WORK/stage" "$WORK/opt/anomalyd"
APP="$WORK/opt/anomalyd"
BIN="$APP/bin/anomalyd"
# What debian:bookworm-slim provides (libc6, libgcc-s1, libstdc++6, zlib1g, libzstd1: dpkg
# itself needs it), plus libssl3 (librdkafka's TLS and SASL), which the Dockerfile's runtime
# stage installs.
SYSTEM_LIBS="libc.so.6 libm.so.6 libdl.so.2 libpthread.so.0 librt.so.1 libutil.so.1 ld-linux-x86-64.so.2 libgcc_s.so.1 libstdc++.so.6 libz.so.1 libzstd.so.1 libssl.so.3 libcrypto.so.3"

passed=0
failed=0
ok() { echo "OK   $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }
# Runs the staged binary as the image does: empty environment but PATH and LD_LIBRARY_PATH.
run_image() { env -i PATH=/usr/bin:/bin LD_LIBRARY_PATH="$APP/lib" "$@"; }

# Each resolved library path must be staged or a known system library.
foreign_libs() {
    local path
    for path in "$@"; do
        case "$path" in
        "$APP"/lib/* | "$APP"/bin/../lib/*) ;;
        /lib/* | /lib64/* | /usr/lib/* | /usr/lib64/*)
            [[ " $SYSTEM_LIBS " == *" $(basename "$path") "* ]] || echo "$path"
            ;;
        *) echo "$path" ;;
        esac
    done
}

# --- RUNPATH ---------------------------------------------------------------------------------
runpath="$(readelf -d "$BIN" | sed -n 's/.*(RUNPATH).*\[\(.*\)\]/\1/p')"
# shellcheck disable=SC2016 # a literal $ORIGIN
if [ "$runpath" = '$ORIGIN/../lib' ] && ! readelf -d "$BIN" | grep -q '(RPATH)'; then
    ok "bin/anomalyd RUNPATH is \$ORIGIN/../lib"
else
    fail "bin/anomalyd RUNPATH is '$runpath' (want \$ORIGIN/../lib)"
fi
absolute=""
for f in "$APP"/lib/*; do
    p="$(readelf -d "$f" | sed -n 's/.*(R\(UN\)\{0,1\}PATH).*\[\(.*\)\]/\2/p')"
    tr ':' '\n' <<<"$p" | grep -q '^/' && absolute="$absolute $(basename "$f")=$p"
done
if [ -z "$absolute" ]; then ok "staged libraries have no absolute RPATH/RUNPATH"; else fail "absolute RPATH/RUNPATH:$absolute"; fi

# --- resolution --------------------------------------------------------------------------------
for mode in "LD_LIBRARY_PATH=lib/" "no LD_LIBRARY_PATH"; do
    if [ "$mode" = "no LD_LIBRARY_PATH" ]; then
        out="$(env -i PATH=/usr/bin:/bin ldd "$BIN" 2>&1)" || true
    else
        out="$(run_image ldd "$BIN" 2>&1)" || true
    fi
    missing="$(grep 'not found' <<<"$out" || true)"
    mapfile -t paths < <(awk '$2 == "=>" && $3 ~ /^\// {print $3}' <<<"$out")
    foreign="$(foreign_libs "${paths[@]}")"
    if [ -z "$missing" ] && [ -z "$foreign" ] && [ "${#paths[@]}" -gt 0 ]; then
        ok "ldd ($mode): ${#paths[@]} libraries, all staged or system"
    else
        fail "ldd ($mode): missing: ${missing:-none}; from elsewhere: ${foreign:-none}"
    fi
done

# --- the Dockerfile's smoke test and configs ----------------------------------------------------
if version="$(run_image "$BIN" --version 2>&1)" && [[ "$version" == anomalyd\ * ]]; then
    ok "anomalyd --version: $version"
else
    fail "anomalyd --version: $version"
fi
for cfg in "$APP"/config/*.toml deploy/kubernetes/base/config/anomalyd.toml; do
    if out="$(run_image "$BIN" check-config --config "$cfg" 2>&1)"; then
        ok "anomalyd check-config --config ${cfg#"$WORK"/}"
    else
        fail "anomalyd check-config --config ${cfg#"$WORK"/}: $(tail -3 <<<"$out")"
    fi
done

# --- libtorch at work: train and score offline, recording every library initialised ----------
fixture="$ROOT/tests/fixtures/nab/art_daily_jumpsup.csv"
expected=$(($(wc -l <"$fixture") - 1))
if run_image LD_DEBUG=libs LD_DEBUG_OUTPUT="$WORK/ld" ANOMALYD__MODEL__THREADS=1 \
    "$BIN" score --input "$fixture" --config "$APP/config/demo.toml" \
    >"$WORK/scores.jsonl" 2>"$WORK/score.err"; then
    n=$(wc -l <"$WORK/scores.jsonl")
    if [ "$n" = "$expected" ]; then ok "anomalyd score: $n records scored"; else fail "anomalyd score: $n of $expected records"; fi
else
    fail "anomalyd score exited non-zero: $(tail -3 "$WORK/score.err")"
fi
mapfile -t loaded < <(cat "$WORK"/ld.* 2>/dev/null | sed -n 's/.*calling init: //p' | sort -u)
foreign="$(foreign_libs "${loaded[@]}")"
staged=$(printf '%s\n' "${loaded[@]}" | grep -c "^$APP/" || true)
if [ "${#loaded[@]}" -gt 0 ] && [ -z "$foreign" ] && [ "$staged" -gt 0 ]; then
    ok "libraries initialised while scoring: ${#loaded[@]} ($staged staged), none from elsewhere"
else
    fail "libraries initialised while scoring from elsewhere: ${foreign:-none recorded}"
fi

# --- the Dockerfile runs this same recipe ---------------------------------------------------------
if grep -q 'scripts/build-release.sh /out' Dockerfile && grep -q 'LD_LIBRARY_PATH=/opt/anomalyd/lib' Dockerfile &&
    grep -q '"/opt/anomalyd/bin/anomalyd", "--version"' Dockerfile; then
    ok "Dockerfile builds with scripts/build-release.sh and smoke-tests --version"
else
    fail "Dockerfile does not use scripts/build-release.sh /out, LD_LIBRARY_PATH=/opt/anomalyd/lib and the --version smoke test"
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
