# shellcheck shell=bash
# Helpers shared by bench/run.sh and bench/spike/run.sh. Sourced, not run.
#
# What must stay true:
#  - every process we start is recorded in BENCH_PIDS and stopped by pid in
#    bench_cleanup; nothing is ever killed by name;
#  - every server listens on 127.0.0.1 only, on a port the kernel handed us;
#  - all load goes to 127.0.0.1 and is bounded in time: wrk by its -d, h2load
#    (run_fixed) by its -n and a `timeout`.

BENCH_PIDS=()
BENCH_TMP=""
BENCH_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
CLK_TCK=$(getconf CLK_TCK)

log() { printf '%s\n' "$*" >&2; }
die() { log "bench: $*"; exit 1; }

bench_tmp_init() {
    BENCH_TMP=$(mktemp -d /tmp/verge-bench.XXXXXX)
    # nginx workers run as "nobody" when the master is root: they must be able
    # to traverse the tree to serve public/ files.
    chmod 755 "$BENCH_TMP"
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

bench_cleanup() {
    local pid
    for pid in "${BENCH_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${BENCH_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    BENCH_PIDS=()
    if [ -n "$BENCH_TMP" ] && [ -z "${BENCH_KEEP_TMP:-}" ]; then
        rm -rf "$BENCH_TMP"
    fi
    # tmpfs space (nginx's proxy_cache) is memory: never kept
    if [ -n "$BENCH_SHM" ]; then
        rm -rf "$BENCH_SHM"
    fi
}

# bench_shm_dir: a directory on tmpfs for caches that must not touch a disk
# (nginx's proxy_cache files). BENCH_TMP/shm is that directory when BENCH_TMP
# is on tmpfs already; otherwise a symlink to a new dir under /dev/shm,
# removed by bench_cleanup. Sets BENCH_SHM (the real path).
BENCH_SHM=""
bench_shm_dir() {
    if [ "$(stat -f -c %T "$BENCH_TMP")" = tmpfs ]; then
        mkdir -p "$BENCH_TMP/shm"
        BENCH_SHM=""
        SHM_DIR=$BENCH_TMP/shm
    else
        [ -d /dev/shm ] || die "no tmpfs: neither $BENCH_TMP nor /dev/shm is tmpfs"
        BENCH_SHM=$(mktemp -d /dev/shm/verge-bench.XXXXXX)
        chmod 755 "$BENCH_SHM"
        ln -s "$BENCH_SHM" "$BENCH_TMP/shm"
        SHM_DIR=$BENCH_SHM
    fi
}

# Stops one server we started (by pid) and forgets it.
stop_pid() {
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    forget_pid "$1"
}

# forget_pid PID: drops PID (already reaped) from BENCH_PIDS.
forget_pid() {
    local keep=() p
    for p in "${BENCH_PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    BENCH_PIDS=("${keep[@]}")
}

# Raise the open-files limit to the hard limit so that servers started from
# this shell (they inherit it) can hold the idle-connection test's 10k sockets.
raise_nofile() {
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
}

free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_port PORT PID: until 127.0.0.1:PORT accepts, or fail if PID died / 10 s.
wait_port() {
    local port=$1 pid=$2
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# tree_pids ROOT: ROOT and all its descendants (nginx master + workers, or a
# verge supervisor + workers), one per line.
tree_pids() {
    ps -e -o pid=,ppid= | awk -v root="$1" '
        { parent[$1] = $2; pids[NR] = $1 }
        END {
            keep[root] = 1; print root
            do {
                changed = 0
                for (i in pids) { p = pids[i]
                    if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; print p; changed = 1 } }
            } while (changed)
        }'
}

# cpu_ticks ROOT: user+system clock ticks used so far by ROOT's process tree,
# summed over every thread (/proc/PID/task/*/stat fields 14 and 15).
cpu_ticks() {
    local ticks _
    read -r ticks _ < <(cpu_ticks_stamped "$1")
    echo "$ticks"
}

# cpu_ticks_stamped ROOT: "TICKS EPOCH_US" — cpu_ticks plus the wall-clock
# time (µs since the epoch) at which the counters were read, to line a CPU
# window up with h2load's per-request start times.
cpu_ticks_stamped() {
    local pid files=() now
    for pid in $(tree_pids "$1"); do
        files+=(/proc/"$pid"/task/*/stat)
    done
    now=$(date +%s%6N)
    # comm (field 2) may hold spaces: cut everything up to ") " first, after
    # which utime and stime are fields 12 and 13.
    cat "${files[@]}" 2>/dev/null | awk -v now="$now" '{ sub(/^.*\) /, ""); t += $12 + $13 } END { printf "%d %s\n", t, now }'
}

# core_ticks CPU: "BUSY TOTAL" clock ticks of one core so far (/proc/stat;
# idle and iowait are not busy).
core_ticks() {
    awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}

# rss_kib ROOT: sum of VmRSS over ROOT's process tree, in KiB.
rss_kib() {
    local pid t=0 v
    for pid in $(tree_pids "$1"); do
        v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)
        t=$((t + ${v:-0}))
    done
    echo "$t"
}

# start_server LOG CPU CMD...: starts CMD pinned to CPU in the background;
# sets STARTED_PID (not printed: a $(...) subshell would lose BENCH_PIDS).
STARTED_PID=""
start_server() {
    local logf=$1 cpu=$2
    shift 2
    taskset -c "$cpu" "$@" >"$logf" 2>&1 &
    STARTED_PID=$!
    BENCH_PIDS+=("$STARTED_PID")
}

# nginx_start CONF DIR CPU: our own nginx (never the Debian service) with
# every runtime path inside DIR. Sets STARTED_PID to the master's pid.
nginx_start() {
    mkdir -p "$2"
    start_server "$2/stdout.log" "$3" nginx -c "$1" -p "$2" -e "$2/error.log" -g 'daemon off;'
}

# varnish_start DIR PORT BACKEND_PORT CPU [-p ...]: our own varnishd in the
# foreground (-F: the pid we record is the manager; it stops its cache child
# on SIGTERM), its working dir (-n) inside DIR, malloc storage. Sets
# STARTED_PID.
varnish_start() {
    local dir=$1 port=$2 backend=$3 cpu=$4
    shift 4
    mkdir -p "$dir"
    start_server "$dir/varnishd.log" "$cpu" varnishd -F -a "127.0.0.1:$port" -b "127.0.0.1:$backend" \
        -s malloc,256m -n "$dir/work" -p thread_pools=1 "$@"
}

# nginx_common DIR: main/events/http preamble shared by every nginx we run;
# caller appends the http{} body and closes the brace.
nginx_common() {
    local dir=$1
    cat <<EOF
worker_processes 1;
worker_rlimit_nofile 20000;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
EOF
}

# run_wrk ROOTPID URL OUTFILE: one pinned, bounded wrk run against URL while
# measuring ROOTPID's CPU. Prints "rps p99_us cpu_us_per_req requests errors".
run_wrk() {
    local root=$1 url=$2 out=$3 t0 t1
    t0=$(cpu_ticks "$root")
    taskset -c "$CLIENT_CPU" wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"${WRK_SECONDS}s" --latency "$url" >"$out" 2>&1
    t1=$(cpu_ticks "$root")
    awk -v ticks=$((t1 - t0)) -v hz="$CLK_TCK" '
        function us(v) {
            if (v ~ /us$/) return v + 0
            if (v ~ /ms$/) return v * 1000
            if (v ~ /m$/) return v * 60e6
            if (v ~ /s$/) return v * 1e6
            return v + 0
        }
        /^ +99%/ { p99 = us($2) }
        / requests in / { reqs = $1 }
        /^Requests\/sec:/ { rps = $2 }
        /Non-2xx or 3xx responses:/ { err += $NF }
        /Socket errors:/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
        END {
            if (reqs == 0) { print "0 0 0 0 1"; exit }
            printf "%.1f %.1f %.3f %d %d\n", rps, p99, ticks * 1e6 / hz / reqs, reqs, err
        }' "$out"
}

# check_hit SERVER URL: true when one GET of URL was answered from SERVER's
# cache, by the server's own signal: verge's Cache-Status "verge; hit",
# nginx's X-Cache-Status: HIT (bench/run.sh adds it from
# $upstream_cache_status), varnish's X-Varnish with two transaction ids.
check_hit() {
    local hdrs
    hdrs=$(curl -s -D - -o /dev/null -m 5 "$2" | tr -d '\r') || return 1
    case $1 in
    nginx*) grep -qi '^x-cache-status: *hit' <<<"$hdrs" ;;
    varnish*) grep -qiE '^x-varnish: *[0-9]+ +[0-9]+' <<<"$hdrs" ;;
    *) grep -qiE '^cache-status:.*verge *; *hit' <<<"$hdrs" ;;
    esac
}

# check_url URL: prints "STATUS BYTES" of one GET.
check_url() {
    curl -s -o /dev/null -m 5 -w '%{http_code} %{size_download}' "$1" || echo "000 0"
}

# run_fixed ROOTPID URL RATE CONNS OUTPREFIX: one open-loop run of h2load at
# RATE requests/s in total, spread over CONNS HTTP/1.1 connections (each at
# RATE/CONNS req/s), pinned to CLIENT_CPU, while measuring ROOTPID's CPU over
# the middle FIXED_SECONDS (after FIXED_WARMUP s of connection ramp-up).
# Writes OUTPREFIX.log (h2load --log-file) and OUTPREFIX.txt (its output).
# Prints "requests achieved_rate p50_us p99_us p999_us max_us cpu_us_per_req
# errors client_core_busy_% server_core_busy_%" for the requests that started
# inside the measured window (the busy figures: whole cores, from /proc/stat).
#
# Why the connections are opened over one period (-r, --rate-period=1ms):
# h2load sends a client's requests from a timer that fires every
# max(10 ms, 1/rps) and starts when that client connects. Clients that connect
# together stay in phase and fire together, so connecting all at once turns
# a "fixed rate" into one burst of CONNS requests per period; staggering the
# connects over one period leaves bursts of about RATE/1000 requests a
# millisecond. -r excludes -D, so the run is sized with -n instead.
run_fixed() {
    local root=$1 url=$2 rate=$3 conns=$4 prefix=$5 per n ramp pid rc=0 t0 a0 t1 a1 stats c0 c1 s0 s1 _
    per=$(awk -v r="$rate" -v c="$conns" 'BEGIN { printf "%.4f", r / c }')
    # enough requests to keep the rate up until well after the window closes
    n=$(awk -v r="$rate" -v w="$FIXED_WARMUP" -v s="$FIXED_SECONDS" 'BEGIN { printf "%d", r * (w + s + 0.3) }')
    ramp=$(((rate + 999) / 1000))
    rm -f "$prefix.log"
    taskset -c "$CLIENT_CPU" timeout "$(awk -v w="$FIXED_WARMUP" -v s="$FIXED_SECONDS" 'BEGIN { printf "%d", w + s + 30 }')" \
        h2load --h1 -t1 -c"$conns" --rps="$per" -n"$n" -r"$ramp" --rate-period=1ms \
        --log-file="$prefix.log" "$url" >"$prefix.txt" 2>&1 &
    pid=$!
    BENCH_PIDS+=("$pid")
    sleep "$FIXED_WARMUP"
    read -r c0 _ < <(core_ticks "$CLIENT_CPU")
    read -r s0 _ < <(core_ticks "$SERVER_CPU")
    read -r t0 a0 < <(cpu_ticks_stamped "$root")
    sleep "$FIXED_SECONDS"
    read -r t1 a1 < <(cpu_ticks_stamped "$root")
    read -r c1 _ < <(core_ticks "$CLIENT_CPU")
    read -r s1 _ < <(core_ticks "$SERVER_CPU")
    wait "$pid" || rc=$?
    forget_pid "$pid"
    if ! stats=$("$PY" "$BENCH_LIB_DIR/latency.py" --log "$prefix.log" --from "$a0" --to "$a1"); then
        echo "0 0 -1 -1 -1 -1 0 1 0 0"
        return
    fi
    # stats: requests rate p50 p99 p999 max errors
    echo "$stats" | awk -v ticks=$((t1 - t0)) -v hz="$CLK_TCK" -v rc="$rc" -v us=$((a1 - a0)) \
        -v cli=$((c1 - c0)) -v srv=$((s1 - s0)) '
        { printf "%d %s %s %s %s %s %.3f %d %.0f %.0f\n", $1, $2, $3, $4, $5, $6, ticks * 1e6 / hz / $1,
            $7 + (rc != 0), cli * 1e8 / hz / us, srv * 1e8 / hz / us }'
}
