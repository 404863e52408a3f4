#!/usr/bin/env bash
# Whole-process comparison: build and push a generated context with hephy and with buildah, in
# one run, to the same local docker-registry; then change one file and push again with hephy.
#
#   benches/build-vs-buildah.sh [FILES] [MEGABYTES]     (default: 3000 files, 250 MB)
#
# Context: FILES files, about MEGABYTES in all, a third incompressible random bytes and the rest
# compressible text. hephy: the files backend on an empty base (the equivalent of FROM scratch),
# published by RegistryPublisher through the core Pipeline (the release-built `hephy-bench`
# binary). buildah: `FROM scratch` + `COPY . /app`, `buildah build`, `buildah push`, with its
# own fresh storage (overlay when it works here, else vfs). Both times are whole processes,
# cold (empty build state and an empty registry repository).
#
# Targets (issue 3): hephy's cold build+push at least 3x faster than buildah's; after changing
# one file, hephy's push uploads less than 10% of the bytes of the first push.
#
# Needs: docker-registry, buildah, skopeo (scripts/install-deps.sh), cargo. Not part of
# `cargo test`.
set -euo pipefail

FILES=${1:-3000}
MEGABYTES=${2:-250}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/hephy-bench.XXXXXX")
REGISTRY_PID=

cleanup() {
    if [[ -n "$REGISTRY_PID" ]]; then
        kill "$REGISTRY_PID" 2>/dev/null || true
        wait "$REGISTRY_PID" 2>/dev/null || true
    fi
    # buildah's storage may hold read-only files and mounts.
    if [[ -d "$TMP/buildah-root" ]]; then
        buildah --root "$TMP/buildah-root" --runroot "$TMP/buildah-runroot" \
            --storage-driver "${DRIVER:-vfs}" rm --all >/dev/null 2>&1 || true
        buildah --root "$TMP/buildah-root" --runroot "$TMP/buildah-runroot" \
            --storage-driver "${DRIVER:-vfs}" rmi --all --force >/dev/null 2>&1 || true
    fi
    chmod -R u+w "$TMP" 2>/dev/null || true
    rm -rf "$TMP" || true
}
trap cleanup EXIT

for tool in docker-registry buildah skopeo cargo; do
    command -v "$tool" >/dev/null || { echo "$tool not found: run scripts/install-deps.sh" >&2; exit 1; }
done

# timed FILE CMD...: runs CMD and writes "wall user sys" seconds (children included) to FILE.
timed() {
    local file=$1
    shift
    local TIMEFORMAT='%R %U %S'
    { time "$@" 2>&3 ; } 3>&2 2>"$file"
}
wall() { awk '{ printf "%.2f", $1 }' "$1"; }
cpu() { awk '{ printf "%.2f", $2 + $3 }' "$1"; }
field() { sed -n "s/^$1=//p" "$2"; }
mb() { awk -v n="$1" 'BEGIN { printf "%.1f MB", n / 1000000 }'; }

echo "==> building hephy-bench (release)"
cargo build --quiet --release --manifest-path "$ROOT/Cargo.toml" -p hephy-benches --bin hephy-bench
BENCH="$TARGET_DIR/release/hephy-bench"

echo "==> generating the context: $FILES files, about $MEGABYTES MB"
CTX="$TMP/context"
"$BENCH" gen-context "$CTX" "$FILES" "$MEGABYTES" >"$TMP/context.txt"
echo "    $(field files "$TMP/context.txt") files, $(mb "$(field bytes "$TMP/context.txt")")"

echo "==> starting docker-registry on loopback"
PORT=$("$BENCH" free-port)
HOST="127.0.0.1:$PORT"
cat >"$TMP/registry.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $TMP/registry
http:
  addr: $HOST
EOF
docker-registry serve "$TMP/registry.yml" >"$TMP/registry.log" 2>&1 &
REGISTRY_PID=$!
for _ in $(seq 1 200); do
    curl -fs "http://$HOST/v2/" >/dev/null 2>&1 && break
    sleep 0.05
done
curl -fs "http://$HOST/v2/" >/dev/null || { echo "the registry did not start:" >&2; cat "$TMP/registry.log" >&2; exit 1; }
echo "    $HOST"

# buildah: overlay when it works in this environment, else vfs.
BUILDAH=(buildah --root "$TMP/buildah-root" --runroot "$TMP/buildah-runroot")
DRIVER=overlay
if ! "${BUILDAH[@]}" --storage-driver overlay from --name probe scratch >/dev/null 2>&1; then
    DRIVER=vfs
fi
"${BUILDAH[@]}" --storage-driver "$DRIVER" rm --all >/dev/null 2>&1 || true
BUILDAH+=(--storage-driver "$DRIVER")
printf 'FROM scratch\nCOPY . /app\n' >"$TMP/Containerfile"

# Each side starts with no dirty pages waiting to be written back (the context was just written).
sync
echo "==> hephy: cold build + push"
timed "$TMP/hephy1.time" "$BENCH" push "$CTX" "$HOST" hello v1 "$TMP/work1" >"$TMP/hephy1.txt" 2>"$TMP/hephy1.log"
HEPHY_S=$(wall "$TMP/hephy1.time")
HEPHY_CPU=$(cpu "$TMP/hephy1.time")
echo "    ${HEPHY_S}s (${HEPHY_CPU} CPU-s), $(field blobs "$TMP/hephy1.txt") blobs, uploaded $(mb "$(field uploaded_bytes "$TMP/hephy1.txt")")"

sync
echo "==> buildah ($DRIVER): cold build + push"
buildah_build_push() {
    "${BUILDAH[@]}" build --quiet --layers=false -f "$TMP/Containerfile" -t localhost/bench-buildah:v1 "$CTX" &&
        "${BUILDAH[@]}" push --quiet --tls-verify=false localhost/bench-buildah:v1 "docker://$HOST/bench/buildah:v1"
}
timed "$TMP/buildah.time" buildah_build_push >"$TMP/buildah.log" 2>&1
BUILDAH_S=$(wall "$TMP/buildah.time")
BUILDAH_CPU=$(cpu "$TMP/buildah.time")
echo "    ${BUILDAH_S}s (${BUILDAH_CPU} CPU-s)"

# Both images are really in the registry.
skopeo inspect --raw --tls-verify=false "docker://$HOST/bench/hello:v1" >/dev/null
skopeo inspect --raw --tls-verify=false "docker://$HOST/bench/buildah:v1" >/dev/null

sync
echo "==> hephy: change one file, rebuild + push"
CHANGED="$CTX/d00/s0/text-0001.txt"
echo "one more line" >>"$CHANGED"
timed "$TMP/hephy2.time" "$BENCH" push "$CTX" "$HOST" hello v2 "$TMP/work2" >"$TMP/hephy2.txt" 2>"$TMP/hephy2.log"
HEPHY2_S=$(wall "$TMP/hephy2.time")
FIRST=$(field uploaded_bytes "$TMP/hephy1.txt")
SECOND=$(field uploaded_bytes "$TMP/hephy2.txt")
echo "    ${HEPHY2_S}s, uploaded $(field uploaded_blobs "$TMP/hephy2.txt") blobs, $(mb "$SECOND")"

RATIO=$(awk -v h="$HEPHY_S" -v b="$BUILDAH_S" 'BEGIN { printf "%.1f", b / h }')
CPU_RATIO=$(awk -v h="$HEPHY_CPU" -v b="$BUILDAH_CPU" 'BEGIN { printf "%.1f", b / h }')
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
PERCENT=$(awk -v a="$SECOND" -v b="$FIRST" 'BEGIN { printf "%.1f", 100 * a / b }')
verdict() { if awk -v x="$1" -v t="$2" -v op="$3" 'BEGIN { exit !(op == "ge" ? x >= t : x < t) }'; then echo "met"; else echo "MISSED"; fi; }

echo
echo "Results ($(field files "$TMP/context.txt") files, $(mb "$(field bytes "$TMP/context.txt")"), $(nproc) cores, load average $LOAD, buildah storage driver $DRIVER)"
echo "  hephy   cold build + push:       ${HEPHY_S}s wall, ${HEPHY_CPU} CPU-s"
echo "  buildah cold build + push:       ${BUILDAH_S}s wall, ${BUILDAH_CPU} CPU-s"
echo "  ratio (buildah / hephy):         ${RATIO}x wall   (target >= 3x: $(verdict "$RATIO" 3 ge)), ${CPU_RATIO}x CPU time"
echo "  hephy after one changed file:    ${HEPHY2_S}s, uploaded $(mb "$SECOND") of $(mb "$FIRST") = ${PERCENT}%   (target < 10%: $(verdict "$PERCENT" 10 lt))"
