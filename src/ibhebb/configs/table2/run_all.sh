#!/usr/bin/env bash
# Seed 001 Table 2 (the VGG-like conv net): the 7 rules of one (data set, width, optimiser) row, run side by side
# (one process per config; on a GPU they share it). Usage:
#   configs/table2/run_all.sh OUT_DIR DATA WIDTH ROW [LIMIT_SECONDS] [KEY=VALUE ...]
# DATA: cifar10 | fashion-mnist; WIDTH: 1x | 2x; ROW: sgd-div | adamw-bn. e.g. the published 1x SGD row:
#   IBHEBB_DATA=.data configs/table2/run_all.sh runs/table2 cifar10 1x sgd-div 0 device=cuda
# or a CPU-sized run (width 1/8, 64/8 groups, 6000 samples, 2 epochs, 3 seeds):
#   configs/table2/run_all.sh runs/t2 fashion-mnist 1x sgd-div 0 model.scale=0.125 model.groups=8 \
#     data.n_train=6000 epochs=2 seeds=3 threads=1
# Runs still going after LIMIT_SECONDS (0: none) are stopped; their metrics.jsonl holds every finished epoch.
# Then: ibhebb compare OUT_DIR/DATA-*-WIDTH-ROW
set -u
usage="usage: run_all.sh OUT_DIR DATA WIDTH ROW [LIMIT_SECONDS] [KEY=VALUE ...]"
out=${1:?$usage}; data=${2:?$usage}; width=${3:?$usage}; row=${4:?$usage}
limit=${5:-0}
shift $(( $# >= 5 ? 5 : 4 ))
here=$(dirname "$0")
mkdir -p "$out"
pids=()
for rule in backprop feedback-alignment sign-symmetry layer-classifier layer-classifier-fa phsic-cossim phsic-gaussian; do
  name="$data-$rule-$width-$row"
  cfg="$here/$name.toml"
  [ -f "$cfg" ] || { echo "run_all.sh: no config $cfg" >&2; exit 2; }
  if [ "$limit" -gt 0 ]; then run=(timeout -s INT "$limit"); else run=(); fi
  "${run[@]}" python3 -m ibhebb train "$cfg" "$@" --out "$out/$name" --overwrite --no-progress >"$out/$name.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
