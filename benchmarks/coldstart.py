"""Cold-start items: one model on one dataset with one seed → one committed JSON.

    python benchmarks/coldstart.py --dataset ml-100k --model katrec --seed 0
    python benchmarks/coldstart.py --plan | xargs -I{} sh -c '{}'     # every run still missing

Protocol (``docs/explain.md``, "Cold-start items"):

* ``kgseqgraph.data.cold_item_split(data, 0.1, seed=0)``: 10 % of the interacted items (the same
  168 ML-100K items for every model and seed) are held out entirely — every interaction with
  them is removed — and the items are renumbered warm first, cold last;
* the model is built on ``split.train_graph`` (warm items, training interactions) and trained
  by the library's Trainer on the warm leave-one-out split (model selection on warm validation
  NDCG@10), with the accuracy benchmark's options for that model and a fixed grid point;
* after training, ``model.add_items(split.cold_graph)`` adds the cold items with their KG facts
  (and text features) — nothing is retrained — and the cold test is ranked: each user with a
  cold item and at least one warm item before it, inputs = the warm items before the user's
  first cold item, target = that cold item;
* two rankings, history excluded, pessimistic ties: ``cold_full`` against the whole catalogue,
  ``cold_only`` against the cold items only (where chance is 1/168 per rank); the exact
  expectation of a random scorer is written beside each (``chance``), and a bootstrap 95 % CI
  over users of the cold metrics (users resampled; it does not cover the few cold items that
  take most targets, see ``split.cold_targets``);
* SASRec's new rows are random draws (:data:`RANDOM_ROWS`): its metrics are the mean over
  :data:`DRAWS` draws, each draw's in ``draws``;
* the KG models are also evaluated with their new TransR rows fitted to their triples
  (``add_items(..., init="transr")``, :data:`ADD_ITEMS_VARIANTS`) on the same trained model,
  under ``variants``.

Results: ``benchmarks/results/coldstart/<dataset>/<model>_seed<seed>.json``; table:
``python benchmarks/make_tables.py`` (block ``coldstart:<dataset>``).
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import logging
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import accuracy as A  # noqa: E402
import accuracy_config as C  # noqa: E402

log = logging.getLogger("kgseqgraph.coldstart")

SCHEMA = "kgseqgraph.coldstart/1"
RESULTS_DIR = REPO / "benchmarks" / "results" / "coldstart"
MODELS = ("pop", "sasrec", "katrec", "kg-sasrec", "kirec")
SEEDS = (0, 1, 2)
FRACTION = 0.1
SPLIT_SEED = 0
#: the accuracy grid's first point, not tuned for this split (the same for every model)
POINT = {"lr": 1e-3, "dropout": 0.2}
#: a CPU budget: 30 epochs, patience 5 (the accuracy benchmark's ML-100K budget is 60 / 10)
BUDGET = {"epochs": 30, "patience": 5}
KS = (5, 10, 20)
#: models whose new items' rows are random (drawn as at initialisation): their cold-item scores
#: are noise whose expectation over the draw is exactly chance (the rows are exchangeable), but
#: one draw is far from it when a few cold items take most targets — their metrics are the mean
#: over DRAWS independent draws (each draw's in the JSON)
RANDOM_ROWS = frozenset({"sasrec"})
DRAWS = 20
#: other add_items options evaluated on the same trained model (written under "variants"):
#: the KG models' new TransR rows fitted to their triples instead of the neighbours' mean
ADD_ITEMS_VARIANTS: dict[str, list[dict[str, Any]]] = {
    "katrec": [{"init": "transr"}], "kg-sasrec": [{"init": "transr"}]}
METRIC_KEYS = ("HR@5", "HR@10", "HR@20", "NDCG@10", "NDCG@20", "MRR")


def result_path(out_dir: Path, dataset: str, model: str, seed: int) -> Path:
    return out_dir / dataset / f"{model}_seed{seed}.json"


def chance(candidates: list[int], ks: tuple[int, ...] = KS) -> dict[str, float]:
    """The expected metrics of a uniformly random ranking, averaged over users with
    ``candidates[u]`` items each (the target among them): the rank is uniform on
    ``1 … c``, so E[HR@k] = min(k, c)/c, E[NDCG@k] = Σ_{r ≤ min(k, c)} 1/log2(r+1) / c,
    E[MRR] = H_c / c."""
    out: dict[str, list[float]] = {}
    for c in candidates:
        for k in ks:
            out.setdefault(f"HR@{k}", []).append(min(k, c) / c)
            out.setdefault(f"NDCG@{k}", []).append(
                sum(1 / math.log2(r + 1) for r in range(1, min(k, c) + 1)) / c)
        out.setdefault("MRR", []).append(sum(1 / r for r in range(1, c + 1)) / c)
    return {k: sum(v) / len(v) for k, v in out.items()}


def bootstrap_ci(values: Any, seed: int = 0, resamples: int = 2000) -> list[float]:
    """95 % percentile bootstrap interval of the mean of per-user ``values``."""
    import torch

    v = torch.as_tensor(values, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(v.numel(), (resamples, v.numel()), generator=g)
    means = v[idx].mean(1)
    return [float(torch.quantile(means, 0.025)), float(torch.quantile(means, 0.975))]


class OnlyItems:
    """A model whose scores of items outside ``candidates`` are ``-inf``: ranked against the
    candidates only (they never tie with a finite target)."""

    def __init__(self, model: Any, candidates: Any) -> None:
        import torch

        self.model = model
        self.num_items = model.num_items
        self.mask = torch.zeros(model.num_items, dtype=torch.bool)
        self.mask[candidates] = True

    def score(self, sequences: Any) -> Any:
        s = self.model.score(sequences).clone()
        s[:, ~self.mask.to(s.device)] = float("-inf")
        return s

    def eval(self) -> OnlyItems:
        self.model.eval()
        return self


def variant_name(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items())


def evaluate_cold(model: Any, split: Any, draws: int, seed: int, **options: Any
                  ) -> tuple[dict, dict, dict, list]:
    """Extend (a copy of) ``model`` by the cold items and rank the cold test, ``draws`` times
    (new generators) when its new rows are random; metrics averaged over the draws."""
    import torch

    from kgseqgraph.evaluation import Evaluator

    evaluator = Evaluator(ks=KS, exclude_history=True, ties="pessimistic")
    per_draw: list[dict[str, dict[str, float]]] = []
    per_user_sum: dict[str, dict[str, Any]] = {}
    for d in range(draws):
        extended = copy.deepcopy(model)
        extended.add_items(split.cold_graph,
                           generator=torch.Generator().manual_seed(1000 * seed + d), **options)
        this: dict[str, dict[str, float]] = {}
        for name, scorer in (("cold_full", extended),
                             ("cold_only", OnlyItems(extended, split.cold_items))):
            means, per_user = evaluator.evaluate(scorer, split.cold_inputs, split.cold_targets,
                                                 stage="test", return_per_user=True)
            this[name] = {k: means[k] for k in METRIC_KEYS}
            acc = per_user_sum.setdefault(name, {})
            for k in (*METRIC_KEYS, "rank"):
                acc[k] = per_user[k] / draws + acc.get(k, 0)
        per_draw.append(this)
    metrics = {name: {k: sum(p[name][k] for p in per_draw) / draws for k in METRIC_KEYS}
               for name in ("cold_full", "cold_only")}
    ci = {name: {k: bootstrap_ci(per_user_sum[name][k], seed=seed) for k in ("NDCG@10", "MRR")}
          for name in metrics}
    return metrics, ci, {name: per_user_sum[name]["rank"] for name in metrics}, per_draw


def model_options(dataset: str, model: str, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The accuracy benchmark's options for ``model`` at :data:`POINT` with :data:`BUDGET`."""
    spec = A.resolve(dataset, model, seed, point={} if model in C.UNTRAINED else POINT,
                     epochs=BUDGET["epochs"], patience=BUDGET["patience"],
                     out_dir=REPO / C.RESULTS_DIR)
    return spec.model_options, spec.train_options


def run(dataset: str, model_name: str, seed: int, root: str | None, threads: int,
        feature_cache: str, argv: list[str], fraction: float = FRACTION,
        split_seed: int = SPLIT_SEED, epochs: int | None = None) -> dict[str, Any]:
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    import torch

    torch.set_num_threads(threads)
    from kgseqgraph.data import cold_item_split
    from kgseqgraph.evaluation import Evaluator
    from kgseqgraph.models import build_model
    from kgseqgraph.training import TrainConfig, Trainer, seed_everything
    from kgseqgraph.utils import versions

    options, train_options = model_options(dataset, model_name, seed)
    if epochs is not None:
        train_options = {**train_options, "epochs": epochs}
    data = A.load_graph(dataset, root)
    features = A.attach_features(data, options, feature_cache)  # before the split: all items
    split = cold_item_split(data, fraction, seed=split_seed)
    seed_everything(seed)
    cfg = TrainConfig(**{**train_options, "device": "cpu", "num_threads": threads,
                         "progress": False, "sampled_negatives": None, "output_dir": None})
    model = build_model(model_name, split.train_graph, **options)
    trained = model_name not in C.UNTRAINED
    if trained:
        trainer = Trainer(model, split, cfg)
        result = trainer.fit()
        best_epoch, epochs_run = result.best_epoch, result.epochs_run
        warm_valid, warm_test = result.valid, result.test
    else:
        model.fit(split.train)
        trainer = Trainer(model, split, cfg)
        warm_valid, warm_test = trainer.evaluate("valid"), trainer.test(load_best=False)
        best_epoch = epochs_run = 0
    t_train = time.process_time() - t_cpu
    model.eval()
    draws = DRAWS if model_name in RANDOM_ROWS else 1
    metrics, ci, per_user_ranks, per_draw = evaluate_cold(model, split, draws, seed)
    variants = {}
    for options in ADD_ITEMS_VARIANTS.get(model_name, []):
        v_metrics, v_ci, v_ranks, _ = evaluate_cold(model, split, 1, seed, **options)
        variants[variant_name(options)] = {
            "add_items": options, "metrics": v_metrics, "ci95": v_ci,
            "median_rank": {k: float(torch.median(v)) for k, v in v_ranks.items()}}
    n_items = int(split.full_graph["item"].num_nodes)
    history = [int(torch.unique(split.cold_inputs[u]).numel())
               for u in range(len(split.cold_inputs))]
    chances = {"cold_full": chance([n_items - h for h in history]),
               "cold_only": chance([split.num_cold] * len(history))}
    wall = time.perf_counter() - t_wall
    cpu = time.process_time() - t_cpu
    linked = _linked_cold_items(split)
    return {
        "schema": SCHEMA,
        "dataset": dataset,
        "model": model_name,
        "label": C.MODEL_LABELS.get(model_name, model_name),
        "seed": seed,
        "config": {"model": options, "train": cfg.to_dict(), "point": POINT if trained else {},
                   "budget": BUDGET if trained else {},
                   "split": {"function": "cold_item_split", "fraction": fraction,
                             "seed": split_seed, "min_history": 1},
                   "add_items": "model.add_items(split.cold_graph) after training, nothing "
                                "retrained"},
        "metrics": metrics,
        "draws": {"count": draws, "metrics": per_draw if draws > 1 else None,
                  "why": "new items' rows are random: metrics averaged over independent draws"
                  if draws > 1 else None},
        "variants": variants or None,
        "chance": chances,
        "ci95": ci,
        "median_rank": {k: float(torch.median(v)) for k, v in per_user_ranks.items()},
        "warm": {"valid": warm_valid, "test": warm_test, "best_epoch": best_epoch,
                 "epochs_run": epochs_run},
        "split": {**split.report, "cold_items_with_kg_facts": linked,
                  "cold_test_history_mean": sum(history) / len(history),
                  "cold_targets_distinct": int(torch.unique(split.cold_targets).numel()),
                  "cold_targets_top3_share": float(torch.bincount(
                      split.cold_targets).sort(descending=True).values[:3].sum()
                      / split.cold_targets.numel())},
        "features": features or None,
        "train_cpu_seconds": round(t_train, 3),
        "cpu_seconds": round(cpu, 3),
        "wall_seconds": round(wall, 3),
        **A.code_state(),
        "command": "python " + shlex.join(argv),
        "versions": versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "threads": threads,
    }


def _linked_cold_items(split: Any) -> int:
    """Cold items with at least one KG fact."""
    import torch

    has = torch.zeros(split.num_cold, dtype=torch.bool)
    g = split.full_graph
    for et in g.edge_types:
        if et[0] == "item" and "interacts" not in et[1]:
            heads = g[et].edge_index[0]
            has[heads[heads >= split.num_warm] - split.num_warm] = True
    return int(has.sum())


def plan(datasets: list[str], models: list[str], out_dir: Path, threads: int) -> list[str]:
    script = os.path.relpath(Path(__file__).resolve(), Path.cwd())
    cmds = []
    for dataset in datasets:
        for model in models:
            for seed in SEEDS:
                if not result_path(out_dir, dataset, model, seed).exists():
                    cmds.append(shlex.join(["python", script, "--dataset", dataset, "--model",
                                            model, "--seed", str(seed),
                                            f"--threads={threads}"]))
    return cmds


def main(argv: list[str] | None = None) -> list[Path]:
    raw = list(sys.argv[1:] if argv is None else argv)
    full_argv = [os.path.relpath(Path(__file__).resolve(), Path.cwd()), *raw]
    A.code_state()  # the code this process runs, before the tree can move on
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="ml-100k", choices=sorted(C.DATASETS))
    ap.add_argument("--model", choices=MODELS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="override the budget (smoke runs)")
    ap.add_argument("--root", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out-dir", default=str(RESULTS_DIR))
    ap.add_argument("--feature-cache", default=str(Path(os.environ.get(
        "KGSEQGRAPH_CACHE", Path.home() / ".cache" / "kgseqgraph")) / "features"))
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--plan", action="store_true", help="print the runs still missing")
    args = ap.parse_args(raw)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out_dir = Path(args.out_dir)
    if args.plan:
        for cmd in plan([args.dataset], [args.model] if args.model else list(MODELS), out_dir,
                        args.threads):
            print(cmd)
        return []
    if not args.model:
        raise SystemExit("--model is required (or --plan)")
    path = result_path(out_dir, args.dataset, args.model, args.seed)
    if path.exists() and not args.overwrite:
        raise SystemExit(f"{path} exists; pass --overwrite to replace it")
    out = run(args.dataset, args.model, args.seed, args.root, args.threads, args.feature_cache,
              full_argv, epochs=args.epochs)
    A.write_result(out, path)
    log.info("wrote %s: cold_only NDCG@10 %.4f (chance %.4f), cold_full NDCG@10 %.4f", path,
             out["metrics"]["cold_only"]["NDCG@10"], out["chance"]["cold_only"]["NDCG@10"],
             out["metrics"]["cold_full"]["NDCG@10"])
    return [path]


if __name__ == "__main__":
    main()
