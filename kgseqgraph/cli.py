"""The ``kgseqgraph`` command line (also ``python -m kgseqgraph``).

``kgseqgraph`` with no arguments evaluates the popularity baseline on the synthetic dataset —
offline, in seconds — and prints its full-ranking metrics.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

__all__ = ["main", "build_parser"]


def _add_dataset_args(p: argparse.ArgumentParser) -> None:
    from .datasets.registry import dataset_names

    p.add_argument("--dataset", default="synthetic", choices=dataset_names(),
                   help="dataset name (default: synthetic, offline)")
    p.add_argument("--root", default=None,
                   help="dataset folder: root/raw + root/processed, or a folder holding the raw "
                        "files (default: $KGSEQGRAPH_DATA/<dataset> or ~/.cache/kgseqgraph)")
    p.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kgseqgraph", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command")

    d = sub.add_parser("describe", help="print a summary of a dataset's collaborative KG")
    _add_dataset_args(d)
    d.add_argument("--json", action="store_true", help="print JSON instead of text")

    e = sub.add_parser("evaluate", help="evaluate a non-trained baseline (popularity)")
    _add_dataset_args(e)
    e.add_argument("--model", default="pop", choices=["pop"])
    _add_eval_args(e)

    t = sub.add_parser("train", help="train and evaluate a model")
    _add_dataset_args(t)
    t.add_argument("--model", default="sasrec",
                   help="sasrec, bert4rec, gru4rec or katrec (and its ablations)")
    t.add_argument("--epochs", type=int, default=20)
    t.add_argument("--batch-size", type=int, default=256)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--hidden-size", type=int, default=64)
    t.add_argument("--max-len", type=int, default=50)
    t.add_argument("--patience", type=int, default=5)
    t.add_argument("--output-dir", default=None, help="run folder (checkpoints, metrics, curve)")
    t.add_argument("--resume", action="store_true", help="continue from output-dir's checkpoint")
    t.add_argument("--threads", type=int, default=None,
                   help="torch threads (small models often run fastest on 1)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra model option, JSON value (e.g. --set fusion='\"concat\"')")
    _add_eval_args(t)
    return parser


def _add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep-seen", action="store_true",
                   help="keep the user's own history in the ranking (RecBole's protocol)")
    p.add_argument("--sampled", type=int, default=0, metavar="N",
                   help="also report metrics against N sampled negatives (labelled sampled-N)")


def _evaluate_pop(args: argparse.Namespace) -> dict[str, Any]:
    from .data import describe, leave_one_out
    from .datasets.registry import load_dataset
    from .evaluation import evaluate_full_ranking
    from .models import Popularity, PopularityConfig

    kwargs = {"seed": args.seed} if args.dataset == "synthetic" else {}
    data = load_dataset(args.dataset, args.root, **kwargs)
    split = leave_one_out(data)
    model = Popularity(PopularityConfig(num_items=split.num_items)).fit(split.train)
    out: dict[str, Any] = {"dataset": args.dataset, "model": "pop",
                           "split": split.report, "graph": describe(data)["nodes"]}
    for stage in ("valid", "test"):
        inputs = split.inputs(stage)
        exclude = None if args.keep_seen else (inputs.ptr, inputs.items)
        out[stage] = evaluate_full_ranking(
            lambda s, e, inputs=inputs: model.score(inputs.select(torch_arange(s, e))),
            split.targets(stage), exclude=exclude, num_items=split.num_items)
    if args.sampled:
        from .evaluation import evaluate_sampled, sample_negatives

        inputs = split.inputs("test")
        targets = split.targets("test")
        history = (inputs.ptr, inputs.items)
        negatives = sample_negatives(split.num_items, targets, history, n=args.sampled,
                                     seed=args.seed)
        out["test_sampled"] = evaluate_sampled(model.score(inputs), targets, negatives)
    return out


def torch_arange(start: int, end: int):
    import torch

    return torch.arange(start, end)


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    commands = {"describe", "evaluate", "train", "-h", "--help"}
    if not any(a in commands for a in raw):  # the quickstart: popularity on the synthetic data
        verbose = [a for a in raw if a in ("-v", "--verbose")]
        raw = verbose + ["evaluate"] + [a for a in raw if a not in ("-v", "--verbose")]
    args = build_parser().parse_args(raw)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command == "describe":
        from .data import describe, format_description
        from .datasets.registry import load_dataset

        kwargs = {"seed": args.seed} if args.dataset == "synthetic" else {}
        summary = describe(load_dataset(args.dataset, args.root, **kwargs))
        print(json.dumps(summary, indent=2) if args.json else format_description(summary))
        return 0
    if args.command == "evaluate":
        result = _evaluate_pop(args)
        print(json.dumps(result, indent=2))
        return 0
    if args.command == "train":
        from .training.cli import run_train_command

        result = run_train_command(args)
        print(json.dumps(result, indent=2))
        return 0
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
