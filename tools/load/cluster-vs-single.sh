#!/usr/bin/env bash
# The same server on one JetStream node (R1) and on a 3-node JetStream cluster (R3), measured one
# after the other in one run, with the same tools on the same machine (all nats-servers, the
# server and the load tool share its cores).
#
#   EVENTS=1000000 ADMISSIONS=2000 bash tools/load/cluster-vs-single.sh
#
# Per setup: start the server (checkpoints off, so the boot replays the whole stream), which
# creates CELLOS_EVENTS with the setup's replicas; live ingest: publish EVENTS supervisor events
# straight into JetStream (`cellos-load publish`, 4 connections to the first node, as fast as the
# acks come back) while timing how long the server takes to apply the last; writes through the
# server: ADMISSIONS formation admissions from 64 clients (each answered once JetStream
# acknowledged and the server applied it); then restart the server and time the replay of the
# whole stream to ready. CPU seconds from /proc/<pid>/stat (utime + stime) for the server and the
# nats-servers over each phase. Loopback only; everything is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."

EVENTS=${EVENTS:-1000000}
ADMISSIONS=${ADMISSIONS:-2000}
BIN=${BIN:-target/release/cellos-server}
LOAD=${LOAD_BIN:-target/release/cellos-load}
ORDER=${ORDER:-"single cluster"}
TOKEN=cluster-token
LOAD_SCRIPT=cluster
# shellcheck source=tools/load/lib.sh
source tools/load/lib.sh

cargo build --release --quiet -p cellos-server -p cellos-load
now() { date +%s.%N; }
since() { python3 -c "print(f'{$(now) - $1:.2f}')"; }
# CPU seconds (user + system) of the given pids, summed.
cpu() {
  local hz total=0 p
  hz=$(getconf CLK_TCK)
  for p in "$@"; do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  python3 -c "print(f'{$total / $hz:.2f}')"
}
delta() { python3 -c "print(f'{$2 - $1:.2f}')"; }

# Starts `count` JetStream nodes (1: a plain node; 3: a cluster with routes); sets NATS_PIDS and
# SEEDS (comma-separated client URLs).
start_nats() {
  local label=$1 count=$2 i
  local -a cports rports
  for i in $(seq "$count"); do cports[$i]=$(free_port); rports[$i]=$(free_port); done
  NATS_PIDS=(); SEEDS=""
  for i in $(seq "$count"); do
    local conf="$work/$label/n$i.conf" routes j
    mkdir -p "$work/$label/n$i"
    {
      echo "server_name: $label-n$i"
      echo "listen: 127.0.0.1:${cports[$i]}"
      echo "jetstream { store_dir: \"$work/$label/n$i\" }"
      if [ "$count" -gt 1 ]; then
        routes=$(for j in $(seq "$count"); do echo "nats://127.0.0.1:${rports[$j]}"; done | paste -sd,)
        echo "cluster { name: cellos, listen: 127.0.0.1:${rports[$i]}, routes: [$routes] }"
      fi
    } >"$conf"
    nats-server -c "$conf" >"$work/$label/n$i.log" 2>&1 &
    NATS_PIDS+=($!); pids+=($!)
    SEEDS="${SEEDS:+$SEEDS,}nats://127.0.0.1:${cports[$i]}"
  done
  for i in $(seq "$count"); do wait_port "${cports[$i]}"; done
}

start_server() { # t0: when this start began (for the time to ready)
  local t0=$1
  CELLOS_SERVER_API_TOKEN=$TOKEN CELLOS_SERVER_BIND=127.0.0.1:$HPORT CELLOS_NATS_URL=$SEEDS \
    CELLOS_NATS_STREAM_REPLICAS=$REPLICAS CELLOS_CHECKPOINT_EVERY_EVENTS=0 \
    CELLOS_CHECKPOINT_EVERY_SECS=0 CELLOS_DATA_DIR="$work/unused" RUST_LOG=warn \
    "$BIN" >>"$work/$LABEL/server.log" 2>&1 &
  SPID=$!; pids+=("$SPID")
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HPORT/readyz")" = 200 ]; do
    kill -0 "$SPID" 2>/dev/null || { echo "server exited"; tail -5 "$work/$LABEL/server.log"; exit 1; }
    sleep 0.01
  done
  READY_S=$(since "$t0")
}

run() {
  LABEL=$1
  local nodes
  case $LABEL in single) nodes=1; REPLICAS=1 ;; cluster) nodes=3; REPLICAS=3 ;; esac
  mkdir -p "$work/$LABEL"
  start_nats "$LABEL" "$nodes"
  HPORT=$(free_port)
  echo "== $LABEL: $nodes node(s), stream R$REPLICAS, seeds $SEEDS"
  start_server "$(now)"
  local first=${SEEDS%%,*}

  # Live ingest: supervisors publish, the server applies.
  local c0 n0 t1 wpid published applied
  c0=$(cpu "$SPID"); n0=$(cpu "${NATS_PIDS[@]}"); t1=$(now)
  "$LOAD" --addr "127.0.0.1:$HPORT" --token "$TOKEN" wait --cursor "$EVENTS" >/dev/null &
  wpid=$!
  "$LOAD" --token "$TOKEN" publish --nats "$first" --count "$EVENTS" | tee "$work/$LABEL/publish"
  published=$(since "$t1")
  wait "$wpid"
  applied=$(since "$t1")
  echo "$LABEL live: $EVENTS events, publisher done $published s, last applied $applied s," \
    "server CPU $(delta "$c0" "$(cpu "$SPID")") s, nats CPU $(delta "$n0" "$(cpu "${NATS_PIDS[@]}")") s" |
    tee -a "$work/summary"

  echo "$LABEL store per node (MB): $(for d in "$work/$LABEL"/n*/; do du -sm "$d" | cut -f1; done | paste -sd' ')" |
    tee -a "$work/summary"

  # Writes through the server.
  c0=$(cpu "$SPID"); n0=$(cpu "${NATS_PIDS[@]}")
  "$LOAD" --addr "127.0.0.1:$HPORT" --token "$TOKEN" admit --clients 64 --count "$ADMISSIONS" |
    tee "$work/$LABEL/admit"
  echo "$LABEL admit: $(tr -s ' ' <"$work/$LABEL/admit" | tr '\n' ' ')" \
    "server CPU $(delta "$c0" "$(cpu "$SPID")") s, nats CPU $(delta "$n0" "$(cpu "${NATS_PIDS[@]}")") s" |
    tee -a "$work/summary"

  # Replay of the whole stream at boot.
  kill -TERM "$SPID"; wait "$SPID" 2>/dev/null || true
  local t2 end
  n0=$(cpu "${NATS_PIDS[@]}"); t2=$(now)
  start_server "$t2"
  end=$(curl -s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$HPORT/metrics" |
    awk '/^cellos_boot_replay_events / {print $2}')
  echo "$LABEL replay: $end events to ready in $READY_S s, server CPU $(cpu "$SPID") s," \
    "nats CPU $(delta "$n0" "$(cpu "${NATS_PIDS[@]}")") s" | tee -a "$work/summary"

  kill -TERM "$SPID"; wait "$SPID" 2>/dev/null || true
  kill "${NATS_PIDS[@]}"; wait "${NATS_PIDS[@]}" 2>/dev/null || true
}

for setup in $ORDER; do run "$setup"; done
echo; echo "== summary (EVENTS=$EVENTS ADMISSIONS=$ADMISSIONS, $(nproc) CPUs)"; cat "$work/summary"
