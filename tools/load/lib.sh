# Shared by the load scripts (sourced): a scratch directory, processes stopped at exit, loopback
# ports. Sets `work` (removed at exit) and `pids` (killed at exit; scripts append to it).
# shellcheck shell=bash
work=$(mktemp -d "/tmp/cellos-${LOAD_SCRIPT:-load}.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# A free loopback TCP port (picked by the kernel; another process may take it before use).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Waits up to 10 s until something listens on loopback port $1.
wait_port() { for _ in $(seq 500); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.02; done; return 1; }
# Resident memory of process $1 in KiB.
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
