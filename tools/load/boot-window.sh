#!/usr/bin/env bash
# What clients see while a server boots: on one fresh nats-server holding 400,000 published
# events, each build is started three times and `GET /v1/cells/<a cell>` polled from its first
# connection (answers counted by status), then 30 fresh starts each followed at once by a
# `POST /v1/formations`. Run from the repository root after a release build; needs nats-server,
# curl and bc; uses loopback ports 14999 (NATS) and 18080 (the server).
#
#   OLD_BIN=<another cellos-server> bash tools/load/boot-window.sh
set -u
OLD=${OLD_BIN:?set OLD_BIN to the build to compare with}
NEW=${NEW_BIN:-target/release/cellos-server}
LOAD=${LOAD_BIN:-target/release/cellos-load}
W=$(mktemp -d)
NPORT=14999
nats-server -js -p $NPORT -sd $W/store >$W/nats.log 2>&1 &
NPID=$!
trap 'kill $NPID 2>/dev/null; rm -rf "$W"' EXIT
sleep 1
URL=nats://127.0.0.1:$NPORT
$LOAD --token t publish --nats $URL --count 400000 >$W/pub.log 2>&1; tail -1 $W/pub.log
LAST=$(printf 'ci-load-%09x' 49999)
T='Authorization: Bearer t'
boot_window() { # name bin read_wait_ms
  CELLOS_SERVER_API_TOKEN=t CELLOS_SERVER_BIND=127.0.0.1:18080 CELLOS_NATS_URL=$URL CELLOS_REPLAY_READ_WAIT_MS=$3 $2 >$W/srv.log 2>&1 &
  local spid=$! start=$(date +%s.%N) first200="" out=""
  declare -A n=()
  while :; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "$T" http://127.0.0.1:18080/v1/cells/$LAST)
    [ "$code" = 000 ] && { sleep 0.002; continue; }
    n[$code]=$(( ${n[$code]:-0} + 1 ))
    if [ "$code" = 200 ]; then first200=$(echo "$(date +%s.%N) - $start" | bc); break; fi
    sleep 0.005
  done
  for k in "${!n[@]}"; do out="$out $k×${n[$k]}"; done
  echo "$1 (read wait $3 ms): GET /v1/cells/<last cell> from the first connection:$out; first 200 after ${first200} s"
  kill $spid; wait $spid 2>/dev/null
}
fresh_starts() { # name bin
  local ok=0 other=""
  for i in $(seq 1 30); do
    CELLOS_SERVER_API_TOKEN=t CELLOS_SERVER_BIND=127.0.0.1:18080 CELLOS_NATS_URL=$URL $2 >$W/fresh.log 2>&1 &
    local spid=$!
    until [ "$(curl -s -o /dev/null -w '%{http_code}' -H "$T" http://127.0.0.1:18080/v1/version)" = 200 ]; do sleep 0.002; done
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "$T" -H 'content-type: application/json' http://127.0.0.1:18080/v1/formations \
      -d "{\"name\":\"m-$1-$i-$RANDOM\",\"coordinator\":\"c\",\"members\":[{\"id\":\"c\"},{\"id\":\"w\",\"authorizedBy\":\"c\"}]}")
    if [ "$code" = 201 ]; then ok=$((ok+1)); else other="$other $code"; fi
    kill $spid; wait $spid 2>/dev/null
  done
  echo "$1: 30 starts, POST /v1/formations as soon as /v1/version is 200: $ok × 201; others:${other:- none}"
}
for r in 1 2 3; do
  boot_window old $OLD 0
  boot_window new $NEW 0
  boot_window new $NEW 2000
done
grep -o '"message":"boot replay[^}]*' $W/srv.log | tail -3
fresh_starts old $OLD
fresh_starts new $NEW
