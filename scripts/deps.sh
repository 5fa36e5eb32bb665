#!/usr/bin/env bash
# Installs the Debian packages verge needs to build, test, fuzz and benchmark.
# Idempotent and quiet when everything is present.
set -euo pipefail
PKGS=(
  build-essential pkg-config clang clang-format libclang-rt-14-dev
  libh2o-evloop-dev libuv1-dev libssl-dev zlib1g-dev liblua5.4-dev libfyaml-dev libjansson-dev
  liblmdb-dev libsqlite3-dev libarchive-dev libnats-dev libcmocka-dev libnghttp2-dev libmaxminddb-dev
  nats-server nginx libnginx-mod-http-lua varnish wrk nghttp2-client curl openssl python3 python3-pytest python3-h2 procps util-linux
  libmaxmind-db-writer-perl
  prometheus tzdata valgrind
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}" >&2
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# nginx's package starts its service on :80; tests and benchmarks start their
# own instances, so stop only the packaged one (by its pid file).
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now nginx >/dev/null 2>&1 || true; fi
if [ -s /run/nginx.pid ]; then $SUDO kill "$(cat /run/nginx.pid)" >/dev/null 2>&1 || true; fi
# the same for varnish (bench/run.sh starts its own varnishd -F) and
# prometheus (tests/e2e/test_110_prometheus.py starts its own)
for svc in varnish prometheus; do
  if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true; fi
done
echo "deps: done" >&2
