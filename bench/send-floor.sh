#!/usr/bin/env bash
# The kernel's floor under bench/fanout-vs-node.sh: CPU per send of a 17 KB
# message to 300 loopback sockets from C (no WebSocket, no user space), with
# send(2) and with sendfile(2) from a memfd, alternating, several runs each.
#
#   bench/send-floor.sh [--runs 3] [--rounds 300]
set -euo pipefail
cd "$(dirname "$0")"
runs=3 rounds=300
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
bin=$(mktemp)
trap 'rm -f "$bin"' EXIT
cc -O2 -o "$bin" send-floor/floor.c -lpthread
for _ in $(seq "$runs"); do
  "$bin" send "$rounds"
  "$bin" sendfile "$rounds"
done
