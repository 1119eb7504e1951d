#!/usr/bin/env bash
# ab against one team through the gateway while that team is deployed again and again.
#   tests/load/ab.sh [REQUESTS] [CONCURRENCY]
# Needs a running gateway (make run), a team "alpha", and an API token for it:
#   TOKEN=... PORT=8000 tests/load/ab.sh 20000 20
# ab speaks HTTP/1.0; uvicorn closes HTTP/1.0 connections after each response, so -k brings no
# keep-alive here (each request is a new connection, which also exercises the accept queue).
set -euo pipefail
N=${1:-20000}
C=${2:-20}
PORT=${PORT:-8000}
TEAM=${TEAM:-alpha}
GATEWAY=${GATEWAY:-.venv/bin/gateway}
command -v ab >/dev/null || { echo "ab is missing: apt-get install -y apache2-utils" >&2; exit 2; }
: "${TOKEN:?set TOKEN to an API token of team $TEAM}"

( for i in $(seq 1 5); do "$GATEWAY" deploy --team "$TEAM" --port "$PORT" >/dev/null; done ) &
deploys=$!
ab -q -n "$N" -c "$C" -H "Host: $TEAM.localhost:$PORT" -H "Authorization: Bearer $TOKEN" \
   "http://127.0.0.1:$PORT/data.json" | tee /tmp/ab.out
wait "$deploys"
grep -E "^(Failed requests|Non-2xx responses)" /tmp/ab.out || echo "Failed requests: 0"
