"""LANCER vs SASRec on MovieLens-100K (chronological leave-one-out, full ranking, the user's
history excluded, pessimistic ties).

    python examples/lancer_ml100k.py --model lancer --epochs 10 --threads 1
    python examples/lancer_ml100k.py --model sasrec --epochs 200 --max-len 50 --hidden-size 64
    python examples/lancer_ml100k.py --compare-modes runs/lancer-ml100k-seed0/best_model --users 100

``--root`` defaults to ``$KGSEQGRAPH_DATA/ml-100k``. Prints the run's result JSON (test metrics
of the weights selected on validation, timings) and writes it to ``<output-dir>/results.json``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import torch

from kgseqgraph.data import leave_one_out
from kgseqgraph.datasets.registry import load_dataset
from kgseqgraph.models import lancer  # noqa: F401  (registers "lancer")
from kgseqgraph.models.factory import build_model
from kgseqgraph.training import TrainConfig, Trainer, seed_everything
from kgseqgraph.cli import parse_options


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="lancer", choices=["lancer", "sasrec"])
    p.add_argument("--root", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-len", type=int, default=20)
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--max-steps-per-epoch", type=int, default=None)
    p.add_argument("--eval-chunk-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--output-dir", default=None)
    p.add_argument("--test-score-mode", default=None,
                   help="LANCER: also evaluate the selected weights on test with this score_mode")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--compare-modes", default=None, metavar="MODEL_DIR",
                   help="no training: evaluate a saved LANCER on the first --users test users "
                        "with each score_mode (embedding, likelihood, generate)")
    p.add_argument("--users", type=int, default=100)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    root = args.root or os.path.join(os.environ.get("KGSEQGRAPH_DATA", "."), "ml-100k")
    data = load_dataset("ml-100k", root)
    split = leave_one_out(data)
    if args.compare_modes:
        compare_modes(args, data, split)
        return
    seed_everything(args.seed)
    options = {"max_len": args.max_len, "hidden_size": args.hidden_size, **parse_options(args.set)}
    if args.model == "lancer":
        options.setdefault("seed", args.seed)
    model = build_model(args.model, split.train_graph, **options)
    out_dir = args.output_dir or f"runs/{args.model}-ml100k-seed{args.seed}"
    config = TrainConfig(seed=args.seed, epochs=args.epochs, batch_size=args.batch_size,
                         lr=args.lr, patience=args.patience, num_threads=args.threads,
                         max_steps_per_epoch=args.max_steps_per_epoch, device="cpu",
                         eval_chunk_size=args.eval_chunk_size, output_dir=out_dir)
    trainer = Trainer(model, split, config)
    result = trainer.fit().to_dict()
    out = {"model": args.model, "options": options, "params": sum(
        p.numel() for p in model.parameters()), **result}
    if args.test_score_mode and args.model == "lancer":
        trainer.model.config.score_mode = args.test_score_mode
        t0 = time.perf_counter()
        with torch.no_grad():
            out[f"test_{args.test_score_mode}"] = trainer.evaluate("test")
        out[f"test_{args.test_score_mode}_seconds"] = time.perf_counter() - t0
        trainer.model.config.score_mode = "embedding"
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "example_results.json").write_text(json.dumps(out, indent=2, default=str))
    print(json.dumps({k: out[k] for k in out if k != "history"}, indent=2, default=str))


def compare_modes(args: argparse.Namespace, data, split) -> None:
    """Test metrics of one saved LANCER under each ``score_mode`` on the same users."""
    from kgseqgraph.evaluation import evaluate_scores
    from kgseqgraph.models.base import SequentialRecommender

    if args.threads:
        torch.set_num_threads(args.threads)
    model = SequentialRecommender.from_pretrained(args.compare_modes, data=split.train_graph).eval()
    users = torch.arange(min(args.users, len(split.test_inputs)))
    inputs, targets = split.test_inputs.select(users), split.test_targets[users]
    out = {"model_dir": args.compare_modes, "users": int(users.numel())}
    for mode in ("embedding", "likelihood", "generate"):
        model.config.score_mode = mode
        t0 = time.perf_counter()
        with torch.no_grad():
            scores = torch.cat([model.score(inputs.select(users[s:s + 16] - users[0]))
                                for s in range(0, users.numel(), 16)])
        metrics = evaluate_scores(scores, targets, ks=(1, 5, 10, 20), exclude=inputs.to_list(),
                                  ties="pessimistic")
        out[mode] = {"seconds": round(time.perf_counter() - t0, 1),
                     **{k: metrics[k] for k in ("HR@10", "NDCG@10", "HR@20", "MRR")}}
        logging.info("%s: %s", mode, out[mode])
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
