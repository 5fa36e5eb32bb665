#!/usr/bin/env bash
# The placement engine's benchmark on one core (bench/sched_bench.c):
#   bench/sched.sh [LOCATIONS [APPS]]     (default 10000 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
make --no-print-directory -s "$BUILD/bench/sched_bench"
exec taskset -c 1 "$BUILD/bench/sched_bench" "$@"
