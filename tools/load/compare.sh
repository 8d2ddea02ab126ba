#!/usr/bin/env bash
# Side by side: this server and another cellos-server binary (e.g. the reference 0.5.4), each on
# its own fresh nats-server, measured one after the other with the same tools on the same machine.
#
#   OTHER_BIN=/path/to/cellos-server bash tools/load/compare.sh
#
# Per server: publish EVENTS cell events into a fresh stream; start the server and time until its
# cursor (GET /v1/formations) reaches the last seq (boot replay to ready); RSS after replay; publish
# LIVE more events as fast as JetStream acks them while timing how long the server takes to apply
# the last one (live ingest); then SOCKETS WebSocket subscribers at RATE events/s for 10 s, events
# published straight into JetStream (fan-out). Loopback only; everything is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."

EVENTS=${EVENTS:-1000000}
LIVE=${LIVE:-500000}
SOCKETS=${SOCKETS:-1000}
RATE=${RATE:-50}
OURS_BIN=${OURS_BIN:-target/release/cellos-server}
OTHER_BIN=${OTHER_BIN:?set OTHER_BIN to the other cellos-server binary}
LOAD=target/release/cellos-load
TOKEN=compare-token
LOAD_SCRIPT=compare
# shellcheck source=tools/load/lib.sh
source tools/load/lib.sh

cargo build --release --quiet -p cellos-server -p cellos-load

run() {
  local label=$1 bin=$2
  local nport hport dir
  nport=$(free_port); hport=$(free_port); dir="$work/$label"; mkdir -p "$dir/nats" "$dir/data"
  nats-server -js -sd "$dir/nats" -a 127.0.0.1 -p "$nport" >"$dir/nats.log" 2>&1 &
  local npid=$!; pids+=("$npid")
  wait_port "$nport"
  local url="nats://127.0.0.1:$nport"
  echo "== $label: $bin"
  local last
  last=$("$LOAD" --token "$TOKEN" publish --nats "$url" --count "$EVENTS" | tee /dev/stderr | awk '{print $NF}')

  local t0 spid
  t0=$(date +%s.%N)
  CELLOS_SERVER_API_TOKEN=$TOKEN CELLOS_SERVER_BIND=127.0.0.1:$hport CELLOS_NATS_URL=$url \
    CELLOS_DATA_DIR="$dir/data" RUST_LOG=warn "$bin" >"$dir/server.log" 2>&1 &
  spid=$!; pids+=("$spid")
  "$LOAD" --addr "127.0.0.1:$hport" --token "$TOKEN" wait --cursor "$last" >/dev/null
  local replay
  replay=$(python3 -c "import time; print(f'{time.time() - $t0:.2f}')")
  echo "$label replay_to_ready_s $replay rss_after_replay_kib $(rss_kib "$spid")" | tee -a "$work/summary"

  local target=$((last + LIVE)) t1
  t1=$(date +%s.%N)
  "$LOAD" --addr "127.0.0.1:$hport" --token "$TOKEN" wait --cursor "$target" >"$dir/live-wait" &
  local wpid=$!
  "$LOAD" --token "$TOKEN" publish --nats "$url" --count "$LIVE" | tee "$dir/live-publish"
  local published
  published=$(python3 -c "import time; print(f'{time.time() - $t1:.2f}')")
  wait "$wpid"
  local applied
  applied=$(python3 -c "import time; print(f'{time.time() - $t1:.2f}')")
  echo "$label live_events $LIVE publisher_done_s $published applied_all_s $applied rss_kib $(rss_kib "$spid")" | tee -a "$work/summary"

  "$LOAD" --addr "127.0.0.1:$hport" --token "$TOKEN" ws --sockets "$SOCKETS" --rate "$RATE" \
    --duration 10 --nats "$url" --server-pid "$spid" | tee "$dir/ws"
  echo "$label ws $(grep -E 'frames delivered|latency' "$dir/ws" | tr -s ' ' | tr '\n' ' ')" >>"$work/summary"

  kill "$spid" "$npid"; wait "$spid" "$npid" 2>/dev/null || true
}

run ours "$OURS_BIN"
run other "$OTHER_BIN"
echo; echo "== summary (EVENTS=$EVENTS LIVE=$LIVE SOCKETS=$SOCKETS RATE=$RATE)"; cat "$work/summary"
