"""Accuracy runner: one model on one dataset with one seed → one committed JSON.

    python benchmarks/accuracy.py --dataset ml-100k --model sasrec --tune      # grid, seed 0
    python benchmarks/accuracy.py --dataset ml-100k --model sasrec --seed 1    # chosen point
    python benchmarks/accuracy.py --dataset yelp --model katrec --variant noatten --seed 2
    python benchmarks/accuracy.py --plan final | xargs -P 2 -I{} sh -c '{}'   # a sweep, 2 jobs

The protocol of the library (``docs/evaluation.md``): chronological leave-one-out, full ranking
over the whole catalogue with the user's history excluded, pessimistic ties, model selection on
validation NDCG@10, the test evaluated once with the selected weights; plus the labelled
``sampled-100/…`` metrics (100 uniform negatives). Budgets, the tuning grid, model option sets
and variants live in ``benchmarks/accuracy_config.py``; ``benchmarks/README.md`` describes a
sweep. Results: ``benchmarks/results/accuracy/<dataset>/<model>[-<variant>]_seed<seed>.json``
and, for the grid, ``<dataset>/tuning/<model>__<point>_seed0.json``. Tables:
``python benchmarks/make_tables.py``.

Tuning (``--tune``) runs every grid point on seed 0 (points whose JSON exists are skipped, so a
killed grid resumes); the point with the best **validation** NDCG@10 (never test; ties → the
earlier point of the grid) is then used for every seed and variant of that model. The seed-0
final JSON is a copy of the winning tuning JSON (``"from_tuning"``) when the configuration is the
same. Runs never overwrite a result unless ``--overwrite``.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import itertools
import json
import logging
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import accuracy_config as C  # noqa: E402

log = logging.getLogger("kgseqgraph.accuracy")

SCHEMA = "kgseqgraph.accuracy/1"

#: TrainConfig fields that describe the machine, not the experiment (ignored when a tuning JSON
#: is compared with a final run's configuration).
MACHINE_FIELDS = frozenset({"output_dir", "device", "num_threads", "progress", "eval_chunk_size",
                            "seed"})


class IncompleteTuning(RuntimeError):
    """The grid of a (dataset, model) has points without a tuning JSON."""


# --------------------------------------------------------------------------------- resolution
def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``extra``; nested dicts (``encoder_kwargs``) are merged key by key."""
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def dataset_config(dataset: str) -> dict[str, Any]:
    if dataset not in C.DATASETS:
        raise SystemExit(f"unknown dataset {dataset!r}; configured: {sorted(C.DATASETS)}")
    return C.DATASETS[dataset]


def grid_of(dataset: str, model: str) -> dict[str, list[Any]]:
    """The tuning grid of ``model`` on ``dataset`` (empty for untrained models)."""
    if model in C.UNTRAINED:
        return {}
    return dict(dataset_config(dataset).get("grid", C.GRID))


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "-".join(_fmt(x) for x in v)
    return str(v)


def point_id(point: dict[str, Any]) -> str:
    """File-name id of a grid point, e.g. ``lr0.001_dropout0.2`` (``default`` when empty)."""
    return "_".join(f"{k}{_fmt(v)}" for k, v in point.items()) or "default"


def grid_points(grid: dict[str, list[Any]]) -> list[tuple[str, dict[str, Any]]]:
    """``(id, point)`` for every combination, in the grid's order (first key slowest)."""
    keys = list(grid)
    points = [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]
    return [(point_id(p), p) for p in points]


def _train_fields() -> set[str]:
    from kgseqgraph.training import TrainConfig

    return {f.name for f in dataclasses.fields(TrainConfig)}


def encoder_of(model: str, options: dict[str, Any]) -> str | None:
    """The encoder a model will use: ``options`` over the preset over the config default."""
    from kgseqgraph.models import MODEL_REGISTRY

    cls = MODEL_REGISTRY[model]
    if "encoder" in options:
        return options["encoder"]
    preset = getattr(cls, "preset_defaults", {}) or {}
    if "encoder" in preset:
        return preset["encoder"]
    for f in dataclasses.fields(cls.config_class):
        if f.name == "encoder":
            return f.default
    return None


def apply_point(model: str, model_options: dict[str, Any], point: dict[str, Any]
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a grid point into (model options updated, training options)."""
    train_keys = _train_fields()
    train: dict[str, Any] = {}
    options = copy.deepcopy(model_options)
    for key, value in point.items():
        if key in train_keys:
            train[key] = value
        elif key == "dropout":
            encoder = encoder_of(model, options)
            fields = C.DROPOUT_FIELDS.get(encoder or "")
            if not fields:
                raise SystemExit(f"{model}: no dropout mapping for encoder {encoder!r} "
                                 f"(accuracy_config.DROPOUT_FIELDS)")
            options = deep_merge(options, {"encoder_kwargs": {f: value for f in fields}})
        else:
            options[key] = value
    return options, train


@dataclasses.dataclass
class RunSpec:
    """Everything that defines one run (what ``--dry-run`` prints)."""

    dataset: str
    model: str
    seed: int
    variant: str | None
    point_id: str
    point: dict[str, Any]
    model_options: dict[str, Any]
    train_options: dict[str, Any]
    budget: dict[str, Any]
    grid: dict[str, Any]
    path: Path
    tuning: bool = False

    @property
    def name(self) -> str:
        return self.model if self.variant is None else f"{self.model}-{self.variant}"


def result_path(out_dir: Path, dataset: str, model: str, seed: int, variant: str | None = None,
                tuning_point: str | None = None) -> Path:
    if tuning_point is not None:
        return out_dir / dataset / "tuning" / f"{model}__{tuning_point}_seed{seed}.json"
    name = model if variant is None else f"{model}-{variant}"
    return out_dir / dataset / f"{name}_seed{seed}.json"


def select_point(out_dir: Path, dataset: str, model: str) -> dict[str, Any]:
    """The grid point of ``model`` on ``dataset`` with the best validation NDCG@10 on seed 0.

    Reads only the ``valid`` block of the tuning JSONs (never ``test``). Ties go to the earlier
    point of the grid. Raises :class:`IncompleteTuning` when a point has no JSON.
    """
    points = grid_points(grid_of(dataset, model))
    if len(points) <= 1:
        pid, point = points[0] if points else ("default", {})
        return {"point_id": pid, "point": point, "by": "single grid point", "valid": {},
                "file": None}
    metric = C.PROTOCOL_TRAIN["valid_metric"]
    scores: dict[str, float] = {}
    missing = []
    for pid, _ in points:
        path = result_path(out_dir, dataset, model, 0, tuning_point=pid)
        if not path.exists():
            missing.append(str(path))
            continue
        scores[pid] = float(json.loads(path.read_text())["valid"][metric])
    if missing:
        raise IncompleteTuning(f"{dataset}/{model}: {len(missing)} of {len(points)} grid points "
                               "have no tuning JSON yet (run --tune): " + ", ".join(missing))
    best = max(range(len(points)), key=lambda i: (scores[points[i][0]], -i))
    pid, point = points[best]
    return {"point_id": pid, "point": point, "by": f"best valid {metric} on seed 0",
            "valid": scores,
            "file": str(result_path(out_dir, dataset, model, 0, tuning_point=pid)
                        .relative_to(out_dir / dataset))}


#: ``selection["by"]`` of a run whose grid point was named with ``--point`` (not selected by
#: tuning on its dataset; such a run needs ``--variant`` so that its name says so).
NAMED_POINT = "named with --point, not tuned on this dataset"


def resolve(dataset: str, model: str, seed: int, *, variant: str | None = None,
            point: dict[str, Any] | None = None, sets: dict[str, Any] | None = None,
            train_sets: dict[str, Any] | None = None, epochs: int | None = None,
            patience: int | None = None, out_dir: Path, tuning: bool = False,
            selection: dict[str, Any] | None = None) -> RunSpec:
    """Model and training options of a run (see ``accuracy_config``'s docstring for the order)."""
    from kgseqgraph.models import MODEL_REGISTRY

    if model not in MODEL_REGISTRY:
        raise SystemExit(f"unknown model {model!r}; choose from {sorted(MODEL_REGISTRY)}")
    if model not in C.MODELS:
        raise SystemExit(f"{model!r} has no base option set in accuracy_config.MODELS")
    dcfg = dataset_config(dataset)
    grid = grid_of(dataset, model)
    if point is None:
        selection = selection or select_point(out_dir, dataset, model)
        point = selection["point"]
    pid = point_id(point)
    options: dict[str, Any] = {}
    fields = {f.name for f in dataclasses.fields(MODEL_REGISTRY[model].config_class)}
    if "max_len" in fields:
        options["max_len"] = dcfg["max_len"]
    options = deep_merge(options, C.MODELS[model])
    options = deep_merge(options, dcfg.get("model_options", {}).get(model, {}))
    options, point_train = apply_point(model, options, point)
    variant_options: dict[str, Any] = {}
    if variant is not None:
        known = C.VARIANTS.get(model, {})
        if variant in known:
            variant_options = known[variant]
        elif not (sets or train_sets or (selection or {}).get("by") == NAMED_POINT):
            raise SystemExit(f"unknown variant {variant!r} of {model}; configured: "
                             f"{sorted(known)} (an ad-hoc variant needs --set/--train or a "
                             "--point)")
        options = deep_merge(options, variant_options)
    elif sets or train_sets:
        raise SystemExit("--set/--train change the configuration: name the run with --variant "
                         "NAME so it does not take the main result's file")
    options = deep_merge(options, sets or {})
    budget = dict(dcfg["budget"])
    overrides = {k: v for k, v in (("epochs", epochs), ("patience", patience)) if v is not None}
    budget.update(overrides)
    train = {**C.PROTOCOL_TRAIN, **dcfg["budget"], **point_train, **overrides,
             **(train_sets or {}), "seed": int(seed)}
    unknown = sorted(set(train) - _train_fields())
    if unknown:
        raise SystemExit(f"unknown TrainConfig field(s) {unknown}")
    budget.update({k: train[k] for k in ("epochs", "patience", "batch_size", "eval_every")})
    budget["max_len"] = options.get("max_len", dcfg["max_len"])
    if overrides:
        budget["overridden"] = sorted(overrides)
    grid_info = {"space": grid, "point": point, "point_id": pid,
                 "selection": selection if not tuning else None,
                 "variant_options": variant_options or None,
                 "set": sets or None, "train_set": train_sets or None}
    path = result_path(out_dir, dataset, model, seed, variant,
                       tuning_point=pid if tuning else None)
    return RunSpec(dataset, model, int(seed), variant, pid, point, options, train, budget,
                   grid_info, path, tuning)


# --------------------------------------------------------------------------------- helpers
def git_state() -> dict[str, Any]:
    """``git rev-parse HEAD`` and whether tracked sources differ from it (result JSONs of other
    runs of a sweep, under ``benchmarks/results/``, do not count)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                              check=True).stdout.strip()
    # a copy of the tree on another machine (benchmarks/gpu_yelp.sh) may carry a .git of an
    # older commit, or none: the launcher names the commit it copied
    launcher = {"launcher_commit": os.environ["KGSEQGRAPH_GIT_COMMIT"]} if os.environ.get(
        "KGSEQGRAPH_GIT_COMMIT") else {}
    try:
        commit = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                     ":(exclude)benchmarks/results")
        return {"git_commit": commit, "dirty": bool(status), **launcher}
    except (OSError, subprocess.CalledProcessError):
        return {"git_commit": launcher.get("launcher_commit"), "dirty": None, **launcher}


_STATE_AT_START: dict[Path, dict[str, Any]] = {}


def code_state() -> dict[str, Any]:
    """:func:`git_state` as it was the first time this process asked (each script's ``main``
    asks first): the code a run imported. A long run's tree moves on while it trains (other runs
    commit their results, a developer commits), so the state at the end names the wrong code."""
    if REPO not in _STATE_AT_START:
        _STATE_AT_START[REPO] = git_state()
    return dict(_STATE_AT_START[REPO])


def git_commit_file(path: Path, message: str, attempts: int = 20, *,
                    also: tuple[Path, ...] = ()) -> None:
    """Commit ``path`` (and the files in ``also`` that git sees as changed) and nothing else,
    retrying while another job holds the index lock."""
    rels = [str(p.resolve().relative_to(REPO)) for p in (path, *also)]
    for i in range(attempts):
        status = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", *rels[1:]],
                                capture_output=True, text=True).stdout if rels[1:] else ""
        changed = {line[3:] for line in status.splitlines()}
        paths = [rels[0], *(r for r in rels[1:] if r in changed)]
        add = subprocess.run(["git", "-C", str(REPO), "add", "--", *paths], capture_output=True,
                             text=True)
        done = add.returncode == 0 and subprocess.run(
            ["git", "-C", str(REPO), "commit", "-q", "-m", message, "--", *paths],
            capture_output=True, text=True).returncode == 0
        if done:
            return
        time.sleep(1.0 + i)
    raise RuntimeError(f"could not commit {rels[0]} (git index busy?)")


def commit_result(path: Path, message: str) -> None:
    """Commit a result JSON together with the tables regenerated from it, so that ``main`` never
    holds a result its docs do not show (CI's ``make_tables.py --check`` fails on that). Parallel
    runs take turns through a lock file in ``.git``."""
    import fcntl

    default_dir = (REPO / C.RESULTS_DIR).resolve()
    regenerate = path.resolve().is_relative_to(default_dir)
    git_dir = Path(subprocess.run(["git", "-C", str(REPO), "rev-parse", "--absolute-git-dir"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    with open(git_dir / "kgseqgraph-results.lock", "w") as lock:  # .git may be a file (worktree)
        fcntl.flock(lock, fcntl.LOCK_EX)
        if regenerate:
            made = subprocess.run([sys.executable, str(REPO / "benchmarks" / "make_tables.py")],
                                  capture_output=True, text=True, cwd=REPO)
            if made.returncode:
                raise RuntimeError(f"make_tables.py failed, {path} is written but not committed:"
                                   f"\n{made.stderr or made.stdout}")
        also = tuple(REPO / d for d in (*C.GENERATED_DOCS, C.BUCKETS_PNG)) if regenerate else ()
        git_commit_file(path, message, also=also)


def load_graph(dataset: str, root: str | None) -> Any:
    from kgseqgraph.datasets.registry import load_dataset

    kwargs = dict(dataset_config(dataset).get("load", {}))
    if dataset == "synthetic":
        return load_dataset("synthetic", **kwargs)
    return load_dataset(dataset, root, **kwargs)


def attach_features(data: Any, options: dict[str, Any], cache_dir: str) -> dict[str, Any]:
    """Item features a model asks for (KIRec ``features``): ``x_text`` is the item's text (plus
    ML-1M plot, director and actors for ML-100K when ``$KGSEQGRAPH_DATA/ml-1m-text`` exists)
    through all-MiniLM-L6-v2, cached in ``cache_dir``."""
    wanted = list(options.get("features") or [])
    if not wanted:
        return {}
    from kgseqgraph.features import attach_ml1m_plots, attach_text_embeddings, item_texts

    report: dict[str, Any] = {"features": wanted, "cache_dir": cache_dir}
    for name in wanted:
        if name != "x_text":
            raise SystemExit(f"feature {name!r}: only x_text is prepared by this runner "
                             "(x_attr needs the LLM extraction of examples/kirec_ml100k.py)")
    extra = Path(os.environ.get("KGSEQGRAPH_DATA", "")) / "ml-1m-text" / "movies_extrainfos.dat"
    store = data["item"]
    if hasattr(store, "title") and hasattr(store, "year") and extra.is_file():
        join = attach_ml1m_plots(data, extra)
        report["ml1m_plot_join"] = {"matched": join.matched, "items": join.num_items,
                                    "with_plot": join.with_plot}
    x = attach_text_embeddings(data, cache_dir=cache_dir, texts=item_texts(data), progress=False)
    report["x_text_shape"] = list(x.shape)
    return report


def popularity_buckets(train_items: Any, num_items: int, targets: Any,
                       per_user: dict[str, Any], n: int = C.NUM_BUCKETS) -> dict[str, Any]:
    """Test metrics by quintile of the target's training frequency.

    ``c_u`` = number of training interactions of user ``u``'s test target. Inner edges
    ``e_1 ≤ … ≤ e_{n-1}`` are the ``j/n`` quantiles of ``c`` over the test users (NumPy's
    ``"lower"`` method, so edges are observed counts); bucket ``b`` holds the users with
    ``e_b < c_u ≤ e_{b+1}`` (``e_0 = -∞``, ``e_n = +∞``): about ``1/n`` of the test users each,
    less even when many targets share a count (a bucket may then be empty). Bucket 1 holds the
    least popular targets. The user-weighted mean of the buckets is the overall test metric.
    """
    import numpy as np
    import torch

    counts = torch.bincount(train_items, minlength=num_items)
    c = counts[targets].numpy()
    inner = [int(np.quantile(c, j / n, method="lower")) for j in range(1, n)]
    bucket = np.searchsorted(np.asarray(inner), c, side="left")
    rows = []
    for b in range(n):
        mask = bucket == b
        users = int(mask.sum())
        row: dict[str, Any] = {
            "bucket": b + 1,
            "count_range": [int(c[mask].min()), int(c[mask].max())] if users else None,
            "users": users,
        }
        for key in ("NDCG@10", "HR@10"):
            row[key] = float(per_user[key][torch.from_numpy(mask)].mean()) if users else None
        rows.append(row)
    return {"definition": " ".join(popularity_buckets.__doc__.split("\n\n")[1].split()),
            "inner_edges": inner, "num_test_users": int(len(c)),
            "overall": {k: float(per_user[k].mean()) for k in ("NDCG@10", "HR@10")},
            "buckets": rows}


def per_user_test_metrics(trainer: Any) -> dict[str, Any]:
    """Per-user test metrics of the trainer's current (best) weights, computed as
    :meth:`Trainer.evaluate` does (same chunks, exclusion and tie rule)."""
    import torch

    from kgseqgraph.evaluation import full_ranking_counts, metrics_from_counts

    cfg, split, model = trainer.config, trainer.split, trainer.model
    inputs, targets = split.test_inputs, split.test_targets
    exclude = (inputs.ptr, inputs.items) if cfg.exclude_history else None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            counts = full_ranking_counts(
                lambda lo, hi: model.score(inputs.select(torch.arange(lo, hi))), targets,
                exclude, cfg.eval_chunk_size, False, num_items=split.num_items)
    finally:
        model.train(was_training)
    return metrics_from_counts(counts, cfg.ks, cfg.ties)


def _history(result: Any, cpu: dict[int, float], metric: str) -> list[dict[str, Any]]:
    out = []
    for rec in result.history:
        train = rec.get("train") or {}
        row = {"epoch": rec["epoch"], "loss": train.get("loss")}
        for k in ("kge_loss",):
            if k in train:
                row[k] = train[k]
        row[f"valid_{metric}"] = (rec.get("valid") or {}).get(metric)
        row["train_seconds"] = round(rec["train_seconds"], 3)
        row["eval_seconds"] = round(rec["eval_seconds"], 3)
        if rec["epoch"] in cpu:
            row["cpu_seconds"] = round(cpu[rec["epoch"]], 3)
        out.append(row)
    return out


def spec_config(spec: RunSpec) -> dict[str, Any]:
    """The experiment's configuration (what a tuning JSON must share with a final run)."""
    from kgseqgraph.training import TrainConfig

    train = TrainConfig(**spec.train_options).to_dict()
    return {"model": spec.model_options, "train": train}


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    train = {k: v for k, v in config.get("train", {}).items() if k not in MACHINE_FIELDS}
    return json.loads(json.dumps({"model": config.get("model"), "train": train}))


# --------------------------------------------------------------------------------- one run
def run(spec: RunSpec, *, root: str | None, threads: int, device: str, run_dir: str | None,
        resume: bool, feature_cache: str, argv: list[str]) -> dict[str, Any]:
    """Train (or fit) and evaluate one run; return the result JSON's dict."""
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    load_start = list(os.getloadavg())
    import torch

    torch.set_num_threads(threads)
    from kgseqgraph.data import describe, leave_one_out
    from kgseqgraph.models import build_model
    from kgseqgraph.training import TrainConfig, Trainer, seed_everything
    from kgseqgraph.utils import versions

    data = load_graph(spec.dataset, root)
    f_wall, f_cpu = time.perf_counter(), time.process_time()
    features = attach_features(data, spec.model_options, feature_cache)
    f_wall, f_cpu = time.perf_counter() - f_wall, time.process_time() - f_cpu
    if features:  # a one-off cost (cached for later runs): reported, not counted in the run's
        features.update(wall_seconds=round(f_wall, 3), cpu_seconds=round(f_cpu, 3))
        t_wall, t_cpu = t_wall + f_wall, t_cpu + f_cpu
    split = leave_one_out(data)
    seed_everything(spec.seed)
    output_dir = None
    if run_dir is not None:
        output_dir = str(Path(run_dir) / spec.dataset / spec.path.stem)
    cfg = TrainConfig(**{**spec.train_options, "output_dir": output_dir, "device": device,
                         "num_threads": threads, "progress": False})
    model = build_model(spec.model, split.train_graph, **spec.model_options)
    cpu_at: dict[int, float] = {}
    progress_file = Path(output_dir) / "accuracy_progress.json" if output_dir else None
    cpu_offset = wall_offset = 0.0
    resumed_from = None

    def on_epoch(trainer: Any, record: dict[str, Any]) -> None:
        cpu_at[record["epoch"]] = cpu_offset + time.process_time() - t_cpu
        v = (record.get("valid") or {}).get(cfg.valid_metric)
        log.info("epoch %d loss %.5f valid %s %s", record["epoch"],
                 record["train"].get("loss", float("nan")), cfg.valid_metric,
                 "-" if v is None else f"{v:.5f}")
        if progress_file is not None:
            progress_file.write_text(json.dumps(
                {"epoch": record["epoch"], "cpu": cpu_at,
                 "wall_seconds": wall_offset + time.perf_counter() - t_wall}))

    trained = spec.model not in C.UNTRAINED
    if trained:
        if resume and progress_file is not None and progress_file.exists():
            prog = json.loads(progress_file.read_text())
            cpu_at.update({int(k): v for k, v in prog["cpu"].items()})
            resumed_from = int(prog["epoch"])
            cpu_offset, wall_offset = cpu_at[resumed_from], float(prog["wall_seconds"])
        trainer = Trainer(model, split, cfg, resume="auto" if resume else False,
                          callbacks=[on_epoch])
        result = trainer.fit()
        best_epoch, epochs_run = result.best_epoch, result.epochs_run
        stopped_early, valid, test = result.stopped_early, result.valid, result.test
        history = _history(result, cpu_at, cfg.valid_metric)
        timings = result.timings
        converged = bool(stopped_early or best_epoch <= C.CONVERGED_FRACTION * cfg.epochs)
        pretraining = {k: [round(float(x), 6) for x in v]
                       for k, v in (trainer.pretraining or {}).items()}
    else:
        model.fit(split.train)
        trainer = Trainer(model, split, cfg)
        t0 = time.perf_counter()
        valid = trainer.evaluate("valid")
        test = trainer.test(load_best=False)
        best_epoch = epochs_run = 0
        stopped_early, history, converged, pretraining = False, [], None, {}
        timings = {"eval_seconds": time.perf_counter() - t0}
    per_user = per_user_test_metrics(trainer)
    buckets = popularity_buckets(split.train.items, split.num_items, split.test_targets, per_user)
    gap = abs(buckets["overall"]["NDCG@10"] - test["NDCG@10"])
    buckets["recomputed_vs_test_NDCG@10"] = gap
    if gap > 1e-9:
        log.warning("per-user test NDCG@10 differs from the trainer's by %.3g", gap)
    n_params = sum(p.numel() for p in model.parameters())
    wall = wall_offset + time.perf_counter() - t_wall
    cpu = cpu_offset + time.process_time() - t_cpu
    return {
        "schema": SCHEMA,
        "dataset": spec.dataset,
        "model": spec.model,
        "variant": spec.variant,
        "name": spec.name,
        "label": C.MODEL_LABELS.get(spec.model, spec.model)
        + ("" if spec.variant is None else f" ({spec.variant})"),
        "seed": spec.seed,
        "tuning": spec.tuning,
        "config": {"model": spec.model_options, "train": cfg.to_dict(),
                   "model_full": _model_config(model)},
        "grid": spec.grid,
        "budget": spec.budget,
        "best_epoch": best_epoch,
        "epochs_run": epochs_run,
        "stopped_early": stopped_early,
        "converged": converged,
        "valid": valid,
        "test": test,
        "popularity_buckets": buckets,
        "history": history,
        "pretraining": pretraining,
        "wall_seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "timings": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in timings.items()},
        "resumed_from_epoch": resumed_from,
        "num_parameters": n_params,
        **code_state(),
        "command": "python " + shlex.join(argv),
        "argv": argv,
        "versions": versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "protocol": C.PROTOCOL_TEXT,
        "split": dict(split.report),
        "dataset_stats": {**describe(data), "num_items": split.num_items,
                          "valid_users": int(split.valid_targets.numel()),
                          "test_users": int(split.test_targets.numel())},
        "features": features or None,
        "threads": torch.get_num_threads(),
        "device": str(trainer.device),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "gpu": (torch.cuda.get_device_name(trainer.device)
                            if trainer.device.type == "cuda" else None),
                    "loadavg_start": load_start, "loadavg_end": list(os.getloadavg()),
                    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                         / 1024.0, 1)},
    }


def _model_config(model: Any) -> Any:
    fn = getattr(model, "config_dict", None)
    return fn() if callable(fn) else {"model": type(model).__name__}


def write_result(out: dict[str, Any], path: Path) -> Path:
    """Atomic write (tmp file + ``os.replace``), non-finite floats as ``null``."""
    from kgseqgraph.training import atomic_write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(out, path)


def copy_from_tuning(spec: RunSpec, selection: dict[str, Any], out_dir: Path,
                     argv: list[str]) -> dict[str, Any] | None:
    """The winning tuning JSON as the seed-0 final result, when its configuration is this run's
    (``None`` otherwise)."""
    if spec.seed != 0 or spec.variant is not None or not selection.get("file"):
        return None
    src = out_dir / spec.dataset / selection["file"]
    tuned = json.loads(src.read_text())
    if _comparable(tuned["config"]) != _comparable(spec_config(spec)):
        return None
    out = dict(tuned)
    out["tuning"] = False
    out["from_tuning"] = selection["file"]
    out["grid"] = {**tuned["grid"], "selection": selection}
    out["copied_by"] = {"command": "python " + shlex.join(argv), **code_state(),
                        "date": datetime.datetime.now(datetime.timezone.utc)
                        .isoformat(timespec="seconds")}
    return out


def copy_from_named_point(spec: RunSpec, out_dir: Path, argv: list[str]) -> dict[str, Any] | None:
    """A run already trained as a named-point run (``--point P --variant NAME``, nothing else
    changed) with this run's seed, configuration and budget trained the same model: it is grid
    point P's tuning run (seed 0, ``--tune``), or a final seed of the model once tuning chose P.
    Returns the named run relabelled as this one (``from_named_point``), ``None`` when there is
    no such run or its configuration differs."""
    want = _comparable(spec_config(spec))
    for path in sorted((out_dir / spec.dataset).glob(f"{spec.model}-*_seed{spec.seed}.json")):
        named = json.loads(path.read_text())
        grid = named.get("grid") or {}
        if (named.get("model") != spec.model or named.get("seed") != spec.seed
                or (grid.get("selection") or {}).get("by") != NAMED_POINT
                or grid.get("point_id") != spec.grid["point_id"]
                or _comparable(named["config"]) != want or named.get("budget") != spec.budget):
            continue
        out = dict(named)
        out["tuning"] = spec.tuning
        out["variant"], out["name"] = None, spec.model
        out["label"] = C.MODEL_LABELS.get(spec.model, spec.model)
        out["from_named_point"] = path.name
        out["grid"] = ({k: v for k, v in grid.items() if k != "selection"} | {"selection": None}
                       if spec.tuning else dict(spec.grid))
        out["copied_by"] = {"command": "python " + shlex.join(argv), **code_state(),
                            "date": datetime.datetime.now(datetime.timezone.utc)
                            .isoformat(timespec="seconds")}
        return out
    return None


# --------------------------------------------------------------------------------- plans
def plan(kind: str, datasets: list[str], models: list[str] | None, out_dir: Path,
         threads: int, extra: list[str]) -> list[str]:
    """Commands of a sweep phase whose result JSON does not exist yet (``tune``: one command a
    grid point; ``final``: every seed of every model; ``ablation``: every variant and seed;
    ``tries``: every try of ``accuracy_config.MODEL_TRIES``/``TRAINING_TRIES`` on
    ``TRY_MODELS``, seed by seed)."""
    cmds = []
    tail = [f"--threads={threads}", *extra]
    if out_dir != REPO / C.RESULTS_DIR:
        tail.append(f"--out-dir={out_dir}")
    script = os.path.relpath(Path(__file__).resolve(), Path.cwd())
    for dataset in datasets:
        names = models or C.SWEEP.get(dataset, [])
        if kind == "tune":
            for model in names:
                points = grid_points(grid_of(dataset, model))
                if len(points) <= 1:
                    continue
                for pid, _ in points:
                    if not result_path(out_dir, dataset, model, 0, tuning_point=pid).exists():
                        cmds.append(shlex.join(["python", script, "--dataset", dataset,
                                                "--model", model, "--tune", "--point", pid,
                                                *tail]))
        elif kind == "final":
            for model in names:
                for seed in C.SEEDS:
                    if not result_path(out_dir, dataset, model, seed).exists():
                        cmds.append(shlex.join(["python", script, "--dataset", dataset,
                                                "--model", model, "--seed", str(seed), *tail]))
        elif kind == "ablation":
            base = C.ABLATIONS.get(dataset)
            if base is None or (models and base not in models):
                continue
            for variant in C.ablation_variants(base):
                for seed in C.SEEDS:
                    if not result_path(out_dir, dataset, base, seed, variant).exists():
                        cmds.append(shlex.join(["python", script, "--dataset", dataset,
                                                "--model", base, "--variant", variant,
                                                "--seed", str(seed), *tail]))
        elif kind == "tries":
            unknown = [f"{m}:{t}" for m in C.TRY_MODELS for t in C.MODEL_TRIES
                       if t not in C.VARIANTS.get(m, {})]
            if unknown:
                raise SystemExit("accuracy_config.MODEL_TRIES names option sets missing from "
                                 f"VARIANTS: {', '.join(unknown)}")
            tries = {**{t: [] for t in C.MODEL_TRIES}, **C.TRAINING_TRIES}
            for seed in C.SEEDS:
                for model in C.TRY_MODELS:
                    if models and model not in models:
                        continue
                    for variant, args in tries.items():
                        if not result_path(out_dir, dataset, model, seed, variant).exists():
                            cmds.append(shlex.join(["python", script, "--dataset", dataset,
                                                    "--model", model, "--variant", variant,
                                                    *args, "--seed", str(seed), *tail]))
    return cmds


# --------------------------------------------------------------------------------- CLI
def parse_pairs(pairs: list[str], flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"{flag} expects KEY=JSON, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Settings: benchmarks/accuracy_config.py. Sweep: benchmarks/README.md.")
    ap.add_argument("--dataset", choices=sorted(C.DATASETS))
    ap.add_argument("--model", help="a registered model name with a set in accuracy_config.MODELS")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variant", default=None,
                    help="a named option set of accuracy_config.VARIANTS, or an ad-hoc name for "
                         "--set/--train changes")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                    help="model option (needs --variant)")
    ap.add_argument("--train", action="append", default=[], metavar="KEY=JSON",
                    help="TrainConfig field (needs --variant)")
    ap.add_argument("--epochs", type=int, default=None, help="override the budget's epochs")
    ap.add_argument("--patience", type=int, default=None, help="override the budget's patience")
    ap.add_argument("--tune", action="store_true",
                    help="run the grid on seed 0 (existing points are skipped)")
    ap.add_argument("--point", default=None,
                    help="grid point id (with --tune: only this point; otherwise: use it "
                         "instead of the tuned choice, named by --variant)")
    ap.add_argument("--select", action="store_true",
                    help="print the chosen grid point of --dataset/--model and exit")
    ap.add_argument("--plan", choices=["tune", "final", "ablation", "tries"], default=None,
                    help="print the commands of a sweep phase still to run (one per line)")
    ap.add_argument("--out-dir", default=str(REPO / C.RESULTS_DIR))
    ap.add_argument("--root", default=None,
                    help="dataset folder (default $KGSEQGRAPH_DATA/<dataset's sub-folder>)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--run-dir", default=None,
                    help="keep the trainer's checkpoints under RUN_DIR/<dataset>/<run> (default: "
                         "none, everything in memory)")
    ap.add_argument("--resume", action="store_true",
                    help="continue a killed run from its --run-dir checkpoint")
    ap.add_argument("--feature-cache", default=str(Path(os.environ.get(
        "KGSEQGRAPH_CACHE", Path.home() / ".cache" / "kgseqgraph")) / "features"),
        help="cache of text embeddings (KIRec)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing result JSON")
    ap.add_argument("--commit", action="store_true",
                    help="git-commit each result JSON when its run finishes, with the tables "
                         "make_tables.py regenerates from it")
    ap.add_argument("--dry-run", action="store_true",
                    help="print the resolved options and the output path, run nothing")
    ap.add_argument("-q", "--quiet", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> list[Path]:
    """Command line; returns the result files written (or that would be, with ``--dry-run``)."""
    raw = list(sys.argv[1:] if argv is None else argv)
    full_argv = [os.path.relpath(Path(__file__).resolve(), Path.cwd()), *raw]
    args = build_parser().parse_args(raw)
    code_state()  # the code this process runs, before the tree can move on
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s %(message)s")
    out_dir = Path(args.out_dir).resolve()
    if args.commit and not out_dir.is_relative_to(REPO):
        raise SystemExit(f"--commit needs --out-dir inside the repository ({REPO})")
    if args.plan:
        datasets = [args.dataset] if args.dataset else list(C.TABLE_DATASETS)
        extra = ["--commit"] if args.commit else []
        for cmd in plan(args.plan, datasets, [args.model] if args.model else None, out_dir,
                        args.threads, extra):
            print(cmd)
        return []
    if not args.dataset or not args.model:
        raise SystemExit("--dataset and --model are required (or --plan)")
    if args.select:
        try:
            print(json.dumps(select_point(out_dir, args.dataset, args.model), indent=2))
        except IncompleteTuning as exc:
            raise SystemExit(str(exc)) from exc
        return []
    sets, train_sets = parse_pairs(args.set, "--set"), parse_pairs(args.train, "--train")
    grid = grid_of(args.dataset, args.model)
    points = dict(grid_points(grid))
    if args.point is not None and args.point not in points:
        raise SystemExit(f"unknown grid point {args.point!r}; the grid has {sorted(points)}")
    common = dict(variant=args.variant, sets=sets, train_sets=train_sets, epochs=args.epochs,
                  patience=args.patience, out_dir=out_dir)
    if args.tune:
        if args.seed != 0 or args.variant is not None:
            raise SystemExit("--tune runs seed 0 of the base model (no --seed, no --variant)")
        if len(points) <= 1:
            raise SystemExit(f"{args.model} on {args.dataset} has no grid to tune")
        wanted = [args.point] if args.point else list(points)
        specs = [resolve(args.dataset, args.model, 0, point=points[p], tuning=True, **common)
                 for p in wanted]
        selection = None
    else:
        selection = None
        if args.point is not None:
            if args.variant is None:
                raise SystemExit("--point outside --tune changes the configuration: name the run "
                                 "with --variant")
            point = points[args.point]
            selection = {"point_id": args.point, "point": point, "by": NAMED_POINT}
        else:
            try:
                selection = select_point(out_dir, args.dataset, args.model)
                point = selection["point"]
            except IncompleteTuning as exc:
                if not args.dry_run:
                    raise SystemExit(f"{exc}\n(or name a point with --point and --variant)"
                                     ) from exc
                point = next(iter(points.values()))  # a dry run shows the first point
                selection = {"pending": str(exc)}
        specs = [resolve(args.dataset, args.model, args.seed, point=point, selection=selection,
                         **common)]
    written = []
    for spec in specs:
        if args.dry_run:
            print(json.dumps({"output": str(spec.path), "exists": spec.path.exists(),
                              "model_options": spec.model_options,
                              "train_options": spec.train_options, "budget": spec.budget,
                              "grid": spec.grid}, indent=2, default=str))
            written.append(spec.path)
            continue
        if spec.path.exists() and not args.overwrite:
            if spec.tuning:
                log.info("skip %s (exists)", spec.path)
                continue
            raise SystemExit(f"{spec.path} exists; pass --overwrite to replace it")
        out = None
        if selection is not None and not (sets or train_sets or args.epochs or args.patience):
            out = copy_from_tuning(spec, selection, out_dir, full_argv)
        if out is None and spec.variant is None and (
                spec.tuning or (selection or {}).get("by") not in (None, NAMED_POINT)):
            out = copy_from_named_point(spec, out_dir, full_argv)
        if out is None:
            out = run(spec, root=args.root, threads=args.threads, device=args.device,
                      run_dir=args.run_dir, resume=args.resume, feature_cache=args.feature_cache,
                      argv=full_argv)
        write_result(out, spec.path)
        log.info("wrote %s (valid NDCG@10 %.5f, test NDCG@10 %.5f)", spec.path,
                 out["valid"]["NDCG@10"], out["test"]["NDCG@10"])
        if args.commit:
            what = "tuning" if spec.tuning else "accuracy"
            commit_result(spec.path, f"{what}: {spec.dataset} {spec.path.stem}")
        written.append(spec.path)
    if args.tune and not args.dry_run and args.point is None:
        try:
            sel = select_point(out_dir, args.dataset, args.model)
            print(json.dumps({"selected": sel}, indent=2))
        except IncompleteTuning:
            pass
    return written


if __name__ == "__main__":
    main()
