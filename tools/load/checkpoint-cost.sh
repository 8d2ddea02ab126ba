#!/usr/bin/env bash
# The cost of checkpoints on ingest at full speed: the boot replay of an embedded log (the
# fastest the ingest thread ever runs) with checkpoints off, then on (written during the replay,
# none there at start), alternated ROUNDS times. Prints events/s per run. Run from the
# repository root after `cargo build --release --workspace`, on a log made by
# `cellos-load fill` (tools/load/checkpoint-boot.sh makes two); uses loopback port 18082.
#
#   LOG=/tmp/ckb/log-10 ROUNDS=3 bash tools/load/checkpoint-cost.sh
set -u
BIN=${BIN:-target/release/cellos-server}
LOG=${LOG:?set LOG to an embedded log directory}
ROUNDS=${ROUNDS:-3}
PORT=18082

replay() { # label env...
  local label=$1; shift
  rm -rf "$LOG/checkpoints"
  local t0; t0=$(date +%s.%N)
  env CELLOS_SERVER_API_TOKEN=t CELLOS_SERVER_BIND=127.0.0.1:$PORT CELLOS_DATA_DIR=$LOG \
    CELLOS_RETENTION_MAX_AGE_SECS=0 CELLOS_SHUTDOWN_GRACE_MS=0 "$@" $BIN >"$LOG.cost.log" 2>&1 &
  local pid=$!
  until [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$PORT/readyz)" = 200 ]; do
    kill -0 $pid 2>/dev/null || { echo "server exited"; tail -5 "$LOG.cost.log"; exit 1; }
    sleep 0.01
  done
  local t1; t1=$(date +%s.%N)
  local m; m=$(curl -s -H 'Authorization: Bearer t' http://127.0.0.1:$PORT/metrics)
  local events; events=$(echo "$m" | awk '/^cellos_boot_replay_events / {print $2}')
  local written; written=$(echo "$m" | awk '/^cellos_checkpoint_writes_total / {print $2}')
  kill -TERM $pid; wait $pid 2>/dev/null
  printf '%-16s %6.2f s  %8.0f events/s  %s checkpoints written\n' "$label" \
    "$(echo "$t1 - $t0" | bc)" "$(echo "$events / ($t1 - $t0)" | bc -l)" "${written:-0}"
}

for _ in $(seq "$ROUNDS"); do
  replay "checkpoints off" CELLOS_CHECKPOINT_EVERY_EVENTS=0 CELLOS_CHECKPOINT_EVERY_SECS=0
  replay "checkpoints on"
done
rm -rf "$LOG/checkpoints"
