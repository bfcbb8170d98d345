#!/usr/bin/env bash
# Leave one source out (docs/unseen.md): the project's stand-in for text from elsewhere. A two-question
# teacher (the robust preset: bge-small-en, the training templates, no class weights, one epoch) trained
# on one dataset alone is scored on hate in the other dataset's grouped test split, both ways. The
# baseline is that teacher over three seeds; each lever trains it once more with one thing changed.
# Where a lever has a setting to choose (a perturbation rate, a schedule), its candidates are judged on
# the source's own validation split (hate macro-F1, experiments/choose_on_validation.py) and only the
# one chosen there meets the other dataset. `eval.py beyond` then puts them side by side with paired
# intervals. Finished runs are kept: run it again to finish what was stopped.
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
  for seed in 0 1 2; do                                                   # the baseline, three seeds
    train teacher "$r/teacher$([ $seed = 0 ] || echo -s$seed)" --data $src --multilabel --seed $seed
  done
  train distill "$r/odd" --teacher "$r/teacher" --layers odd              # its odd student (data and split inherited)
  train distill "$r/odd-ensemble" --teacher "$r/teacher" --ensemble "$r/teacher-s1,$r/teacher-s2" --layers odd
  for rate in 0.1 0.3 0.6; do                                             # real texts misspelt too
    train teacher "$r/perturb-$rate" --data $src --multilabel --perturb $rate
  done
  train pretrain "$r/mlm" --data $src --multilabel --augment "" --split "$r/split.json"  # MLM on its own training texts
  train teacher "$r/mlm-teacher" --data $src --multilabel --model "$r/mlm"
  train teacher "$r/lr-5e-5" --data $src --multilabel --lr 5e-5           # the schedule: learning rate,
  train teacher "$r/lr-2e-4" --data $src --multilabel --lr 2e-4
  train teacher "$r/warmup-0" --data $src --multilabel --warmup 0          # warmup (the preset's: 0.1),
  train teacher "$r/warmup-0.3" --data $src --multilabel --warmup 0.3
  train teacher "$r/epochs3-hate" --data $src --multilabel --epochs 3 --select-label hate  # epochs (the best on hate)
done
mkdir -p "$out/beyond"
choices=$out/beyond/choices.md
printf '# Levers chosen on validation\n\nWritten by experiments/unseen.sh (experiments/choose_on_validation.py).\n\n' > "$choices"
runs=()
for src in davidson hate_speech18; do
  r=$out/$src
  perturb=$($py experiments/choose_on_validation.py --lever "perturbation rate" --table "$choices" \
    "$r/teacher" "$r"/perturb-{0.1,0.3,0.6})
  schedule=$($py experiments/choose_on_validation.py --lever "schedule" --table "$choices" \
    "$r/teacher" "$r/lr-5e-5" "$r/lr-2e-4" "$r/warmup-0" "$r/warmup-0.3" "$r/epochs3-hate")
  runs+=("$r/teacher" "$r/teacher-s1" "$r/teacher-s2" "$r/odd" "$r/odd-ensemble" "$r/mlm-teacher")
  for chosen in "$perturb" "$schedule"; do                               # the baseline chosen: nothing to add
    [ "$chosen" = "$r/teacher" ] || runs+=("$chosen")
  done
done
$py eval.py beyond "${runs[@]}" --out "$out/beyond"
