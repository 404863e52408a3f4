#!/usr/bin/env bash
# Whole-process comparison of receiving a push: hephy's git server (release build of
# `bench-git-server`: receive-pack in Rust on gitoxide, no pipeline) against stock
# `git daemon --enable=receive-pack` (git's own receive-pack and index-pack), on loopback.
#
# It generates a ~250 MB repository (compressible text, incompressible binaries, and a second
# commit that edits text files so the pack has deltas), repacks it once so both sides get the
# same pack, then pushes it RUNS times (default 3) into a fresh bare repository on each side
# and prints the best time of each, the throughput and the ratio hephy / git. Target: the ratio
# is at most 1.00. Every pushed repository is checked (branch tip; `git fsck` on the first).
#
# hephy is measured over smart HTTP (like `git daemon`, no encryption) and, for information,
# over SSH (russh; the OpenSSH client encrypts, so it is not the like-for-like figure).
#
# Usage: benches/push-vs-git-daemon.sh        (env: SIZE_MB=250 RUNS=3 SSH=1 KEEP=0)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SIZE_MB="${SIZE_MB:-250}"
RUNS="${RUNS:-3}"
SSH="${SSH:-1}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"

for tool in git ssh-keygen cargo; do
    command -v "$tool" >/dev/null || { echo "error: $tool is not installed (see scripts/install-deps.sh)" >&2; exit 1; }
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/push-vs-git-daemon.XXXXXX")"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ "${KEEP:-0}" == 1 ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null GIT_TERMINAL_PROMPT=0
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.com
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.com

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

echo "==> building bench-git-server (release)"
(cd "$ROOT" && cargo build --release --quiet -p hephy-benches --bin bench-git-server)
BIN="$TARGET/release/bench-git-server"
[[ -x "$BIN" ]] || { echo "error: $BIN was not built" >&2; exit 1; }

echo "==> generating a ${SIZE_MB} MB repository"
REPO="$WORK/client"
git init -q -b main "$REPO"
binary_mb=$(( SIZE_MB * 6 / 10 ))   # 60% incompressible
text_mb=$(( SIZE_MB - binary_mb ))  # 40% compressible text
mkdir -p "$REPO/assets" "$REPO/src"
for i in $(seq 1 $(( binary_mb * 2 ))); do   # 512 KiB each
    head -c $(( 512 * 1024 )) /dev/urandom > "$REPO/assets/blob-$i.bin"
done
text_files=$(( text_mb * 10 ))               # ~100 KiB each
for i in $(seq 1 "$text_files"); do
    d="$REPO/src/m$(( i % 50 ))"
    mkdir -p "$d"
    seq -f "line %g of module $i: let value = compute($i, input);" 1 1800 > "$d/file-$i.rs"
done
git -C "$REPO" add -A
git -C "$REPO" commit -q -m "generated tree"
for i in $(seq 1 3 "$text_files"); do        # a second commit: edits that become deltas
    f="$REPO/src/m$(( i % 50 ))/file-$i.rs"
    sed -i "900s/\$/ \/\/ edited/" "$f"
    echo "// appended" >> "$f"
done
git -C "$REPO" commit -q -am "edit a third of the text files"
git -C "$REPO" repack -adq
TIP="$(git -C "$REPO" rev-parse HEAD)"
PACK_BYTES=$(du -cb "$REPO"/.git/objects/pack/*.pack | tail -1 | cut -f1)
printf '    %s objects, pack %d MB\n' "$(git -C "$REPO" count-objects -v | sed -n 's/^in-pack: //p')" $(( PACK_BYTES / 1000000 ))

APPS=()
for i in $(seq 1 "$RUNS"); do APPS+=("run$i" "ssh$i"); done

echo "==> starting hephy (bench-git-server) and git daemon"
ssh-keygen -q -t ed25519 -N "" -f "$WORK/id_bench"
"$BIN" "$WORK/hephy" --ssh-key "$WORK/id_bench.pub" "${APPS[@]}" > "$WORK/hephy.out" 2> "$WORK/hephy.log" &
PIDS+=($!)
for _ in $(seq 1 100); do grep -q '^ssh=' "$WORK/hephy.out" 2>/dev/null && break; sleep 0.1; done
HTTP="$(sed -n 's/^http=//p' "$WORK/hephy.out")"
TOKEN="$(sed -n 's/^token=//p' "$WORK/hephy.out")"
SSH_PORT="$(sed -n 's/^ssh=.*://p' "$WORK/hephy.out")"
[[ -n "$HTTP" && -n "$TOKEN" && -n "$SSH_PORT" ]] || { echo "error: bench-git-server did not start:" >&2; cat "$WORK/hephy.log" >&2; exit 1; }

mkdir -p "$WORK/daemon"
DAEMON_PORT=""
for _ in $(seq 1 20); do
    port=$(( 20000 + RANDOM % 40000 ))
    git daemon --reuseaddr --listen=127.0.0.1 --port="$port" --base-path="$WORK/daemon" \
        --export-all --enable=receive-pack "$WORK/daemon" 2> "$WORK/daemon.log" &
    pid=$!
    for _ in $(seq 1 50); do
        if ! kill -0 "$pid" 2>/dev/null; then break; fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then DAEMON_PORT="$port"; break; fi
        sleep 0.1
    done
    if [[ -n "$DAEMON_PORT" ]]; then PIDS+=("$pid"); break; fi
    kill "$pid" 2>/dev/null || true
done
[[ -n "$DAEMON_PORT" ]] || { echo "error: git daemon did not start:" >&2; cat "$WORK/daemon.log" >&2; exit 1; }

hephy_repo() { find "$WORK/hephy" -maxdepth 3 -type d -name "$1.git" | head -1; }
check() { # NAME GIT_DIR FSCK
    local tip
    tip="$(git --git-dir="$2" rev-parse --verify -q refs/heads/main || true)"
    [[ "$tip" == "$TIP" ]] || { echo "error: $1: main is '$tip', pushed $TIP" >&2; exit 1; }
    if [[ "$3" == 1 ]]; then
        git --git-dir="$2" fsck --no-dangling --no-progress >/dev/null 2>"$WORK/fsck.log" \
            || { echo "error: git fsck failed on $1:" >&2; cat "$WORK/fsck.log" >&2; exit 1; }
    fi
}
timed_push() { # URL -> prints milliseconds
    local start end
    start=$(now_ms)
    git -C "$REPO" push -q "$1" main 2> "$WORK/push.log" \
        || { echo "error: push to $1 failed:" >&2; cat "$WORK/push.log" >&2; exit 1; }
    end=$(now_ms)
    echo $(( end - start ))
}
export GIT_SSH_COMMAND="ssh -F /dev/null -i $WORK/id_bench -o IdentitiesOnly=yes -o IdentityAgent=none -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"

best_hephy=""; best_git=""; best_ssh=""
min() { if [[ -z "$1" || "$2" -lt "$1" ]]; then echo "$2"; else echo "$1"; fi; }
for i in $(seq 1 "$RUNS"); do
    fsck=0; [[ "$i" == 1 ]] && fsck=1
    git init -q --bare "$WORK/daemon/run$i.git"
    # Alternate the order so neither side always profits from a warm page cache.
    if (( i % 2 )); then order="hephy git"; else order="git hephy"; fi
    for side in $order; do
        if [[ "$side" == hephy ]]; then
            ms=$(timed_push "http://bench:$TOKEN@$HTTP/run$i.git")
            check "hephy run$i" "$(hephy_repo "run$i")" "$fsck"
            best_hephy=$(min "$best_hephy" "$ms")
        else
            ms=$(timed_push "git://127.0.0.1:$DAEMON_PORT/run$i.git")
            check "git daemon run$i" "$WORK/daemon/run$i.git" "$fsck"
            best_git=$(min "$best_git" "$ms")
        fi
        printf '    run %d  %-16s %6d ms\n' "$i" "$side" "$ms"
    done
    if [[ "$SSH" == 1 ]]; then
        ms=$(timed_push "ssh://git@127.0.0.1:$SSH_PORT/ssh$i.git")
        check "hephy ssh$i" "$(hephy_repo "ssh$i")" 0
        best_ssh=$(min "$best_ssh" "$ms")
        printf '    run %d  %-16s %6d ms\n' "$i" "hephy over ssh" "$ms"
    fi
done

mbps() { awk -v b="$PACK_BYTES" -v ms="$1" 'BEGIN { printf "%.0f", b / 1e6 / (ms / 1000) }'; }
echo
echo "push of a ${SIZE_MB} MB repository ($(( PACK_BYTES / 1000000 )) MB pack), best of $RUNS:"
printf '  hephy (smart HTTP)          %6d ms  %4s MB/s\n' "$best_hephy" "$(mbps "$best_hephy")"
printf '  git daemon (git://)         %6d ms  %4s MB/s\n' "$best_git" "$(mbps "$best_git")"
[[ "$SSH" == 1 ]] && printf '  hephy (SSH, for reference)  %6d ms  %4s MB/s\n' "$best_ssh" "$(mbps "$best_ssh")"
ratio=$(awk -v h="$best_hephy" -v g="$best_git" 'BEGIN { printf "%.2f", h / g }')
echo "  ratio hephy / git daemon: $ratio (target <= 1.00)"
