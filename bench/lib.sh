# shellcheck shell=bash
# Helpers shared by bench/run.sh and bench/spike/run.sh. Sourced, not run.
#
# What must stay true:
#  - every process we start is recorded in BENCH_PIDS and stopped by pid in
#    bench_cleanup; nothing is ever killed by name;
#  - every server listens on 127.0.0.1 only, on a port the kernel handed us;
#  - all load goes to 127.0.0.1 and is bounded by wrk's -d.

BENCH_PIDS=()
BENCH_TMP=""
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
}

# Stops one server we started (by pid) and forgets it.
stop_pid() {
    local pid=$1 keep=() p
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${BENCH_PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
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
    local pid files=()
    for pid in $(tree_pids "$1"); do
        files+=(/proc/"$pid"/task/*/stat)
    done
    # comm (field 2) may hold spaces: cut everything up to ") " first, after
    # which utime and stime are fields 12 and 13.
    cat "${files[@]}" 2>/dev/null | awk '{ sub(/^.*\) /, ""); t += $12 + $13 } END { printf "%d\n", t }'
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

# check_url URL: prints "STATUS BYTES" of one GET.
check_url() {
    curl -s -o /dev/null -m 5 -w '%{http_code} %{size_download}' "$1" || echo "000 0"
}
