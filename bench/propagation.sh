#!/bin/sh
# verge.kv global propagation (kv.set on one node -> visible to Lua on the
# others) against raw NATS KV (kvStore_Put -> kvWatcher) with the same number
# of watchers, for 10 and 30 nodes, and the cost of a global kv.get against a
# local one (bench/README.md "propagation"). Options go to
# bench/propagation.py: --nodes 10,30 --writes 100 --interval-ms 10 --runs 10
set -eu
cd "$(dirname "$0")/.."
B=${BUILD:-build}
[ -x "$B/verge" ] || make -j2 all
make --no-print-directory "$B/bench/kv_peer"
exec /usr/bin/python3 bench/propagation.py "$@"
