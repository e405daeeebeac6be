#!/usr/bin/env bash
# Compares the two JPEG codec builds of gpu-node on the same frames, side by
# side: the default pure-Rust pair (zune-jpeg decode, jpeg-encoder encode) and
# libjpeg-turbo (`--features turbojpeg`, needs cmake and nasm to build).
#
#   bench/jpeg-codecs.sh [--size WxH] [--rounds R]
set -euo pipefail
cd "$(dirname "$0")/.."
size=640x480 rounds=3
while [ $# -gt 0 ]; do
  case "$1" in
    --size) size=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
target=${CARGO_TARGET_DIR:-target}
cargo build -q --release -p gpu-node
cp "$target/release/gpu-node" "$target/release/gpu-node-rust-codecs"
cargo build -q --release -p gpu-node --features turbojpeg
cp "$target/release/gpu-node" "$target/release/gpu-node-turbojpeg"
cargo build -q --release -p gpu-node # leave the default build in place
for r in $(seq "$rounds"); do
  for build in rust-codecs turbojpeg; do
    "$target/release/gpu-node-$build" bench --size "$size" --iters 20 | tail -1 |
      python3 -c "import json,sys; j=json.load(sys.stdin); print('round $r %-12s decode %.2f ms  encode %.2f ms  (%s)' % ('$build', j['decode_ms'], j['encode_ms'], j['jpeg_codec']))"
  done
done
