#!/usr/bin/env bash
# Peak memory of `eval.py predict --input`, which streams a file window by window (labelling.py):
# a 6-layer model (all-MiniLM-L6-v2) and a 12-layer one (bge-small-en), each trained for a few steps,
# label a 2 MB CSV to the end and a 200 MB CSV for MINUTES minutes, stopped then with Ctrl-C (SIGINT).
# /usr/bin/time -v gives each run's peak resident memory; a sampler writes the memory and the rows
# written every 10 s, to show that it stays flat while the rows go by. Results: docs/predict-memory.md.
#
#   experiments/predict_memory.sh                      # runs and CSVs under /tmp/nanobert-predict-memory
#   WORK=/somewhere MINUTES=5 experiments/predict_memory.sh
#   BEFORE=<git ref> experiments/predict_memory.sh     # also the predict of an older commit, on the 200 MB file
#   ONLY=minilm-6 MINUTES=30 experiments/predict_memory.sh   # one model; 30 minutes label all of 200 MB
#
# The 12-layer model is read from NANOBERT_MODELS (a folder holding bge-small-en/); without it, that
# half is skipped. Everything it writes stays under WORK, outside the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
case $PY in /*) ;; *) PY="$PWD/$PY" ;; esac  # absolute: the older commit of BEFORE runs from its own folder
WORK=${WORK:-/tmp/nanobert-predict-memory}
MINUTES=${MINUTES:-3}
THREADS=${THREADS:-2}
export OMP_NUM_THREADS=$THREADS
mkdir -p "$WORK"

# 1. The data: a small labelled CSV to train on, and comments to label (2 MB and 200 MB, same kind of rows).
"$PY" - "$WORK" <<'EOF'
import csv, random, sys
from pathlib import Path
work = Path(sys.argv[1])
words = ("you are the people day it was on for with his they at be this from have or by one had not but what all "
         "were when we there can an your which their said if do will each about how up out them good great love "
         "bad terrible awful idiot stupid nice thanks lol really just like know think time").split()
rng = random.Random(0)
def comment():
    n = rng.choice([4, 8, 12, 20, 30, 60])  # short, and some past 128 tokens once in a while
    return " ".join(rng.choice(words) for _ in range(n * (8 if rng.random() < 0.01 else 1)))
if not (work / "train.csv").exists():
    with open(work / "train.csv", "w", newline="") as f:
        w = csv.writer(f); w.writerow(["text", "label"])
        for i in range(400):
            w.writerow([comment() + (" terrible" if i % 2 else " great"), i % 2])
for name, size in (("2mb.csv", 2_000_000), ("200mb.csv", 200_000_000)):
    if (work / name).exists():
        continue
    with open(work / name, "w", newline="") as f:
        w = csv.writer(f); w.writerow(["id", "text"])
        i = 0
        while f.tell() < size:
            w.writerow([i, comment()]); i += 1
    print(f"{name}: {i} rows")
EOF
ls -l "$WORK"/*.csv

# 2. The models, trained for a few steps: what is measured is labelling, not their quality.
train() {  # name model
    [ -f "$WORK/$1/summary.json" ] || "$PY" train.py teacher --model "$2" --data "$WORK/train.csv" --max-train 64 --epochs 1 \
        --split "$WORK/split.json" --out "$WORK/$1" --threads "$THREADS" --no-progress > "$WORK/$1.train.log"
}
train minilm-6 sentence-transformers/all-MiniLM-L6-v2
runs=(minilm-6)
if [ -n "${NANOBERT_MODELS:-}" ] && [ -d "$NANOBERT_MODELS/bge-small-en" ]; then
    train bge-12 bge-small-en
    runs+=(bge-12)
fi
[ -n "${ONLY:-}" ] && read -r -a runs <<< "$ONLY"  # ONLY="minilm-6": just those models

# 3. Labelling, measured. A child started in the background of a script inherits SIGINT ignored, and
# Python keeps it so: the wrapper gives eval.py the default back, as a terminal would.
sigint_default=(-c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.executable, [sys.executable] + sys.argv[1:])')

measure() {  # label: run input seconds [eval.py ...]
    local label=$1 run=$2 input=$3 seconds=$4 script=${5:-eval.py}
    local out="$WORK/$label.out.csv"
    rm -f "$out" "$WORK/$label.out.partial.csv" "$WORK/$label.samples"
    /usr/bin/time -v -o "$WORK/$label.time" timeout -s INT "$seconds" "$PY" "${sigint_default[@]}" "$script" predict \
        --run "$WORK/$run" --input "$input" --output "$out" --no-progress > /dev/null 2> "$WORK/$label.err" &
    local waiter=$! pid="" t=0
    while [ -z "$pid" ] && kill -0 "$waiter" 2>/dev/null; do sleep 0.2; pid=$(pgrep -n -f -- "--output $out" || true); done
    while [ -n "$pid" ] && [ -e "/proc/$pid" ]; do  # seconds, resident MB, rows written so far
        rss=$(awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$pid/status" 2>/dev/null || true)
        rows=$( (cat "$out" "$WORK/$label.out.partial.csv" 2>/dev/null || true) | wc -l)
        [ -n "$rss" ] && echo "$t $rss $rows" >> "$WORK/$label.samples"
        sleep 10; t=$((t + 10))
    done
    wait "$waiter" || true
    local peak
    peak=$(awk -F': ' '/Maximum resident set size/ {print int($2 / 1024)}' "$WORK/$label.time")
    echo "== $label: peak ${peak} MB; $(tail -n 1 "$WORK/$label.err")"
    echo "   samples (s, MB, rows): $(tr '\n' ';' < "$WORK/$label.samples" 2>/dev/null)"
}

for run in "${runs[@]}"; do
    measure "$run-2mb" "$run" "$WORK/2mb.csv" 3600
    measure "$run-200mb" "$run" "$WORK/200mb.csv" "$((MINUTES * 60))"
done

# 4. Optionally the predict of an older commit on the 200 MB file, for comparison (it read the whole file first).
if [ -n "${BEFORE:-}" ]; then
    rm -rf "$WORK/before" && mkdir -p "$WORK/before"
    git archive "$BEFORE" | tar -x -C "$WORK/before"
    ( cd "$WORK/before" && run="${runs[0]}" &&
      /usr/bin/time -v -o "$WORK/before-200mb.time" timeout -s INT "$((MINUTES * 60))" "$PY" "${sigint_default[@]}" eval.py \
          predict --run "$WORK/$run" --input "$WORK/200mb.csv" --output "$WORK/before-200mb.out.csv" --no-progress \
          > /dev/null 2> "$WORK/before-200mb.err" || true )
    echo "== before ($BEFORE), ${runs[0]}, 200 MB: peak $(awk -F': ' '/Maximum resident set size/ {print int($2 / 1024)}' \
        "$WORK/before-200mb.time") MB; $(tail -n 1 "$WORK/before-200mb.err")"
fi
grep -o 'amx[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' '; echo "($(nproc) cores)"
