#!/usr/bin/env bash
# Seed 001 Table 1 on MNIST and Fashion-MNIST: the 16 configs of this folder, 3 seeds each, run side by side
# (one process per config; on a GPU they share it). Usage:
#   configs/table1/run_all.sh OUT_DIR [LIMIT_SECONDS] [KEY=VALUE ...]
# e.g. IBHEBB_DATA=.data configs/table1/run_all.sh runs/table1 330 device=cuda
# Runs still going after LIMIT_SECONDS are stopped; their metrics.jsonl holds every finished epoch.
# Then: ibhebb compare OUT_DIR/mnist-* OUT_DIR/fashion-mnist-*
set -u
out=${1:?usage: run_all.sh OUT_DIR [LIMIT_SECONDS] [KEY=VALUE ...]}
limit=${2:-0}
shift $(( $# >= 2 ? 2 : 1 ))
here=$(dirname "$0")
mkdir -p "$out"
pids=()
for cfg in "$here"/mnist-*.toml "$here"/fashion-mnist-*.toml; do
  name=$(basename "$cfg" .toml)
  if [ "$limit" -gt 0 ]; then run=(timeout -s INT "$limit"); else run=(); fi
  "${run[@]}" python3 -m ibhebb train "$cfg" "$@" --out "$out/$name" --overwrite --no-progress >"$out/$name.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
