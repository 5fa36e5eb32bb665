#!/usr/bin/env bash
# Tracing's cost per proxied request, measured in a way this noisy VM can
# resolve (see bench/README.md "Tracing overhead"):
#   1. user-space instructions per request (callgrind, exact to ~0.2%) with
#      --trace-sample off, 0.01 and 1: verge with one worker proxying to a
#      keep-alive nginx origin (1 KiB), wrk -c1;
#   2. the share of verge's CPU time spent in user space under load (utime
#      and stime from /proc/PID/stat, all threads; server and wrk pinned to
#      different cores), median of TRACE_IR_ROUNDS runs;
# and prints the throughput cost each rate implies: the instructions added
# over the user-space total, times the user share (tracing makes no
# system calls; its instructions run at the user-space rate).
# Environment: VERGE [build/verge], TRACE_IR_SECONDS [5], TRACE_IR_ROUNDS [3].
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VERGE=${VERGE:-$ROOT/build/verge}
SECS=${TRACE_IR_SECONDS:-5}
ROUNDS=${TRACE_IR_ROUNDS:-3}
TMP=$(mktemp -d /tmp/verge-trace-ir.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

OP=$(free_port)
mkdir -p "$TMP/origin" "$TMP/app"
BODY=$(printf 'x%.0s' $(seq 1023))
cat > "$TMP/origin/nginx.conf" <<N
worker_processes 1;
pid $TMP/origin/nginx.pid;
error_log $TMP/origin/error.log warn;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $TMP/origin/cb; proxy_temp_path $TMP/origin/p;
 fastcgi_temp_path $TMP/origin/f; uwsgi_temp_path $TMP/origin/u; scgi_temp_path $TMP/origin/s;
 keepalive_requests 1000000; keepalive_timeout 120s;
 server { listen 127.0.0.1:$OP; location / { default_type application/octet-stream; return 200 "$BODY\n"; } } }
N
taskset -c 0 nginx -c "$TMP/origin/nginx.conf" -p "$TMP/origin"
trap 'kill $(cat "$TMP/origin/nginx.pid") 2>/dev/null; rm -rf "$TMP"' EXIT
cat > "$TMP/app/verge.yaml" <<Y
name: bench
routes:
  - path: /proxy
    proxy: http://127.0.0.1:$OP
    strip_prefix: /proxy
Y

wait_up() { for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$1/proxy/x" && return 0; sleep 0.1; done; return 1; }

# 1. instructions per request
ir_per_request() {
    local ts=$1 vp d pid f
    vp=$(free_port)
    d="$TMP/cg-$ts"
    mkdir -p "$d"
    valgrind --tool=callgrind --callgrind-out-file="$d/cg.out" "$VERGE" node --app "$TMP/app" \
        --listen "127.0.0.1:$vp" --workers 1 --access-log off --state-dir "$d/state" --trace-sample "$ts" \
        >"$d/log" 2>&1 &
    pid=$!
    wait_up "$vp"
    wrk -t1 -c10 -d2s "http://127.0.0.1:$vp/proxy/x" >/dev/null
    callgrind_control -z "$pid" >/dev/null
    wrk -t1 -c1 -d"${SECS}s" "http://127.0.0.1:$vp/proxy/x" >/dev/null
    callgrind_control -d "$pid" >/dev/null
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    f=$(ls "$d"/cg.out.* | head -1)
    python3 "$ROOT/bench/callgrind_calls.py" "$f" on_req | awk '{print $3}'
}

# 2. user share of CPU under load
user_share() {
    local vp pid a b
    vp=$(free_port)
    taskset -c 1 "$VERGE" node --app "$TMP/app" --listen "127.0.0.1:$vp" --workers 1 --access-log off \
        --state-dir "$TMP/state-split" --trace-sample off >/dev/null 2>&1 &
    pid=$!
    wait_up "$vp"
    taskset -c 0 wrk -t1 -c20 -d1s "http://127.0.0.1:$vp/proxy/x" >/dev/null
    a=$(awk '{print $14, $15}' "/proc/$pid/stat")
    taskset -c 0 wrk -t1 -c20 -d"${SECS}s" "http://127.0.0.1:$vp/proxy/x" >/dev/null
    b=$(awk '{print $14, $15}' "/proc/$pid/stat")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    echo "$a $b" | awk '{u = $3 - $1; s = $4 - $2; printf "%.4f\n", u / (u + s)}'
}

echo "instructions per proxied request (callgrind, user space):"
declare -A IR
for ts in off 0.01 1; do
    IR[$ts]=$(ir_per_request "$ts")
    echo "  --trace-sample $ts: ${IR[$ts]}"
done
shares=()
for _ in $(seq "$ROUNDS"); do shares+=("$(user_share)"); done
SHARE=$(printf '%s\n' "${shares[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "user-space share of verge's CPU under load: ${shares[*]} (median $SHARE)"
python3 - "${IR[off]}" "${IR[0.01]}" "${IR[1]}" "$SHARE" <<'P'
import sys
off, one, full, share = map(float, sys.argv[1:])
for name, v, floor in (("1%", one, 1.0), ("100%", full, 5.0)):
    user = 100 * (v - off) / off
    cost = user * share
    print("  %-5s +%.0f instructions (+%.2f%% user space) -> ~%.2f%% throughput (floor %.0f%%): %s"
          % (name, v - off, user, cost, floor, "ok" if cost <= floor else "OVER"))
P
