"""What ``kp4sr_ml100k.py`` and ``lancer_ml100k.py`` share: the command line, an optional user
subset, the reference models' options, training through the one Trainer (popularity is fitted,
not trained), and one run record per run at ``<results-dir>/<model>[-<variant>]_seed<seed>.json``
(dataset, model, seed, config, best_epoch, epochs_run, valid, test, wall_seconds, cpu_seconds,
git_commit, dirty, command, versions, date), e.g. under ``benchmarks/results/text/ml-100k``."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("kgseqgraph")

#: the reference rows every text-model example can also run (``--model sasrec`` / ``pop``)
REFERENCE_DEFAULTS: dict[str, dict[str, Any]] = {"sasrec": dict(max_len=50, hidden_size=64),
                                                 "pop": {}}


def parser(description: str, models: list[str], default: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=models, default=default)
    p.add_argument("--root", default=None, help="ml-100k folder (default $KGSEQGRAPH_DATA/ml-100k)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--max-steps-per-epoch", type=int, default=None)
    p.add_argument("--eval-chunk-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--users", type=int, default=None,
                   help="train and evaluate on a seeded random subset of this many users (the "
                        "whole catalogue is still ranked)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a model option (JSON value), e.g. --set tree_mask=false")
    p.add_argument("--variant", default=None,
                   help="name suffix of the result file: <model>-<variant>_seed<seed>.json")
    p.add_argument("--results-dir", default=None,
                   help="write the run record here (e.g. benchmarks/results/text/ml-100k)")
    p.add_argument("--output-dir", default=None, help="the Trainer's run folder")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:0, … or auto")
    return p


def user_subset(data: Any, users: int, seed: int) -> Any:
    """``data`` with the interactions of ``users`` users drawn with ``seed`` (every item and the
    KG kept, so the whole catalogue is still ranked)."""
    from kgseqgraph.data import INTERACTS
    from kgseqgraph.data.splits import training_graph

    n = int(data["user"].num_nodes)
    chosen = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:users]
    keep = torch.zeros(n, dtype=torch.bool)
    keep[chosen] = True
    return training_graph(data, keep[data[INTERACTS].edge_index[0]])


def run(args: argparse.Namespace, defaults: dict[str, dict[str, Any]],
        argv: list[str] | None = None) -> dict[str, Any]:
    """Train (or fit) ``args.model`` on ML-100K and return (and optionally write) its record."""
    from kgseqgraph.cli import parse_options
    from kgseqgraph.data import leave_one_out
    from kgseqgraph.datasets.registry import load_dataset
    from kgseqgraph.models import build_model
    from kgseqgraph.training import TrainConfig, Trainer, seed_everything
    from kgseqgraph.utils.io import atomic_write_bytes
    from kgseqgraph.utils.provenance import git_commit, utc_now, versions

    torch.set_num_threads(args.threads)
    # the code that runs, not what the tree holds when it ends
    commit = git_commit(Path(__file__).resolve().parents[1])
    root = args.root or os.path.join(os.environ.get("KGSEQGRAPH_DATA", "."), "ml-100k")
    t0, c0 = time.perf_counter(), time.process_time()
    data = load_dataset("ml-100k", root)
    if args.users:
        data = user_subset(data, args.users, args.seed)
    split = leave_one_out(data)
    seed_everything(args.seed)
    options = {**defaults.get(args.model, {}), **parse_options(args.set)}
    if "seed" in _fields(args.model):
        options.setdefault("seed", args.seed)
    model = build_model(args.model, split.train_graph, **options)
    tc = TrainConfig(seed=args.seed, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                     patience=args.patience, max_steps_per_epoch=args.max_steps_per_epoch,
                     eval_chunk_size=args.eval_chunk_size, num_threads=args.threads,
                     device=args.device,
                     ks=(1, 5, 10, 20), sampled_negatives=100, output_dir=args.output_dir,
                     progress=False)
    trainer = Trainer(model, split, tc)
    if any(p.requires_grad for p in model.parameters()):
        res = trainer.fit()
        best_epoch, epochs_run, valid, test = res.best_epoch, res.epochs_run, res.valid, res.test
        extra = {"history": res.history, "timings": res.timings,
                 "pretraining": dict(trainer.pretraining)}
    else:  # popularity: fitted on the training sequences, evaluated as the others
        model.fit(split.train)
        best_epoch, epochs_run, extra = 0, 0, {}
        valid, test = trainer.evaluate("valid"), trainer.evaluate("test")
    record = {
        "dataset": "ml-100k", "model": args.model + (f"-{args.variant}" if args.variant else ""),
        "seed": args.seed,
        "config": {"model": dataclasses.asdict(model.config), "train": tc.to_dict(),
                   "users": args.users, "num_parameters": sum(p.numel() for p in
                                                              model.parameters()),
                   "trainable_parameters": sum(p.numel() for p in model.parameters()
                                               if p.requires_grad),
                   "evaluated_users": {"valid": len(split.targets("valid")),
                                       "test": len(split.targets("test"))}},
        "best_epoch": best_epoch, "epochs_run": epochs_run, "valid": valid, "test": test,
        "wall_seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
        "git_commit": commit["commit"], "dirty": commit["dirty"],
        "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(
            argv if argv is not None else sys.argv[1:])]),
        "versions": versions(), "date": utc_now(),
        **extra,
    }
    if args.results_dir:
        path = Path(args.results_dir) / f"{record['model']}_seed{args.seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, (json.dumps(record, indent=2, default=str) + "\n").encode())
        log.info("wrote %s", path)
    return record


def _fields(name: str) -> set[str]:
    from kgseqgraph.models import MODEL_REGISTRY

    return {f.name for f in dataclasses.fields(MODEL_REGISTRY[name].config_class)}


def summary(record: dict[str, Any]) -> str:
    keys = ("HR@5", "NDCG@5", "HR@10", "NDCG@10", "MRR")
    return json.dumps({"model": record["model"], "seed": record["seed"],
                       "best_epoch": record["best_epoch"],
                       "test": {k: record["test"].get(k) for k in keys},
                       "wall_seconds": round(record["wall_seconds"], 1)}, indent=2)
