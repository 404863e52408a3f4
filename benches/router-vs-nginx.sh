#!/usr/bin/env bash
# Whole-process comparison of the local deployer's router (release build of `bench-router`: the
# same `hephy_deploy::router::Router` that serves every app) against a direct connection to the
# app and against Debian's nginx as a reverse proxy, all on loopback in the same run, with wrk.
#
# The "app" is nginx serving a small page (fast, so the proxies are what is measured). nginx as
# the proxy gets the settings a careful admin would give it (HTTP/1.1 and keep-alive to the
# upstream, access log off). Each side is measured RUNS times (default 3) for DURATION seconds
# (default 10) with THREADS wrk threads and CONNS connections; the best run of each is kept.
# Printed: requests per second and p99 latency of each, and the ratios router/direct (goal: at
# least 0.90) and router/nginx (goal: above 1.00).
#
# Usage: benches/router-vs-nginx.sh     (env: RUNS=3 DURATION=10 THREADS=2 CONNS=64)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${RUNS:-3}"
DURATION="${DURATION:-10}"
THREADS="${THREADS:-2}"
CONNS="${CONNS:-64}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"

if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
    echo "==> installing wrk and nginx (Debian)"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends wrk nginx-light >/dev/null \
        || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends wrk nginx >/dev/null
    # Debian starts a system nginx on :80; this bench starts its own.
    if command -v systemctl >/dev/null; then systemctl stop nginx >/dev/null 2>&1 || true; fi
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/router-vs-nginx.XXXXXX")"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    [[ -f "$WORK/app.pid" ]] && kill "$(cat "$WORK/app.pid")" 2>/dev/null || true
    [[ -f "$WORK/proxy.pid" ]] && kill "$(cat "$WORK/proxy.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
APP_PORT=$(free_port); ROUTER_PORT=$(free_port); PROXY_PORT=$(free_port)

echo "==> building bench-router (release)"
(cd "$ROOT" && cargo build --release --quiet -p hephy-benches --bin bench-router)

mkdir -p "$WORK/www" "$WORK/tmp"
# nginx's workers run as an unprivileged user, who must read the page.
chmod 755 "$WORK" "$WORK/www"
head -c 1024 /dev/zero | tr '\0' 'x' > "$WORK/www/index.html"
common="worker_processes 1; error_log $WORK/error.log; events { worker_connections 4096; }"
http_common="access_log off; client_body_temp_path $WORK/tmp; proxy_temp_path $WORK/tmp; fastcgi_temp_path $WORK/tmp; uwsgi_temp_path $WORK/tmp; scgi_temp_path $WORK/tmp;"
cat > "$WORK/app.conf" <<CONF
$common
pid $WORK/app.pid;
http { $http_common server { listen 127.0.0.1:$APP_PORT; root $WORK/www; } }
CONF
cat > "$WORK/proxy.conf" <<CONF
$common
pid $WORK/proxy.pid;
http {
  $http_common
  upstream app { server 127.0.0.1:$APP_PORT; keepalive 128; }
  server {
    listen 127.0.0.1:$PROXY_PORT;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
"$NGINX" -c "$WORK/app.conf" -p "$WORK"
"$NGINX" -c "$WORK/proxy.conf" -p "$WORK"
"$TARGET/release/bench-router" "127.0.0.1:$ROUTER_PORT" "127.0.0.1:$APP_PORT" >/dev/null &
PIDS+=($!)

for port in $APP_PORT $ROUTER_PORT $PROXY_PORT; do
    for _ in $(seq 1 50); do curl -fsS -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
    curl -fsS -o /dev/null "http://127.0.0.1:$port/" || { echo "error: nothing answers on $port" >&2; exit 1; }
done

# One wrk run: prints "RPS P99_MS".
measure() {
    local out rps p99
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$1/")
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v=v*1000}; print v}' <<<"$out")
    errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out")
    [[ -z "$errors" ]] || echo "   ($errors)" >&2
    echo "$rps $p99"
}

declare -A BEST_RPS BEST_P99
for run in $(seq 1 "$RUNS"); do
    for side in direct router nginx; do
        case $side in direct) port=$APP_PORT;; router) port=$ROUTER_PORT;; nginx) port=$PROXY_PORT;; esac
        read -r rps p99 < <(measure "$port")
        printf '   run %d %-7s %10.0f req/s   p99 %7.2f ms\n' "$run" "$side" "$rps" "$p99"
        if [[ -z "${BEST_RPS[$side]:-}" ]] || awk -v a="$rps" -v b="${BEST_RPS[$side]}" 'BEGIN{exit !(a>b)}'; then
            BEST_RPS[$side]=$rps; BEST_P99[$side]=$p99
        fi
    done
done

echo
echo "==> best of $RUNS runs (${DURATION}s, $THREADS threads, $CONNS connections, 1 KiB page)"
for side in direct router nginx; do
    printf '%-7s %10.0f req/s   p99 %7.2f ms\n' "$side" "${BEST_RPS[$side]}" "${BEST_P99[$side]}"
done
awk -v r="${BEST_RPS[router]}" -v d="${BEST_RPS[direct]}" -v n="${BEST_RPS[nginx]}" 'BEGIN {
    printf "router / direct throughput: %.2f (goal: at least 0.90)\n", r/d
    printf "router / nginx throughput:  %.2f (goal: above 1.00)\n", r/n
}'
