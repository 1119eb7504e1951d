#!/usr/bin/env bash
# ab against one team through the gateway while that team is deployed again and again.
#   tests/load/ab.sh [SECONDS] [CONCURRENCY]
# Needs a running gateway and a team with an API token: `python -m tests.load.prep` prepares
# both and prints this script's exact command line (TEAM, TOKEN, PORT, DATA_DIR).
# It fails (exit 1) unless ab completed requests, none failed or answered non-2xx, every deploy
# succeeded, and the load was still running when the last deploy ended (the deploys were in
# the middle of it). ab speaks HTTP/1.0: each request is a new connection, which also
# exercises the accept queue.
set -euo pipefail
SECONDS_OF_LOAD=${1:-30}
C=${2:-10}
PORT=${PORT:-8000}
TEAM=${TEAM:-alpha}
DEPLOYS=${DEPLOYS:-3}
GATEWAY=${GATEWAY:-.venv/bin/gateway}
DATA_DIR=${DATA_DIR:-data}
# A fixed-length answer: ab counts a body of another length as a failed request.
URL_PATH=${URL_PATH:-/data/events.json?_shape=array&_size=5}
command -v ab >/dev/null || { echo "ab is missing: apt-get install -y apache2-utils" >&2; exit 2; }
: "${TOKEN:?set TOKEN to an API token of team $TEAM}"
out=$(mktemp)
trap 'rm -f "$out"' EXIT

ab -q -t "$SECONDS_OF_LOAD" -n 1000000 -c "$C" -H "Host: $TEAM.localhost:$PORT" \
   -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT$URL_PATH" >"$out" 2>&1 &
load=$!
failed=0
for i in $(seq 1 "$DEPLOYS"); do
    if ! "$GATEWAY" deploy --team "$TEAM" --port "$PORT" --data-dir "$DATA_DIR" >/dev/null; then
        echo "ab.sh: deploy $i of $TEAM failed" >&2
        failed=1
    fi
done
if ! kill -0 "$load" 2>/dev/null; then
    echo "ab.sh: the load ended before the last deploy; give it more seconds" >&2
    failed=1
fi
ab_status=0
wait "$load" || ab_status=$?
cat "$out"
complete=$(sed -n 's/^Complete requests: *\([0-9]*\)$/\1/p' "$out")
failures=$(sed -n 's/^Failed requests: *\([0-9]*\)$/\1/p' "$out")
non2xx=$(sed -n 's/^Non-2xx responses: *\([0-9]*\)$/\1/p' "$out")
if [ "$ab_status" != 0 ] || [ -z "$complete" ] || [ -z "$failures" ]; then
    echo "ab.sh: ab did not finish with a report (exit $ab_status)" >&2
    exit 1
fi
echo "ab.sh: complete ${complete}, failed ${failures}, non-2xx ${non2xx:-0}, deploys $DEPLOYS"
if [ "$complete" -eq 0 ] || [ "$failures" != 0 ] || [ -n "$non2xx" ] || [ "$failed" != 0 ]; then
    exit 1
fi
