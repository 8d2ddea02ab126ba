#!/usr/bin/env bash
# Boot to ready on JetStream, full replay vs from the newest checkpoint in the
# CELLOS_CHECKPOINTS object store bucket, on one fresh nats-server holding EVENTS published
# supervisor events (8 per cell). Run from the repository root after
# `cargo build --release --workspace`; needs nats-server, curl and bc; uses loopback ports
# 14998 (NATS) and 18083 (the server).
#
#   EVENTS=1000000 bash tools/load/checkpoint-boot-js.sh
set -u
BIN=${BIN:-target/release/cellos-server}
LOAD=${LOAD_BIN:-target/release/cellos-load}
EVENTS=${EVENTS:-1000000}
W=$(mktemp -d)
NPORT=14998
PORT=18083
T='Authorization: Bearer t'
nats-server -js -p $NPORT -sd $W/store >$W/nats.log 2>&1 &
NPID=$!
trap 'kill $NPID 2>/dev/null; rm -rf "$W"' EXIT
sleep 1
URL=nats://127.0.0.1:$NPORT
$LOAD --token t publish --nats $URL --count "$EVENTS" | tail -1

start() { # env...
  local t0; t0=$(date +%s.%N)
  env CELLOS_SERVER_API_TOKEN=t CELLOS_SERVER_BIND=127.0.0.1:$PORT CELLOS_NATS_URL=$URL \
    CELLOS_DATA_DIR=$W/unused "$@" $BIN >$W/server.log 2>&1 &
  PID=$!
  until [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$PORT/readyz)" = 200 ]; do
    kill -0 $PID 2>/dev/null || { echo "server exited"; tail -5 $W/server.log; exit 1; }
    sleep 0.01
  done
  local t1; t1=$(date +%s.%N)
  local m; m=$(curl -s -H "$T" http://127.0.0.1:$PORT/metrics)
  local boot_seq; boot_seq=$(echo "$m" | awk '/^cellos_checkpoint_boot_seq / {print $2}')
  local load_s; load_s=$(echo "$m" | awk '/^cellos_checkpoint_load_seconds / {print $2}')
  local replayed; replayed=$(echo "$m" | awk '/^cellos_boot_replay_events / {print $2}')
  printf '  ready in %.2f s: checkpoint seq %s loaded in %s s, %s events replayed\n' \
    "$(echo "$t1 - $t0" | bc)" "${boot_seq:-0}" "${load_s:-0}" "${replayed:-0}"
}
stop() {
  kill -TERM $PID; wait $PID 2>/dev/null
}

echo "== $EVENTS events ($((EVENTS / 8)) cells) on JetStream"
echo "full replay, checkpoints off:"
start CELLOS_CHECKPOINT_EVERY_EVENTS=0 CELLOS_CHECKPOINT_EVERY_SECS=0; stop
echo "full replay, checkpoints on (then a last one at the stop):"
start; stop
for i in 1 2 3; do
  echo "boot from the checkpoint ($i):"
  start; stop
done
