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
    t.add_argument("--batch-size", type=int, default=256,
                   help="windows per optimiser step, over all processes under torchrun")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--hidden-size", type=int, default=None,
                   help="item embedding / encoder width (default: the model's own, 64 for the "
                        "ID models; KATRec derives it from its KG widths)")
    t.add_argument("--max-len", type=int, default=50)
    t.add_argument("--patience", type=int, default=5)
    t.add_argument("--output-dir", default=None, help="run folder (checkpoints, metrics, curve)")
    t.add_argument("--resume", action="store_true", help="continue from output-dir's checkpoint")
    t.add_argument("--threads", type=int, default=None,
                   help="torch threads (small models often run fastest on 1)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra model option, JSON value (e.g. --set fusion='\"concat\"')")
    _add_eval_args(t)

    x = sub.add_parser("export", help="export a trained model's scoring path for serving",
                       description="Export a saved model (a save_pretrained folder such as "
                                   "RUN/best_model) to one file: padded item ids -> scores, item "
                                   "table (and for KATRec the KG propagation) precomputed. Graph "
                                   "models are rebuilt over the dataset given by --dataset/--root/"
                                   "--seed, which must be the one they were trained on.")
    _add_dataset_args(x)
    x.add_argument("--model-dir", required=True,
                   help="folder written by save_pretrained (config.json + model.safetensors)")
    x.add_argument("--output", required=True, help="file to write (e.g. scorer.pt2)")
    x.add_argument("--format", default=None, choices=["pt2", "onnx", "torchscript"],
                   help="default: onnx for a .onnx output, else pt2 (torch.export)")
    x.add_argument("--exclude-history", action="store_true",
                   help="score the input's own items -inf inside the exported program")
    x.add_argument("--fixed-length", action="store_true",
                   help="take exactly max_len-sized windows (default: 1 to the window, where the "
                        "export allows it)")
    return parser


def _add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep-seen", action="store_true",
                   help="keep the user's own history in the ranking (RecBole's protocol)")
    p.add_argument("--sampled", type=int, default=0, metavar="N",
                   help="also report metrics against N sampled negatives (labelled sampled-N)")


def _evaluate_pop(args: argparse.Namespace) -> dict[str, Any]:
    from .data import describe, leave_one_out
    from .evaluation import evaluate_full_ranking
    from .models import Popularity, PopularityConfig
    from .training.cli import load_dataset_from_args

    data = load_dataset_from_args(args)
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


def _export_model(args: argparse.Namespace) -> dict[str, Any]:
    from pathlib import Path

    from .export import export_scorer, load_exported
    from .models import MODEL_REGISTRY, SequentialRecommender
    from .models.base import CONFIG_NAME

    model_dir = Path(args.model_dir)
    config_file = model_dir / CONFIG_NAME
    if not config_file.is_file():
        raise SystemExit(f"{model_dir} holds no {CONFIG_NAME}: pass a save_pretrained folder "
                         "(e.g. RUN/best_model)")
    name = json.loads(config_file.read_text()).get("model")
    data = None
    if name in MODEL_REGISTRY and MODEL_REGISTRY[name].needs_graph:
        from .data import leave_one_out
        from .training.cli import load_dataset_from_args

        # graph models were built over the training graph of the leave-one-out split
        data = leave_one_out(load_dataset_from_args(args)).train_graph
    try:
        model = SequentialRecommender.from_pretrained(model_dir, data=data).eval()
    except ValueError as err:  # e.g. the graph of --dataset is not the one it was trained on
        raise SystemExit(f"kgseqgraph export: {err}") from None
    fmt = args.format or ("onnx" if Path(args.output).suffix == ".onnx" else "pt2")
    path = export_scorer(model, args.output, fmt, exclude_history=args.exclude_history,
                         dynamic_length=False if args.fixed_length else None)
    meta = load_exported(path).metadata
    keys = ("format", "model", "num_items", "window", "padding_id", "dynamic_length",
            "exclude_history")
    return {"output": str(path), **{k: meta.get(k) for k in keys},
            "graph": args.dataset if data is not None else None}


def torch_arange(start: int, end: int):
    import torch

    return torch.arange(start, end)


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    commands = {"describe", "evaluate", "train", "export", "-h", "--help"}
    if not any(a in commands for a in raw):  # the quickstart: popularity on the synthetic data
        verbose = [a for a in raw if a in ("-v", "--verbose")]
        raw = verbose + ["evaluate"] + [a for a in raw if a not in ("-v", "--verbose")]
    args = build_parser().parse_args(raw)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command == "describe":
        from .data import describe, format_description
        from .training.cli import load_dataset_from_args

        summary = describe(load_dataset_from_args(args))
        print(json.dumps(summary, indent=2) if args.json else format_description(summary))
        return 0
    if args.command == "evaluate":
        result = _evaluate_pop(args)
        print(json.dumps(result, indent=2))
        return 0
    if args.command == "train":
        from .training.cli import run_train_command
        from .training.distributed import destroy_distributed, init_distributed

        ctx = init_distributed()  # under torchrun: one process of several (docs/distributed.md)
        try:
            result = run_train_command(args)
        finally:
            destroy_distributed()
        if ctx.is_main:
            print(json.dumps(result, indent=2))
        return 0
    if args.command == "export":
        print(json.dumps(_export_model(args), indent=2))
        return 0
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
