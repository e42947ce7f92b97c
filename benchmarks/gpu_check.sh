#!/usr/bin/env bash
# Every CUDA path tested and timed with one command (issue 18).
#
#   bash benchmarks/gpu_check.sh [options] OUT_DIR
#
# Phases (each under its own timeout; a failing or timed-out phase is recorded and the next one
# runs; the whole run stays within --budget seconds, 470 by default, i.e. under 8 minutes):
#   env                 python / torch / CUDA / Triton / GPU facts (nvidia-smi)
#   install             a CUDA torch wheel, the project with its test + triton extras, and
#                       torch-scatter where a wheel for this torch/CUDA installs; skipped when all
#                       is already importable (or with --no-install). Works without network when
#                       a CUDA torch is installed: the project runs from the checkout (PYTHONPATH).
#   cuda_tests          python -m pytest -m cuda tests/cuda (ops, layers, models, export, DDP)
#   bench_segment_ops   benchmarks/bench_segment_ops_cuda.py: fused vs torch vs PyG vs
#                       torch-scatter, forward+backward, GB/s and % of peak bandwidth, 1M/10M edges
#   bench_kg_layer      benchmarks/bench_kg_layer_cuda.py: KGAttentionConv, every attention path
#   bench_katrec_epoch  benchmarks/bench_katrec_epoch_cuda.py: KATRec epoch on Yelp, GPU vs 1-thread
#                       CPU (CPU side extrapolated from a few steps)
#   report              OUT_DIR/gpu_check.json: every phase's status, time, log tail and results,
#                       and the issue's targets (measured / met)
#
# Options:
#   --dry-run           print the plan (and write OUT_DIR/plan.json if OUT_DIR is given); exit 0.
#                       Needs no GPU and imports nothing (CI runs it).
#   --no-install        skip the install phase
#   --python PY         the interpreter to use (default: $PYTHON, else python3)
#   --peak-gbps X       peak memory bandwidth of the GPU in GB/s (default: from the device name)
#   --budget S          total seconds for all phases (default 470)
#   --data DIR          datasets folder (default: $KGSEQGRAPH_DATA, ./shared/data, ../shared/data)
#   --quick             smaller benchmark sizes (1M edges only)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY=0; NO_INSTALL=0; QUICK=0; PY="${PYTHON:-python3}"; PEAK=""; BUDGET=470; DATA=""; OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --no-install) NO_INSTALL=1 ;;
    --quick) QUICK=1 ;;
    --python) PY="$2"; shift ;;
    --peak-gbps) PEAK="$2"; shift ;;
    --budget) BUDGET="$2"; shift ;;
    --data) DATA="$2"; shift ;;
    -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
    -*) echo "gpu_check.sh: unknown option $1" >&2; exit 2 ;;
    *) OUT="$1" ;;
  esac
  shift
done
if [ -z "$OUT" ] && [ "$DRY" -eq 0 ]; then
  echo "usage: bash benchmarks/gpu_check.sh [--dry-run] [--no-install] [--python PY] [--peak-gbps X] [--budget S] [--data DIR] OUT_DIR" >&2
  exit 2
fi
if [ -z "$DATA" ]; then
  for d in "${KGSEQGRAPH_DATA:-}" "$ROOT/shared/data" "$ROOT/../shared/data"; do
    if [ -n "$d" ] && [ -d "$d" ]; then DATA="$(cd "$d" && pwd)"; break; fi
  done
fi

# ------------------------------------------------------------------------------- the plan
# name | cap seconds | command (run with bash -c in the repository root, $PY = the interpreter)
SIZES="1e6 1e7"; [ "$QUICK" -eq 1 ] && SIZES="1e6"
LAYER_GRAPHS="ml-100k yelp synthetic-1M synthetic-10M"; [ "$QUICK" -eq 1 ] && LAYER_GRAPHS="ml-100k yelp synthetic-1M"
PEAK_ARG=""; [ -n "$PEAK" ] && PEAK_ARG="--peak-gbps $PEAK"
DATA_ARG=""; [ -n "$DATA" ] && DATA_ARG="--data '$DATA'"
PHASES=(env install cuda_tests bench_segment_ops bench_kg_layer bench_katrec_epoch)
declare -A CAP=([env]=30 [install]=150 [cuda_tests]=240 [bench_segment_ops]=60 [bench_kg_layer]=45 [bench_katrec_epoch]=60)
declare -A CMD=(
  [env]="\$PY benchmarks/gpu_check_report.py --env \"\$OUT/env.json\""
  [install]="install_all"
  [cuda_tests]="\$PY -m pytest -m cuda -v -p no:cacheprovider --junitxml=\"\$OUT/cuda_tests.xml\" tests/cuda/test_ops_cuda.py tests/cuda/test_layers_cuda.py tests/cuda/test_models_cuda.py tests/cuda/test_export_cuda.py tests/cuda/test_ddp_cuda.py"
  [bench_segment_ops]="\$PY benchmarks/bench_segment_ops_cuda.py --sizes $SIZES $PEAK_ARG --out \"\$OUT/bench_segment_ops.json\""
  [bench_kg_layer]="\$PY benchmarks/bench_kg_layer_cuda.py $DATA_ARG --graphs $LAYER_GRAPHS --repeats 5 --out \"\$OUT/bench_kg_layer.json\""
  [bench_katrec_epoch]="\$PY benchmarks/bench_katrec_epoch_cuda.py $DATA_ARG --out \"\$OUT/bench_katrec_epoch.json\""
)
MIN_PHASE=20   # seconds reserved for every phase still to come

print_plan() {
  echo "gpu_check plan (budget ${BUDGET}s; each phase: min(cap, what the budget leaves); a failure is recorded, not fatal)"
  echo "  repository: $ROOT"
  echo "  python:     $PY ($(command -v "$PY" 2>/dev/null || echo 'not found'))"
  echo "  data:       ${DATA:-none found (Yelp epoch falls back to a Yelp-sized synthetic graph)}"
  if command -v nvidia-smi >/dev/null 2>&1; then
    echo "  nvidia-smi: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -4 | tr '\n' ';')"
  else
    echo "  nvidia-smi: not found (no NVIDIA driver here)"
  fi
  local i=1
  for p in "${PHASES[@]}"; do
    local what="${CMD[$p]}"
    [ "$p" = install ] && what="CUDA torch (if torch.cuda.is_available() is false): pip install torch; project: pip install -e '.[test,triton]' (if a dependency is missing); torch-scatter from data.pyg.org wheels (optional)"
    [ "$p" = install ] && [ "$NO_INSTALL" -eq 1 ] && what="skipped (--no-install)"
    printf '  %d. %-19s cap %4ss  %s\n' "$i" "$p" "${CAP[$p]}" "$what"
    i=$((i + 1))
  done
  printf '  %d. %-19s          %s\n' "$i" report "\$PY benchmarks/gpu_check_report.py \$OUT -> \$OUT/gpu_check.json"
}

if [ "$DRY" -eq 1 ]; then
  print_plan
  if [ -n "$OUT" ]; then
    mkdir -p "$OUT"
    {
      printf '{"dry_run": true, "budget_seconds": %s, "phases": [' "$BUDGET"
      sep=""
      for p in "${PHASES[@]}" report; do
        printf '%s{"name": "%s", "cap_seconds": %s}' "$sep" "$p" "${CAP[$p]:-null}"; sep=", "
      done
      printf ']}\n'
    } > "$OUT/plan.json"
    echo "  plan written to $OUT/plan.json"
  fi
  exit 0
fi

# ------------------------------------------------------------------------------- running
mkdir -p "$OUT/logs" "$OUT/phases"
OUT="$(cd "$OUT" && pwd)"
cd "$ROOT" || exit 1
export OUT PY ROOT
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
[ -n "$DATA" ] && export KGSEQGRAPH_DATA="$DATA"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TRITON_DEFAULT_FP_FUSION="${TRITON_DEFAULT_FP_FUSION:-1}"
START=$(date +%s)
DEADLINE=$((START + BUDGET))
echo "{\"started\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\", \"budget_seconds\": $BUDGET, \"argv\": \"$*\", \"quick\": $QUICK}" > "$OUT/run.json"

have_modules() {  # all importable?
  "$PY" - "$@" <<'EOF' >/dev/null 2>&1
import importlib.util, sys
sys.exit(0 if all(importlib.util.find_spec(m) for m in sys.argv[1:]) else 1)
EOF
}

install_all() {
  # a virtual environment on top of the interpreter's packages (keeps a preinstalled CUDA torch)
  local pipq="-q --disable-pip-version-check --retries 1 --timeout 20"
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "install: no CUDA-enabled torch for $PY; installing the default (CUDA) torch wheel"
    if [ ! -x "$ROOT/.gpu-venv/bin/python" ]; then
      "$PY" -m venv --system-site-packages "$ROOT/.gpu-venv" || return 1
    fi
    PY="$ROOT/.gpu-venv/bin/python"
    echo "PY=$PY" > "$OUT/python.env"
    "$PY" -m pip install $pipq --upgrade torch || return 1
    "$PY" -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available()); sys.exit(0 if torch.cuda.is_available() else 1)" || return 1
  else
    echo "install: $PY already has a CUDA torch: $("$PY" -c 'import torch; print(torch.__version__, torch.version.cuda)')"
  fi
  if have_modules torch_geometric triton pytest pandas safetensors matplotlib tqdm onnx onnxscript onnxruntime; then
    echo "install: the project's dependencies are importable; running from the checkout"
  else
    echo "install: pip install -e '.[test,triton]'"
    "$PY" -m pip install $pipq -e "$ROOT[test,triton]" || return 1
  fi
  if have_modules torch_scatter; then
    echo "install: torch-scatter present"
  else
    local tv cu
    tv=$("$PY" -c "import torch; print(torch.__version__.split('+')[0])")
    cu=$("$PY" -c "import torch; print('cu' + (torch.version.cuda or '').replace('.', ''))")
    echo "install: torch-scatter for torch $tv + $cu (optional; a missing wheel is not an error)"
    timeout 90 "$PY" -m pip install $pipq --only-binary=:all: torch-scatter \
      -f "https://data.pyg.org/whl/torch-${tv}+${cu}.html" \
      || echo "install: torch-scatter did not install (no wheel for this torch/CUDA, or no network)"
  fi
  return 0
}
export -f install_all have_modules

run_phase() {  # name
  local name="$1" cap="${CAP[$1]}" rest="$2"
  local now left t status rc t0 t1
  now=$(date +%s)
  left=$((DEADLINE - now - rest * MIN_PHASE))
  t=$cap; [ "$left" -lt "$t" ] && t=$left
  if [ "$t" -lt 5 ]; then
    printf '{"name": "%s", "status": "skipped", "reason": "budget exhausted", "timeout_seconds": %s}\n' "$name" "$t" > "$OUT/phases/$name.json"
    echo "== $name: skipped (budget exhausted)"
    return
  fi
  [ -f "$OUT/python.env" ] && . "$OUT/python.env" && export PY
  echo "== $name (timeout ${t}s)"
  t0=$(date +%s%N)
  if [ "$name" = install ]; then
    timeout -s INT -k 15 "$t" bash -c 'install_all' > "$OUT/logs/$name.log" 2>&1
  else
    timeout -s INT -k 15 "$t" bash -c "${CMD[$name]}" > "$OUT/logs/$name.log" 2>&1
  fi
  rc=$?
  t1=$(date +%s%N)
  case $rc in
    0) status=ok ;;
    124|137) status=timeout ;;
    *) status=failed ;;
  esac
  printf '{"name": "%s", "status": "%s", "rc": %s, "seconds": %s, "timeout_seconds": %s}\n' \
    "$name" "$status" "$rc" "$(( (t1 - t0) / 1000000000 )).$(printf '%03d' $(( (t1 - t0) / 1000000 % 1000 )))" \
    "$t" > "$OUT/phases/$name.json"
  echo "   $status (rc $rc); log: $OUT/logs/$name.log"
}

n=${#PHASES[@]}
i=0
for p in "${PHASES[@]}"; do
  i=$((i + 1))
  if [ "$p" = install ] && [ "$NO_INSTALL" -eq 1 ]; then
    printf '{"name": "install", "status": "skipped", "reason": "--no-install"}\n' > "$OUT/phases/install.json"
    echo "== install: skipped (--no-install)"
    continue
  fi
  run_phase "$p" $((n - i))
done
[ -f "$OUT/python.env" ] && . "$OUT/python.env"
"$PY" benchmarks/gpu_check_report.py "$OUT" || python3 benchmarks/gpu_check_report.py "$OUT"
echo "gpu_check: $(( $(date +%s) - START ))s; results in $OUT/gpu_check.json"
