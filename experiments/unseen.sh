#!/usr/bin/env bash
# Leave one source out (docs/unseen.md): the project's stand-in for text from elsewhere. A two-question
# teacher (the robust preset: bge-small-en, the training templates, no class weights, one epoch) trained
# on one dataset alone is scored on hate in the other dataset's grouped test split, both ways; each lever
# trains the same teacher once more with one thing changed, and `eval.py beyond` puts them side by side
# with paired intervals. Finished runs are kept: run it again to finish what was stopped.
#   NANOBERT_DATA=../shared/data NANOBERT_MODELS=../shared/models bash experiments/unseen.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/unseen}
py=${PYTHON:-.venv/bin/python}
train() {  # train METHOD FOLDER FLAGS...: once; a finished run is left as it is
  local method=$1 dir=$2; shift 2
  [ -f "$dir/summary.json" ] || $py train.py "$method" --preset robust --no-progress --out "$dir" "$@"
}
for src in davidson hate_speech18; do
  r=$out/$src
  train teacher "$r/teacher" --data $src --multilabel                     # the baseline
  train distill "$r/odd" --teacher "$r/teacher" --layers odd              # its odd student (data and split inherited)
  train teacher "$r/perturb" --data $src --multilabel --perturb 0.3       # real texts misspelt too
  train pretrain "$r/mlm" --data $src --multilabel --augment "" --split "$r/split.json"  # MLM on its own training texts
  train teacher "$r/mlm-teacher" --data $src --multilabel --model "$r/mlm"
  train teacher "$r/epochs3" --data $src --multilabel --epochs 3          # the best of 3 epochs on validation
done
runs=()
for src in davidson hate_speech18; do
  for arm in teacher odd perturb mlm-teacher epochs3; do
    [ -f "$out/$src/$arm/summary.json" ] && runs+=("$out/$src/$arm")
  done
done
$py eval.py beyond "${runs[@]}" --out "$out/beyond"
