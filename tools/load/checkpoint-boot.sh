#!/usr/bin/env bash
# Boot to ready on the embedded log, full replay vs from a checkpoint, with the same state (10^6
# cells) behind logs of 10^6 and 10^7 events; and the replay's rate with checkpoints being
# written vs without (the cost of a checkpoint on ingest). Run from the repository root after
# `cargo build --release --workspace`; needs curl and about 10 GB of disk (DIR, default a
# fresh directory under /tmp); uses loopback port 18081.
#
#   CELLS=1000000 PER_CELL="1 10" bash tools/load/checkpoint-boot.sh
set -u
BIN=${BIN:-target/release/cellos-server}
LOAD=${LOAD_BIN:-target/release/cellos-load}
CELLS=${CELLS:-1000000}
DIR=${DIR:-$(mktemp -d)}
PORT=18081
T='Authorization: Bearer t'
CLK=$(getconf CLK_TCK)

# start <data dir> <extra env...>: runs the server, waits for /readyz 200, prints the time to
# ready, the CPU seconds used by then, RSS and the boot metrics; leaves PID set.
start() {
  local dir=$1; shift
  local t0; t0=$(date +%s.%N)
  env CELLOS_SERVER_API_TOKEN=t CELLOS_SERVER_BIND=127.0.0.1:$PORT CELLOS_DATA_DIR=$dir \
    CELLOS_RETENTION_MAX_AGE_SECS=0 "$@" $BIN >"$dir.server.log" 2>&1 &
  PID=$!
  until [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$PORT/readyz)" = 200 ]; do
    kill -0 $PID 2>/dev/null || { echo "server exited"; tail -5 "$dir.server.log"; exit 1; }
    sleep 0.01
  done
  local t1; t1=$(date +%s.%N)
  local cpu; cpu=$(awk -v clk=$CLK '{printf "%.2f = %.2f user + %.2f sys", ($14 + $15) / clk, $14 / clk, $15 / clk}' /proc/$PID/stat)
  local rss; rss=$(awk '/VmRSS/ {printf "%.0f", $2 / 1024}' /proc/$PID/status)
  local m; m=$(curl -s -H "$T" http://127.0.0.1:$PORT/metrics)
  local boot_seq; boot_seq=$(echo "$m" | awk '/^cellos_checkpoint_boot_seq / {print $2}')
  local load_s; load_s=$(echo "$m" | awk '/^cellos_checkpoint_load_seconds / {print $2}')
  local replayed; replayed=$(echo "$m" | awk '/^cellos_boot_replay_events / {print $2}')
  local written; written=$(echo "$m" | awk '/^cellos_checkpoint_writes_total / {print $2}')
  printf '  ready in %.2f s (cpu %s s, rss %s MiB): checkpoint seq %s loaded in %s s, %s events replayed, %s checkpoints written\n' \
    "$(echo "$t1 - $t0" | bc)" "$cpu" "$rss" "${boot_seq:-0}" "${load_s:-0}" "${replayed:-0}" "${written:-0}"
}

stop() {
  kill -TERM $PID; wait $PID 2>/dev/null
}

for per_cell in ${PER_CELL:-1 10}; do
  d=$DIR/log-$per_cell
  if [ ! -f "$d/events.redb" ]; then
    $LOAD --token t fill --data-dir "$d" --cells "$CELLS" --events-per-cell $per_cell | tail -1
  fi
  events=$((CELLS * per_cell))
  echo "== $CELLS cells, $events events"
  rm -rf "$d/checkpoints"
  # Every run reads the log from the page cache: the first would otherwise pay the disk alone.
  cat "$d/events.redb" >/dev/null
  echo "full replay, checkpoints off:"
  start "$d" CELLOS_CHECKPOINT_EVERY_EVENTS=0 CELLOS_CHECKPOINT_EVERY_SECS=0; stop
  echo "full replay, checkpoints on (written during the replay):"
  start "$d"; stop
  ls -l "$d/checkpoints" | tail -n +2 | awk '{print "  " $5 " bytes  " $9}'
  for i in 1 2 3; do
    echo "boot from the checkpoint ($i):"
    start "$d"; stop
  done
done
# The most the default schedule leaves after the newest checkpoint: 100,000 events (a copy of
# the first log with its checkpoint, then 100,000 more events appended while no server runs).
first=$(echo ${PER_CELL:-1 10} | awk '{print $1}')
t=$DIR/log-$first-tail
rm -rf "$t"; cp -r "$DIR/log-$first" "$t"
$LOAD --token t fill --data-dir "$t" --cells 100000 --events-per-cell 1 | tail -1
cat "$t/events.redb" "$t"/checkpoints/* >/dev/null
echo "== a checkpoint, then 100,000 events after it"
for i in 1 2 3; do
  echo "boot from the checkpoint + tail ($i):"
  start "$t" CELLOS_CHECKPOINT_EVERY_EVENTS=0 CELLOS_SHUTDOWN_GRACE_MS=0; stop
done
rm -rf "$t"
echo "data in $DIR"
