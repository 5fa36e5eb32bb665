#!/usr/bin/env bash
# Per-request latency traces of verge and nginx on /hello, alternating:
#   bench/lat_trace.sh [ROUNDS [SECONDS]]      (default 3 rounds of 4 s)
# Each run: one worker on CPU 1, bench/lat_trace (50 connections, sending
# like wrk: DEFER=1) on CPU 0, then bench/lat_trace.py's line. The machine's
# own stalls are dropped from the figures; see docs/decisions.md "Serving
# order". On a shared machine, `echo -20 > /proc/self/autogroup` first gives
# this shell's session the CPU ahead of other sessions.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${BUILD:-build}
VERGE=${VERGE:-$ROOT/$BUILD/verge}
PY=${PY:-python3}
ROUNDS=${1:-3}
SECONDS_PER_RUN=${2:-4}
. bench/lib.sh
mkdir -p "$BUILD/bench"
cc -O2 -Wall -Wextra -Werror -o "$BUILD/bench/lat_trace" bench/lat_trace.c
bench_tmp_init
mkdir -p "$BENCH_TMP/app" "$BENCH_TMP/nginx" "$BENCH_TMP/state"
cat >"$BENCH_TMP/app/verge.yaml" <<'YAML'
name: trace
routes:
  - exact: /hello
    respond: {status: 200, body: "hello world\n", content_type: text/plain}
YAML
NPORT=$(free_port)
{
    nginx_common "$BENCH_TMP/nginx"
    printf '    server { listen 127.0.0.1:%s; location /hello { default_type text/plain; return 200 "hello world\\n"; } }\n}\n' "$NPORT"
} >"$BENCH_TMP/nginx.conf"

trace() { # LABEL PORT PID
    wait_port "$2" "$3" || die "$1 did not start"
    DEFER=1 taskset -c 0 "$BUILD/bench/lat_trace" "$2" /hello 50 "$SECONDS_PER_RUN" "$BENCH_TMP/$1.csv" 2>/dev/null
    "$PY" bench/lat_trace.py "$BENCH_TMP/$1.csv" "$1"
}
for _ in $(seq "$ROUNDS"); do
    VPORT=$(free_port)
    start_server "$BENCH_TMP/verge.log" 1 "$VERGE" node --app "$BENCH_TMP/app" --listen "127.0.0.1:$VPORT" \
        --workers 1 --access-log off --state-dir "$BENCH_TMP/state"
    V=$STARTED_PID
    trace verge "$VPORT" "$V"
    stop_pid "$V"
    nginx_start "$BENCH_TMP/nginx.conf" "$BENCH_TMP/nginx" 1
    N=$STARTED_PID
    trace nginx "$NPORT" "$N"
    stop_pid "$N"
done
