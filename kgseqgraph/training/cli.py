"""``kgseqgraph train``: load a dataset, split it, build a model by name, train, print results.

Under ``torchrun --nproc_per_node=N -m kgseqgraph train …`` the same command trains with N
processes (``docs/distributed.md``); ``--batch-size`` is then the global batch.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["run_train_command", "parse_options", "load_dataset_from_args"]


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``["key=value", …]`` with JSON values (bare words are taken as strings)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def load_dataset_from_args(args: argparse.Namespace) -> Any:
    """The graph the command line names: ``--dataset``, ``--root`` and, for the synthetic
    dataset, ``--seed``."""
    from ..datasets.registry import load_dataset

    kwargs = {"seed": args.seed} if args.dataset == "synthetic" else {}
    return load_dataset(args.dataset, args.root, **kwargs)


def run_train_command(args: argparse.Namespace) -> dict[str, Any]:
    from ..data import leave_one_out
    from ..models.factory import build_model
    from .config import TrainConfig
    from .distributed import init_distributed
    from .trainer import run_training, seed_everything

    ctx = init_distributed()  # under torchrun: join the process group (no-op otherwise)
    with ctx.main_process_first():  # rank 0 downloads / processes the dataset cache alone
        data = load_dataset_from_args(args)
    split = leave_one_out(data)
    seed_everything(args.seed)
    import dataclasses

    from ..models import MODEL_REGISTRY

    if args.model not in MODEL_REGISTRY:
        raise SystemExit(f"unknown model {args.model!r}; choose from {sorted(MODEL_REGISTRY)}")
    fields = {f.name for f in dataclasses.fields(MODEL_REGISTRY[args.model].config_class)}
    defaults = {k: v for k, v in (("max_len", args.max_len), ("hidden_size", args.hidden_size))
                if k in fields and v is not None}
    options = {**defaults, **parse_options(args.set)}
    # graph models are built over the training interactions only (never the held-out ones)
    model = build_model(args.model, split.train_graph, **options)
    output_dir = args.output_dir or str(Path("runs") / f"{args.model}-{args.dataset}-seed{args.seed}")
    config = TrainConfig(seed=args.seed, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         patience=args.patience, exclude_history=not args.keep_seen,
                         sampled_negatives=args.sampled or None, output_dir=output_dir,
                         num_threads=getattr(args, "threads", None))
    result = run_training(model, split, config, resume="auto" if args.resume else False)
    return {"dataset": args.dataset, "model": args.model, "options": options, **result}
