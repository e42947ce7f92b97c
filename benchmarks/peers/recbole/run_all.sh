#!/usr/bin/env bash
# Run the side-by-side benchmark; each run writes results/<library>_<model>.json.
#
#   bash benchmarks/peers/recbole/run_all.sh export            # our split -> work/kgsg-ml100k
#   bash benchmarks/peers/recbole/run_all.sh recbole [SASRec:6 BERT4Rec:5 GRU4Rec:8]
#   bash benchmarks/peers/recbole/run_all.sh ours    [sasrec:80 bert4rec:80 gru4rec:80]
#   python benchmarks/peers/recbole/compare.py                 # -> results.json, results.md
#
# The RecBole runs are long (minutes per epoch on 1 CPU thread) and their results are committed:
# re-run them only on request. MODEL:EPOCHS pairs choose the models and epoch budgets.
# Env: THREADS (1), PATIENCE (5 RecBole, 10 ours), OUR_PYTHON, RECBOLE_VENV.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
RB_PY="${RECBOLE_VENV:-$HERE/.venv}/bin/python"
OUR_PY="${OUR_PYTHON:-$ROOT/.venv/bin/python}"
THREADS="${THREADS:-1}"
what="${1:?export | recbole | ours}"; shift || true
cd "$ROOT"
case "$what" in
  export) "$OUR_PY" benchmarks/peers/recbole/export_split.py ;;
  recbole)
    runs=("${@:-SASRec:6 BERT4Rec:5 GRU4Rec:8}"); runs=(${runs[@]})
    for r in "${runs[@]}"; do
      m="${r%%:*}"; e="${r##*:}"; lower="$(echo "$m" | tr A-Z a-z)"
      "$RB_PY" benchmarks/peers/recbole/run_recbole.py --model "$m" --epochs "$e" \
        --patience "${PATIENCE:-5}" --threads "$THREADS" \
        --out "benchmarks/peers/recbole/results/recbole_${lower}.json"
    done ;;
  ours)
    runs=("${@:-sasrec:80 bert4rec:80 gru4rec:80}"); runs=(${runs[@]})
    for r in "${runs[@]}"; do
      m="${r%%:*}"; e="${r##*:}"
      "$OUR_PY" benchmarks/peers/recbole/run_ours.py --model "$m" --epochs "$e" \
        --patience "${PATIENCE:-10}" --threads "$THREADS" ${PRESET:+--preset "$PRESET"} \
        --out "benchmarks/peers/recbole/results/ours_${m}${PRESET:+_$PRESET}.json"
    done ;;
  *) echo "unknown step $what (export | recbole | ours)" >&2; exit 2 ;;
esac
