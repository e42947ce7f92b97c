"""Rewrite the accuracy tables of docs/results.md and README.md from the committed result JSONs.

    python benchmarks/make_tables.py            # rewrite the generated blocks (+ the PNG)
    python benchmarks/make_tables.py --check    # exit 1 and print a diff if the docs are stale

Reads ``benchmarks/results/accuracy/<dataset>/*.json`` (``benchmarks/accuracy.py``'s output;
the ``tuning/`` folder only for the tuning table) and replaces the text between

    <!-- generated:KEY begin -->
    <!-- generated:KEY end -->

markers. Keys: ``accuracy:<dataset>`` (full-ranking table), ``sampled`` (sampled-100 tables),
``buckets`` (test NDCG@10 by target popularity, and ``docs/popularity_buckets.png``),
``ablation:<dataset>`` (the dataset's ablation model and its variants), ``tuning`` (grid points ×
validation NDCG@10), ``summary`` (README), ``text:<model>[:<dataset>]`` (KP4SR/LANCER records
of ``benchmarks/results/text/<dataset>``), ``kge``, ``recbole``, and from the other committed
results ``coldstart:<dataset>`` (``benchmarks/results/coldstart/``: cold-item ranking against
chance), ``faithfulness`` and ``explain-example:<dataset>`` (``benchmarks/results/explain/``: the
deletion test of attention paths and the worked example). A block without data says "no
committed runs yet".
Means ± sample standard deviations (n − 1) over seeds; 4 decimals. The output depends only on the
JSON files (sorted), so ``--check`` is exact; the PNG is only checked for existence.
"""
from __future__ import annotations

import argparse
import difflib
import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import accuracy as A  # noqa: E402
import accuracy_config as C  # noqa: E402

BLOCK_RE = re.compile(r"(<!-- generated:(?P<key>[\w:.-]+) begin -->\n)(?P<body>.*?)"
                      r"(<!-- generated:(?P=key) end -->)", re.S)
NONE_YET = "No committed runs yet."
GENERATOR = "python benchmarks/make_tables.py"
MAIN_METRICS = [("test", "HR@5"), ("test", "HR@10"), ("test", "NDCG@5"), ("test", "NDCG@10"),
                ("test", "MRR")]
SAMPLED = "sampled-100"
#: the other results' folders (``main`` may point them elsewhere)
RESULT_DIRS = {"coldstart": REPO / "benchmarks" / "results" / "coldstart",
               "explain": REPO / "benchmarks" / "results" / "explain",
               "text": REPO / "benchmarks" / "results" / "text"}


# --------------------------------------------------------------------------------- data
def load_results(results_dir: Path) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """``{dataset: {name: [run, …] sorted by seed}}`` of the final runs (not the tuning ones)."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    if not results_dir.is_dir():
        return {}
    for path in sorted(results_dir.glob("*/*.json")):
        run = json.loads(path.read_text())
        run["_file"] = str(path.relative_to(results_dir))
        out[run["dataset"]][run["name"]].append(run)
    return {d: {n: sorted(rs, key=lambda r: r["seed"]) for n, rs in names.items()}
            for d, names in out.items()}


def load_tuning(results_dir: Path) -> dict[str, dict[str, dict[str, float]]]:
    """``{dataset: {model: {point_id: valid NDCG@10}}}``."""
    out: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    metric = C.PROTOCOL_TRAIN["valid_metric"]
    for path in sorted(results_dir.glob("*/tuning/*__*_seed0.json")) if results_dir.is_dir() \
            else []:
        run = json.loads(path.read_text())
        out[run["dataset"]].setdefault(run["model"], {})[run["grid"]["point_id"]] = \
            float(run["valid"][metric])
    return dict(out)


def _values(runs: list[dict[str, Any]], stage: str, key: str) -> list[float]:
    return [float(r[stage][key]) for r in runs if r[stage].get(key) is not None]


def fmt_mean_sd(values: list[float], digits: int = 4) -> str:
    """``"m ± sd"`` (sample sd, n − 1) over ``values``; one value alone; ``–`` for none."""
    if not values:
        return "–"
    m = statistics.fmean(values)
    if len(values) == 1:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _seeds(runs: list[dict[str, Any]]) -> str:
    return ",".join(str(r["seed"]) for r in runs)


def _best_epochs(runs: list[dict[str, Any]]) -> str:
    if all(r["model"] in C.UNTRAINED for r in runs):
        return "–"
    budgets = {r["budget"]["epochs"] for r in runs}
    epochs = ", ".join(str(r["best_epoch"]) for r in runs)
    if len(budgets) == 1:
        return f"{epochs} / {budgets.pop()}"
    return ", ".join(f"{r['best_epoch']}/{r['budget']['epochs']}" for r in runs)


def _late_rise(run: dict[str, Any]) -> tuple[int, float] | None:
    """``(cut, rise)``: how much the run's best validation score exceeds its score at the last
    evaluated epoch ``cut`` at or before ``CONVERGED_FRACTION`` of the budget (relative; the
    gain the run still made in the last fifth). ``None`` without such an epoch."""
    key = f"valid_{run.get('config', {}).get('train', {}).get('valid_metric', 'NDCG@10')}"
    scores = {h["epoch"]: h[key] for h in run.get("history") or [] if h.get(key) is not None}
    limit = C.CONVERGED_FRACTION * run["budget"]["epochs"]
    before = [e for e in scores if e <= limit]
    if not before:
        return None
    cut = max(before)
    if scores[cut] <= 0:
        return None
    return cut, max(scores.values()) / scores[cut] - 1


def _converged(runs: list[dict[str, Any]]) -> str:
    """``yes``, or the seeds that peaked in the last fifth of the budget with the mean relative
    rise of their validation score after the cut (how far from a plateau they stopped)."""
    if all(r.get("converged") is None for r in runs):
        return "–"
    bad = [r for r in runs if r.get("converged") is False]
    if not bad:
        return "yes"
    out = f"no: seed{'s' if len(bad) > 1 else ''} " + ", ".join(str(r["seed"]) for r in bad)
    rises = [x for x in map(_late_rise, bad) if x is not None]
    if rises:
        cuts = sorted({c for c, _ in rises})
        mean = statistics.fmean(r for _, r in rises)
        out += f" (valid {mean * 100:+.1f} % after epoch {'/'.join(map(str, cuts))})"
    return out


def _on_gpu(run: dict[str, Any]) -> bool:
    return str(run.get("device", "cpu")).startswith("cuda")


def _cpu_minutes(runs: list[dict[str, Any]]) -> str:
    """Mean CPU minutes of the runs on the CPU; runs on a GPU are listed with their wall
    minutes and the GPU's name (a GPU run's CPU time measures nothing comparable)."""
    cpu = [r for r in runs if not _on_gpu(r)]
    parts = [f"{statistics.fmean(r['cpu_seconds'] for r in cpu) / 60:.1f}"] if cpu else []
    gpu = [r for r in runs if _on_gpu(r)]
    if gpu:
        names = sorted({(r.get("machine") or {}).get("gpu") or "a GPU" for r in gpu})
        seeds = ", ".join(str(r["seed"]) for r in gpu)
        parts.append(f"seed{'s' if len(gpu) > 1 else ''} {seeds} on {' / '.join(names)}: "
                     f"{statistics.fmean(r['wall_seconds'] for r in gpu) / 60:.1f} wall")
    return "; ".join(parts)


def _named_point(run: dict[str, Any]) -> bool:
    """A run of the base configuration at a grid point named on the command line (``--point``
    with a ``--variant`` naming it) instead of the point tuning chose on its dataset."""
    grid = run.get("grid") or {}
    return (run.get("variant") is not None and not grid.get("variant_options")
            and not grid.get("set") and not grid.get("train_set")
            and (grid.get("selection") or {}).get("by") == A.NAMED_POINT)


def _point(runs: list[dict[str, Any]]) -> str:
    ids = sorted({r["grid"]["point_id"] for r in runs})
    text = ", ".join(f"`{i}`" for i in ids)
    return text + " (named, not tuned here)" if any(_named_point(r) for r in runs) else text


def _label(name: str) -> str:
    if name in C.MODELS:
        return C.MODEL_LABELS.get(name, name)
    for base in sorted(C.MODELS, key=len, reverse=True):  # kg-sasrec-x: base kg-sasrec
        if name.startswith(base + "-"):
            return f"{C.MODEL_LABELS.get(base, base)} ({name[len(base) + 1:]})"
    return name


def _main_rows(names: dict[str, list[dict[str, Any]]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The main table's rows: every base model, and a base configuration run at a named grid
    point (``_named_point``) where its model has no tuned runs on the dataset."""
    rows = [(n, rs) for n, rs in names.items() if rs[0].get("variant") is None
            or (_named_point(rs[0]) and rs[0]["model"] not in names)]
    return sorted(rows, key=lambda x: (C.model_order(x[1][0]["model"]), x[0]))


def _provenance(runs: list[dict[str, Any]]) -> str:
    commits = sorted({(r.get("git_commit") or "unknown")[:9] for r in runs})
    dirty = sum(1 for r in runs if r.get("dirty"))
    text = f"Code at commit{'s' if len(commits) > 1 else ''} {', '.join(commits)}"
    if dirty:
        text += f"; {dirty} run{'s' if dirty > 1 else ''} from a modified working tree"
    return text + "."


def _stamp(what: str) -> str:
    return f"_Generated by `{GENERATOR}` from {what}; do not edit by hand._\n\n"


def _table(header: list[str], rows: list[list[str]], align: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------- blocks
def accuracy_block(dataset: str, results: dict[str, Any]) -> str:
    rows_in = _main_rows(results.get(dataset, {}))
    src = f"`benchmarks/results/accuracy/{dataset}/*.json`"
    if not rows_in:
        return _stamp(src) + NONE_YET + "\n"
    header = ["model", "seeds", "grid point", "valid NDCG@10", "test HR@5", "test HR@10",
              "test NDCG@5", "test NDCG@10", "test MRR", "best epoch / budget", "converged",
              "CPU min / run"]
    rows = []
    for name, runs in rows_in:
        rows.append([_label(name), _seeds(runs), _point(runs),
                     fmt_mean_sd(_values(runs, "valid", "NDCG@10")),
                     *[fmt_mean_sd(_values(runs, s, k)) for s, k in MAIN_METRICS],
                     _best_epochs(runs), _converged(runs), _cpu_minutes(runs)])
    all_runs = [r for _, rs in rows_in for r in rs]
    return (_stamp(src) + _table(header, rows, ["l", "l", "l"] + ["r"] * 6 + ["l", "l", "r"])
            + "\n" + _provenance(all_runs) + "\n")


def sampled_block(results: dict[str, Any]) -> str:
    out = [_stamp("`benchmarks/results/accuracy/*/*.json`"),
           f"**Sampled metrics, labelled `{SAMPLED}/…`: the test target ranked against 100 "
           "uniformly drawn items the user never interacted with — not this project's protocol "
           "(full ranking, above); for comparison with papers that sample only.**\n"]
    any_rows = False
    for dataset in C.TABLE_DATASETS:
        rows_in = _main_rows(results.get(dataset, {}))
        if not rows_in:
            continue
        any_rows = True
        rows = [[_label(n), _seeds(rs),
                 *[fmt_mean_sd(_values(rs, "test", f"{SAMPLED}/{k}"))
                   for k in ("HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR")]]
                for n, rs in rows_in]
        out.append(f"\n{dataset}:\n\n")
        out.append(_table(["model", "seeds"] + [f"test {SAMPLED}/{k}" for k in
                                                ("HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR")],
                          rows, ["l", "l"] + ["r"] * 5))
    if not any_rows:
        out.append("\n" + NONE_YET + "\n")
    return "".join(out)


def _bucket_runs(dataset: str, results: dict[str, Any]) -> list[tuple[str, list[dict]]]:
    return [(n, rs) for n, rs in _main_rows(results.get(dataset, {}))
            if all(r.get("popularity_buckets") for r in rs)]


def buckets_block(results: dict[str, Any], png_name: str | None) -> str:
    out = [_stamp("the `popularity_buckets` of `benchmarks/results/accuracy/*/*.json`"),
           "Test NDCG@10 by quintile of the test target's training frequency (Q1: the least "
           "popular targets); bucket edges are quantiles over the test users, so each bucket "
           "holds about a fifth of them (counts of training interactions in the header).\n"]
    any_rows = False
    for dataset in C.TABLE_DATASETS:
        rows_in = _bucket_runs(dataset, results)
        if not rows_in:
            continue
        any_rows = True
        first = rows_in[0][1][0]["popularity_buckets"]["buckets"]
        header = ["model", "seeds"] + [
            f"Q{b['bucket']} ({b['count_range'][0]}–{b['count_range'][1]})"
            if b["count_range"] else f"Q{b['bucket']} (empty)" for b in first]
        rows = [["users", "–"] + [str(b["users"]) for b in first]]
        for name, runs in rows_in:
            cells = []
            for i in range(len(first)):
                vals = [r["popularity_buckets"]["buckets"][i]["NDCG@10"] for r in runs]
                cells.append(fmt_mean_sd([v for v in vals if v is not None]))
            rows.append([_label(name), _seeds(runs)] + cells)
        out.append(f"\n{dataset}:\n\n")
        out.append(_table(header, rows, ["l", "l"] + ["r"] * len(first)))
    if not any_rows:
        out.append("\n" + NONE_YET + "\n")
    elif png_name:
        out.append(f"\n![Test NDCG@10 by target popularity quintile]({png_name})\n")
    return "".join(out)


def ablation_block(dataset: str, results: dict[str, Any]) -> str:
    base = C.ABLATIONS.get(dataset)
    src = f"`benchmarks/results/accuracy/{dataset}/{base}*.json`"
    if base is None:
        return _stamp(src) + f"No ablation is configured for {dataset}.\n"
    names = results.get(dataset, {})
    wanted = [base] + [f"{base}-{v}" for v in C.ablation_variants(base)]
    rows_in = [(n, names[n]) for n in wanted if n in names]
    if not rows_in:
        return _stamp(src) + NONE_YET + "\n"
    header = ["variant", "options", "seeds", "valid NDCG@10", "test HR@10", "test NDCG@10",
              "Δ test NDCG@10 vs full (same seeds)", "best epoch / budget", "converged"]
    rows = []
    for name, runs in rows_in:
        variant = runs[0].get("variant")
        delta = "–"
        vals = _values(runs, "test", "NDCG@10")
        paired = _paired(runs, names.get(base, []))
        if variant is not None and paired:
            delta = f"{statistics.fmean(paired):+.4f}"
        rows.append(["full model" if variant is None else variant, _changes(runs[0]),
                     _seeds(runs), fmt_mean_sd(_values(runs, "valid", "NDCG@10")),
                     fmt_mean_sd(_values(runs, "test", "HR@10")), fmt_mean_sd(vals), delta,
                     _best_epochs(runs), _converged(runs)])
    missing = [n for n in wanted if n not in names]
    text = _stamp(src) + f"{C.MODEL_LABELS.get(base, base)} on {dataset}:\n\n"
    text += _table(header, rows, ["l", "l", "l", "r", "r", "r", "r", "l", "l"])
    if missing:
        text += "\nNot run yet: " + ", ".join(f"`{m}`" for m in missing) + ".\n"
    return text + "\n" + _provenance([r for _, rs in rows_in for r in rs]) + "\n"


def _changes(run: dict[str, Any]) -> str:
    """What a variant run changes against its model's tuned configuration."""
    grid = run.get("grid") or {}
    opts = {**(grid.get("variant_options") or {}), **(grid.get("set") or {})}
    opts.update({f"train.{k}": v for k, v in (grid.get("train_set") or {}).items()})
    base = C.DATASETS.get(run["dataset"], {}).get("budget", {})
    opts.update({f"train.{k}": v for k, v in (run.get("budget") or {}).items()
                 if k in ("epochs", "patience") and base.get(k) != v})
    return ", ".join(f"`{k}={json.dumps(v)}`" for k, v in opts.items()) or "–"


def variants_block(dataset: str, results: dict[str, Any]) -> str:
    """Every variant run that is neither an ablation of the paper nor a named-point stand-in,
    against its model's tuned runs of the same seeds (the tries for a missed target)."""
    src = f"`benchmarks/results/accuracy/{dataset}/*-*.json`"
    names = results.get(dataset, {})

    def ablation(run: dict[str, Any]) -> bool:
        return (C.ABLATIONS.get(dataset) == run["model"]
                and run["variant"] in C.ablation_variants(run["model"]))

    rows_in = [(n, rs) for n, rs in names.items() if rs[0].get("variant") is not None
               and not _named_point(rs[0]) and not ablation(rs[0])]
    if not rows_in:
        return _stamp(src) + "No variant runs beyond the ablations yet.\n"
    rows_in.sort(key=lambda x: (C.model_order(x[1][0]["model"]), x[0]))
    header = ["model", "variant", "changes", "seeds", "valid NDCG@10", "test NDCG@10",
              "Δ valid vs tuned (same seeds)", "Δ test vs tuned (same seeds)",
              "best epoch / budget", "converged"]
    rows, marked = [], False
    for name, runs in rows_in:
        model = runs[0]["model"]
        base = _model_runs(results, dataset, model)  # tuned, or its named-point stand-in (†)
        mark = " †" if base and _named_point(base[0]) else ""
        marked = marked or bool(mark)
        deltas = []
        for stage in ("valid", "test"):
            paired = _paired(runs, base, stage)
            deltas.append(f"{statistics.fmean(paired):+.4f}{mark}" if paired else "–")
        rows.append([C.MODEL_LABELS.get(model, model), runs[0]["variant"], _changes(runs[0]),
                     _seeds(runs), fmt_mean_sd(_values(runs, "valid", "NDCG@10")),
                     fmt_mean_sd(_values(runs, "test", "NDCG@10")), *deltas,
                     _best_epochs(runs), _converged(runs)])
    note = ("\n† against the model's run at a named (untuned) grid point, its only row in the "
            "main table.\n" if marked else "")
    return (_stamp(src) + _table(header, rows, ["l", "l", "l", "l", "r", "r", "r", "r", "l", "l"])
            + note + "\n" + _provenance([r for _, rs in rows_in for r in rs]) + "\n")


def tuning_block(results_dir: Path) -> str:
    tuning = load_tuning(results_dir)
    out = [_stamp("`benchmarks/results/accuracy/*/tuning/*.json`"),
           "Validation NDCG@10 of each grid point (seed 0); **bold**: the point chosen for "
           "every seed (best validation, never test).\n"]
    any_rows = False
    for dataset in C.TABLE_DATASETS:
        models = tuning.get(dataset, {})
        if not models:
            continue
        any_rows = True
        order: list[str] = []
        for model in sorted(models, key=C.model_order):
            grid_ids = [pid for pid, _ in A.grid_points(A.grid_of(dataset, model))]
            for pid in grid_ids + sorted(models[model]):
                if pid not in order and (pid in models[model] or pid in grid_ids):
                    order.append(pid)
        rows = []
        for model in sorted(models, key=C.model_order):
            try:
                chosen = A.select_point(results_dir, dataset, model)["point_id"]
            except A.IncompleteTuning:
                chosen = None
            cells = []
            for pid in order:
                v = models[model].get(pid)
                cell = "–" if v is None else f"{v:.4f}"
                cells.append(f"**{cell}**" if pid == chosen else cell)
            rows.append([_label(model)] + cells)
        out.append(f"\n{dataset}:\n\n")
        out.append(_table(["model"] + [f"`{p}`" for p in order], rows, ["l"] + ["r"] * len(order)))
    if not any_rows:
        out.append("\n" + NONE_YET + "\n")
    return "".join(out)


def summary_block(results: dict[str, Any]) -> str:
    datasets = [d for d in C.TABLE_DATASETS if _main_rows(results.get(d, {}))]
    stamp = _stamp("`benchmarks/results/accuracy`")
    if not datasets:
        return stamp + NONE_YET + " Tables: `docs/results.md`.\n"
    # one row a model; a run at a named (untuned) point stands in its model's row, marked
    by_model: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(dict)
    for d in datasets:
        for _, runs in _main_rows(results[d]):
            by_model[runs[0]["model"]][d] = runs
    rows, marked = [], False
    for model in sorted(by_model, key=C.model_order):
        cells = []
        for d in datasets:
            runs = by_model[model].get(d)
            cell = fmt_mean_sd(_values(runs, "test", "NDCG@10")) if runs else "–"
            if runs and _named_point(runs[0]):
                cell, marked = cell + " †", True
            cells.append(cell)
        rows.append([_label(model)] + cells)
    note = ("\n† not tuned on this dataset: a grid point named on the command line (the table "
            "in `docs/results.md` names it).\n" if marked else "")
    return (stamp + "Test NDCG@10 (full ranking, history excluded, pessimistic ties; mean ± sd "
            "over seeds). Every number, its configuration and command: `docs/results.md` and "
            "`benchmarks/results/accuracy/`.\n\n"
            + _table(["model"] + datasets, rows, ["l"] + ["r"] * len(datasets)) + note)


def _model_runs(results: dict[str, Any], dataset: str, model: str) -> list[dict[str, Any]]:
    """The runs of ``model``'s row in the dataset's main table (tuned, or at a named point)."""
    return next((rs for _, rs in _main_rows(results.get(dataset, {}))
                 if rs[0]["model"] == model), [])


def _caveats(runs: list[dict[str, Any]]) -> list[str]:
    """Why ``runs`` are not yet a model's final numbers: seeds of the sweep missing, or a named
    (untuned) grid point."""
    label = C.MODEL_LABELS.get(runs[0]["model"], runs[0]["model"])
    out = []
    seeds = {r["seed"] for r in runs}
    if not set(C.SEEDS) <= seeds:
        out.append(f"{label} has {len(seeds & set(C.SEEDS))} of {len(C.SEEDS)} seeds")
    if any(_named_point(r) for r in runs):
        out.append(f"{label} at a named grid point, not tuned")
    return out


def _best_knowledge(results: dict[str, Any], dataset: str) -> tuple[str | None, list[str]]:
    """The knowledge model with the best mean validation NDCG@10 on ``dataset`` (never chosen
    on test; a tie goes to the name last in alphabetical order), and why that choice may still
    change: knowledge models of the dataset's sweep not run yet, or other candidates whose runs
    are not final (:func:`_caveats`)."""
    have = {m: _model_runs(results, dataset, m) for m in C.KNOWLEDGE_MODELS}
    have = {m: rs for m, rs in have.items() if rs}
    caveats = [f"{C.MODEL_LABELS.get(m, m)} not run" for m in C.SWEEP.get(dataset, [])
               if m in C.KNOWLEDGE_MODELS and m not in have]
    if not have:
        return None, caveats
    best = max(have, key=lambda m: (statistics.fmean(_values(have[m], "valid", "NDCG@10")), m))
    for m, rs in have.items():
        if m != best:
            caveats += [f"candidate {c}" for c in _caveats(rs)]
    return best, caveats


def _paired(runs: list[dict[str, Any]], base: list[dict[str, Any]], stage: str = "test",
            metric: str = "NDCG@10") -> list[float]:
    """``run − base run of the same seed`` for every seed both have."""
    by_seed = {r["seed"]: float(r[stage][metric]) for r in base}
    return [float(r[stage][metric]) - by_seed[r["seed"]] for r in runs if r["seed"] in by_seed]


def target_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One record a target and dataset: the two means, the gain, the seeds on which the model is
    ahead (paired by seed), and whether the cell is final (every seed, tuned, every candidate
    run) or provisional."""
    out = []
    for name, model, reference, gain, _ in C.TARGETS:
        for d in C.TABLE_DATASETS:
            cell: dict[str, Any] = {"target": name, "dataset": d, "model": model,
                                    "reference": reference, "required": gain, "caveats": []}
            if model == "best-knowledge":
                model_d, cell["caveats"] = _best_knowledge(results, d)
            else:
                model_d = model
            mine = _model_runs(results, d, model_d) if model_d else []
            ref = _model_runs(results, d, reference)
            cell["model_run"] = model_d
            if not mine or not ref:
                cell["status"] = "not run"
                out.append(cell)
                continue
            a = statistics.fmean(_values(mine, "test", "NDCG@10"))
            b = statistics.fmean(_values(ref, "test", "NDCG@10"))
            paired = _paired(mine, ref)
            cell.update(mean=a, ref_mean=b, gain=a / b - 1 if b > 0 else None,
                        ahead=sum(x > 0 for x in paired), paired=len(paired),
                        status="met" if a >= b * (1 + gain) else "missed")
            cell["caveats"] = _caveats(mine) + _caveats(ref) + cell["caveats"]
            out.append(cell)
    return out


def targets_block(results: dict[str, Any]) -> str:
    """Each accuracy target of :data:`accuracy_config.TARGETS`: a row a dataset, and a verdict."""
    cells = target_rows(results)
    header = ["dataset", "model", "model's test NDCG@10", "reference",
              "reference's test NDCG@10", "gain", "seeds ahead", "status"]
    text = _stamp("`benchmarks/results/accuracy`") + (
        "Test NDCG@10, mean over seeds (full ranking, history excluded, pessimistic ties). "
        "*Gain* is relative: the model's mean / the reference's mean − 1 (+3 % means ≥ 1.03 × "
        "the reference). *Seeds ahead*: seeds on which the model's run beats the reference's "
        "run of the same seed. The best knowledge model ("
        + ", ".join(C.MODEL_LABELS[m] for m in C.KNOWLEDGE_MODELS)
        + ") is the one with the best mean validation NDCG@10 (never chosen by test). A cell is "
        "*provisional* while a side, or another candidate knowledge model, lacks seeds of the "
        "sweep or ran at a named (untuned) grid point, or a candidate has not run yet. The "
        "cells read each model's tuned runs only, never its variant runs (the tries).\n")
    for name, _, _, gain, needed in C.TARGETS:
        mine = [c for c in cells if c["target"] == name]
        rows = []
        for c in mine:
            label = C.MODEL_LABELS.get(c["model_run"], c["model_run"] or "–")
            ref = C.MODEL_LABELS.get(c["reference"], c["reference"])
            caveats = f" ({'; '.join(c['caveats'])})" if c["caveats"] else ""
            if c["status"] == "not run":
                rows.append([c["dataset"], label, "–", ref, "–", "–", "–", "not run" + caveats])
                continue
            status = c["status"] + (", provisional" + caveats if caveats else "")
            gain_text = "–" if c["gain"] is None else f"{100 * c['gain']:+.1f} %"
            rows.append([c["dataset"], label, f"{c['mean']:.4f}", ref, f"{c['ref_mean']:.4f}",
                         gain_text, f"{c['ahead']} of {c['paired']}", status])
        needed = len(mine) if needed is None else needed
        final_met = sum(c["status"] == "met" and not c["caveats"] for c in mine)
        final_missed = sum(c["status"] == "missed" and not c["caveats"] for c in mine)
        if final_met >= needed:
            verdict = "met"
        elif final_missed > len(mine) - needed:
            verdict = "missed"
        else:
            verdict = "open"
        text += (f"\n**{name}** (relative gain ≥ {100 * gain:g} % on {needed} of {len(mine)} "
                 f"datasets): "
                 f"**{verdict}** — met on {final_met}, missed on {final_missed} with final "
                 f"numbers; {len(mine) - final_met - final_missed} not run or provisional.\n\n"
                 + _table(header, rows, ["l", "l", "r", "l", "r", "r", "r", "l"]))
    return text


KGE_DIR = REPO / "benchmarks" / "results" / "kge"
RECBOLE_JSON = REPO / "benchmarks" / "peers" / "recbole" / "results.json"


def recbole_block(path: Path = RECBOLE_JSON) -> str:
    """Every seeded setting of the RecBole comparison (``benchmarks/peers/recbole/compare.py``'s
    ``results.json``): mean ± sd over seeds and the CPU time to RecBole's quality bars."""
    stamp = _stamp("`benchmarks/peers/recbole/results.json` (written by `compare.py` from the "
                   "runs in `benchmarks/peers/recbole/results/`)")
    if not path.is_file():
        return stamp + NONE_YET + "\n"
    res = json.loads(path.read_text())
    header = ["model", "setting", "seeds", "best valid NDCG@10", "test NDCG@10", "test HR@10",
              "CPU s to RecBole's mean best (speed-up)", "CPU s to every-seed level (speed-up)",
              "full eval 943 users, RecBole / ours"]
    rows = []

    def ms(v: list[float] | None) -> str:
        return "–" if not v else f"{v[0]:.4f} ± {v[1]:.4f}"

    def bar(b: dict[str, Any]) -> str:
        if not b or b.get("mean_cpu_seconds") is None:
            return "not reached"
        runs = f"{b['reached']}/{len(b['cpu_seconds'])} seeds"
        speed = b.get("speedup_vs_recbole")
        return (f"{b['mean_cpu_seconds']:.0f} ({runs}"
                + (f", **{speed:.1f}×**" if speed else "") + ")")

    for model, m in res["models"].items():
        eval_ratio = m["ratios"].get("eval_throughput_ratio")
        for name, st in m["seeds"]["settings"].items():
            who = "RecBole 1.2.1" if name.startswith("recbole") else "kgseqgraph " + (
                name.split("_", 2)[2] if name.count("_") >= 2 else "default batch 256")
            rows.append([model, who, str(st["runs"]), ms(st["best_valid_NDCG@10"]),
                         ms(st["test_NDCG@10"]), ms(st["test_HR@10"]),
                         bar(st["to_bar"]["mean"]), bar(st["to_bar"]["every_seed"]),
                         f"{eval_ratio:.1f}×" if eval_ratio and name.startswith("recbole")
                         else ""])
    bars = "; ".join(f"{model}: mean best {m['seeds']['bars']['mean']:.4f}, every-seed level "
                     f"{m['seeds']['bars']['every_seed']:.4f}" for model, m in res["models"].items())
    return (stamp + _table(header, rows, ["l", "l", "r", "r", "r", "r", "r", "r", "r"])
            + f"\nRecBole's validation bars (valid NDCG@10): {bars}.\n")


def kge_block(kge_dir: Path = KGE_DIR) -> str:
    """Filtered link prediction of the KGE runs (``benchmarks/transr_ml100k.py`` JSON)."""
    files = sorted(kge_dir.glob("*.json")) if kge_dir.is_dir() else []
    stamp = _stamp("`benchmarks/results/kge/*.json`")
    if not files:
        return stamp + NONE_YET + "\n"
    runs = [json.loads(f.read_text()) for f in files]
    header = ["model", "command", "selected epoch", "valid MRR", "test MRR", "Hits@1", "Hits@3",
              "Hits@10", "mean rank", "train s", "total s"]
    rows = []
    rnd = runs[0]["random_test"]
    rows.append(["random scorer (exact expectation)", "–", "–", "–", f"{rnd['mrr']:.5f}",
                 f"{rnd['hits@1']:.5f}", f"{rnd['hits@3']:.5f}", f"{rnd['hits@10']:.5f}",
                 f"{rnd['mean_rank']:,.0f}", "–", "–"])
    for r in runs:
        name = r["model"].split("(")[0]
        t = r["test"]
        command = re.sub(r"--data \S*/ml-100k", "--data $KGSEQGRAPH_DATA/ml-100k",
                         r["command"].split(" --out")[0])
        rows.append([f"**{name}**", f"`{command}`",
                     str(r["extra"]["selected_epoch"]), f"{r['valid']['mrr']:.4f}",
                     f"**{t['mrr']:.4f}**", f"{t['hits@1']:.4f}", f"{t['hits@3']:.4f}",
                     f"{t['hits@10']:.4f}", f"{t['mean_rank']:,.0f}", f"{r['train_seconds']:.0f}",
                     f"{r['total_seconds']:.0f}"])
    ratio = "; ".join(f"{r['model'].split('(')[0]} test MRR = {r['mrr_over_random']:.0f}× the "
                      f"random scorer's" for r in runs)
    trained = "; ".join(
        f"{r['model'].split('(')[0]} on test triples whose nodes all have a training triple "
        f"({1 - r['extra']['test_with_untrained_node']:.0%} of them): MRR "
        f"{r['extra']['test_trained_nodes_only']['mrr']:.4f}, Hits@10 "
        f"{r['extra']['test_trained_nodes_only']['hits@10']:.4f}" for r in runs)
    return (stamp + _table(header, rows, ["l", "l", "r", "r", "r", "r", "r", "r", "r", "r", "r"])
            + f"\n{ratio}. {trained}.\n")


# --------------------------------------------------------------------------------- text models
# the records each text-model section of docs/results.md plans, in table order
TEXT_PLAN = {
    "kp4sr": [("kp4sr", "KP4SR (random-init T5)"),
              ("kp4sr-notree", "KP4SR without the tree mask (ablation)"),
              ("kp4sr-noprompts", "KP4SR without knowledge prompts (ablation)"),
              ("kp4sr-classifier", "KP4SR, item-token classifier (labelled option)")],
    "lancer": [("lancer", "LANCER (random-init GPT-2)"),
               ("lancer-noprompts", "LANCER without both prompts (ablation)"),
               ("lancer-kg", "LANCER+KG (option)"),
               ("lancer-cosine", "LANCER, cosine head (labelled option)"),
               ("lancer-smollm2", "LANCER on SmolLM2-135M (benchmarks/lancer_gpu.sh, a GPU)"),
               ("lancer-smollm2-users100", "LANCER on SmolLM2-135M, 100-user subset"),
               ("lancer-users100", "LANCER (random-init GPT-2), 100-user subset"),
               ("sasrec-users100", "SASRec, 100-user subset"),
               ("pop-users100", "Popularity, 100-user subset")],
}


def text_block(model: str, dataset: str, results: dict[str, Any],
               text_runs: dict[str, Any]) -> str:
    """The planned records of one text model (``TEXT_PLAN``) with the accuracy benchmark's
    SASRec and popularity rows (all users) for reference; planned records without a file are
    listed as not run. ``text_runs``: :func:`load_runs` of ``benchmarks/results/text``."""
    runs = text_runs.get(dataset, {})
    header = ["record", "users", "seeds", "test HR@5", "test HR@10", "test NDCG@5",
              "test NDCG@10", "test MRR", "valid NDCG@10", "best / run epochs", "CPU min / run"]
    rows, used, missing = [], [], []
    for name, label in TEXT_PLAN[model]:
        rs = runs.get(name)
        if not rs:
            missing.append(f"`{name}`")
            continue
        used += rs
        users = rs[0]["config"].get("users") or "all"
        rows.append([label, str(users), _seeds(rs),
                     *[fmt_mean_sd(_values(rs, s, k)) for s, k in MAIN_METRICS],
                     fmt_mean_sd(_values(rs, "valid", "NDCG@10")),
                     ", ".join(f"{r['best_epoch']}/{r['epochs_run']}" for r in rs),
                     _cpu_minutes(rs)])
    for name in ("sasrec", "pop"):
        rs = results.get(dataset, {}).get(name)
        if rs:
            used += rs
            rows.append([f"{_label(name)} (accuracy benchmark)", "all", _seeds(rs),
                         *[fmt_mean_sd(_values(rs, s, k)) for s, k in MAIN_METRICS],
                         fmt_mean_sd(_values(rs, "valid", "NDCG@10")), _best_epochs(rs),
                         _cpu_minutes(rs)])
    src = f"`benchmarks/results/text/{dataset}/{model}*.json` and the accuracy records"
    if not rows:
        return _stamp(src) + NONE_YET + "\n"
    text = _stamp(src) + _table(header, rows, ["l", "l", "l"] + ["r"] * 8)
    if missing:
        text += "\nNot run yet: " + ", ".join(missing) + ".\n"
    return text + "\n" + _provenance(used) + "\n"


def render_block(key: str, results: dict[str, Any], results_dir: Path,
                 png_name: str | None) -> str:
    kind, _, arg = key.partition(":")
    if key == "kge":
        return kge_block()
    if key == "recbole":
        return recbole_block()
    if kind == "text" and arg:
        model, _, dataset = arg.partition(":")
        return text_block(model, dataset or "ml-100k", results, load_runs(RESULT_DIRS["text"]))
    if kind == "accuracy" and arg:
        return accuracy_block(arg, results)
    if kind == "ablation" and arg:
        return ablation_block(arg, results)
    if kind == "variants" and arg:
        return variants_block(arg, results)
    if key == "sampled":
        return sampled_block(results)
    if key == "buckets":
        return buckets_block(results, png_name)
    if key == "tuning":
        return tuning_block(results_dir)
    if key == "summary":
        return summary_block(results)
    if key == "targets":
        return targets_block(results)
    if kind == "coldstart" and arg:
        return coldstart_block(arg, load_runs(RESULT_DIRS["coldstart"]))
    if key == "faithfulness":
        return faithfulness_block(load_runs(RESULT_DIRS["explain"]))
    if kind == "explain-example" and arg:
        return example_block(arg, load_runs(RESULT_DIRS["explain"]))
    raise ValueError(f"unknown generated block {key!r} (known: accuracy:<dataset>, "
                     "ablation:<dataset>, variants:<dataset>, text:<model>[:<dataset>], "
                     "sampled, buckets, tuning, summary, targets, kge, recbole, "
                     "coldstart:<dataset>, faithfulness, explain-example:<dataset>)")


def render_doc(text: str, results: dict[str, Any], results_dir: Path,
               png_name: str | None = None) -> str:
    """``text`` with every generated block rewritten."""
    def sub(m: re.Match) -> str:
        return m.group(1) + render_block(m.group("key"), results, results_dir, png_name) \
            + m.group(4)
    return BLOCK_RE.sub(sub, text)


# --------------------------------------------------------------------------------- cold start
def load_runs(directory: Path) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """``{dataset: {model: [run, …] sorted by seed}}`` of ``directory/<dataset>/*.json``."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    if not directory.is_dir():
        return {}
    for path in sorted(directory.glob("*/*.json")):
        run = json.loads(path.read_text())
        run["_file"] = str(path.relative_to(directory))
        out[run["dataset"]][run["model"]].append(run)
    return {d: {n: sorted(rs, key=lambda r: r["seed"]) for n, rs in names.items()}
            for d, names in out.items()}


COLD_MODELS = ("pop", "sasrec", "katrec", "kg-sasrec", "kirec")


def coldstart_block(dataset: str, runs: dict[str, Any]) -> str:
    src = f"`benchmarks/results/coldstart/{dataset}/*.json`"
    models = runs.get(dataset, {})
    if not models:
        return _stamp(src) + NONE_YET + "\n"
    names = sorted(models, key=lambda n: (COLD_MODELS.index(n) if n in COLD_MODELS else 99, n))
    first = models[names[0]][0]
    split = first["split"]
    header = ["model", "seeds", "cold only: HR@10", "NDCG@10", "MRR", "catalogue: HR@10",
              "NDCG@10", "MRR", "median rank (catalogue)", "warm test NDCG@10",
              "CPU min / run"]
    rows = []
    for name in names:
        rs = models[name]
        label = _label(name)
        if (rs[0].get("draws") or {}).get("count", 1) > 1:
            label += f" (mean of {rs[0]['draws']['count']} draws of the new rows)"
        variants = [None] + sorted({v for r in rs for v in (r.get("variants") or {})})
        for variant in variants:
            got = [r if variant is None else (r.get("variants") or {}).get(variant)
                   for r in rs]
            got = [g for g in got if g is not None]
            vals = lambda part, k: [g["metrics"][part][k] for g in got]  # noqa: E731
            rows.append([label if variant is None else f"{_label(name)}, add_items {variant}",
                         _seeds(rs),
                         *[fmt_mean_sd(vals("cold_only", k)) for k in ("HR@10", "NDCG@10",
                                                                        "MRR")],
                         *[fmt_mean_sd(vals("cold_full", k)) for k in ("HR@10", "NDCG@10",
                                                                        "MRR")],
                         fmt_mean_sd([g["median_rank"]["cold_full"] for g in got], 0),
                         fmt_mean_sd([r["warm"]["test"]["NDCG@10"] for r in rs])
                         if variant is None else "(same models)",
                         _cpu_minutes(rs) if variant is None else "–"])
    chance = first["chance"]
    rows.append(["random scorer (exact expectation)", "–",
                 *[f"{chance['cold_only'][k]:.4f}" for k in ("HR@10", "NDCG@10", "MRR")],
                 *[f"{chance['cold_full'][k]:.4f}" for k in ("HR@10", "NDCG@10", "MRR")],
                 f"≈ {(split['items'] + 1) / 2:.0f}", "–", "–"])
    text = (_stamp(src)
            + f"{dataset}: {split['cold_items']} of {split['items']} items held out "
            f"(`cold_item_split(data, {first['config']['split']['fraction']}, seed="
            f"{first['config']['split']['seed']})`, {split['cold_items_with_kg_facts']} of them "
            f"with KG facts), {split['cold_interactions_removed']:,} interactions removed; "
            f"{split['cold_test_users']} test users, each ranking their first cold item after "
            f"{split['cold_test_history_mean']:.1f} warm items on average; "
            f"{split['cold_targets_distinct']} distinct cold targets, the 3 most frequent "
            f"{100 * split['cold_targets_top3_share']:.0f} % of them. Mean ± sd over seeds; "
            "history excluded, pessimistic ties; \"cold only\": the target among the "
            f"{split['cold_items']} cold items, \"catalogue\": among all {split['items']}.\n\n")
    text += _table(header, rows, ["l", "l"] + ["r"] * 9)
    ci = []
    for name in names:
        rs = models[name]
        lo = statistics.fmean(r["ci95"]["cold_only"]["NDCG@10"][0] for r in rs)
        hi = statistics.fmean(r["ci95"]["cold_only"]["NDCG@10"][1] for r in rs)
        ci.append(f"{_label(name)} [{lo:.4f}, {hi:.4f}]")
    text += ("\nCold-only NDCG@10, bootstrap 95 % interval over users (mean of the seeds' "
             "bounds; it does not cover the few cold items that take most targets): "
             + "; ".join(ci) + f" — chance {chance['cold_only']['NDCG@10']:.4f}.\n")
    trained = sorted({(json.dumps(r["config"]["point"], sort_keys=True),
                       json.dumps(r["config"]["budget"], sort_keys=True))
                      for rs in models.values() for r in rs if r["config"].get("budget")})
    for point, budget in trained:
        p, b = json.loads(point), json.loads(budget)
        text += (f"\nTrained models: the accuracy benchmark's options at lr {p['lr']:g}, dropout "
                 f"{p['dropout']:g} (not tuned for this split), at most {b['epochs']} epochs, "
                 f"patience {b['patience']} on warm validation NDCG@10.\n")
    return text + "\n" + _provenance([r for rs in models.values() for r in rs]) + "\n"


# --------------------------------------------------------------------------------- explanations
def faithfulness_block(runs: dict[str, Any], datasets: tuple[str, ...] = C.TABLE_DATASETS
                       ) -> str:
    src = "`benchmarks/results/explain/*/*.json`"
    out = [_stamp(src)]
    any_rows = False
    for dataset in datasets:
        for model, rs in sorted(runs.get(dataset, {}).items()):
            any_rows = True
            for r in rs:
                t = r["training"]
                budget = r["config"]["budget"]
                out.append(f"\n{dataset}, {_label(model)} (seed {r['seed']}; trained "
                           f"{t['epochs_run']} of {budget['epochs']} epochs, patience "
                           f"{budget['patience']}, best epoch {t['best_epoch']}; test NDCG@10 "
                           f"{t['test']['NDCG@10']:.4f}), {r['metrics']['1']['pairs']} "
                           f"user–item pairs ({sum(r['skipped'].values())} skipped: "
                           + ", ".join(f"{v} {k.replace('_', ' ')}"
                                       for k, v in r["skipped"].items()) + "):\n\n")
                header = ["k facts removed", "mean facts", "logit drop: explained", "random",
                          "difference [95 % CI]", "explained lowers it more (w/l/t)",
                          "sign test p", "log-prob drop difference [95 % CI]",
                          "explained lowers it more", "sign test p",
                          "mean abs. logit change: explained / random",
                          "explained moves it more (sign test p)",
                          "rank after: explained / random", "leaves top-1: explained / random"]
                rows = []
                for k, m in r["metrics"].items():
                    lp = m["logp"]
                    rows.append([k, f"{m['facts_mean']:.2f}", f"{m['drop_explained_mean']:.5f}",
                                 f"{m['drop_random_mean']:.5f}",
                                 f"{m['diff_mean']:+.5f} [{m['diff_ci95'][0]:+.5f}, "
                                 f"{m['diff_ci95'][1]:+.5f}]",
                                 f"{100 * m['explained_hurts_more']:.0f} % ({m['wins']}/"
                                 f"{m['losses']}/{m['ties']})",
                                 f"{m['sign_test_p']:.2g}",
                                 f"{lp['diff_mean']:+.5f} [{lp['diff_ci95'][0]:+.5f}, "
                                 f"{lp['diff_ci95'][1]:+.5f}]",
                                 f"{100 * lp['explained_hurts_more']:.0f} %",
                                 f"{lp['sign_test_p']:.2g}",
                                 f"{m['abs_change_explained_mean']:.5f} / "
                                 f"{m['abs_change_random_mean']:.5f}",
                                 f"{100 * m['abs_larger']['share']:.0f} % "
                                 f"({m['abs_larger']['sign_test_p']:.2g})",
                                 f"{m['rank_explained_mean']:.2f} / {m['rank_random_mean']:.2f}",
                                 f"{100 * m['left_top1_explained']:.1f} % / "
                                 f"{100 * m['left_top1_random']:.1f} %"])
                out.append(_table(header, rows, ["r"] * len(header)))
                out.append("\n" + _provenance([r]) + "\n")
    if not any_rows:
        out.append("\n" + NONE_YET + "\n")
    return "".join(out)


def example_block(dataset: str, runs: dict[str, Any]) -> str:
    src = f"the `example` of `benchmarks/results/explain/{dataset}/*.json`"
    examples = [r for rs in runs.get(dataset, {}).values() for r in rs if r.get("example")]
    if not examples:
        return _stamp(src) + NONE_YET + "\n"
    r = examples[0]
    ex = r["example"]
    item = ex["item"]
    hist = ", ".join(h["title"] or str(h["raw_id"]) for h in ex["history"])
    text = (_stamp(src) + f"User {ex['user_raw_id']} of {dataset} ({ex['history_length']} items; "
            f"the last {len(ex['history'])}: {hist}). {_label(r['model'])}'s top recommendation "
            f"(history excluded): **{item['title']}** (item {item['raw_id']}, score "
            f"{item['score']:.3f}). Its top {len(ex['paths'])} attention paths:\n\n")
    def paths_table(paths: list[dict[str, Any]]) -> str:
        rows = [[str(p["rank"]), f"{p['score']:.3g}",
                 " × ".join(f"{a:.3g}" for a in p["alphas"]), p["path"].replace("|", "\\|")]
                for p in paths]
        return _table(["rank", "score", "α along the path", "path (history item → … → "
                       "recommended item)"], rows, ["r", "r", "l", "l"])

    text += paths_table(ex["paths"])
    if ex.get("figure"):
        text += f"\n![The paths above]({Path(ex['figure']).name})\n"
    if ex.get("paths_knowledge") is not None:
        text += ("\nThe same item's top knowledge paths (`through=(\"entity\", \"item\")`: "
                 "no user in between):\n\n")
        text += paths_table(ex["paths_knowledge"]) if ex["paths_knowledge"] else "none.\n"
    return text + "\n" + _provenance([r]) + "\n"


# --------------------------------------------------------------------------------- figure
def bucket_series(results: dict[str, Any]) -> dict[str, dict[str, tuple[list, list]]]:
    """``{dataset: {model: (means, sds)}}`` of test NDCG@10 per bucket (plotted models)."""
    out: dict[str, dict[str, tuple[list, list]]] = {}
    for dataset in C.TABLE_DATASETS:
        series = {}
        for name, runs in _bucket_runs(dataset, results):
            if name not in C.BUCKET_PLOT_MODELS:
                continue
            nb = len(runs[0]["popularity_buckets"]["buckets"])
            means, sds = [], []
            for i in range(nb):
                vals = [r["popularity_buckets"]["buckets"][i]["NDCG@10"] for r in runs]
                vals = [v for v in vals if v is not None]
                means.append(statistics.fmean(vals) if vals else float("nan"))
                sds.append(statistics.stdev(vals) if len(vals) > 1 else 0.0)
            series[name] = (means, sds)
        if series:
            out[dataset] = series
    return out


def draw_buckets(results: dict[str, Any], path: Path) -> bool:
    """Draw ``path`` (one panel a dataset); ``False`` when there is nothing to draw."""
    data = bucket_series(results)
    if not data:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(data), figsize=(4.2 * len(data), 3.4), squeeze=False)
    for ax, (dataset, series) in zip(axes[0], data.items()):
        for name, (means, sds) in series.items():
            x = list(range(1, len(means) + 1))
            ax.errorbar(x, means, yerr=sds, marker="o", capsize=3, label=_label(name))
        ax.set_title(dataset)
        ax.set_xlabel("target popularity quintile (1 = least popular)")
        ax.set_xticks(list(range(1, len(next(iter(series.values()))[0]) + 1)))
        ax.set_ylabel("test NDCG@10")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(fig)
    return True


# --------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results-dir", default=str(REPO / C.RESULTS_DIR))
    ap.add_argument("--docs", nargs="*", default=[str(REPO / d) for d in C.GENERATED_DOCS],
                    help="markdown files whose generated blocks are rewritten")
    ap.add_argument("--png", default=str(REPO / C.BUCKETS_PNG))
    ap.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 (with a diff) when a file would change")
    ap.add_argument("--coldstart-dir", default=str(RESULT_DIRS["coldstart"]))
    ap.add_argument("--explain-dir", default=str(RESULT_DIRS["explain"]))
    ap.add_argument("--text-dir", default=str(RESULT_DIRS["text"]))
    args = ap.parse_args(argv)
    RESULT_DIRS.update(coldstart=Path(args.coldstart_dir), explain=Path(args.explain_dir),
                       text=Path(args.text_dir))
    results_dir = Path(args.results_dir)
    results = load_results(results_dir)
    png = Path(args.png)
    stale = []
    for doc in map(Path, args.docs):
        old = doc.read_text()
        keys = [m.group("key") for m in BLOCK_RE.finditer(old)]
        png_name = Path(os_relpath(png, doc.parent)).as_posix()
        new = render_doc(old, results, results_dir, png_name)
        if new != old:
            stale.append(doc)
            if args.check:
                sys.stdout.writelines(difflib.unified_diff(
                    old.splitlines(True), new.splitlines(True), str(doc), f"{doc} (generated)"))
            else:
                doc.write_text(new)
                print(f"rewrote {doc} ({len(keys)} generated blocks)")
    tabulated = {d for d in results if d in C.TABLE_DATASETS}
    has_png = bool(bucket_series(results))
    if args.check:
        if has_png and not png.exists():
            print(f"{png} is missing: run {GENERATOR}")
            return 1
        if stale:
            print(f"\n{len(stale)} file(s) differ from the committed results: run {GENERATOR}")
            return 1
        print(f"generated blocks up to date ({sum(len(v) for v in results.values())} named "
              f"result groups, datasets: {', '.join(sorted(tabulated)) or 'none'})")
        return 0
    if has_png:
        draw_buckets(results, png)
        print(f"drew {png}")
    return 0


def os_relpath(path: Path, start: Path) -> str:
    import os

    return os.path.relpath(path.resolve(), start.resolve())


if __name__ == "__main__":
    sys.exit(main())
