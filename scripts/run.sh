#!/usr/bin/env bash
# `make run`: start emberd on its default data dir, create (or reuse) the
# demo endpoint whose worker is the example worker, print how to use it,
# and keep emberd in the foreground until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR=${EMBER_DATA_DIR:-/var/lib/ember}
LISTEN=${EMBER_LISTEN:-127.0.0.1:7080}
KEY_FILE="$DATA_DIR/api.key"
WORKER="$PWD/bin/example-worker"

bin/emberd --data-dir "$DATA_DIR" --listen "$LISTEN" --runtime process &
EMBERD=$!
trap 'kill -TERM $EMBERD 2>/dev/null; wait $EMBERD 2>/dev/null' EXIT INT TERM

for _ in $(seq 1 100); do
	if bin/ember --addr "$LISTEN" --api-key-file "$KEY_FILE" endpoint list >/dev/null 2>&1; then break; fi
	if ! kill -0 $EMBERD 2>/dev/null; then echo "emberd exited; see the messages above" >&2; exit 1; fi
	sleep 0.1
done

EP=$(bin/ember --addr "$LISTEN" --api-key-file "$KEY_FILE" --json endpoint get demo 2>/dev/null | sed -n 's/^  "id": "\(.*\)",$/\1/p' || true)
if [ -z "$EP" ]; then
	EP=$(bin/ember --addr "$LISTEN" --api-key-file "$KEY_FILE" --json endpoint create demo --gpu-count 0 --workers-max 2 --idle-timeout 30 -- "$WORKER" | sed -n 's/^  "id": "\(.*\)",$/\1/p')
fi
if [ -z "$EP" ]; then echo "could not create the demo endpoint" >&2; exit 1; fi

cat <<MSG

Ember is running: data in $DATA_DIR, API on http://$LISTEN, admin key in $KEY_FILE.
Demo endpoint: $EP (worker: $WORKER)

Send it a job:

  curl -s -X POST http://$LISTEN/v2/$EP/runsync -H "Authorization: Bearer \$(cat $KEY_FILE)" -H 'Content-Type: application/json' -d '{"input":{"prompt":"hello"}}'

or with the CLI:

  bin/ember --api-key-file $KEY_FILE run demo '{"prompt":"hello"}'

Ctrl-C stops emberd (queued jobs stay on disk).
MSG
wait $EMBERD
