"""The ``kgseqgraph`` command line (also ``python -m kgseqgraph``).

``kgseqgraph`` with no arguments evaluates the popularity baseline on the synthetic dataset —
offline, in seconds — and prints its full-ranking metrics.

Commands: ``describe`` (a dataset's graph), ``evaluate`` (the popularity baseline, or a saved
model with ``--model-dir``), ``train``, ``export`` (a saved model's scoring path for serving),
``recommend`` (top items for a history or a user, in the dataset's own ids) and ``explain`` (the
attention paths through the KG from a user's history to a recommended item, for graph models). Commands that read a
saved model (``RUN/best_model``) load the dataset it was trained on from what the run recorded
beside it when ``--dataset`` is not given.

Errors in the input (a missing or modified data file, a refused run folder, an unknown id) are
one line on stderr and exit status 1; ``--debug`` shows the traceback instead.

``kgseqgraph train`` never overwrites a run folder by accident: an existing, non-empty
``--output-dir`` is an error unless ``--resume`` (continue it from its checkpoint, which must
exist) or ``--overwrite`` (remove the previous run's files first) is given. It prints one line per
epoch (loss, validation metric, time) on stderr and a short summary table on stdout (the full JSON
with ``--json``; it is always in ``RUN/results.json``). Ctrl-C stops after the last checkpoint
written and prints the command that resumes the run. Under ``torchrun --nproc_per_node=N -m
kgseqgraph train …`` the same command trains with N processes (``docs/distributed.md``);
``--batch-size`` is then the global batch.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shlex
import shutil
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser", "run_train_command", "parse_options", "load_dataset_from_args",
           "CLIError", "TrainingInterrupted", "default_output_dir", "format_results_table",
           "RUN_FILES"]

COMMANDS = ("describe", "evaluate", "train", "export", "recommend", "explain")


# ------------------------------------------------------------------------------ train
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
    from .datasets.registry import load_dataset

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
    from .training.checkpoint import CHECKPOINT_NAME

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

    from .data import leave_one_out
    from .models import MODEL_REGISTRY
    from .models.factory import build_model
    from .training.config import TrainConfig
    from .training.distributed import init_distributed
    from .training.trainer import run_training, seed_everything

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
        from .training.checkpoint import CHECKPOINT_NAME

        checkpoint = output_dir / CHECKPOINT_NAME
        if not checkpoint.is_file():
            raise TrainingInterrupted("interrupted before the first epoch ended: no checkpoint "
                                      "was written; start again with the same command") from None
        epoch = finished[-1] if finished else None
        try:  # the epoch on disk (Ctrl-C may fall between the checkpoint and the callback)
            from .training.checkpoint import load_checkpoint

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



def _common(top: bool) -> argparse.ArgumentParser:
    """-v/--debug/--threads, accepted before or after the command: the top-level parser sets the
    defaults, the commands' copies default to ``SUPPRESS`` so they do not reset them."""
    keep = argparse.SUPPRESS
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-v", "--verbose", action="store_true", default=False if top else keep,
                   help="log at INFO level")
    p.add_argument("--debug", action="store_true", default=False if top else keep,
                   help="show the full traceback of an error (and log at INFO level)")
    p.add_argument("--threads", type=int, default=1 if top else keep, metavar="N",
                   help="torch threads (default 1: small models run fastest on one thread, "
                        "see README 'Speed on small machines')")
    return p


def _add_dataset_args(p: argparse.ArgumentParser, from_model: bool = False) -> None:
    from .datasets.registry import dataset_names

    default = ("the dataset the model was trained on (recorded beside it)" if from_model
               else "synthetic, offline")
    p.add_argument("--dataset", default=None, choices=dataset_names(),
                   help=f"dataset name (default: {default})")
    p.add_argument("--root", default=None,
                   help="dataset folder: the raw files directly in it or in root/raw (default: "
                        "$KGSEQGRAPH_DATA/<dataset> or ~/.cache/kgseqgraph/<dataset>"
                        + ("; with --model-dir: the recorded one" if from_model else "") + ")")
    p.add_argument("--seed", type=int, default=None,
                   help="seed (default 0): of the synthetic dataset" +
                        ("" if from_model else " and of training"))
    p.add_argument("--no-verify", action="store_true",
                   help="load raw files that differ from the published ones (dataset card) "
                        "even when their counts differ too (a warning is printed)")


def _add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep-seen", action="store_true",
                   help="keep the user's own history in the ranking (RecBole's protocol)")
    p.add_argument("--sampled", type=int, default=0, metavar="N",
                   help="also report metrics against N sampled negatives (labelled sampled-N)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kgseqgraph", description=__doc__.splitlines()[0],
                                     parents=[_common(True)])
    sub = parser.add_subparsers(dest="command")
    common = [_common(False)]

    d = sub.add_parser("describe", parents=common,
                       help="print a summary of a dataset's collaborative KG")
    _add_dataset_args(d)
    d.add_argument("--json", action="store_true", help="print JSON instead of text")

    e = sub.add_parser("evaluate", parents=common,
                       help="evaluate the popularity baseline, or a saved model (--model-dir)",
                       description="Full-ranking metrics on the leave-one-out valid and test "
                                   "users: of the popularity baseline, or of a saved model "
                                   "(--model-dir RUN/best_model) over the dataset it was "
                                   "trained on.")
    _add_dataset_args(e, from_model=True)
    e.add_argument("--model", default="pop", choices=["pop"],
                   help="baseline to evaluate when no --model-dir is given")
    e.add_argument("--model-dir", default=None,
                   help="a saved model (save_pretrained folder such as RUN/best_model)")
    e.add_argument("--json", action="store_true", help="print the full result as JSON")
    _add_eval_args(e)

    t = sub.add_parser("train", parents=common, help="train and evaluate a model")
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
    t.add_argument("--max-steps-per-epoch", type=int, default=None, metavar="N",
                   help="cap on optimiser steps per epoch (quick runs)")
    t.add_argument("--output-dir", default=None,
                   help="run folder: checkpoint, metrics, curve, results, best_model (default: "
                        "runs/<model>-<dataset>-seed<seed> in the working directory); an "
                        "existing one needs --resume or --overwrite")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --output-dir from its checkpoint (which must exist)")
    t.add_argument("--overwrite", action="store_true",
                   help="replace the run in an existing --output-dir (its run files are removed)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra model option, JSON value (e.g. --set fusion='\"concat\"')")
    t.add_argument("--json", action="store_true",
                   help="print the full result as JSON (it is always in RUN/results.json)")
    _add_eval_args(t)

    x = sub.add_parser("export", parents=common,
                       help="export a trained model's scoring path for serving",
                       description="Export a saved model (a save_pretrained folder such as "
                                   "RUN/best_model) to one file: padded item ids -> scores, item "
                                   "table (and for KATRec the KG propagation) precomputed. Graph "
                                   "models are rebuilt over the dataset they were trained on "
                                   "(recorded beside the model by kgseqgraph train; "
                                   "--dataset/--root/--seed name it otherwise).")
    _add_dataset_args(x, from_model=True)
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
    x.add_argument("--raw-ids", action="store_true",
                   help="store the dataset's item ids (and titles) in the file, so "
                        "ExportedScorer.pad(..., raw_ids=True) and item_ids map them")

    r = sub.add_parser("recommend", parents=common,
                       help="top-k items for a history of items or for a user of the dataset",
                       description="Recommend with a saved model: the next items after "
                                   "--items (oldest first) or after a user's whole history "
                                   "(--user), with the dataset's ids and titles.")
    _add_dataset_args(r, from_model=True)
    r.add_argument("--model-dir", required=True, help="a saved model, e.g. RUN/best_model")
    who = r.add_mutually_exclusive_group(required=True)
    who.add_argument("--items", nargs="+", metavar="ID", help="the history, oldest first")
    who.add_argument("--user", metavar="ID", help="a user of the dataset (its raw id)")
    r.add_argument("--raw-ids", action="store_true",
                   help="--items are the dataset's item ids (default: node indices 0..N-1)")
    r.add_argument("-k", type=int, default=10, help="number of items (default 10)")
    r.add_argument("--keep-seen", action="store_true",
                   help="may recommend items of the history again")
    r.add_argument("--json", action="store_true", help="print JSON")

    w = sub.add_parser("explain", parents=common,
                       help="why an item is recommended: attention paths through the KG",
                       description="The top-k paths through a graph model's collaborative KG "
                                   "(KATRec, KG-SASRec, ...) from a user's history to a "
                                   "recommended item, each scored by the product of the "
                                   "model's attention along it (docs/explain.md).")
    _add_dataset_args(w, from_model=True)
    w.add_argument("--model-dir", required=True, help="a saved graph model, e.g. RUN/best_model")
    who = w.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", metavar="ID", help="a user of the dataset (its raw id): the "
                                                  "history is their items, as recommend --user")
    who.add_argument("--items", nargs="+", metavar="ID",
                     help="the history, oldest first (the dataset's item ids)")
    w.add_argument("--item", metavar="ID", default=None,
                   help="the item to explain (its raw id; default: the top recommendation)")
    w.add_argument("-k", type=int, default=10, help="number of paths (default 10)")
    w.add_argument("--max-length", type=int, default=None,
                   help="longest path (default: the model's number of layers)")
    w.add_argument("--through", nargs="+", default=None, metavar="TYPE",
                   help="node types a path may pass through (e.g. entity: knowledge paths "
                        "only, no user in between; default: all)")
    w.add_argument("--png", default=None, metavar="FILE", help="also draw the paths to FILE")
    w.add_argument("--json", action="store_true", help="print JSON")
    return parser


# ------------------------------------------------------------------------------ helpers
def _fail(message: str) -> Any:

    raise CLIError(message)


def _read_model_dir(model_dir: Path) -> dict[str, Any]:
    from .models.base import CONFIG_NAME

    config_file = model_dir / CONFIG_NAME
    if not config_file.is_file():
        _fail(f"{model_dir} holds no {CONFIG_NAME}: pass a save_pretrained folder "
              "(e.g. RUN/best_model)")
    return json.loads(config_file.read_text())


def recorded_dataset(model_dir: Path) -> tuple[dict[str, Any] | None, Path | None]:
    """The dataset a saved model was trained on, as ``kgseqgraph train`` recorded it
    (``best_model/dataset.json``, else the run's ``results.json``), and the file it came from."""
    from .training.run_files import DATASET_INFO_NAME, RESULTS_NAME

    for path, key in ((model_dir / DATASET_INFO_NAME, None),
                      (model_dir.parent / RESULTS_NAME, "dataset")):
        if path.is_file():
            try:
                obj = json.loads(path.read_text())
            except json.JSONDecodeError:
                continue
            info = obj.get(key) if key else obj
            if isinstance(info, dict) and info.get("name"):
                return info, path
    return None, None


def _load_for_model(args: argparse.Namespace, model_dir: Path, required: bool) -> Any:
    """The graph for a saved model: ``--dataset`` when given, else the recorded one (``None``
    when neither exists and ``required`` is false)."""
    from .datasets.registry import dataset_names, load_dataset

    if args.dataset is not None:
        return load_dataset_from_args(args)
    info, source = recorded_dataset(model_dir)
    if info is None:
        if not required:
            return None
        _fail(f"{model_dir} records no dataset (no dataset.json beside it, no results.json in "
              "its run folder): pass --dataset (and --root) naming the one it was trained on")
    name = info["name"]
    if name not in dataset_names():
        _fail(f"{source} names dataset {name!r}, which the command line cannot load; pass "
              f"--dataset/--root")
    kwargs = dict(info.get("load_kwargs") or {})
    if name == "synthetic":
        if args.seed is not None:
            kwargs["seed"] = args.seed
        return load_dataset(name, **kwargs)
    root = args.root or info.get("root")
    if args.root is None and root and not Path(root).exists():
        _fail(f"{model_dir} was trained on {name} from {root} (recorded in {source}), which "
              "does not exist here: pass --root with that dataset's folder")
    if args.no_verify or info.get("verify") is False:
        kwargs["verify"] = False
    return load_dataset(name, root, **kwargs)


def _load_model(args: argparse.Namespace, model_dir: Path, need_data: bool) -> tuple[Any, Any]:
    from .models import MODEL_REGISTRY, SequentialRecommender

    name = _read_model_dir(model_dir).get("model")
    graph_model = name in MODEL_REGISTRY and MODEL_REGISTRY[name].needs_graph
    data = _load_for_model(args, model_dir, required=graph_model or need_data)
    graph = None
    if graph_model:
        from .data import leave_one_out

        # graph models were built over the training graph of the leave-one-out split
        graph = leave_one_out(data).train_graph
    try:
        model = SequentialRecommender.from_pretrained(model_dir, data=graph).eval()
    except ValueError as err:  # e.g. the graph of --dataset is not the one it was trained on
        _fail(str(err))
    if data is not None and int(data["item"].num_nodes) != int(model.num_items):
        _fail(f"{model_dir} scores {model.num_items} items, but the dataset has "
              f"{int(data['item'].num_nodes)}: pass the --dataset it was trained on")
    return model, data


def _dataset_label(data: Any, fallback: str | None) -> str | None:
    info = getattr(data, "dataset_info", None) if data is not None else None
    return (info or {}).get("name", fallback) if info else fallback


# ------------------------------------------------------------------------------ commands
def _evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from .data import describe, leave_one_out

    if args.model_dir is not None:
        model_dir = Path(args.model_dir)
        model, data = _load_model(args, model_dir, need_data=True)
        name = getattr(model, "model_name", type(model).__name__)
    else:
        from .models import Popularity, PopularityConfig

        data = load_dataset_from_args(args)
        model = None
        name = args.model
    split = leave_one_out(data)
    if model is None:
        model = Popularity(PopularityConfig(num_items=split.num_items)).fit(split.train)
    out: dict[str, Any] = {"dataset": _dataset_label(data, args.dataset or "synthetic"),
                           "model": name, "split": split.report, "graph": describe(data)["nodes"]}
    if args.model_dir is not None:
        out["model_dir"] = str(args.model_dir)
    from .evaluation import Evaluator

    # the library's one evaluator: full ranking (history excluded unless --keep-seen), and the
    # labelled sampled protocol with --sampled
    evaluator = Evaluator(exclude_history=not args.keep_seen,
                          sampled_negatives=args.sampled or None, seed=args.seed or 0)
    for stage in ("valid", "test"):
        out[stage] = evaluator.evaluate_split(model, split, stage)
    return out


def _export_model(args: argparse.Namespace) -> dict[str, Any]:
    from .data import ItemIdMap
    from .export import export_scorer, load_exported

    model_dir = Path(args.model_dir)
    model, data = _load_model(args, model_dir, need_data=args.raw_ids)
    fmt = args.format or ("onnx" if Path(args.output).suffix == ".onnx" else "pt2")
    item_ids = ItemIdMap.from_graph(data) if args.raw_ids else None
    path = export_scorer(model, args.output, fmt, exclude_history=args.exclude_history,
                         dynamic_length=False if args.fixed_length else None, item_ids=item_ids)
    meta = load_exported(path).metadata
    keys = ("format", "model", "num_items", "window", "padding_id", "dynamic_length",
            "exclude_history")
    graph_model = getattr(model, "needs_graph", False)
    return {"output": str(path), **{k: meta.get(k) for k in keys},
            "graph": _dataset_label(data, args.dataset) if graph_model else None,
            "raw_ids": "item_ids" in meta}


def _user_history(args: argparse.Namespace, data: Any) -> list[int]:
    """The items of ``--user`` in the dataset, oldest first (node indices)."""
    from .data import user_sequences

    raw_users = list(data["user"].raw_id)
    by_str = {str(u): k for k, u in enumerate(raw_users)}
    if args.user not in by_str:
        _fail(f"unknown user {args.user!r}: not among the {len(raw_users):,} users of "
              f"{_dataset_label(data, args.dataset)} (raw ids look like "
              f"{', '.join(map(repr, raw_users[:3]))}…)")
    seqs = user_sequences(data)
    u = by_str[args.user]
    return seqs.items[int(seqs.ptr[u]):int(seqs.ptr[u + 1])].tolist()


def _explain(args: argparse.Namespace) -> dict[str, Any]:
    from .data import ItemIdMap
    from .models.explain import explain, plot_explanation

    model_dir = Path(args.model_dir)
    model, data = _load_model(args, model_dir, need_data=True)
    if not getattr(model, "needs_graph", False) or not hasattr(
            getattr(model, "item_embedder", None), "enricher"):
        _fail(f"{model_dir} holds a {getattr(model, 'model_name', type(model).__name__)} model; "
              "explain needs a graph model built on the KG item embedder (katrec, kg-sasrec, "
              "kg-gru4rec)")
    ids = ItemIdMap.from_graph(data)
    try:
        history = _user_history(args, data) if args.user is not None else ids.encode(args.items)
        item = ids.index(args.item) if args.item is not None else None
    except KeyError as err:
        _fail(err.args[0])
    if not history:
        _fail(f"user {args.user!r} has no items to explain a recommendation from")
    try:
        df = explain(model, history, item, data=data, k=args.k, max_length=args.max_length,
                     through=args.through)
    except ValueError as err:
        _fail(str(err))
    if args.png is not None:
        if len(df) == 0:
            _fail("no path connects the history to the item: nothing to draw")
        plot_explanation(df, args.png)
    a = df.attrs
    return {"model_dir": str(model_dir), "dataset": _dataset_label(data, args.dataset),
            "user": args.user, "history": ids.decode(history),
            "item": {"index": a["item"], "raw_id": a["item_raw_id"], "title": ids.title(a["item"]),
                     "score": a["item_score"], "rank": a["item_rank"]},
            "max_length": a["max_length"], "through": a["through"], "png": args.png,
            "paths": [{"rank": int(r["rank"]), "score": float(r["score"]),
                       "length": int(r["length"]), "path": r["path"],
                       "history_item": r["history_raw_id"],
                       "relations": list(r["relations"]),
                       "alphas": [float(x) for x in r["alphas"]]} for _, r in df.iterrows()]}


def _print_explanation(result: dict[str, Any]) -> None:
    item = result["item"]
    who = f"user {result['user']}" if result["user"] is not None else "the history"
    name = f"{item['title']} ({item['raw_id']})" if item.get("title") else str(item["raw_id"])
    print(f"why {name} for {who} ({len(result['history'])} items)? rank {item['rank']}, score "
          f"{item['score']:.4f}; paths of at most {result['max_length']} edges, scored by the "
          "product of the model's attention along them")
    if not result["paths"]:
        print("no path through the graph connects the history to this item")
        return
    rows = [["rank", "score", "path"]]
    rows += [[str(p["rank"]), f"{p['score']:.3g}", p["path"]] for p in result["paths"]]
    _print_table(rows)
    if result.get("png"):
        print(f"figure: {result['png']}")


def _recommend(args: argparse.Namespace) -> dict[str, Any]:
    from .data import ItemIdMap

    model_dir = Path(args.model_dir)
    need_data = bool(args.raw_ids or args.user is not None)
    model, data = _load_model(args, model_dir, need_data=need_data)
    ids = ItemIdMap.from_graph(data) if data is not None else None
    if args.user is not None:
        history = _user_history(args, data)
    elif args.raw_ids:
        try:
            history = ids.encode(args.items)
        except KeyError as err:
            _fail(err.args[0])
    else:
        try:
            history = [int(i) for i in args.items]
        except ValueError:
            _fail(f"--items {' '.join(args.items)}: node indices are integers; pass --raw-ids "
                  "for the dataset's own item ids")
        bad = [i for i in history if not 0 <= i < model.num_items]
        if bad:
            _fail(f"item index(es) {bad} out of range 0..{model.num_items - 1} (pass --raw-ids "
                  "for the dataset's own item ids)")
    top, scores = model.recommend([history], k=args.k, exclude_seen=not args.keep_seen)
    items = []
    for rank, (i, s) in enumerate(zip(top[0].tolist(), scores[0].tolist()), start=1):
        row: dict[str, Any] = {"rank": rank, "index": i, "score": s}
        if ids is not None:
            row["raw_id"] = ids.raw_ids[i]
            row["title"] = ids.title(i)
        items.append(row)
    out: dict[str, Any] = {"model_dir": str(model_dir),
                           "dataset": _dataset_label(data, args.dataset), "user": args.user,
                           "history": ids.decode(history) if ids is not None else history,
                           "items": items}
    return out


# ------------------------------------------------------------------------------ output
def _print_table(rows: list[list[str]], file: Any = None) -> None:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip(), file=file)


def _print_evaluation(result: dict[str, Any]) -> None:

    split = result.get("split", {})
    print(f"{result['model']} on {result['dataset']}: full ranking over "
          f"{result['graph'].get('item', 0):,} items, "
          f"{split.get('users_evaluated', '?')} users")
    print(format_results_table(result))  # sampled-<n>/… rows too, with --sampled


def _print_training(result: dict[str, Any]) -> None:

    timings = result.get("timings", {})
    seconds = float(timings.get("total_seconds", 0.0))
    minutes, sec = divmod(int(round(seconds)), 60)
    took = f"{minutes}m {sec:02d}s" if minutes else f"{seconds:.1f}s"
    early = ", stopped early" if result.get("stopped_early") else ""
    print(f"{result['model']} on {result['dataset']}: best epoch {result['best_epoch']} of "
          f"{result['epochs_run']}{early} ({took})")
    print(format_results_table(result))
    if result.get("output_dir"):
        out = Path(result["output_dir"])
        print(f"run folder {out}: results.json (all of this), best_model/, "
              f"training_curve.png, checkpoint.pt")


def _print_recommendations(result: dict[str, Any]) -> None:
    who = f"user {result['user']}" if result["user"] is not None else "the history"
    print(f"top {len(result['items'])} for {who} ({len(result['history'])} items"
          f"{': ' + ', '.join(map(str, result['history'][-5:])) if result['history'] else ''}"
          f"{' …' if len(result['history']) > 5 else ''})")
    has_raw = any("raw_id" in r for r in result["items"])
    has_title = any(r.get("title") for r in result["items"])
    rows = [["rank", "index"] + (["item id"] if has_raw else []) + (["title"] if has_title
                                                                       else []) + ["score"]]
    for r in result["items"]:
        rows.append([str(r["rank"]), str(r["index"])] + ([str(r["raw_id"])] if has_raw else [])
                    + ([r.get("title") or ""] if has_title else []) + [f"{r['score']:.4f}"])
    _print_table(rows)


# ------------------------------------------------------------------------------ main
def _data_errors() -> tuple[type[BaseException], ...]:
    from .data.errors import DataFormatError
    from .datasets.base import MissingRawFilesError
    from .datasets.download import DownloadError

    return (CLIError, DataFormatError, MissingRawFilesError, DownloadError)


@contextlib.contextmanager
def _data_warnings_as_lines() -> Iterator[None]:
    """Show :class:`~kgseqgraph.data.DataWarning` s (duplicates, modified raw files…) as
    ``kgseqgraph: warning: …`` lines instead of Python's two-line ``file:line`` form."""
    from .data.errors import DataWarning

    original = warnings.showwarning

    def show(message: Any, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        if issubclass(category, DataWarning):
            print(f"kgseqgraph: warning: {message}", file=file or sys.stderr)
        else:
            original(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = original


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (errors raise :class:`SystemExit` with a
    one-line message, Ctrl-C during ``train`` returns 130 after printing how to resume)."""
    raw = list(sys.argv[1:] if argv is None else argv)
    if not any(a in (*COMMANDS, "-h", "--help") for a in raw):
        # the quickstart: popularity on the synthetic data (global flags kept in front)
        flags = [a for a in raw if a in ("-v", "--verbose", "--debug")]
        raw = flags + ["evaluate"] + [a for a in raw if a not in flags]
    args = build_parser().parse_args(raw)
    args.argv = raw
    logging.basicConfig(level=logging.INFO if args.verbose or args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, int(args.threads)))
    try:
        with _data_warnings_as_lines():
            return _run(args)
    except _data_errors() as err:
        if args.debug:
            raise
    
        message = str(err).strip()
        if isinstance(err, TrainingInterrupted):
            print(f"kgseqgraph train: {message}", file=sys.stderr)
            return 130
        hint = "" if "\n" in message else " (--debug shows the traceback)"
        raise SystemExit(f"kgseqgraph {args.command}: error: {message}{hint}") from None


def _run(args: argparse.Namespace) -> int:
    if args.command == "describe":
        from .data import describe, format_description
    
        summary = describe(load_dataset_from_args(args))
        print(json.dumps(summary, indent=2) if args.json else format_description(summary))
        return 0
    if args.command == "evaluate":
        result = _evaluate(args)
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            _print_evaluation(result)
        return 0
    if args.command == "train":
        from .training.distributed import destroy_distributed, init_distributed

        ctx = init_distributed()  # under torchrun: one process of several (docs/distributed.md)
        try:
            result = run_train_command(args)
        finally:
            destroy_distributed()
        if ctx.is_main:
            if args.json:
                print(json.dumps(result, indent=2))
            else:
                _print_training(result)
        return 0
    if args.command == "export":
        print(json.dumps(_export_model(args), indent=2))
        return 0
    if args.command == "explain":
        result = _explain(args)
        if args.json:
            print(json.dumps(result, indent=2, default=str))
        else:
            _print_explanation(result)
        return 0
    if args.command == "recommend":
        result = _recommend(args)
        if args.json:
            print(json.dumps(result, indent=2, default=str))
        else:
            _print_recommendations(result)
        return 0
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
