"""benchmarks/peers/recbole/compare.py on the committed results: tables, ratios and seed bars."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[2] / "benchmarks" / "peers" / "recbole"


def _compare():
    spec = importlib.util.spec_from_file_location("recbole_compare", HERE / "compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(tmp_path: Path, history_valid: list[list[float]], rb_valid: list[list[float]]):
    """Fake result files: RecBole and ours, several seeds, with the given validation curves."""
    res = tmp_path / "results"
    (res / "seeds").mkdir(parents=True)

    def result(lib: str, seed: int, curve: list[float], cpu_per_epoch: float) -> dict:
        hist = [{"epoch": i + 1, "valid": {"NDCG@10": v}, "cpu_seconds": cpu_per_epoch * (i + 1),
                 "wall_seconds": cpu_per_epoch * (i + 1)} for i, v in enumerate(curve)]
        best = max(range(len(curve)), key=lambda i: curve[i])
        cfg = {"config": {"seed": seed}} if lib == "recbole" else {"train_config": {"seed": seed}}
        return {**cfg, "best_valid": {"NDCG@10": curve[best]}, "best_epoch": best + 1,
                "history": hist, "test": {"HR@10": 0.1, "NDCG@10": 0.05 + seed / 1000,
                                          "MRR@10": 0.03},
                "epochs_budget": len(curve), "epochs_run": len(curve), "patience": 5,
                "stopped_early": False, "steps_per_epoch": 10, "train_examples_per_epoch": 100,
                "cpu_seconds_per_epoch_median": cpu_per_epoch,
                "seconds_per_epoch_median": cpu_per_epoch, "valid_eval_cpu_seconds_median": 1.0,
                "valid_eval_seconds_median": 1.0, "test_eval_cpu_seconds": 1.0,
                "test_eval_seconds": 1.0, "eval_users": 943, "peak_rss_mb": 100.0,
                "machine": {}, "date": "d", "command": "c", "versions": {}}

    for seed, curve in enumerate(rb_valid):
        name = "recbole_sasrec.json" if seed == 0 else f"seeds/recbole_sasrec_seed{seed}.json"
        (res / name).write_text(json.dumps(result("recbole", seed, curve, 100.0)))
    for seed, curve in enumerate(history_valid):
        name = "ours_sasrec.json" if seed == 0 else f"seeds/ours_sasrec_seed{seed}.json"
        (res / name).write_text(json.dumps(result("ours", seed, curve, 10.0)))
    return res


def test_seed_bars_and_speedups(tmp_path):
    compare = _compare()
    rb = [[0.05, 0.07], [0.05, 0.06], [0.04, 0.065]]  # bests 0.07, 0.06, 0.065: mean 0.065
    ours = [[0.05, 0.061, 0.066], [0.062, 0.064, 0.064], [0.06, 0.06, 0.061]]
    res = _run(tmp_path, ours, rb)
    s = compare.seed_summary(res, "sasrec")
    assert s["bars"]["mean"] == pytest.approx(0.065) and s["bars"]["every_seed"] == 0.06
    r, o = s["settings"]["recbole_sasrec"], s["settings"]["ours_sasrec"]
    assert r["to_bar"]["mean"]["cpu_seconds"] == [200.0, None, 200.0]
    assert r["to_bar"]["every_seed"]["cpu_seconds"] == [200.0, 200.0, 200.0]
    assert o["to_bar"]["mean"]["cpu_seconds"] == [30.0, None, None]
    assert o["to_bar"]["every_seed"]["cpu_seconds"] == [20.0, 10.0, 10.0]
    assert o["to_bar"]["every_seed"]["speedup_vs_recbole"] == pytest.approx(200.0 / (40 / 3))
    assert o["to_bar"]["mean"]["speedup_vs_recbole"] == pytest.approx(200.0 / 30.0)
    assert o["seeds"] == [0, 1, 2] and o["runs"] == 3
    md = "\n".join(compare._seeds_markdown("SASRec", s))
    assert "**every seed** (the lowest) 0.0600" in md and "1/3 reached" in md


def test_committed_results_compare(tmp_path):
    """The committed peer results still produce the tables (no network, standard library)."""
    compare = _compare()
    if not (HERE / "results" / "recbole_sasrec.json").exists():
        pytest.skip("no committed RecBole results")
    import sys

    argv = sys.argv
    sys.argv = ["compare.py", "--results", str(HERE / "results"), "--out", str(tmp_path)]
    try:
        compare.main()
    finally:
        sys.argv = argv
    out = json.loads((tmp_path / "results.json").read_text())
    assert set(out["models"]) == {"SASRec", "BERT4Rec", "GRU4Rec"}
    assert all("seeds" in m for m in out["models"].values())
    assert "several seeds" in (tmp_path / "results.md").read_text()
