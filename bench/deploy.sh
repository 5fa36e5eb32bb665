#!/bin/sh
# Deploy-to-serving time for 1, 10 and 50 local agent nodes, and the time
# from a failed gate to every node back on the old version
# (bench/README.md "deploy"). Options go to bench/deploy.py:
#   --nodes 1,10,50  --runs 5  --rollback-runs 3  --verge build/verge
set -eu
cd "$(dirname "$0")/.."
[ -x build/verge ] || make -j2 all
exec /usr/bin/python3 bench/deploy.py "$@"
