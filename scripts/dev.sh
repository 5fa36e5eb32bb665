#!/usr/bin/env bash
# `make dev`: start a local node on the example app and print its URL.
set -euo pipefail
cd "$(dirname "$0")/.."
APP=${APP:-examples/hello}
PORT=${PORT:-8080}
echo "verge dev: serving $APP on http://127.0.0.1:$PORT/  (metrics: /_verge/metrics, Ctrl-C to stop)"
exec build/verge node --app "$APP" --listen "127.0.0.1:$PORT" --log-format text --dev
