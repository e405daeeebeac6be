#!/usr/bin/env bash
# Fan-out cost, side by side in one run: server CPU per delivered frame at
# V viewers x F fps of 320x240 JPEGs, measured as the CPU difference between
# 0 and V viewers, for DreamStream (its in-process worker set to passthrough so
# only the platform is measured) and for a plain Node `ws` relay (npm).
#
#   bench/fanout-vs-node.sh [--viewers 300] [--fps 15] [--duration 20] [--rounds 3]
#                           [--baseline PATH]
#
# --baseline PATH measures a second dreamstream binary (an older build, say)
# in the same rounds, so a change is compared side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
viewers=300 fps=15 duration=20 rounds=3 baseline=
while [ $# -gt 0 ]; do
  case "$1" in
    --viewers) viewers=$2; shift 2 ;;
    --fps) fps=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --baseline) baseline=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
target=${CARGO_TARGET_DIR:-target}
cargo build -q --release
ds="$target/release/dreamstream"
shared=${DREAMSTREAM_SHARED:-../shared}

( cd bench/node-relay && [ -d node_modules/ws ] || npm install --silent --no-audit --no-fund >/dev/null )

tmp=$(mktemp -d)
cleanup() { kill "${node_pid:-}" "${ds_pid:-}" "${base_pid:-}" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

PORT=18190 node bench/node-relay/relay.js >"$tmp/node.log" 2>&1 & node_pid=$!
# Every viewer comes from 127.0.0.1: lift the per-address caps (http.*).
export DREAMSTREAM_HTTP__MAX_VIEWERS_PER_IP=1000000 DREAMSTREAM_HTTP__MAX_CONNECTIONS_PER_IP=1000000
DREAMSTREAM_WORKER__PROCESSOR=passthrough RUST_LOG=warn \
  "$ds" serve --listen 127.0.0.1:18191 --data-dir "$tmp/data" --local-workers 1 >"$tmp/ds.log" 2>&1 & ds_pid=$!
servers=(dreamstream node)
urls=(http://127.0.0.1:18190/healthz http://127.0.0.1:18191/healthz)
if [ -n "$baseline" ]; then
  DREAMSTREAM_WORKER__PROCESSOR=passthrough RUST_LOG=warn \
    "$baseline" serve --listen 127.0.0.1:18192 --data-dir "$tmp/base" --local-workers 1 >"$tmp/base.log" 2>&1 & base_pid=$!
  servers=(dreamstream baseline node)
  urls+=(http://127.0.0.1:18192/healthz)
fi
for url in "${urls[@]}"; do
  for _ in $(seq 100); do curl -fs "$url" >/dev/null 2>&1 && break; sleep 0.2; done
done

run() { # server viewers -> "cpu_cores delivered seconds"
  local server=$1 v=$2 url pid extra=()
  case "$server" in
    node) url=http://127.0.0.1:18190; pid=$node_pid; extra=(--no-accounts) ;;
    baseline) url=http://127.0.0.1:18192; pid=$base_pid ;;
    *) url=http://127.0.0.1:18191; pid=$ds_pid ;;
  esac
  "$ds" bench live "${extra[@]}" --url "$url" --server-pid "$pid" --streams 1 --viewers "$v" --fps "$fps" \
    --size 320x240 --duration "$duration" --warmup 3 --images "$shared/testdata/images" \
    --prefix "fan${RANDOM}" | tail -1 |
    python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["server_cpu_cores"], j["delivered"], j["seconds"])'
}

echo "viewers=$viewers fps=$fps duration=${duration}s rounds=$rounds"
ratios=() base_ratios=()
for r in $(seq "$rounds"); do
  declare -A per
  for server in "${servers[@]}"; do
    read -r c0 _ _ < <(run "$server" 0)
    read -r c1 d1 s1 < <(run "$server" "$viewers")
    per[$server]=$(python3 -c "print('%.2f' % (($c1 - $c0) * $s1 / max($d1, 1) * 1e6))")
    echo "round $r $server: cpu ${c0} cores at 0 viewers, ${c1} cores at $viewers viewers, $d1 frames delivered: ${per[$server]} us per delivered frame"
  done
  ratio=$(python3 -c "print('%.3f' % (${per[dreamstream]} / ${per[node]}))")
  ratios+=("$ratio")
  echo "round $r ratio dreamstream/node: $ratio"
  if [ -n "$baseline" ]; then
    base_ratio=$(python3 -c "print('%.3f' % (${per[baseline]} / ${per[node]}))")
    base_ratios+=("$base_ratio")
    echo "round $r ratio baseline/node: $base_ratio"
  fi
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
med=$(median "${ratios[@]}")
if [ -n "$baseline" ]; then
  echo "{\"viewers\": $viewers, \"fps\": $fps, \"ratio_median\": $med, \"baseline_ratio_median\": $(median "${base_ratios[@]}")}"
else
  echo "{\"viewers\": $viewers, \"fps\": $fps, \"ratio_median\": $med}"
fi
