#!/usr/bin/env bash
# verge vs nginx, same run, same cores (see bench/README.md).
#
# Scenarios, each measured with wrk (-t1 -c50, pinned to the client CPU)
# against a server pinned to the server CPU, rounds interleaving the two:
#   hello   small fixed response   GET /hello      ("hello world\n")
#   static  ~1 KiB static file     GET /1k.bin     (public/1k.bin)
#   proxy   reverse proxy          GET /proxy/1k   -> keep-alive nginx origin
#   cache200, cache16k  cache hits  GET /cache/200.bin, /cache/16k.bin: a proxy
#           route with a cache (verge: cache: {ttl: 1h}; nginx: proxy_cache
#           on tmpfs; varnish: malloc storage) in front of the same origin,
#           warmed by one request; varnish is a third server for these only
# then, per scenario, latency at a fixed sub-saturation rate that is the same
# for both servers (h2load --rps, open loop, pinned to the client CPU; rate
# from the wrk medians), plus memory per idle keep-alive connection
# (bench/idle_conns.py).
#
# Environment (defaults in brackets):
#   BENCH_ROUNDS [5]  BENCH_SECONDS [5]  BENCH_CONNS [50]  BENCH_WARMUP [1]
#   BENCH_FIXED_RATE [auto]: req/s of the fixed-rate phase; auto = FRACTION x
#       the lower of the two servers' median wrk rps, per scenario, rounded to
#       100; N = N for every scenario; "hello=N static=M" per scenario (others
#       auto); 0 = skip the phase
#   BENCH_FIXED_FRACTION [0.5]  BENCH_FIXED_MAX_RATE [25000; 0 = no cap]: caps
#       the auto rate so that h2load (~2x wrk's CPU per request) stays well
#       below saturating the client core
#   BENCH_FIXED_SECONDS [3] (measured window)
#   BENCH_FIXED_WARMUP [1] (connection ramp-up, not measured)
#   BENCH_FIXED_CLIENT_RPS [20] (per connection: conns = ceil(rate / this))
#   BENCH_FIXED_ROUNDS [BENCH_ROUNDS]
#   BENCH_NGINX_KEEPALIVE [32]: the nginx peer's upstream "keepalive" (idle
#       origin connections cached; verge keeps every idle one for 30 s)
#   BENCH_SCENARIOS ["hello static proxy lua lua1k fetch cache200 cache16k"]
#   BENCH_IDLE_CONNS [10000; 0 = skip]
#   BENCH_CACHE_OBJECTS [200000; 0 = skip]: memory per cached 200-byte object
#       (bench/cache_mem.py) on fresh verge and nginx instances; 1000000 for
#       the figure quoted in the issue
#   BENCH_VARNISH [1; 0 = no varnish in the cache scenarios]
#   BENCH_SERVER_CPU [1]  BENCH_CLIENT_CPU [0]
#   VERGE [build/verge]   BENCH_STANDIN: a binary run as "BIN PORT" in place
#       of verge (e.g. the h2o spike) to exercise the harness; results then go
#       to bench/results/standin.json
#   BENCH_JSON [bench/results/latest.json]  BENCH_KEEP_TMP: keep the tmp dir
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

ROUNDS=${BENCH_ROUNDS:-5}
WRK_SECONDS=${BENCH_SECONDS:-5}
WRK_CONNS=${BENCH_CONNS:-50}
WRK_THREADS=1
WARMUP=${BENCH_WARMUP:-1}
SCENARIOS=${BENCH_SCENARIOS:-hello static proxy lua lua1k fetch cache200 cache16k}
CACHE_OBJECTS=${BENCH_CACHE_OBJECTS:-200000}
WANT_VARNISH=${BENCH_VARNISH:-1}
IDLE_CONNS=${BENCH_IDLE_CONNS:-10000}
SERVER_CPU=${BENCH_SERVER_CPU:-1}
CLIENT_CPU=${BENCH_CLIENT_CPU:-0}
VERGE=${VERGE:-$ROOT/build/verge}
STANDIN=${BENCH_STANDIN:-}
FIXED_RATE_SPEC=${BENCH_FIXED_RATE:-auto}
FIXED_FRACTION=${BENCH_FIXED_FRACTION:-0.5}
FIXED_MAX_RATE=${BENCH_FIXED_MAX_RATE:-25000}
FIXED_SECONDS=${BENCH_FIXED_SECONDS:-3}
FIXED_WARMUP=${BENCH_FIXED_WARMUP:-1}
FIXED_CLIENT_RPS=${BENCH_FIXED_CLIENT_RPS:-20}
FIXED_ROUNDS=${BENCH_FIXED_ROUNDS:-$ROUNDS}
NGINX_KEEPALIVE=${BENCH_NGINX_KEEPALIVE:-32}
SUBJECT=verge
DEFAULT_JSON=$ROOT/bench/results/latest.json
if [ -n "$STANDIN" ]; then
    SUBJECT=standin
    DEFAULT_JSON=$ROOT/bench/results/standin.json
fi
OUT_JSON=${BENCH_JSON:-$DEFAULT_JSON}

for c in nginx wrk taskset curl ps; do
    command -v "$c" >/dev/null || die "$c not found (make deps installs it)"
done
if [ "$FIXED_RATE_SPEC" != 0 ] && [ "$FIXED_ROUNDS" -gt 0 ]; then
    command -v h2load >/dev/null || die "h2load not found (make deps installs nghttp2-client; BENCH_FIXED_RATE=0 skips the fixed-rate phase)"
fi
[ "$(nproc)" -ge 2 ] || log "bench: warning: fewer than 2 CPUs; client and server share a core"

declare -A PATH_OF=([hello]=/hello [static]=/1k.bin [proxy]=/proxy/1k [lua]=/lua [lua1k]=/lua1k [fetch]=/fetch
    [cache200]=/cache/200.bin [cache16k]=/cache/16k.bin)
declare -A BYTES_OF=([hello]=12 [static]=1024 [proxy]=1024 [lua]=11 [lua1k]=1024 [fetch]=1024
    [cache200]=200 [cache16k]=16384)
for sc in $SCENARIOS; do
    [ -n "${PATH_OF[$sc]:-}" ] || die "unknown scenario '$sc' (hello static proxy lua lua1k fetch cache200 cache16k)"
done
is_cache_scenario() { case $1 in cache*) return 0 ;; esac; return 1; }
CACHE_SCENARIOS=
for sc in $SCENARIOS; do is_cache_scenario "$sc" && CACHE_SCENARIOS+=" $sc"; done

raise_nofile
bench_tmp_init
APP=$BENCH_TMP/app
mkdir -p "$APP/public" "$BENCH_TMP/results"
head -c 1024 /dev/urandom >"$APP/public/1k.bin"
chmod -R a+rX "$APP"

ORIGIN_PORT=$(free_port)
BODY_1K=$(printf 'x%.0s' $(seq 1023))
# the cache scenarios' objects, served by the origin as static files with
# Cache-Control: max-age=3600 (and nginx's own ETag/Last-Modified)
mkdir -p "$BENCH_TMP/origin-files/cache"
head -c 200 /dev/urandom >"$BENCH_TMP/origin-files/cache/200.bin"
head -c 16384 /dev/urandom >"$BENCH_TMP/origin-files/cache/16k.bin"
chmod -R a+rX "$BENCH_TMP/origin-files"
BODY_200=$(printf 'x%.0s' $(seq 199))
bench_shm_dir

# limits: like nginx's worker_connections 16384 / keepalive_timeout 120s, so
# neither server refuses or times out the idle test's 10,000 connections
# (verge's defaults are 10000 connections, and h2o 2.2.5 closes idle HTTP/1
# keep-alive connections after header_timeout).
cat >"$APP/verge.yaml" <<EOF
name: bench
limits: {max_connections: 20000, header_timeout: 120s}
routes:
  - exact: /hello
    respond: {status: 200, body: "hello world\n", content_type: text/plain}
  - path: /proxy
    proxy: http://127.0.0.1:$ORIGIN_PORT
    strip_prefix: /proxy
  - path: /cache
    proxy: http://127.0.0.1:$ORIGIN_PORT
    cache: {ttl: 1h}
  - exact: /lua
    handler: bench.lua:lua
  - exact: /lua1k
    handler: bench.lua:lua1k
  - exact: /fetch
    handler: bench.lua:fetch
  - path: /
    static: public
EOF

# The functions scenario (issue 3): read a header, look a key up in the
# node-local shared table, set a response header, return a short body. The
# nginx peer runs the same logic in lua-nginx-module (LuaJIT).
cat >"$APP/bench.lua" <<'LUA'
verge.shared.set("user:anon", "gold")

function lua(req)
  local u = req.headers["x-user"] or "anon"
  local tier = verge.shared.get("user:" .. u) or "none"
  return {status = 200, headers = {["x-tier"] = tier}, body = "hello " .. u .. "\n"}
end

-- The lua1k scenario: the fetch scenario's handler without the fetch (the
-- same 1 KiB answer), so that fetch - lua1k is what the subrequest costs.
BODY_1K = string.rep("x", 1023) .. "\n"
function lua1k(req)
  return {status = 200, body = BODY_1K}
end

-- The fetch scenario: one subrequest to the keep-alive origin, its body
-- returned (compare with the proxy scenario: the same origin, proxied).
function fetch(req)
  local r = verge.fetch(ORIGIN .. "/1k")
  return {status = r.status, body = r.body}
end
LUA
echo "ORIGIN = \"http://127.0.0.1:$ORIGIN_PORT\"" >>"$APP/bench.lua"

# --- origin for the proxy scenario: shares the client CPU with wrk -----------
mkdir -p "$BENCH_TMP/origin"
{
    nginx_common "$BENCH_TMP/origin"
    cat <<EOF
    server {
        listen 127.0.0.1:$ORIGIN_PORT;
        location / { default_type application/octet-stream; return 200 "$BODY_1K\n"; }
        location /cache/ {
            root $BENCH_TMP/origin-files;
            default_type application/octet-stream;
            add_header Cache-Control "max-age=3600";
        }
        # bench/cache_mem.py: any number of distinct 200-byte objects
        location /cache/obj/ {
            default_type application/octet-stream;
            add_header Cache-Control "max-age=3600";
            return 200 "$BODY_200\n";
        }
    }
}
EOF
} >"$BENCH_TMP/origin/nginx.conf"
nginx_start "$BENCH_TMP/origin/nginx.conf" "$BENCH_TMP/origin" "$CLIENT_CPU"
ORIGIN_PID=$STARTED_PID
wait_port "$ORIGIN_PORT" "$ORIGIN_PID" || die "origin nginx did not start: $(cat "$BENCH_TMP/origin/error.log")"

# --- servers under test ------------------------------------------------------
# The functions scenarios' locations, only when they run (they need the
# lua module, loaded only then).
LUA_LOCATIONS=
case " $SCENARIOS " in
*" lua "* | *" lua1k "* | *" fetch "*)
    LUA_LOCATIONS=$(cat <<'EOF'
        location = /lua {
            default_type text/plain;
            content_by_lua_block {
                local u = ngx.var.http_x_user or "anon"
                local tier = ngx.shared.kv:get("user:" .. u) or "none"
                local body = "hello " .. u .. "\n"
                ngx.header["X-Tier"] = tier
                ngx.header["Content-Length"] = #body
                ngx.print(body)
            }
        }
        location = /lua1k {
            content_by_lua_block {
                local body = string.rep("x", 1023) .. "\n"
                ngx.header["Content-Length"] = #body
                ngx.print(body)
            }
        }
        location = /fetch {
            content_by_lua_block {
                local r = ngx.location.capture("/proxy/1k")
                ngx.status = r.status
                ngx.header["Content-Length"] = #r.body
                ngx.print(r.body)
            }
        }
EOF
)
    ;;
esac

# start_nginx_peer NAME PORT [KEYS_ZONE_SIZE]: the nginx we compare with,
# configured like the verge app above (keep-alive upstream pool, sendfile, no
# access log). /cache/ is proxied through proxy_cache: keys in a keys_zone
# (KEYS_ZONE_SIZE, default 16m: ~8,000 keys per MiB), bodies in files on
# tmpfs (SHM_DIR/NAME), valid 1h, X-Cache-Status says HIT or MISS.
start_nginx_peer() {
    local dir=$BENCH_TMP/$1 port=$2 zone=${3:-16m}
    mkdir -p "$dir"
    rm -rf "${SHM_DIR:?}/$1"
    mkdir -p "$SHM_DIR/$1"
    {
        case " $SCENARIOS " in
        *" lua "* | *" lua1k "* | *" fetch "*)
            echo "load_module /usr/lib/nginx/modules/ndk_http_module.so;"
            echo "load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;"
            ;;
        esac
        nginx_common "$dir"
        case " $SCENARIOS " in
        *" lua "* | *" lua1k "* | *" fetch "*)
            echo '    lua_shared_dict kv 1m;'
            echo '    init_by_lua_block { ngx.shared.kv:set("user:anon", "gold") }'
            ;;
        esac
        cat <<EOF
    sendfile on;
    upstream origin {
        server 127.0.0.1:$ORIGIN_PORT;
        keepalive $NGINX_KEEPALIVE;
        keepalive_requests 1000000;
    }
    proxy_cache_path $SHM_DIR/$1 levels=1:2 keys_zone=bench:$zone inactive=1h max_size=16g use_temp_path=off;
    server {
        listen 127.0.0.1:$port;
        location = /hello { default_type text/plain; return 200 "hello world\n"; }
$LUA_LOCATIONS
        location /proxy/ {
            proxy_pass http://origin/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
        location /cache/ {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache bench;
            proxy_cache_valid 200 1h;
            add_header X-Cache-Status \$upstream_cache_status;
        }
        location / { root $APP/public; default_type application/octet-stream; }
    }
}
EOF
    } >"$dir/nginx.conf"
    nginx_start "$dir/nginx.conf" "$dir" "$SERVER_CPU"
    wait_port "$port" "$STARTED_PID" || die "nginx did not start: $(cat "$dir/error.log")"
}

# start_subject NAME PORT [ARGS...]: verge (or the stand-in) on SERVER_CPU;
# ARGS go to `verge node`.
start_subject() {
    local logf=$BENCH_TMP/$1.log port=$2
    shift 2
    if [ -n "$STANDIN" ]; then
        start_server "$logf" "$SERVER_CPU" "$STANDIN" "$port"
    else
        start_server "$logf" "$SERVER_CPU" "$VERGE" node --app "$APP" \
            --listen "127.0.0.1:$port" --workers 1 --access-log off "$@"
    fi
    if ! wait_port "$port" "$STARTED_PID"; then
        log "bench: $SUBJECT did not start listening on $port; its output:"
        sed 's/^/    /' "$logf" >&2
        return 1
    fi
}

# start_varnish_peer NAME PORT: varnish in front of the same origin (-b: no
# VCL, so the builtin rules: GET/HEAD without cookies or Authorization are
# cached for the origin's max-age).
start_varnish_peer() {
    local dir=$BENCH_TMP/$1 port=$2
    varnish_start "$dir" "$port" "$ORIGIN_PORT" "$SERVER_CPU"
    wait_port "$port" "$STARTED_PID" || { log "bench: varnish did not start: $(tail -5 "$dir/varnishd.log")"; return 1; }
}

SERVERS=(nginx)
declare -A PID_OF PORT_OF ENABLED LOG_OF=([nginx]=$BENCH_TMP/nginx/error.log [$SUBJECT]=$BENCH_TMP/$SUBJECT.log
    [varnish]=$BENCH_TMP/varnish/varnishd.log)
PORT_OF[nginx]=$(free_port)
start_nginx_peer nginx "${PORT_OF[nginx]}"
PID_OF[nginx]=$STARTED_PID

if [ -z "$STANDIN" ] && [ ! -x "$VERGE" ]; then
    log "bench: $VERGE not found or not executable — verge is SKIPPED, nginx only"
    log "bench: (build it with 'make', or set BENCH_STANDIN=<binary taking PORT> to test the harness)"
else
    PORT_OF[$SUBJECT]=$(free_port)
    if start_subject "$SUBJECT" "${PORT_OF[$SUBJECT]}"; then
        PID_OF[$SUBJECT]=$STARTED_PID
        SERVERS=("$SUBJECT" nginx)
    else
        log "bench: $SUBJECT SKIPPED"
    fi
fi

# varnish: a third server, for the cache scenarios only
if [ -n "$CACHE_SCENARIOS" ] && [ "$WANT_VARNISH" != 0 ]; then
    if ! command -v varnishd >/dev/null; then
        log "bench: varnishd not found (make deps installs varnish) — varnish SKIPPED"
    else
        PORT_OF[varnish]=$(free_port)
        if start_varnish_peer varnish "${PORT_OF[varnish]}"; then
            PID_OF[varnish]=$STARTED_PID
            SERVERS+=(varnish)
        else
            log "bench: varnish SKIPPED"
        fi
    fi
fi

# Each server must answer each scenario correctly before it is measured; a
# missing feature skips that scenario for that server, not the whole run.
# Cache scenarios: the first GET warms the cache, the checked one must be a
# hit by the server's own account (check_hit), or the scenario would measure
# the proxy path.
for srv in "${SERVERS[@]}"; do
    for sc in $SCENARIOS; do
        if [ "$srv" = varnish ] && ! is_cache_scenario "$sc"; then continue; fi
        url="http://127.0.0.1:${PORT_OF[$srv]}${PATH_OF[$sc]}"
        if is_cache_scenario "$sc"; then check_url "$url" >/dev/null; fi
        got=$(check_url "$url")
        if [ "$got" != "200 ${BYTES_OF[$sc]}" ]; then
            log "bench: $srv: scenario $sc SKIPPED: GET ${PATH_OF[$sc]} gave status/bytes '$got', want '200 ${BYTES_OF[$sc]}'"
        elif is_cache_scenario "$sc" && ! check_hit "$srv" "$url"; then
            log "bench: $srv: scenario $sc SKIPPED: GET ${PATH_OF[$sc]} is not served from the cache after a warm-up request"
        else
            ENABLED[$srv:$sc]=1
        fi
    done
done

url_of() { echo "http://127.0.0.1:${PORT_OF[$1]}${PATH_OF[$2]}"; }

log "bench: ${ROUNDS} rounds x ${WRK_SECONDS}s, wrk -t$WRK_THREADS -c$WRK_CONNS on CPU $CLIENT_CPU, servers on CPU $SERVER_CPU"
if [ "$WARMUP" != 0 ]; then
    for sc in $SCENARIOS; do
        for srv in "${SERVERS[@]}"; do
            [ -n "${ENABLED[$srv:$sc]:-}" ] || continue
            taskset -c "$CLIENT_CPU" wrk -t1 -c"$WRK_CONNS" -d"${WARMUP}s" "$(url_of "$srv" "$sc")" >/dev/null 2>&1 || true
        done
    done
fi

# alive SRV: true if SRV still runs; otherwise says so once, with the tail of
# its log, and disables all its scenarios.
alive() {
    local srv=$1 rc=0 s
    kill -0 "${PID_OF[$srv]}" 2>/dev/null && return 0
    wait "${PID_OF[$srv]}" || rc=$?
    log "bench: $srv DIED during the run (exit status $rc; >128 = signal N-128); its remaining runs are skipped. Last lines of ${LOG_OF[$srv]}:"
    tail -5 "${LOG_OF[$srv]}" | sed 's/^/    /' >&2
    for s in $SCENARIOS; do unset "ENABLED[$srv:$s]"; done
    return 1
}

# order_of ROUND: the servers in this round's order — who goes first
# rotates (with two servers: alternates), so none always runs on a warmer
# machine.
order_of() {
    local n=${#SERVERS[@]} i out=()
    for ((i = 0; i < n; i++)); do out+=("${SERVERS[$(((i + $1 + 1) % n))]}"); done
    echo "${out[*]}"
}

SAMPLES=$BENCH_TMP/results/samples.txt
: >"$SAMPLES"
for r in $(seq "$ROUNDS"); do
    read -r -a order <<<"$(order_of "$r")"
    for sc in $SCENARIOS; do
        for srv in "${order[@]}"; do
            [ -n "${ENABLED[$srv:$sc]:-}" ] || continue
            alive "$srv" || continue
            raw=$BENCH_TMP/results/wrk-$sc-$srv-$r.txt
            read -r rps p99 cpu reqs errs < <(run_wrk "${PID_OF[$srv]}" "$(url_of "$srv" "$sc")" "$raw")
            echo "$sc $srv $r $rps $p99 $cpu $reqs $errs" >>"$SAMPLES"
            printf 'round %d/%d  %-8s %-7s %9.0f rps  p99 %8.0f us  %6.2f CPU-us/req%s\n' \
                "$r" "$ROUNDS" "$sc" "$srv" "$rps" "$p99" "$cpu" \
                "$([ "$errs" -eq 0 ] || echo "  ERRORS $errs")" >&2
            sleep 0.5
        done
    done
done

# --- fixed-rate latency: same open-loop rate for both servers ---------------
# wrk's p99 above is taken closed-loop at saturation: it measures how 50
# always-waiting connections queue, not the latency a client sees at a load
# the server can carry. Here h2load offers every server the same rate, well
# below what either sustained, and the latency percentiles come from its
# per-request log (bench/latency.py). See bench/README.md.

# median_rps SCENARIO SERVER: median of that server's wrk rps (0: no samples).
median_rps() {
    awk -v sc="$1" -v srv="$2" '$1 == sc && $2 == srv { print $4 }' "$SAMPLES" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# fixed_rate_of SCENARIO: the phase's rate for SCENARIO (0: not measured).
fixed_rate_of() {
    local sc=$1 kv srv m low=""
    if [[ $FIXED_RATE_SPEC =~ ^[0-9]+$ ]]; then echo "$FIXED_RATE_SPEC"; return; fi
    for kv in $FIXED_RATE_SPEC; do
        if [ "${kv%%=*}" = "$sc" ]; then echo "${kv#*=}"; return; fi
    done
    for srv in "${SERVERS[@]}"; do
        m=$(median_rps "$sc" "$srv")
        if awk -v m="$m" -v l="${low:-inf}" 'BEGIN { exit !(m > 0 && (l == "inf" || m < l)) }'; then low=$m; fi
    done
    awk -v m="${low:-0}" -v f="$FIXED_FRACTION" -v cap="$FIXED_MAX_RATE" \
        'BEGIN { r = int(m * f / 100 + 0.5) * 100; if (cap > 0 && r > cap) r = cap; printf "%d\n", r }'
}

FIXED=$BENCH_TMP/results/fixed.txt
: >"$FIXED"
declare -A RATE_OF CONNS_OF
if [ "$FIXED_RATE_SPEC" != 0 ] && [ "$FIXED_ROUNDS" -gt 0 ]; then
    for sc in $SCENARIOS; do
        RATE_OF[$sc]=$(fixed_rate_of "$sc")
        [[ ${RATE_OF[$sc]} =~ ^[0-9]+$ ]] || die "BENCH_FIXED_RATE: bad rate '${RATE_OF[$sc]}' for $sc"
        CONNS_OF[$sc]=$(((RATE_OF[$sc] + FIXED_CLIENT_RPS - 1) / FIXED_CLIENT_RPS))
        if [ "${RATE_OF[$sc]}" -gt 0 ]; then
            log "bench: fixed rate $sc: ${RATE_OF[$sc]} req/s over ${CONNS_OF[$sc]} connections (h2load --h1 --rps, CPU $CLIENT_CPU)"
        fi
    done
    log "bench: fixed-rate phase: ${FIXED_ROUNDS} rounds x (${FIXED_WARMUP}s ramp-up + ${FIXED_SECONDS}s measured)"
    for r in $(seq "$FIXED_ROUNDS"); do
        read -r -a order <<<"$(order_of "$r")"
        for sc in $SCENARIOS; do
            [ "${RATE_OF[$sc]}" -gt 0 ] || continue
            for srv in "${order[@]}"; do
                [ -n "${ENABLED[$srv:$sc]:-}" ] || continue
                alive "$srv" || continue
                prefix=$BENCH_TMP/results/h2load-$sc-$srv-$r
                read -r reqs got p50 p99 p999 max cpu errs cli_busy srv_busy < <(run_fixed "${PID_OF[$srv]}" \
                    "$(url_of "$srv" "$sc")" "${RATE_OF[$sc]}" "${CONNS_OF[$sc]}" "$prefix")
                echo "$sc $srv $r ${RATE_OF[$sc]} ${CONNS_OF[$sc]} $got $p50 $p99 $p999 $max $cpu $reqs $errs $cli_busy $srv_busy" >>"$FIXED"
                printf 'fixed %d/%d  %-8s %-7s %7.0f/%d req/s  p50 %6.0f  p99 %6.0f  p99.9 %6.0f us  %6.2f CPU-us/req  cores %3d%%/%3d%%%s\n' \
                    "$r" "$FIXED_ROUNDS" "$sc" "$srv" "$got" "${RATE_OF[$sc]}" "$p50" "$p99" "$p999" "$cpu" \
                    "$cli_busy" "$srv_busy" "$([ "$errs" -eq 0 ] || echo "  ERRORS $errs")" >&2
                sleep 0.5
            done
        done
    done
fi

# --- (d) memory per idle keep-alive connection, on fresh instances ----------
IDLE=$BENCH_TMP/results/idle.jsonl
: >"$IDLE"
if [ "$IDLE_CONNS" -gt 0 ]; then
    for srv in "${SERVERS[@]}"; do
        [ "$srv" != varnish ] || continue
        [ -n "${ENABLED[$srv:hello]:-}" ] || { log "bench: $srv: idle test skipped (no /hello)"; continue; }
        stop_pid "${PID_OF[$srv]}"
        port=$(free_port)
        if [ "$srv" = nginx ]; then
            start_nginx_peer nginx-idle "$port"
        else
            start_subject "$srv-idle" "$port" || continue
        fi
        pid=$STARTED_PID
        sleep 0.5
        log "bench: $srv: holding $IDLE_CONNS idle keep-alive connections"
        if line=$(timeout 150 taskset -c "$CLIENT_CPU" "$PY" "$ROOT/bench/idle_conns.py" \
            --port "$port" --pid "$pid" --count "$IDLE_CONNS" --path /hello); then
            echo "{\"server\": \"$srv\", ${line#\{}" >>"$IDLE"
        else
            log "bench: $srv: idle connection test failed"
        fi
        stop_pid "$pid"
    done
fi

# --- memory per cached object, on fresh instances -------------------------
# N distinct 200-byte objects (origin /cache/obj/I) into each server's cache;
# (memory after - before) / N, see bench/cache_mem.py. verge gets a memory
# budget large enough that nothing is evicted (4 KiB per object), nginx a
# keys_zone of ~4,000 keys per MiB (twice its documented density).
CACHEMEM=$BENCH_TMP/results/cache_mem.jsonl
: >"$CACHEMEM"
if [ "$CACHE_OBJECTS" -gt 0 ]; then
    for srv in "${SERVERS[@]}"; do
        [ "$srv" != varnish ] || continue
        [ -n "${PID_OF[$srv]:-}" ] && kill -0 "${PID_OF[$srv]}" 2>/dev/null && stop_pid "${PID_OF[$srv]}"
        port=$(free_port)
        shmdir=
        if [ "$srv" = nginx ]; then
            start_nginx_peer nginx-mem "$port" "$((CACHE_OBJECTS / 4000 + 16))m"
            shmdir=$SHM_DIR/nginx-mem
        else
            start_subject "$srv-mem" "$port" --cache-memory "$(((CACHE_OBJECTS * 4 + 1023) / 1024 + 64))m" || {
                log "bench: $srv: memory per cached object SKIPPED (did not start with --cache-memory)"
                continue
            }
        fi
        pid=$STARTED_PID
        sleep 0.5
        log "bench: $srv: filling the cache with $CACHE_OBJECTS objects of 200 bytes"
        if line=$(timeout $((CACHE_OBJECTS / 500 + 120)) taskset -c "$CLIENT_CPU" "$PY" "$ROOT/bench/cache_mem.py" \
            --port "$port" --pid "$pid" --count "$CACHE_OBJECTS" --server "$srv" ${shmdir:+--tmpfs-dir "$shmdir"}); then
            echo "{\"server\": \"$srv\", ${line#\{}" >>"$CACHEMEM"
        else
            log "bench: $srv: memory per cached object failed or skipped"
        fi
        stop_pid "$pid"
    done
fi

mkdir -p "$(dirname "$OUT_JSON")"
META=$(printf '{"generated": "%s", "rounds": %d, "seconds": %d, "wrk": "-t%d -c%d", "server_cpu": %d, "client_cpu": %d, "subject": "%s", "nginx": "%s", "kernel": "%s", "nproc": %d, "idle_conns": %d, "nginx_upstream_keepalive": %d, "cache_objects": %d, "varnish": "%s", "fixed_rate": {"spec": "%s", "fraction": %s, "max_rate": %d, "rounds": %d, "seconds": %s, "warmup": %s, "client_rps": %d, "h2load": "%s"}}' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$ROUNDS" "$WRK_SECONDS" "$WRK_THREADS" "$WRK_CONNS" \
    "$SERVER_CPU" "$CLIENT_CPU" "${STANDIN:-$VERGE}" "$(nginx -v 2>&1 | sed 's/.*nginx\///')" \
    "$(uname -r)" "$(nproc)" "$IDLE_CONNS" "$NGINX_KEEPALIVE" "$CACHE_OBJECTS" \
    "$( (varnishd -V 2>&1 || echo '?') | head -1 | sed 's/^varnishd (\(varnish-[^ ]*\).*/\1/')" "$FIXED_RATE_SPEC" "$FIXED_FRACTION" "$FIXED_MAX_RATE" "$FIXED_ROUNDS" \
    "$FIXED_SECONDS" "$FIXED_WARMUP" "$FIXED_CLIENT_RPS" \
    "$( (h2load --version 2>/dev/null || echo '?') | sed 's/.*nghttp2\///')")
echo
"$PY" "$ROOT/bench/report.py" --samples "$SAMPLES" --fixed "$FIXED" --idle "$IDLE" --baseline nginx \
    --cache-mem "$CACHEMEM" --subject "$SUBJECT" --best-of nginx,varnish \
    --json "$OUT_JSON" --meta "$META" \
    --title "wrk -t$WRK_THREADS -c$WRK_CONNS, closed loop at saturation (p99 = queueing at overload, see README)"
echo
echo "raw wrk/h2load output: $BENCH_TMP/results (kept only with BENCH_KEEP_TMP=1); JSON: $OUT_JSON"
