#!/usr/bin/env bash
# HTTP engine spike: h2o 2.2.5 hello world on libuv, on h2o's own evloop, and
# on the evloop with a libuv loop embedded in the same thread, vs nginx; fixed
# 200 "hello world\n", HTTP/1.1 keep-alive. Feeds the "HTTP engine" decision
# in docs/decisions.md.
#
# Each server pinned to CPU 1, wrk -t1 -c50 -d5s pinned to CPU 0, rounds
# interleaved (the order rotates every round). Reports median rps, p99 and
# server CPU-us per request, and ratios vs nginx; writes
# bench/results/spike.json.
#
# A second phase offers every server the same fixed load (h2load --rps,
# SPIKE_RATE req/s in total) so CPU/request is compared at equal utilisation:
# a saturated server batches more events per epoll_wait and looks cheaper.
#
# Environment: BENCH_ROUNDS [5] BENCH_SECONDS [5] BENCH_CONNS [50]
#   SPIKE_RATE [40000; 0 = skip the fixed-rate phase]
#   BENCH_SERVER_CPU [1] BENCH_CLIENT_CPU [0]
#   SPIKE_BIN_DIR: build the two binaries there and keep them (default: tmp),
#     e.g. to use one as BENCH_STANDIN for bench/run.sh
#   BENCH_JSON [bench/results/spike.json]  BENCH_KEEP_TMP: keep the tmp dir
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

ROUNDS=${BENCH_ROUNDS:-5}
WRK_SECONDS=${BENCH_SECONDS:-5}
WRK_CONNS=${BENCH_CONNS:-50}
WRK_THREADS=1
SERVER_CPU=${BENCH_SERVER_CPU:-1}
CLIENT_CPU=${BENCH_CLIENT_CPU:-0}
OUT_JSON=${BENCH_JSON:-$ROOT/bench/results/spike.json}
SPIKE_RATE=${SPIKE_RATE:-40000}

for c in cc nginx wrk h2load taskset ps; do
    command -v "$c" >/dev/null || die "$c not found (make deps installs it)"
done

raise_nofile
bench_tmp_init
BIN=${SPIKE_BIN_DIR:-$BENCH_TMP/bin}
mkdir -p "$BIN" "$BENCH_TMP/results"

SRC=$ROOT/bench/spike/h2o_spike.c
CFLAGS=(-O2 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror)
cc "${CFLAGS[@]}" -o "$BIN/h2o_spike_uv" "$SRC" -lh2o -luv
cc "${CFLAGS[@]}" -DH2O_USE_LIBUV=0 -o "$BIN/h2o_spike_evloop" "$SRC" -lh2o-evloop
cc "${CFLAGS[@]}" -DH2O_USE_LIBUV=0 -DSPIKE_EMBED_UV -o "$BIN/h2o_spike_evloop_uv" "$SRC" -lh2o-evloop -luv

SERVERS=(nginx h2o-libuv h2o-evloop h2o-evloop+uv)
declare -A PID_OF PORT_OF
for s in "${SERVERS[@]}"; do PORT_OF[$s]=$(free_port); done

dir=$BENCH_TMP/nginx
mkdir -p "$dir"
{
    nginx_common "$dir"
    cat <<EOF
    server {
        listen 127.0.0.1:${PORT_OF[nginx]};
        location / { default_type text/plain; return 200 "hello world\n"; }
    }
}
EOF
} >"$dir/nginx.conf"
nginx_start "$dir/nginx.conf" "$dir" "$SERVER_CPU"
PID_OF[nginx]=$STARTED_PID
start_server "$BENCH_TMP/uv.log" "$SERVER_CPU" "$BIN/h2o_spike_uv" "${PORT_OF[h2o-libuv]}"
PID_OF[h2o-libuv]=$STARTED_PID
start_server "$BENCH_TMP/evloop.log" "$SERVER_CPU" "$BIN/h2o_spike_evloop" "${PORT_OF[h2o-evloop]}"
PID_OF[h2o-evloop]=$STARTED_PID
start_server "$BENCH_TMP/evloop_uv.log" "$SERVER_CPU" "$BIN/h2o_spike_evloop_uv" "${PORT_OF[h2o-evloop+uv]}"
PID_OF[h2o-evloop+uv]=$STARTED_PID

for s in "${SERVERS[@]}"; do
    wait_port "${PORT_OF[$s]}" "${PID_OF[$s]}" || die "$s did not start"
    got=$(check_url "http://127.0.0.1:${PORT_OF[$s]}/hello")
    [ "$got" = "200 12" ] || die "$s: GET /hello gave '$got', want '200 12'"
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$WRK_CONNS" -d1s "http://127.0.0.1:${PORT_OF[$s]}/hello" >/dev/null 2>&1
done
# the embedded libuv loop must really run (its 10 ms timer counts up)
ticks=$(curl -s -D - -o /dev/null "http://127.0.0.1:${PORT_OF[h2o-evloop+uv]}/" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-uv-ticks" { print $2 }')
[ "${ticks:-0}" -gt 50 ] || die "h2o-evloop+uv: embedded libuv timer did not run (x-uv-ticks '${ticks:-}')"

log "spike: ${ROUNDS} rounds x ${WRK_SECONDS}s, wrk -t$WRK_THREADS -c$WRK_CONNS on CPU $CLIENT_CPU, servers on CPU $SERVER_CPU"
SAMPLES=$BENCH_TMP/results/samples.txt
: >"$SAMPLES"
n=${#SERVERS[@]}
for r in $(seq "$ROUNDS"); do
    for i in $(seq 0 $((n - 1))); do
        s=${SERVERS[$(((i + r - 1) % n))]}
        raw=$BENCH_TMP/results/wrk-$s-$r.txt
        read -r rps p99 cpu reqs errs < <(run_wrk "${PID_OF[$s]}" "http://127.0.0.1:${PORT_OF[$s]}/hello" "$raw")
        echo "hello $s $r $rps $p99 $cpu $reqs $errs" >>"$SAMPLES"
        printf 'round %d/%d  %-13s %9.0f rps  p99 %7.0f us  %6.2f CPU-us/req%s\n' \
            "$r" "$ROUNDS" "$s" "$rps" "$p99" "$cpu" "$([ "$errs" -eq 0 ] || echo "  ERRORS $errs")" >&2
        sleep 0.5
    done
done

# run_h2load ROOTPID URL OUTFILE: fixed-rate HTTP/1.1 load; prints a sample
# line's numbers like run_wrk (p99 is -1: h2load reports no percentiles).
run_h2load() {
    local root=$1 url=$2 out=$3 t0 t1
    t0=$(cpu_ticks "$root")
    taskset -c "$CLIENT_CPU" h2load --h1 -t1 -c"$WRK_CONNS" --rps=$((SPIKE_RATE / WRK_CONNS)) \
        -D "$WRK_SECONDS" "$url" >"$out" 2>&1
    t1=$(cpu_ticks "$root")
    awk -v ticks=$((t1 - t0)) -v hz="$CLK_TCK" '
        /^finished in/ { rps = $4 + 0 }
        /^requests:/ { done = $8; err = $10 + $12 + $14 }  # succeeded; failed+errored+timeout
        END {
            if (done == 0) { print "0 -1 0 0 1"; exit }
            printf "%.1f -1 %.3f %d %d\n", rps, ticks * 1e6 / hz / done, done, err
        }' "$out"
}

if [ "$SPIKE_RATE" -gt 0 ]; then
    log "spike: fixed rate ${SPIKE_RATE} req/s (h2load --h1 -c$WRK_CONNS), ${ROUNDS} rounds x ${WRK_SECONDS}s"
    for r in $(seq "$ROUNDS"); do
        for i in $(seq 0 $((n - 1))); do
            s=${SERVERS[$(((i + r - 1) % n))]}
            raw=$BENCH_TMP/results/h2load-$s-$r.txt
            read -r rps p99 cpu reqs errs < <(run_h2load "${PID_OF[$s]}" "http://127.0.0.1:${PORT_OF[$s]}/hello" "$raw")
            echo "hello@${SPIKE_RATE} $s $r $rps $p99 $cpu $reqs $errs" >>"$SAMPLES"
            printf 'round %d/%d  %-13s %9.0f rps (fixed)  %6.2f CPU-us/req%s\n' \
                "$r" "$ROUNDS" "$s" "$rps" "$cpu" "$([ "$errs" -eq 0 ] || echo "  ERRORS $errs")" >&2
            sleep 0.5
        done
    done
fi

mkdir -p "$(dirname "$OUT_JSON")"
META=$(printf '{"generated": "%s", "rounds": %d, "seconds": %d, "wrk": "-t%d -c%d", "server_cpu": %d, "client_cpu": %d, "h2o": "%s", "nginx": "%s", "kernel": "%s"}' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$ROUNDS" "$WRK_SECONDS" "$WRK_THREADS" "$WRK_CONNS" \
    "$SERVER_CPU" "$CLIENT_CPU" "$(dpkg-query -W -f='${Version}' libh2o-dev 2>/dev/null || echo '?')" \
    "$(nginx -v 2>&1 | sed 's/.*nginx\///')" "$(uname -r)")
echo
"$PY" "$ROOT/bench/report.py" --samples "$SAMPLES" --baseline nginx --json "$OUT_JSON" --meta "$META"
"$PY" - "$OUT_JSON" <<'EOF'
import json, sys
print()
for sc, r in json.load(open(sys.argv[1]))["scenarios"].items():
    ev = r["h2o-evloop"]
    for name in ("h2o-libuv", "h2o-evloop+uv"):
        o = r[name]
        d = o["cpu_us_per_req_median"] / ev["cpu_us_per_req_median"] - 1
        print(f"{sc}: {name} vs h2o-evloop: CPU/request {d:+.1%}, rps {o['rps_median'] / ev['rps_median'] - 1:+.1%}")
print("(decision threshold: the libuv binding costing more than +10% CPU/request)")
EOF
echo "JSON: $OUT_JSON"
