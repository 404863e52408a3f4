#!/usr/bin/env bash
# Installs the real tools hephy's tests and main job use, from Debian's packages.
# Idempotent: packages already present are skipped by apt.
set -euo pipefail
PKGS=(git openssh-client openssh-server docker-registry skopeo umoci runc golang-go
      qemu-user-static buildah busybox-static curl ca-certificates pkg-config iproute2
      passt uidmap bubblewrap)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ! command -v kubectl >/dev/null 2>&1; then missing+=(kubectl); fi
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The Debian docker-registry package starts a system service on :5000; tests start their own.
if command -v systemctl >/dev/null 2>&1; then systemctl stop docker-registry >/dev/null 2>&1 || true; fi
pkill -f '^/usr/bin/docker-registry serve /etc/docker/registry/config.yml' 2>/dev/null || true
if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo not found; installing Debian's cargo (hephy needs Rust 1.88 or newer: rustup's stable is best)" >&2
  $SUDO apt-get install -y -qq --no-install-recommends cargo rustc
fi
echo "install-deps: ok"
