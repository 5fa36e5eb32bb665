#!/bin/bash
# What tracing costs a proxied request (issue 7's floors: <= 1% throughput
# at 1% sampling, <= 5% at 100%): three verge nodes in the same run, on the
# same server CPU, proxying /proxy to one keep-alive nginx origin —
#   off     --trace-sample off   (no trace at all: the baseline)
#   1%      --trace-sample 0.01  (the default)
#   100%    --trace-sample 1     (every request's record made and ringed)
# Rounds alternate the three so drift hits each alike; wrk -t1 -c50 pinned
# to the client CPU; reported: median rps and median server CPU per request
# per configuration, and each one's cost against "off" (CPU/request is the
# fair figure when wrk is the bottleneck). Also prints bench/trace_span.c's
# per-span figures. Results: bench/results/trace.json.
#
#   bench/trace_overhead.sh            BENCH_ROUNDS [7] BENCH_SECONDS [5]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

ROUNDS=${BENCH_ROUNDS:-7}
WRK_SECONDS=${BENCH_SECONDS:-5}
WRK_THREADS=1
WRK_CONNS=50
SERVER_CPU=${BENCH_SERVER_CPU:-1}
CLIENT_CPU=${BENCH_CLIENT_CPU:-0}
VERGE=${VERGE:-build/verge}
[ -x "$VERGE" ] || make -j2 all >&2
make -s build/bench/trace_span >&2
bench_tmp_init
raise_nofile

ORIGIN_PORT=$(free_port)
BODY_1K=$(printf 'x%.0s' $(seq 1023))
mkdir -p "$BENCH_TMP/origin" "$BENCH_TMP/app"
{
    nginx_common "$BENCH_TMP/origin"
    cat <<EOF
    server {
        listen 127.0.0.1:$ORIGIN_PORT;
        location / { default_type application/octet-stream; return 200 "$BODY_1K\n"; }
    }
}
EOF
} >"$BENCH_TMP/origin/nginx.conf"
nginx_start "$BENCH_TMP/origin/nginx.conf" "$BENCH_TMP/origin" "$CLIENT_CPU"
wait_port "$ORIGIN_PORT" "$STARTED_PID" || die "origin nginx did not start"

cat >"$BENCH_TMP/app/verge.yaml" <<EOF
name: bench
routes:
  - path: /proxy
    proxy: http://127.0.0.1:$ORIGIN_PORT
    strip_prefix: /proxy
EOF

declare -A PORT PID
CONFIGS=(off 1pct 100pct)
declare -A SAMPLE=([off]=off [1pct]=0.01 [100pct]=1)
for c in "${CONFIGS[@]}"; do
    PORT[$c]=$(free_port)
    start_server "$BENCH_TMP/verge-$c.log" "$SERVER_CPU" "$VERGE" node --app "$BENCH_TMP/app" \
        --listen "127.0.0.1:${PORT[$c]}" --workers 1 --access-log off --state-dir "$BENCH_TMP/state-$c" \
        --trace-sample "${SAMPLE[$c]}"
    PID[$c]=$STARTED_PID
    wait_port "${PORT[$c]}" "${PID[$c]}" || die "verge ($c) did not start: $(cat "$BENCH_TMP/verge-$c.log")"
done

log "bench: trace overhead, ${ROUNDS} rounds x ${WRK_SECONDS}s, wrk -t1 -c50 on CPU $CLIENT_CPU, verge on CPU $SERVER_CPU"
for c in "${CONFIGS[@]}"; do # warm-up: pools, caches
    taskset -c "$CLIENT_CPU" wrk -t1 -c50 -d2s "http://127.0.0.1:${PORT[$c]}/proxy/x" >/dev/null 2>&1 || true
done
: >"$BENCH_TMP/rows"
for r in $(seq "$ROUNDS"); do
    for c in "${CONFIGS[@]}"; do
        read -r rps p99 cpu reqs errs < <(run_wrk "${PID[$c]}" "http://127.0.0.1:${PORT[$c]}/proxy/x" "$BENCH_TMP/wrk")
        [ "$errs" = 0 ] || die "$c: $errs errors in round $r"
        echo "$c $rps $cpu" >>"$BENCH_TMP/rows"
        log "  round $r $c: $rps rps, $cpu us CPU/request"
    done
done

SPAN=$(taskset -c "$SERVER_CPU" build/bench/trace_span)
mkdir -p bench/results
"$PY" - "$BENCH_TMP/rows" "$SPAN" "$ROUNDS" <<'PY' | tee bench/results/trace.json
import json, statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {}
# medians, and the best round of each (the host's noise only ever adds:
# the least CPU a configuration needed is its cleanest measurement)
for c in ("off", "1pct", "100pct"):
    cpu = [float(r[2]) for r in rows if r[0] == c]
    rps = [float(r[1]) for r in rows if r[0] == c]
    med[c] = {"rps": statistics.median(rps), "cpu_us_per_req": statistics.median(cpu),
              "best_rps": max(rps), "best_cpu_us_per_req": min(cpu)}
for c in ("1pct", "100pct"):
    med[c]["throughput_cost_pct"] = round(100 * (1 - med[c]["rps"] / med["off"]["rps"]), 2)
    med[c]["cpu_cost_pct"] = round(100 * (med[c]["cpu_us_per_req"] / med["off"]["cpu_us_per_req"] - 1), 2)
    med[c]["best_throughput_cost_pct"] = round(100 * (1 - med[c]["best_rps"] / med["off"]["best_rps"]), 2)
    med[c]["best_cpu_cost_pct"] = round(100 * (med[c]["best_cpu_us_per_req"] / med["off"]["best_cpu_us_per_req"] - 1), 2)
print(json.dumps({"rounds": int(sys.argv[3]), "proxy": med, "span": json.loads(sys.argv[2])}, indent=2))
PY
