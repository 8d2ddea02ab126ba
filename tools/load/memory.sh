#!/usr/bin/env bash
# Memory after replay, this server and (when OTHER_BIN is set) another cellos-server binary such
# as the reference 0.5.4, measured one after the other in one run on JetStream.
#
#   OTHER_BIN=/tmp/refsrv/bin/cellos-server bash tools/load/memory.sh
#
# Per server: RSS (VmRSS of /proc/<pid>/status) of the server on an empty stream once ready;
# then per workload, on a fresh nats-server: publish EVENTS supervisor events with PER_CELL
# events per cell (`cellos-load publish`), start the server, wait until its cursor reaches the
# last seq, let it settle SETTLE seconds, read its RSS. Bytes per cell = (RSS after replay - RSS
# empty) / cells; also the seconds from the server's start until its cursor reached the end.
# Workloads: EVENTS events of 8 per cell (125,000 cells for 10^6), and CELLS cells of one
# `started` each (ONLY=lifecycles or ONLY=cells runs one of them). Loopback only; everything is
# stopped at the end.
#
# SETTLE is 10 s: a checkpoint is due when the replay ends (every 100,000 events), and while it
# is written the image (about 70 MB at 10^6 cells) is resident; 3 s after the replay RSS at 10^6
# cells read anywhere from 258 to 317 MiB depending on where that write was, 10 s after it the
# write is over in every run.
set -euo pipefail
cd "$(dirname "$0")/../.."

EVENTS=${EVENTS:-1000000}
CELLS=${CELLS:-1000000}
SETTLE=${SETTLE:-10}
OURS_BIN=${OURS_BIN:-target/release/cellos-server}
OTHER_BIN=${OTHER_BIN:-}
# Extra VAR=value settings for both servers (e.g. CELLOS_CHECKPOINT_EVERY_EVENTS=0).
SERVER_ENV=${SERVER_ENV:-}
LOAD=target/release/cellos-load
TOKEN=memory-token
LOAD_SCRIPT=memory
# shellcheck source=tools/load/lib.sh
source tools/load/lib.sh

cargo build --release --quiet -p cellos-server -p cellos-load

# One measurement: label, binary, events, events per cell (0 events: an empty stream).
measure() {
  local label=$1 bin=$2 events=$3 per_cell=$4
  local dir="$work/$label" nport hport
  mkdir -p "$dir/nats" "$dir/data"
  nport=$(free_port); hport=$(free_port)
  nats-server -js -sd "$dir/nats" -a 127.0.0.1 -p "$nport" >"$dir/nats.log" 2>&1 &
  local npid=$!; pids+=("$npid")
  wait_port "$nport"
  local url="nats://127.0.0.1:$nport" last=0
  if [ "$events" -gt 0 ]; then
    last=$("$LOAD" --token "$TOKEN" publish --nats "$url" --count "$events" \
      --events-per-cell "$per_cell" | awk '{print $NF}')
  fi
  # shellcheck disable=SC2086 # SERVER_ENV is a list of VAR=value words
  env CELLOS_SERVER_API_TOKEN=$TOKEN CELLOS_SERVER_BIND=127.0.0.1:$hport CELLOS_NATS_URL=$url \
    CELLOS_DATA_DIR="$dir/data" RUST_LOG=warn $SERVER_ENV "$bin" >"$dir/server.log" 2>&1 &
  local spid=$!; pids+=("$spid")
  REPLAY=$("$LOAD" --addr "127.0.0.1:$hport" --token "$TOKEN" wait --cursor "$last" |
    awk '{print $(NF-1)}')
  sleep "$SETTLE"
  RSS=$(rss_kib "$spid")
  kill "$spid" "$npid"; wait "$spid" "$npid" 2>/dev/null || true
}

run() {
  local name=$1 bin=$2
  measure "$name-empty" "$bin" 0 1
  local empty=$RSS
  echo "$name empty: RSS $((empty / 1024)) MiB" | tee -a "$work/summary"
  if [ "${ONLY:-lifecycles}" = lifecycles ]; then
    measure "$name-lifecycles" "$bin" "$EVENTS" 8
    echo "$name $EVENTS events, $((EVENTS / 8)) cells (8 each): RSS $((RSS / 1024)) MiB," \
      "$(((RSS - empty) * 1024 / (EVENTS / 8))) bytes/cell above empty, ready in $REPLAY s" |
      tee -a "$work/summary"
  fi
  if [ "${ONLY:-cells}" = cells ]; then
    measure "$name-cells" "$bin" "$CELLS" 1
    echo "$name $CELLS cells (1 event each): RSS $((RSS / 1024)) MiB," \
      "$(((RSS - empty) * 1024 / CELLS)) bytes/cell above empty, ready in $REPLAY s" |
      tee -a "$work/summary"
  fi
}

run ours "$OURS_BIN"
[ -n "$OTHER_BIN" ] && run other "$OTHER_BIN"
echo; echo "== summary (EVENTS=$EVENTS CELLS=$CELLS SETTLE=$SETTLE)"; cat "$work/summary"
