#!/usr/bin/env bash
# LANCER on SmolLM2-135M-Instruct over all ML-100K users, on a GPU (docs/results.md, "LANCER on
# MovieLens-100K"): the authors' schedule where it applies — 5 passes of knowledge pre-training
# (Eq. 4), 20 epochs of joint training, batch 16, lr 2e-4, 10 beams, 32 tokens per title, item
# states recomputed every step — three seeds, one accuracy record each.
#
#   KGSEQGRAPH_DATA=/path/to/data bash benchmarks/lancer_gpu.sh [cuda:0]
set -euo pipefail
cd "$(dirname "$0")/.."
: "${KGSEQGRAPH_DATA:?set KGSEQGRAPH_DATA to the folder holding ml-100k/}"
DEVICE="${1:-cuda}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false
for seed in 0 1 2; do
  python examples/lancer_ml100k.py --smollm2 --device "$DEVICE" --threads 4 --seed "$seed" \
    --epochs 20 --patience 5 --batch-size 16 --lr 2e-4 --eval-chunk-size 64 \
    --set knowledge_pretrain_epochs=5 --set knowledge_batch_size=16 --set item_state_refresh=0 \
    --set max_item_tokens=32 --set max_knowledge_tokens=64 \
    --variant smollm2 --results-dir benchmarks/results/text/ml-100k
done
