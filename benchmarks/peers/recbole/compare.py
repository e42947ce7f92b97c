"""Side-by-side table of the RecBole and kgseqgraph runs (any Python, standard library only).

    python benchmarks/peers/recbole/compare.py [--results benchmarks/peers/recbole/results]

Reads ``results/recbole_<model>.json`` and ``results/ours_<model>.json`` (as written by
``run_recbole.py`` / ``run_ours.py``) and writes ``results.json`` and ``results.md`` beside this
file. ``results/ours_<model>_<tag>.json`` files are extra rows (variants of our settings, e.g. a
smaller batch), measured against the same RecBole bar but not used for the targets.
``results/seeds/<lib>_<model>[_<tag>]_seed<N>.json`` are further seeds of those runs: a table per
model then compares means over seeds, against two bars from RecBole's seeds (the mean of their
best validation NDCG@10, and the lowest: a level every RecBole seed reached).

Definitions (per model):

* **quality bar** q = RecBole's best validation NDCG@10 within its epoch budget;
* **time to quality** = time from the start of training to the end of the first epoch (training +
  validation) whose validation NDCG@10 >= q; for RecBole that is its best epoch. Both sides use
  the same validation protocol (same users and targets, seen items kept in the ranking), which
  is what makes the bar transferable. ``None`` when ours never reaches q;
* **epoch**: RecBole = every prefix of every training sequence (97,171 examples, one target
  each); ours = the training windows (2,412 windows of <= 51 items, every position a target). On
  ML-100K both hold 97,171 targets, so s/epoch compares per-target training cost;
* **eval seconds**: full ranking of all 1,682 items for the 943 validation users (median over
  epochs) and for the 943 test users (once);
* times come in two kinds: CPU seconds of the process (``time.process_time``; 1 torch thread on
  both sides) and wall seconds. Ratios are RecBole / ours (> 1: ours is better), taken on CPU
  seconds, because the shared machine ran other jobs during the runs (its load average is
  recorded in every result file) and wall time then measures the neighbours as much as the
  library.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = [("SASRec", "sasrec"), ("BERT4Rec", "bert4rec"), ("GRU4Rec", "gru4rec")]
TARGETS = {"time_to_quality_speedup": 5.0, "eval_throughput_ratio": 3.0}


def _first_reaching(history: list[dict], q: float) -> dict | None:
    for rec in history:
        v = (rec.get("valid") or {}).get("NDCG@10")
        if v is not None and v >= q:
            return rec
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def compare_model(rb: dict, ours: dict) -> dict:
    q = rb["best_valid"]["NDCG@10"]
    rb_best = rb["history"][rb["best_epoch"] - 1]
    hit = _first_reaching(ours["history"], q)
    side = {}
    for name, r in (("recbole", rb), ("ours", ours)):
        side[name] = {
            "epochs_budget": r["epochs_budget"], "epochs_run": r["epochs_run"],
            "patience": r["patience"], "stopped_early": r["stopped_early"],
            "best_epoch": r["best_epoch"], "best_valid_NDCG@10": r["best_valid"]["NDCG@10"],
            "steps_per_epoch": r["steps_per_epoch"],
            "train_examples_per_epoch": r["train_examples_per_epoch"],
            "cpu_seconds_per_epoch": r["cpu_seconds_per_epoch_median"],
            "wall_seconds_per_epoch": r["seconds_per_epoch_median"],
            "valid_eval_cpu_seconds": r["valid_eval_cpu_seconds_median"],
            "valid_eval_wall_seconds": r["valid_eval_seconds_median"],
            "test_eval_cpu_seconds": r["test_eval_cpu_seconds"],
            "test_eval_wall_seconds": r["test_eval_seconds"],
            "eval_users": r["eval_users"],
            "peak_rss_mb": r["peak_rss_mb"],
            "test": {k: r["test"][k] for k in ("HR@10", "NDCG@10", "MRR@10") if k in r["test"]},
            "train_total_cpu_seconds": r["history"][-1]["cpu_seconds"],
            "train_total_wall_seconds": r["history"][-1]["wall_seconds"],
            "loadavg": [r["machine"].get("loadavg_start"), r["machine"].get("loadavg_end")],
            "date": r["date"], "command": r["command"], "versions": r["versions"],
        }
        if name == "ours":
            tc = r.get("train_config", {})
            side[name]["setting"] = (f"preset {r.get('preset')}, batch {tc.get('batch_size')}, "
                                     f"lr {tc.get('lr')}, lr_decay {tc.get('lr_decay')}, "
                                     f"grad_clip {tc.get('grad_clip')}")
    side["recbole"]["time_to_quality_cpu_seconds"] = rb_best["cpu_seconds"]
    side["recbole"]["time_to_quality_wall_seconds"] = rb_best["wall_seconds"]
    side["ours"]["time_to_quality_cpu_seconds"] = hit["cpu_seconds"] if hit else None
    side["ours"]["time_to_quality_wall_seconds"] = hit["wall_seconds"] if hit else None
    side["ours"]["time_to_quality_epoch"] = hit["epoch"] if hit else None
    R, O = side["recbole"], side["ours"]
    ratios = {
        "time_to_quality_speedup": _ratio(R["time_to_quality_cpu_seconds"],
                                          O["time_to_quality_cpu_seconds"]),
        "time_to_quality_speedup_wall": _ratio(R["time_to_quality_wall_seconds"],
                                               O["time_to_quality_wall_seconds"]),
        "epoch_cpu_speedup": _ratio(R["cpu_seconds_per_epoch"], O["cpu_seconds_per_epoch"]),
        "eval_throughput_ratio": _ratio(R["valid_eval_cpu_seconds"], O["valid_eval_cpu_seconds"]),
        "test_eval_throughput_ratio": _ratio(R["test_eval_cpu_seconds"],
                                             O["test_eval_cpu_seconds"]),
        "peak_rss_ratio": _ratio(R["peak_rss_mb"], O["peak_rss_mb"]),
        "test_NDCG@10_ratio": _ratio(O["test"]["NDCG@10"], R["test"]["NDCG@10"]),
        "test_HR@10_ratio": _ratio(O["test"]["HR@10"], R["test"]["HR@10"]),
    }
    targets = {
        "time_to_quality >= 5x": (ratios["time_to_quality_speedup"] or 0) >= 5.0,
        "eval throughput >= 3x": (ratios["eval_throughput_ratio"] or 0) >= 3.0,
        "test NDCG@10 >= RecBole": O["test"]["NDCG@10"] >= R["test"]["NDCG@10"],
    }
    # time for ours to reach each level RecBole passed on its way (its running best per epoch)
    levels, best = [], -1.0
    for rec in rb["history"]:
        v = rec["valid"]["NDCG@10"]
        if v > best:
            best = v
            h = _first_reaching(ours["history"], v)
            levels.append({"recbole_epoch": rec["epoch"], "valid_NDCG@10": v,
                           "recbole_cpu_seconds": rec["cpu_seconds"],
                           "ours_epoch": h["epoch"] if h else None,
                           "ours_cpu_seconds": h["cpu_seconds"] if h else None,
                           "speedup": _ratio(rec["cpu_seconds"], h["cpu_seconds"] if h else None)})
    return {"quality_bar_valid_NDCG@10": q, "recbole": R, "ours": O, "ratios": ratios,
            "targets_met": targets, "time_to_recbole_levels": levels}


def _mean_sd(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    sd = (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else 0.0
    return m, sd


def seed_summary(res_dir: Path, key: str) -> dict | None:
    """Several seeds of the same settings: ``results/<lib>_<key>[_<tag>].json`` (the main runs)
    plus ``results/seeds/<lib>_<key>[_<tag>]_seed<N>.json``.

    One seed's best-of-epochs validation NDCG@10 is a noisy maximum, so two quality bars come
    from RecBole's seeds: ``mean`` (the mean of their best values; not every RecBole seed
    reaches it) and ``every_seed`` (the lowest of their best values: a level every RecBole seed
    reached). For every run and bar: CPU seconds to the first epoch at or above the bar; the
    speed-up is RecBole's mean time over ours (runs that reached the bar)."""
    seeds_dir = res_dir / "seeds"
    if not seeds_dir.is_dir():
        return None
    groups: dict[str, list[dict]] = {}
    for main in sorted(res_dir.glob(f"*_{key}.json")) + sorted(res_dir.glob(f"*_{key}_*.json")):
        name = main.stem
        runs = [main] + sorted(seeds_dir.glob(f"{name}_seed*.json"))
        if len(runs) > 1:
            groups[name] = [json.loads(r.read_text()) for r in runs]
    rb = groups.get(f"recbole_{key}")
    if not rb:
        return None
    rb_best = [r["best_valid"]["NDCG@10"] for r in rb]
    bars = {"mean": _mean_sd(rb_best)[0], "every_seed": min(rb_best)}
    out = {"bars": bars, "settings": {}}
    for name, runs in groups.items():
        entry = {
            "seeds": [(r.get("config") or r.get("train_config") or {}).get("seed") for r in runs],
            "best_valid_NDCG@10": _mean_sd([r["best_valid"]["NDCG@10"] for r in runs]),
            "test_NDCG@10": _mean_sd([r["test"]["NDCG@10"] for r in runs]),
            "test_HR@10": _mean_sd([r["test"]["HR@10"] for r in runs]),
            "setting": runs[0].get("command", ""), "runs": len(runs), "to_bar": {}}
        for bar_name, bar in bars.items():
            reach = [_first_reaching(r["history"], bar) for r in runs]
            times = [h["cpu_seconds"] for h in reach if h is not None]
            entry["to_bar"][bar_name] = {
                "cpu_seconds": [h["cpu_seconds"] if h else None for h in reach],
                "reached": len(times), "mean_cpu_seconds": _mean_sd(times)[0] if times else None}
        out["settings"][name] = entry
    rb_entry = out["settings"][f"recbole_{key}"]
    for name, v in out["settings"].items():
        for bar_name, t in v["to_bar"].items():
            t["speedup_vs_recbole"] = (None if name.startswith("recbole_") else _ratio(
                rb_entry["to_bar"][bar_name]["mean_cpu_seconds"], t["mean_cpu_seconds"]))
    return out


def _seeds_markdown(model: str, s: dict) -> list[str]:
    bars = s["bars"]
    lines = ["", f"{model}, several seeds. Bars from RecBole's best valid NDCG@10 per seed: "
             f"**mean** {bars['mean']:.4f}, **every seed** (the lowest) {bars['every_seed']:.4f}."
             " CPU s to the first epoch at or above each bar, per run; speed-up = RecBole's mean "
             "time / ours (runs that reached it):", "",
             "| run | seeds | best valid NDCG@10 (mean ± sd) | test NDCG@10 (mean ± sd) | "
             "test HR@10 | to the mean bar: CPU s per seed (speed-up) | to the every-seed bar: "
             "CPU s per seed (speed-up) |",
             "|---|---|---:|---:|---:|---|---|"]
    for name, v in s["settings"].items():
        cells = []
        for bar_name in ("mean", "every_seed"):
            t = v["to_bar"][bar_name]
            per = ", ".join(_f(x) if x is not None else "–" for x in t["cpu_seconds"])
            sp = t["speedup_vs_recbole"]
            cells.append(f"{per} ({t['reached']}/{v['runs']} reached"
                         + ("" if name.startswith("recbole_") else f", {_f(sp, '{:.1f}x')}")
                         + ")")
        lines.append(
            f"| `{name}` | {', '.join(str(x) for x in v['seeds'])} | "
            f"{v['best_valid_NDCG@10'][0]:.4f} ± {v['best_valid_NDCG@10'][1]:.4f} | "
            f"{v['test_NDCG@10'][0]:.4f} ± {v['test_NDCG@10'][1]:.4f} | "
            f"{v['test_HR@10'][0]:.4f} | {cells[0]} | {cells[1]} |")
    return lines


def _f(x, fmt="{:.1f}"):
    return "n/a" if x is None else fmt.format(x)


def to_markdown(res: dict) -> str:
    lines = ["| model | library | epochs run / budget (best) | valid NDCG@10 best | "
             "time to RecBole's best valid, CPU s (wall s) | s/epoch CPU (wall) | steps/epoch | "
             "full eval 943 users, CPU s (wall) | peak RSS MB | test HR@10 | test NDCG@10 |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for model, r in res["models"].items():
        for lib, label in (("recbole", "RecBole 1.2.1"), ("ours", "kgseqgraph")):
            s = r[lib]
            ttq = s["time_to_quality_cpu_seconds"]
            ttq_txt = (f"{_f(ttq)} ({_f(s['time_to_quality_wall_seconds'])})" if ttq is not None
                       else "not reached")
            if lib == "ours" and s.get("time_to_quality_epoch"):
                ttq_txt += f", epoch {s['time_to_quality_epoch']}"
            lines.append(
                f"| {model} | {label} | {s['epochs_run']} / {s['epochs_budget']} "
                f"({s['best_epoch']}) | {s['best_valid_NDCG@10']:.4f} | {ttq_txt} | "
                f"{_f(s['cpu_seconds_per_epoch'])} ({_f(s['wall_seconds_per_epoch'])}) | "
                f"{s['steps_per_epoch']} | {_f(s['valid_eval_cpu_seconds'], '{:.3f}')} "
                f"({_f(s['valid_eval_wall_seconds'], '{:.3f}')}) | {s['peak_rss_mb']:.0f} | "
                f"{s['test']['HR@10']:.4f} | {s['test']['NDCG@10']:.4f} |")
        for tag, v in r.get("variants", {}).items():
            s = v["ours"]
            ttq = s["time_to_quality_cpu_seconds"]
            speedup = _f(v["ratios"]["time_to_quality_speedup"], "{:.1f}x")
            ttq_txt = (f"{_f(ttq)} ({_f(s['time_to_quality_wall_seconds'])}), epoch "
                       f"{s['time_to_quality_epoch']}, **{speedup}**"
                       if ttq is not None else "not reached")
            lines.append(
                f"| {model} | kgseqgraph, variant `{tag}` ({s['setting']}) | {s['epochs_run']} / "
                f"{s['epochs_budget']} ({s['best_epoch']}) | {s['best_valid_NDCG@10']:.4f} | "
                f"{ttq_txt} | {_f(s['cpu_seconds_per_epoch'])} "
                f"({_f(s['wall_seconds_per_epoch'])}) | "
                f"{s['steps_per_epoch']} | {_f(s['valid_eval_cpu_seconds'], '{:.3f}')} "
                f"({_f(s['valid_eval_wall_seconds'], '{:.3f}')}) | {s['peak_rss_mb']:.0f} | "
                f"{s['test']['HR@10']:.4f} | {s['test']['NDCG@10']:.4f} |")
        x = r["ratios"]
        lines.append(
            f"| {model} | **ratio** RecBole/ours | | | "
            f"**{_f(x['time_to_quality_speedup'], '{:.1f}x')}** "
            f"({_f(x['time_to_quality_speedup_wall'], '{:.1f}x')} wall) | "
            f"{_f(x['epoch_cpu_speedup'], '{:.1f}x')} | | "
            f"**{_f(x['eval_throughput_ratio'], '{:.1f}x')}** | "
            f"{_f(x['peak_rss_ratio'], '{:.2f}x')} | "
            f"ours/RecBole {_f(x['test_HR@10_ratio'], '{:.2f}')} | "
            f"ours/RecBole **{_f(x['test_NDCG@10_ratio'], '{:.2f}')}** |")
    lines += ["", "Time for ours (main row) to reach each validation NDCG@10 that RecBole "
              "passed on its way to its best (its running best after each epoch), CPU seconds:",
              "",
              "| model | RecBole epoch | RecBole valid NDCG@10 | RecBole CPU s | "
              "ours: epoch, CPU s | speedup |", "|---|---:|---:|---:|---:|---:|"]
    for model, r in res["models"].items():
        for lv in r["time_to_recbole_levels"]:
            ours_txt = (f"{lv['ours_epoch']}, {lv['ours_cpu_seconds']:.1f}" if lv["ours_epoch"]
                        else "not reached")
            lines.append(f"| {model} | {lv['recbole_epoch']} | {lv['valid_NDCG@10']:.4f} | "
                         f"{lv['recbole_cpu_seconds']:.1f} | {ours_txt} | "
                         f"{_f(lv['speedup'], '{:.1f}x')} |")
    lines += ["", "Targets (issue 7): time to RecBole's validation quality >= 5x faster, "
              "evaluation throughput >= 3x, test NDCG@10 >= RecBole's.", "",
              "| model | " + " | ".join(next(iter(res["models"].values()))["targets_met"]) + " |",
              "|---|" + "---|" * len(next(iter(res["models"].values()))["targets_met"])]
    for model, r in res["models"].items():
        lines.append(f"| {model} | " + " | ".join("met" if v else "**not met**"
                                                   for v in r["targets_met"].values()) + " |")
    for model, r in res["models"].items():
        if r.get("seeds"):
            lines += _seeds_markdown(model, r["seeds"])
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default=str(HERE / "results"))
    ap.add_argument("--out", default=str(HERE))
    args = ap.parse_args()
    res_dir = Path(args.results)
    models = {}
    for name, key in MODELS:
        rb, ours = res_dir / f"recbole_{key}.json", res_dir / f"ours_{key}.json"
        if rb.exists() and ours.exists():
            rb_res = json.loads(rb.read_text())
            models[name] = compare_model(rb_res, json.loads(ours.read_text()))
            variants = {}
            for path in sorted(res_dir.glob(f"ours_{key}_*.json")):
                v = compare_model(rb_res, json.loads(path.read_text()))
                variants[path.stem[len(f"ours_{key}_"):]] = {
                    "ours": v["ours"], "ratios": v["ratios"], "targets_met": v["targets_met"]}
            if variants:
                models[name]["variants"] = variants
            seeds = seed_summary(res_dir, key)
            if seeds:
                models[name]["seeds"] = seeds
    if not models:
        raise SystemExit(f"no recbole_<model>.json + ours_<model>.json pairs in {res_dir}")
    res = {"dataset": "ML-100K, our chronological leave-one-out split exported as "
                      "kgsg-ml100k (identical data, checked)",
           "protocol": "full ranking over 1,682 items, seen items kept (RecBole repeatable=True; "
                       "ours exclude_history=False), model selection on valid NDCG@10, test once",
           "threads": 1, "ratios_are": "RecBole / ours on CPU seconds (> 1: ours better); "
                                       "test metric ratios are ours / RecBole",
           "targets": TARGETS, "models": models}
    out = Path(args.out)
    (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / "results.md").write_text(to_markdown(res))
    print(to_markdown(res))


if __name__ == "__main__":
    main()
