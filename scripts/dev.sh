#!/usr/bin/env bash
# `make dev`: the whole platform locally on the example app — a control plane
# and POPS edge nodes at simulated locations (`verge dev`), redeploying on save.
set -euo pipefail
cd "$(dirname "$0")/.."
APP=${APP:-examples/hello}
POPS=${POPS:-1}
PORT=${PORT:-7070}
echo "make dev: verge dev $APP --pops $POPS --port $PORT  (edit $APP and save to redeploy; Ctrl-C stops everything)"
exec build/verge dev "$APP" --pops "$POPS" --port "$PORT"
