#!/usr/bin/env bash
# How the presets' learning rates were chosen: one epoch on a fixed 4,000-tweet subset of the
# Davidson training split, each method at a few learning rates, judged by validation macro-F1
# (never the test split). Usage: bash experiments/lr_sweep.sh [MODEL] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-sentence-transformers/all-MiniLM-L6-v2}
out=${2:-runs/lr-sweep}
py=${PYTHON:-.venv/bin/python}
common=(--model "$model" --data davidson --max-train 4000 --epochs 1 --no-progress --split "$out/split.json")
for lr in 3e-5 1e-4 3e-4; do
  $py train.py teacher "${common[@]}" --lr $lr --out "$out/teacher-$lr"
done
for lr in 2e-5 2e-4 1e-3 3e-3; do
  $py train.py lora "${common[@]}" --lr $lr --out "$out/lora-$lr"
done
best=$(for d in "$out"/teacher-*; do echo "$(python3 -c "import json;print(json.load(open('$d/summary.json'))['best_val_macro_f1'])") $d"; done | sort -r | head -1 | cut -d' ' -f2)
for lr in 3e-5 1e-4 3e-4; do
  $py train.py distill --teacher "$best" --layers odd --data davidson --max-train 4000 --epochs 1 --no-progress \
    --split "$out/split.json" --lr $lr --out "$out/odd-$lr"
done
echo "method lr best_val_macro_f1 final_train_loss seconds"
for d in "$out"/*/; do
  python3 -c "import json,sys;s=json.load(open('$d/summary.json'));r=json.load(open('$d/run.json'))['settings'];print(s['method'],r['lr'],round(s['best_val_macro_f1'],4),round(s['final_train_loss'],4),round(s['wall_seconds']))"
done
