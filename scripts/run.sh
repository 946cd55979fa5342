#!/usr/bin/env bash
# `make run`: start emberd on its default data dir with the runc runtime,
# build the example worker into an OCI image (no registry needed), import it,
# create (or reuse) the demo endpoint from it, print how to use it, and keep
# emberd in the foreground until Ctrl-C.
# EMBER_RUNTIME=process runs the worker as a host process instead.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR=${EMBER_DATA_DIR:-/var/lib/ember}
LISTEN=${EMBER_LISTEN:-127.0.0.1:7080}
RUNTIME=${EMBER_RUNTIME:-runc}
KEY_FILE="$DATA_DIR/api.key"
IMAGE=ember/example-worker:latest
ember() { bin/ember --addr "$LISTEN" --api-key-file "$KEY_FILE" "$@"; }

if [ "$RUNTIME" = runc ]; then
	mkdir -p .cache
	CGO_ENABLED=0 go build -o .cache/example-worker-static ./examples/worker
	go run ./examples/worker/mkimage -binary .cache/example-worker-static -name "$IMAGE" -o .cache/example-worker.tar
fi

bin/emberd --data-dir "$DATA_DIR" --listen "$LISTEN" --runtime "$RUNTIME" --worker-init "$PWD/bin/ember-init" &
EMBERD=$!
stop_emberd() { kill -TERM $EMBERD 2>/dev/null; wait $EMBERD 2>/dev/null; }
trap stop_emberd EXIT
# Ctrl-C (or a TERM) is how this script is meant to end: stop emberd and
# exit 0, so that make does not report the stop as an error.
trap 'trap - EXIT; stop_emberd; exit 0' INT TERM

for _ in $(seq 1 100); do
	if ember endpoint list >/dev/null 2>&1; then break; fi
	if ! kill -0 $EMBERD 2>/dev/null; then echo "emberd exited; see the messages above" >&2; exit 1; fi
	sleep 0.1
done

id_of() { sed -n 's/^  "id": "\(.*\)",$/\1/p'; }
EP=$(ember --json endpoint get demo 2>/dev/null | id_of || true)
if [ -z "$EP" ]; then
	if [ "$RUNTIME" = runc ]; then
		ember image import .cache/example-worker.tar --name "$IMAGE" >/dev/null
		EP=$(ember --json endpoint create demo --image "$IMAGE" --gpu-count 0 --workers-max 2 --idle-timeout 30 | id_of)
	else
		EP=$(ember --json endpoint create demo --gpu-count 0 --workers-max 2 --idle-timeout 30 -- "$PWD/bin/example-worker" | id_of)
	fi
fi
if [ -z "$EP" ]; then echo "could not create the demo endpoint" >&2; exit 1; fi

cat <<MSG

Ember is running: data in $DATA_DIR, API on http://$LISTEN, admin key in $KEY_FILE, runtime $RUNTIME.
Demo endpoint: $EP (worker: the example worker$([ "$RUNTIME" = runc ] && echo ", image $IMAGE"))

Send it a job:

  curl -s -X POST http://$LISTEN/v2/$EP/runsync -H "Authorization: Bearer \$(cat $KEY_FILE)" -H 'Content-Type: application/json' -d '{"input":{"prompt":"hello"}}'

or with the CLI:

  bin/ember --api-key-file $KEY_FILE run demo '{"prompt":"hello"}'

or in the web console: open http://$LISTEN/ and log in with the key in $KEY_FILE.

Ctrl-C stops emberd (queued jobs stay on disk).
MSG
wait $EMBERD
