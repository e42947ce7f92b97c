"""``kgseqgraph train``: load a dataset, split it, build a model by name, train, report.

Run folders are never overwritten by accident: an existing, non-empty ``--output-dir`` is an
error unless ``--resume`` (continue it from its checkpoint, which must exist) or ``--overwrite``
(remove the previous run's files first) is given. The command prints one line per epoch (loss,
validation metric, time) on stderr and a short summary table on stdout (the full JSON with
``--json``; it is always in ``RUN/results.json``). Ctrl-C stops after the last checkpoint written
and prints the command that resumes the run.

Under ``torchrun --nproc_per_node=N -m kgseqgraph train …`` the same command trains with N
processes (``docs/distributed.md``); ``--batch-size`` is then the global batch.
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

__all__ = ["run_train_command", "parse_options", "load_dataset_from_args", "CLIError",
           "TrainingInterrupted", "default_output_dir", "format_results_table", "RUN_FILES"]


class CLIError(Exception):
    """A command-line mistake or a refused action: printed as one line, no traceback."""


class TrainingInterrupted(CLIError):
    """Ctrl-C during ``kgseqgraph train``; the message says how to resume."""


#: what a run folder holds (removed by ``--overwrite``; nothing else in the folder is touched)
RUN_FILES = ("checkpoint.pt", "metrics.json", "results.json", "training_curve.png", "best_model")


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``["key=value", …]`` with JSON values (bare words are taken as strings)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise CLIError(f"--set expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def load_dataset_from_args(args: argparse.Namespace) -> Any:
    """The graph the command line names: ``--dataset`` (default ``synthetic``), ``--root``,
    ``--no-verify`` and, for the synthetic dataset, ``--seed``."""
    from ..datasets.registry import load_dataset

    name = getattr(args, "dataset", None) or "synthetic"
    if name == "synthetic":
        return load_dataset(name, seed=_seed(args))
    kwargs = {"verify": False} if getattr(args, "no_verify", False) else {}
    return load_dataset(name, getattr(args, "root", None), **kwargs)


def _seed(args: argparse.Namespace) -> int:
    seed = getattr(args, "seed", None)
    return 0 if seed is None else int(seed)


def default_output_dir(model: str, dataset: str, seed: int) -> Path:
    """``runs/<model>-<dataset>-seed<seed>`` (relative to the working directory)."""
    return Path("runs") / f"{model}-{dataset}-seed{seed}"


def _check_run_folder(out: Path, resume: bool, overwrite: bool, is_main: bool) -> None:
    from .checkpoint import CHECKPOINT_NAME

    if resume and overwrite:
        raise CLIError("--resume and --overwrite exclude each other: --resume continues the run "
                       f"in {out}, --overwrite replaces it")
    checkpoint = out / CHECKPOINT_NAME
    if resume:
        if not checkpoint.is_file():
            raise CLIError(f"--resume: there is no checkpoint at {checkpoint} (nothing to "
                           "continue); run without --resume to start a new run")
        return
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            what = (f"its checkpoint {checkpoint}" if checkpoint.is_file() else
                    "no checkpoint")
            raise CLIError(f"the run folder {out} already exists ({what}): pass --resume to "
                           "continue that run, --overwrite to replace it, or choose another "
                           "--output-dir")
        if is_main:
            for name in RUN_FILES:
                path = out / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
    elif out.exists() and not out.is_dir():
        raise CLIError(f"--output-dir {out} is a file, not a folder")


def resume_command(argv: list[str]) -> str:
    """The command line that continues a run started with ``argv`` (``kgseqgraph`` arguments)."""
    args = [a for a in argv if a != "--overwrite"]
    if "--resume" not in args:
        args.append("--resume")
    prog = "kgseqgraph" if Path(sys.argv[0]).name == "kgseqgraph" else "python -m kgseqgraph"
    return f"{prog} {shlex.join(args)}"


def run_train_command(args: argparse.Namespace) -> dict[str, Any]:
    """Train as ``kgseqgraph train`` does; returns the result (also in ``RUN/results.json``).

    Raises:
        CLIError: an existing run folder without ``--resume``/``--overwrite``, ``--resume``
            without a checkpoint, an unknown model or option.
        TrainingInterrupted: Ctrl-C (the message names the last checkpoint and the resume
            command).
    """
    import dataclasses

    from ..data import leave_one_out
    from ..models import MODEL_REGISTRY
    from ..models.factory import build_model
    from .config import TrainConfig
    from .distributed import init_distributed
    from .trainer import run_training, seed_everything

    dataset = args.dataset or "synthetic"
    seed = _seed(args)
    if args.model not in MODEL_REGISTRY:
        raise CLIError(f"unknown model {args.model!r}; choose from {sorted(MODEL_REGISTRY)}")
    output_dir = Path(args.output_dir) if args.output_dir else \
        default_output_dir(args.model, dataset, seed)
    ctx = init_distributed()  # under torchrun: join the process group (no-op otherwise)
    _check_run_folder(output_dir, args.resume, args.overwrite, ctx.is_main)
    options = parse_options(args.set)
    with ctx.main_process_first():  # rank 0 downloads / processes the dataset cache alone
        data = load_dataset_from_args(args)
    split = leave_one_out(data)
    seed_everything(seed)
    fields = {f.name for f in dataclasses.fields(MODEL_REGISTRY[args.model].config_class)}
    defaults = {k: v for k, v in (("max_len", args.max_len), ("hidden_size", args.hidden_size))
                if k in fields and v is not None}
    options = {**defaults, **options}
    try:
        # graph models are built over the training interactions only (never the held-out ones)
        model = build_model(args.model, split.train_graph, **options)
    except ValueError as err:  # unknown --set options, invalid values
        raise CLIError(str(err)) from None
    config = TrainConfig(seed=seed, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         patience=args.patience, exclude_history=not args.keep_seen,
                         sampled_negatives=args.sampled or None, output_dir=str(output_dir),
                         num_threads=args.threads,
                         max_steps_per_epoch=args.max_steps_per_epoch)
    finished: list[int] = []
    quiet = getattr(args, "verbose", False) or getattr(args, "debug", False)  # logged instead

    def report_epoch(trainer: Any, record: dict[str, Any]) -> None:
        finished.append(int(record["epoch"]))
        if trainer.distributed.is_main and not quiet:
            print(trainer.epoch_summary(record), file=sys.stderr, flush=True)

    if ctx.is_main:
        n_users, n_items = int(data["user"].num_nodes), int(data["item"].num_nodes)
        what = "resuming" if args.resume else "training"
        print(f"{what} {args.model} on {dataset} ({n_users:,} users, {n_items:,} items): "
              f"{config.epochs} epoch{'s' if config.epochs != 1 else ''}, run folder "
              f"{output_dir}", file=sys.stderr, flush=True)
    try:
        result = run_training(model, split, config, resume=bool(args.resume),
                              callbacks=[report_epoch])
    except KeyboardInterrupt:
        from .checkpoint import CHECKPOINT_NAME

        checkpoint = output_dir / CHECKPOINT_NAME
        if not checkpoint.is_file():
            raise TrainingInterrupted("interrupted before the first epoch ended: no checkpoint "
                                      "was written; start again with the same command") from None
        epoch = finished[-1] if finished else None
        try:  # the epoch on disk (Ctrl-C may fall between the checkpoint and the callback)
            from .checkpoint import load_checkpoint

            epoch = int(load_checkpoint(checkpoint)["epoch"])
        except (OSError, ValueError, RuntimeError, KeyError):
            pass
        where = (f"the last checkpoint (epoch {epoch} of {config.epochs}) is {checkpoint}"
                 if epoch is not None else f"the last checkpoint is {checkpoint}")
        argv = getattr(args, "argv", None)
        how = f"\nresume with: {resume_command(argv)}" if argv is not None else \
            " (resume with --resume)"
        raise TrainingInterrupted(f"interrupted; {where}{how}") from None
    dataset_info = getattr(data, "dataset_info", None)
    return {"dataset": dataset, "dataset_root": (dataset_info or {}).get("root"),
            "model": args.model, "options": options, **result}


def format_results_table(result: dict[str, Any], valid_metric: str = "NDCG@10",
                         ks: tuple[int, ...] = (1, 5, 10, 20)) -> str:
    """A short table of a training or evaluation result: HR and NDCG at the cut-offs >= 5 (all
    when there are none), MRR and the validation metric, valid and test side by side."""
    valid, test = result.get("valid") or {}, result.get("test") or {}
    cuts = [k for k in ks if k >= 5] or list(ks)
    rows = [f"HR@{k}" for k in cuts] + [f"NDCG@{k}" for k in cuts] + ["MRR"]
    if valid_metric not in rows:
        rows.append(valid_metric)
    rows += sorted({k for k in (*valid, *test) if k.startswith("sampled") and
                    k.split("/", 1)[1] in ("HR@10", "NDCG@10")})
    rows = [r for r in rows if r in valid or r in test]
    width = max([len(r) for r in rows] + [6])
    lines = [f"{'':{width}}  {'valid':>8}  {'test':>8}"]
    for r in rows:
        cells = [f"{d[r]:8.4f}" if isinstance(d.get(r), (int, float)) else f"{'-':>8}"
                 for d in (valid, test)]
        lines.append(f"{r:{width}}  {cells[0]}  {cells[1]}")
    return "\n".join(lines)

