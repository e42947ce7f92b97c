#!/usr/bin/env bash
# The Yelp accuracy sweep (benchmarks/accuracy.py, the same settings as on CPU) on one GPU, many
# runs at once, inside a fixed time budget: the tuning grid of the listed models first, then their
# final seeds (seed 0 is copied from the selected grid point, as always), then the KATRec
# ablations at KATRec's chosen point (when katrec is listed). Runs that finish write
# their result JSON; a run still going at the deadline is stopped and leaves nothing but its log
# (epoch times included). Running it again skips every run whose JSON the tree holds.
#
#   KGSEQGRAPH_DATA=... bash benchmarks/gpu_yelp.sh OUT_DIR [BUDGET_SECONDS] [JOBS] [MODEL ...]
#
# OUT_DIR receives results.tar.gz (the result JSONs written by this call, paths relative to the
# repository root: untar it there) and logs.tar.gz (one log a run, the environment, the CUDA
# tests' junit file when CUDA_TESTS=1). Results go to $RESULTS (default the committed
# benchmarks/results/accuracy), so runs already committed are skipped: a GPU machine keeps
# nothing between calls (seen 2026-12-04), the working tree it receives is what carries progress.
# Environment: PYTHON, DATASET (yelp; beauty and ml-100k run the same way), DEVICE (cuda),
# PHASES ("tune final ablation": the sweep phases, in order), CUDA_TESTS=1 and CUDA_TESTS_SECONDS.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: gpu_yelp.sh OUT_DIR [BUDGET_SECONDS] [JOBS] [MODEL ...]}"
BUDGET="${2:-520}"; JOBS="${3:-10}"; shift $(( $# < 3 ? $# : 3 ))
MODELS=("$@"); [ ${#MODELS[@]} -eq 0 ] && MODELS=(katrec bert4rec sasrec kg-sasrec gru4rec pop)
RESULTS="${RESULTS:-benchmarks/results/accuracy}"; DATASET="${DATASET:-yelp}"; DEVICE="${DEVICE:-cuda}"
PHASES="${PHASES:-tune final ablation}"
START=$(date +%s); DEADLINE=$((START + BUDGET))
mkdir -p "$OUT" "$RESULTS" .devruns/logs; touch .devruns/start
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
[ -f .devdata/COMMIT ] && export KGSEQGRAPH_GIT_COMMIT="$(cat .devdata/COMMIT)"
PY="${PYTHON:-python3}"
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  "$PY" -c "import torch, torch_geometric as g; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available(), 'pyg', g.__version__)"
} > .devruns/logs/env.log 2>&1
cat .devruns/logs/env.log

left() { echo $((DEADLINE - $(date +%s))); }
run_jobs() {  # stdin: one command a line; each runs on the GPU under what is left of the budget
  xargs -P "$JOBS" -I{} sh -c '
    t=$(( '"$DEADLINE"' - $(date +%s) )); [ "$t" -gt 10 ] || exit 0
    log=.devruns/logs/$(echo "{}" | md5sum | cut -c1-10).log
    echo "{}" > "$log"
    timeout -s INT -k 10 "$t" {} --device '"$DEVICE"' --out-dir '"$RESULTS"' >> "$log" 2>&1
    echo "rc=$? $(date -u +%T) {}"'
}
plan() {  # kind -> commands for the listed models
  for m in "${MODELS[@]}"; do
    "$PY" benchmarks/accuracy.py --plan "$1" --dataset "$DATASET" --model "$m" --out-dir "$RESULTS"
  done | sed -e 's/ --out-dir=[^ ]*//' -e "s#^python #$PY #"
}
if [ "${CUDA_TESTS:-0}" = 1 ]; then
  ( timeout -s INT -k 10 "${CUDA_TESTS_SECONDS:-200}" "$PY" -m pytest -m cuda -q -p no:cacheprovider \
      --junitxml=.devruns/logs/cuda_tests.xml tests/cuda > .devruns/logs/cuda_tests.log 2>&1
    echo "cuda tests rc=$? $(tail -1 .devruns/logs/cuda_tests.log)" ) &
fi
for phase in $PHASES; do echo "== $phase ($(left)s left)"; plan "$phase" | run_jobs; done
wait
echo "== done ($(left)s left)"
find "$RESULTS" -name "*.json" -newer .devruns/start -print0 | tar -czf "$OUT/results.tar.gz" --null -T -
tar -czf "$OUT/logs.tar.gz" -C .devruns logs
ls "$RESULTS/$DATASET" 2>/dev/null | sed 's/^/  /'
