#!/usr/bin/env bash
# Runs the three "Your data" examples of spark_jobs/README.md (raw CSV -> generic bundle ->
# 2-rank training -> test metrics). Usage: research/ingest_parity/worked_examples.sh [OUT]
# OUT defaults to data/examples; EPOCHS (default 2) shortens or lengthens training.
set -euo pipefail
OUT=${1:-data/examples}
EPOCHS=${EPOCHS:-2}
PY=.venv/bin/python
TR=.venv/bin/torchrun
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
mkdir -p "$OUT"
for kind in multibehavior group sequence; do
  [ -d "$OUT/raw-$kind" ] || $PY -m distrec.synth --kind $kind --users 2000 --items 800 --out "$OUT/raw-$kind" --seed 0 --quiet \
      $([ $kind = group ] && echo --groups 300)
done
$PY -m spark_jobs.build_bundle --source generic --input "$OUT/raw-multibehavior/events" --out "$OUT/mb" \
    behaviors=view,cart,fav,buy >/dev/null
$PY -m spark_jobs.build_bundle --source generic --input "$OUT/raw-group/events" --out "$OUT/grp" \
    --input-file members="$OUT/raw-group/groups/members-00000.csv" \
    --input-file group_items="$OUT/raw-group/groups/events-00000.csv" >/dev/null
$PY -m spark_jobs.build_bundle --source generic --input "$OUT/raw-sequence/events" --out "$OUT/seq" \
    split=user_holdout >/dev/null
run() {  # model config bundle
  $TR --standalone --nproc_per_node=2 -m distrec.train "$1" --config "$2" data.bundle="$OUT/$3" \
      run.dir="$OUT/run-$3" train.epochs=$EPOCHS metrics.enabled=false >"$OUT/train-$3.log" 2>&1
  $TR --standalone --nproc_per_node=2 -m distrec.evaluate --run-dir "$OUT/run-$3" --split test \
      2>>"$OUT/train-$3.log" | tee "$OUT/test-$3.json"
}
run cigf configs/cigf/synthetic.yaml mb
run igrec configs/igrec/synthetic_groups.yaml grp
run dismir configs/dismir/beauty.yaml seq
