"""Are explanations faithful? A deletion test of KATRec's attention paths → one committed JSON.

    python benchmarks/explain_faithfulness.py --dataset ml-100k
    python benchmarks/explain_faithfulness.py --dataset yelp

For each of ``--pairs`` test users (seeded sample) and the model's top-1 item ``j`` for their
whole test input (history excluded):

1. ``kgseqgraph.models.explain(model, history, j, k=PATHS)`` gives the top attention paths;
   the **explained facts** are the distinct facts on them (a fact = a triple, its ``rev_``
   reverse and parallel copies: ``kgseqgraph.models.explain.fact_ids``), in path-rank order,
   each path read from the item end;
2. the **random facts** are drawn uniformly (seeded) from the facts *around* ``j``: every fact
   with an endpoint in ``{j}`` or on one of the top paths, the explained ones excluded;
3. for ``k`` in :data:`KS`, ``j``'s score is recomputed with the first ``k`` explained facts
   removed, and with ``k`` random ones removed (``scores_without_edges``: attention
   renormalised over each head's remaining triples, as if the graph never had them); the
   **drop** is the original score minus the new one (the model's logit for ``j``), and the
   same for ``j``'s log-probability (log-softmax over the catalogue, history excluded), which
   discounts the shift every candidate's score takes when the history's own facts go.

Reported per ``k``: mean and median drops, the mean paired difference with a bootstrap 95 % CI,
the share of pairs where the explained deletion lowers the score more (ties count half), an
exact two-sided sign test, the mean absolute change of the score (and how often the explained
deletion moves it more than the random one, with its sign test), ``j``'s mean rank after the
deletion and how often it leaves the top-1 (the logit of ``j`` also moves with the history's
own embeddings, which lose the same facts; the rank is the effect on the recommendation). The model is KATRec (the
accuracy benchmark's options, lr 1e-3, dropout 0.2) trained on ``leave_one_out(data)
.train_graph`` with the budget of :data:`BUDGETS` (kept in ``--model-cache`` so a rerun of the
test does not retrain). ML-100K also writes the worked example of ``docs/explain.md`` (its
paths into the JSON, its figure to ``docs/explain_ml100k.png``).

Results: ``benchmarks/results/explain/<dataset>/katrec_seed<seed>.json``; tables:
``python benchmarks/make_tables.py`` (blocks ``faithfulness`` and ``explain-example:ml-100k``).
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import os
import shlex
import statistics
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

log = logging.getLogger("kgseqgraph.faithfulness")

SCHEMA = "kgseqgraph.faithfulness/1"
RESULTS_DIR = REPO / "benchmarks" / "results" / "explain"
MODEL = "katrec"
POINT = {"lr": 1e-3, "dropout": 0.2}
#: training budgets (CPU): ML-100K half the accuracy benchmark's, Yelp a modest one
BUDGETS = {"ml-100k": {"epochs": 30, "patience": 5},
           "yelp": {"epochs": 8, "patience": 3},
           "synthetic": {"epochs": 2, "patience": None}}
#: the accuracy benchmark's synthetic KATRec has one layer (paths of one edge only): two here
OPTION_OVERRIDES = {"synthetic": {"kg_hidden": [8, 8]}}
PATHS = 10
KS = (1, 3, 5, 10)


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided binomial p-value of ``wins`` vs ``losses`` (ties left out) under p = 1/2."""
    n = wins + losses
    if n == 0:
        return 1.0
    low = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(low + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def bootstrap_ci(values: list[float], seed: int, resamples: int = 5000) -> list[float]:
    import torch

    v = torch.tensor(values, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    means = v[torch.randint(v.numel(), (resamples, v.numel()), generator=g)].mean(1)
    return [float(torch.quantile(means, 0.025)), float(torch.quantile(means, 0.975))]


def trained_model(dataset: str, seed: int, data: Any, split: Any, cache: Path | None,
                  threads: int) -> tuple[Any, dict[str, Any]]:
    """KATRec trained on ``split.train_graph`` (or read back from ``cache``)."""
    import torch

    from kgseqgraph.models import SequentialRecommender, build_model
    from kgseqgraph.training import TrainConfig, Trainer, seed_everything

    spec = A.resolve(dataset, MODEL, seed, point=POINT, epochs=BUDGETS[dataset]["epochs"],
                     patience=BUDGETS[dataset]["patience"], out_dir=REPO / C.RESULTS_DIR)
    spec.model_options.update(OPTION_OVERRIDES.get(dataset, {}))
    cfg = TrainConfig(**{**spec.train_options, "device": "cpu", "num_threads": threads,
                         "progress": False, "sampled_negatives": None, "output_dir": None})
    info_file = cache / "training.json" if cache is not None else None
    if info_file is not None and info_file.exists():
        info = json.loads(info_file.read_text())
        # the cached model serves only the same model options, training options and budget
        # (the thread count does not change what is trained)
        wanted = json.loads(json.dumps({"model": spec.model_options, "train": cfg.to_dict(),
                                        "budget": BUDGETS[dataset]}))
        cached = {k: info["config"].get(k) for k in wanted}
        for c in (wanted, cached):
            if isinstance(c.get("train"), dict):
                c["train"] = {k: v for k, v in c["train"].items() if k != "num_threads"}
        if cached == wanted:
            model = SequentialRecommender.from_pretrained(cache / "model",
                                                          data=split.train_graph)
            log.info("read the trained model from %s", cache)
            return model.eval(), {**info, "from_cache": True}
        log.info("the cached model in %s was trained otherwise: training again", cache)
    seed_everything(seed)
    model = build_model(MODEL, split.train_graph, **spec.model_options)
    t0 = time.process_time()
    result = Trainer(model, split, cfg).fit()
    info = {"config": {"model": spec.model_options, "train": cfg.to_dict(), "point": POINT,
                       "budget": BUDGETS[dataset]},
            "valid": result.valid, "test": result.test, "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run, "stopped_early": result.stopped_early,
            "train_cpu_seconds": round(time.process_time() - t0, 3)}
    if cache is not None:
        model.save_pretrained(cache / "model")
        info_file.write_text(json.dumps(info, indent=2))
    torch.set_num_threads(threads)
    return model.eval(), {**info, "from_cache": False}


def deletion_test(model: Any, graph: Any, split: Any, pairs: int, seed: int,
                  data: Any) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The per-pair drops (see the module docstring)."""
    import torch

    from kgseqgraph.models.explain import edge_attention, explain, fact_ids
    from kgseqgraph.models.explain import scores_without_edges as without

    att = edge_attention(model)
    facts = fact_ids(att)
    order = torch.argsort(facts, stable=True)
    sorted_facts = facts[order]
    item0 = att.node_offsets["item"]
    g = torch.Generator().manual_seed(seed)
    users = torch.randperm(len(split.test_inputs), generator=g)
    rows, skipped = [], {"no_path": 0, "no_random_pool": 0}

    def edges_of(chosen: torch.Tensor) -> torch.Tensor:
        lo = torch.searchsorted(sorted_facts, chosen)
        hi = torch.searchsorted(sorted_facts, chosen, right=True)
        return torch.cat([order[a:b] for a, b in zip(lo.tolist(), hi.tolist())])

    for u in users.tolist():
        if len(rows) >= pairs:
            break
        history = split.test_inputs[u].tolist()
        base = without(model, [history])[0]
        ranked = base.clone()
        ranked[history] = float("-inf")
        j = int(torch.argmax(ranked))
        base_logp = float(torch.log_softmax(ranked.double(), 0)[j])
        df = explain(model, history, j, data=data, k=PATHS)
        if len(df) == 0:
            skipped["no_path"] += 1
            continue
        explained: list[int] = []
        on_paths = {item0 + j}
        for nodes, edges in zip(df["nodes"], df["edges"]):
            on_paths.update(nodes)
            for e in reversed(edges):  # from the item end
                f = int(facts[e])
                if f not in explained:
                    explained.append(f)
        nodes = torch.tensor(sorted(on_paths))
        around = torch.isin(att.head, nodes) | torch.isin(att.tail, nodes)
        pool = torch.unique(facts[around])
        pool = pool[~torch.isin(pool, torch.tensor(explained))]
        if pool.numel() == 0:
            skipped["no_random_pool"] += 1
            continue
        row: dict[str, Any] = {"user": int(split.test_inputs.users[u]), "item": j,
                               "history_length": len(history), "score": float(base[j]),
                               "paths": len(df), "explained_facts": len(explained),
                               "pool_facts": int(pool.numel()), "top_path_score":
                               float(df["score"].iloc[0]), "by_k": {}}
        pick = torch.randperm(pool.numel(), generator=g)
        for k in KS:
            n = min(k, len(explained), pool.numel())
            res = {}
            for name, chosen in (("explained", torch.tensor(explained[:n])),
                                 ("random", pool[pick[:n]])):
                s = without(model, [history], edges_of(chosen))[0]
                s[history] = float("-inf")
                logp = float(torch.log_softmax(s.double(), 0)[j])
                res[name] = {"drop": float(base[j] - s[j]), "drop_logp": base_logp - logp,
                             "rank": int((s >= s[j]).sum())}  # ties count against j
            row["by_k"][str(k)] = {"facts": n, **res}
        rows.append(row)
        if len(rows) % 25 == 0:
            log.info("%d pairs", len(rows))
    return rows, skipped


def summarise(rows: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    out = {}
    for k in KS:
        e = [r["by_k"][str(k)]["explained"]["drop"] for r in rows]
        x = [r["by_k"][str(k)]["random"]["drop"] for r in rows]
        diff = [a - b for a, b in zip(e, x)]
        e_lp = [r["by_k"][str(k)]["explained"]["drop_logp"] for r in rows]
        x_lp = [r["by_k"][str(k)]["random"]["drop_logp"] for r in rows]
        diff_lp = [a - b for a, b in zip(e_lp, x_lp)]
        wins_lp = sum(d > 0 for d in diff_lp)
        losses_lp = sum(d < 0 for d in diff_lp)
        wins = sum(d > 0 for d in diff)
        losses = sum(d < 0 for d in diff)
        ties = len(diff) - wins - losses
        out[str(k)] = {
            "pairs": len(rows),
            "facts_mean": statistics.fmean(r["by_k"][str(k)]["facts"] for r in rows),
            "drop_explained_mean": statistics.fmean(e),
            "drop_random_mean": statistics.fmean(x),
            "drop_explained_median": statistics.median(e),
            "drop_random_median": statistics.median(x),
            "diff_mean": statistics.fmean(diff),
            "diff_ci95": bootstrap_ci(diff, seed),
            "explained_hurts_more": (wins + 0.5 * ties) / len(diff),
            "wins": wins, "losses": losses, "ties": ties,
            "sign_test_p": sign_test(wins, losses),
            "logp": {"drop_explained_mean": statistics.fmean(e_lp),
                     "drop_random_mean": statistics.fmean(x_lp),
                     "diff_mean": statistics.fmean(diff_lp),
                     "diff_ci95": bootstrap_ci(diff_lp, seed),
                     "explained_hurts_more": (wins_lp + 0.5 * (len(diff_lp) - wins_lp
                                                                - losses_lp)) / len(diff_lp),
                     "wins": wins_lp, "losses": losses_lp,
                     "sign_test_p": sign_test(wins_lp, losses_lp)},
            "abs_change_explained_mean": statistics.fmean(abs(v) for v in e),
            "abs_larger": {"share": statistics.fmean(
                (abs(a) > abs(b)) + 0.5 * (abs(a) == abs(b)) for a, b in zip(e, x)),
                "sign_test_p": sign_test(sum(abs(a) > abs(b) for a, b in zip(e, x)),
                                         sum(abs(a) < abs(b) for a, b in zip(e, x)))},
            "abs_change_random_mean": statistics.fmean(abs(v) for v in x),
            "rank_explained_mean": statistics.fmean(
                r["by_k"][str(k)]["explained"]["rank"] for r in rows),
            "rank_random_mean": statistics.fmean(
                r["by_k"][str(k)]["random"]["rank"] for r in rows),
            "left_top1_explained": statistics.fmean(
                r["by_k"][str(k)]["explained"]["rank"] > 1 for r in rows),
            "left_top1_random": statistics.fmean(
                r["by_k"][str(k)]["random"]["rank"] > 1 for r in rows),
        }
    return out


def _rows(df: Any) -> list[dict[str, Any]]:
    return [{"rank": int(r["rank"]), "score": float(r["score"]), "length": int(r["length"]),
             "path": r["path"], "alphas": [float(a) for a in r["alphas"]],
             "relations": list(r["relations"])} for _, r in df.iterrows()]


def example(model: Any, split: Any, data: Any, user_index: int, png: Path | None
            ) -> dict[str, Any]:
    """The worked example: one user's top item and its paths (and the figure)."""
    from kgseqgraph.models.explain import explain, plot_explanation

    history = split.test_inputs[user_index].tolist()
    df = explain(model, history, data=data, k=8)
    knowledge = explain(model, history, df.attrs["item"], data=data, k=5,
                        through=("entity", "item"))
    if png is not None and len(df):
        png.parent.mkdir(parents=True, exist_ok=True)
        plot_explanation(df, png)
    ids = data["item"].raw_id
    titles = data["item"].title if "title" in data["item"] else None
    return {
        "user_raw_id": data["user"].raw_id[int(split.test_inputs.users[user_index])],
        "history": [{"raw_id": ids[i], "title": titles[i] if titles else None}
                    for i in history[-10:]],
        "history_length": len(history),
        "item": {"raw_id": df.attrs["item_raw_id"], "title": df.attrs["item_name"],
                 "score": df.attrs["item_score"], "rank": df.attrs["item_rank"]},
        "paths": _rows(df),
        "paths_knowledge": _rows(knowledge),
        "figure": None if png is None else os.path.relpath(png, REPO),
    }


def main(argv: list[str] | None = None) -> Path:
    raw = list(sys.argv[1:] if argv is None else argv)
    full_argv = [os.path.relpath(Path(__file__).resolve(), Path.cwd()), *raw]
    A.code_state()  # the code this process runs, before the tree can move on
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="ml-100k", choices=sorted(BUDGETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pairs", type=int, default=250)
    ap.add_argument("--root", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out-dir", default=str(RESULTS_DIR))
    ap.add_argument("--model-cache", default=str(Path(os.environ.get(
        "KGSEQGRAPH_CACHE", Path.home() / ".cache" / "kgseqgraph")) / "explain"),
        help="where the trained model is kept (a folder per dataset and seed)")
    ap.add_argument("--example-user", type=int, default=None,
                    help="test-user row of the worked example (default: the first sampled pair "
                         "whose top path has length >= 2); ML-100K only")
    ap.add_argument("--figure", default=str(REPO / "docs" / "explain_ml100k.png"))
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(raw)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    path = Path(args.out_dir) / args.dataset / f"{MODEL}_seed{args.seed}.json"
    if path.exists() and not args.overwrite:
        raise SystemExit(f"{path} exists; pass --overwrite to replace it")
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    import torch

    torch.set_num_threads(args.threads)
    from kgseqgraph.data import leave_one_out
    from kgseqgraph.utils import versions

    data = A.load_graph(args.dataset, args.root)
    split = leave_one_out(data)
    cache = Path(args.model_cache) / f"{args.dataset}-{MODEL}-seed{args.seed}"
    model, training = trained_model(args.dataset, args.seed, data, split, cache, args.threads)
    t_test = time.process_time()
    rows, skipped = deletion_test(model, split.train_graph, split, args.pairs, args.seed,
                                  split.train_graph)
    test_cpu = time.process_time() - t_test
    worked = None
    if args.dataset == "ml-100k":
        user = args.example_user
        if user is None:
            by_user = {int(u): i for i, u in enumerate(split.test_inputs.users.tolist())}
            user = by_user[rows[0]["user"]]
        worked = example(model, split, split.train_graph, user, Path(args.figure))
    out = {
        "schema": SCHEMA, "dataset": args.dataset, "model": MODEL,
        "label": C.MODEL_LABELS.get(MODEL, MODEL), "seed": args.seed,
        "config": {**training["config"],
                   "deletion": {"pairs": args.pairs, "paths": PATHS, "ks": list(KS),
                                "fact": "a triple, its rev_ reverse and parallel copies",
                                "explained": "distinct facts on the top paths, path-rank "
                                             "order, each path from the item end",
                                "random": "uniform over facts with an endpoint on the item or "
                                          "on a top path, explained facts excluded",
                                "score": "the model's logit for the item (history excluded "
                                         "from ranks)"}},
        "training": {k: v for k, v in training.items() if k != "config"},
        "metrics": summarise(rows, args.seed),
        "skipped": skipped,
        "pairs": rows,
        "example": worked,
        "test_cpu_seconds": round(test_cpu, 3),
        "cpu_seconds": round(time.process_time() - t_cpu, 3),
        "wall_seconds": round(time.perf_counter() - t_wall, 3),
        **A.code_state(),
        "command": "python " + shlex.join(full_argv),
        "versions": versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "threads": args.threads,
    }
    A.write_result(out, path)
    m = out["metrics"]
    log.info("wrote %s: k=5 explained drop %.4f vs random %.4f (hurts more in %.0f %%)", path,
             m["5"]["drop_explained_mean"], m["5"]["drop_random_mean"],
             100 * m["5"]["explained_hurts_more"])
    return path


if __name__ == "__main__":
    main()
