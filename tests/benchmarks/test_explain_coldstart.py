"""benchmarks/coldstart.py and benchmarks/explain_faithfulness.py on the synthetic dataset: one
complete JSON a run, and the generated blocks of make_tables.py read from them."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

CS = importlib.import_module("coldstart")
FA = importlib.import_module("explain_faithfulness")
M = importlib.import_module("make_tables")

REQUIRED = ["dataset", "model", "seed", "config", "metrics", "git_commit", "dirty", "command",
            "versions", "date", "cpu_seconds", "wall_seconds"]


@pytest.fixture(scope="module")
def coldstart_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("coldstart")
    for model in ("pop", "sasrec", "katrec"):
        CS.main(["--dataset", "synthetic", "--model", model, "--epochs", "1",
                 "--out-dir", str(out)])
    return out


def test_coldstart_json(coldstart_runs):
    runs = M.load_runs(coldstart_runs)["synthetic"]
    assert set(runs) == {"pop", "sasrec", "katrec"}
    for model, (run,) in runs.items():
        assert all(k in run for k in REQUIRED), model
        for part in ("cold_full", "cold_only"):
            assert set(run["metrics"][part]) >= {"HR@10", "NDCG@10", "MRR"}
            assert 0 <= run["chance"][part]["NDCG@10"] <= 1
        assert run["split"]["cold_test_users"] > 0
    pop = runs["pop"][0]
    assert pop["metrics"]["cold_only"]["HR@10"] == 0.0  # every cold item tied at 0: last
    assert runs["sasrec"][0]["draws"]["count"] == CS.DRAWS
    assert "init=transr" in runs["katrec"][0]["variants"]
    # the exact chance level of a random ranking of c candidates
    assert CS.chance([10])["HR@10"] == 1.0 and CS.chance([20])["HR@10"] == 0.5
    assert CS.chance([2])["MRR"] == pytest.approx(0.75)


def test_coldstart_block(coldstart_runs, monkeypatch):
    monkeypatch.setitem(M.RESULT_DIRS, "coldstart", coldstart_runs)
    text = M.render_block("coldstart:synthetic", {}, coldstart_runs, None)
    assert "random scorer (exact expectation)" in text and "| popularity |" in text
    assert "KATRec, add_items init=transr" in text and "mean of 20 draws" in text
    assert M.render_block("coldstart:ml-1m", {}, coldstart_runs, None).endswith(
        M.NONE_YET + "\n")


def test_faithfulness_json_and_blocks(tmp_path, monkeypatch):
    out = tmp_path / "explain"
    FA.main(["--dataset", "synthetic", "--pairs", "6", "--out-dir", str(out),
             "--model-cache", str(tmp_path / "cache")])
    run = json.loads((out / "synthetic" / "katrec_seed0.json").read_text())
    assert all(k in run for k in REQUIRED)
    assert set(run["metrics"]) == {str(k) for k in FA.KS}
    m = run["metrics"]["5"]
    assert m["pairs"] == len(run["pairs"]) == 6
    assert m["wins"] + m["losses"] + m["ties"] == 6 and 0 <= m["sign_test_p"] <= 1
    assert {"logp", "abs_larger", "rank_explained_mean"} <= set(m)
    # a second run reads the trained model back
    FA.main(["--dataset", "synthetic", "--pairs", "6", "--out-dir", str(out), "--overwrite",
             "--model-cache", str(tmp_path / "cache")])
    again = json.loads((out / "synthetic" / "katrec_seed0.json").read_text())
    assert again["training"]["from_cache"] and again["pairs"] == run["pairs"]
    # a model trained under another budget is not reused
    monkeypatch.setitem(FA.BUDGETS, "synthetic", {"epochs": 1, "patience": None})
    FA.main(["--dataset", "synthetic", "--pairs", "6", "--out-dir", str(out), "--overwrite",
             "--model-cache", str(tmp_path / "cache")])
    third = json.loads((out / "synthetic" / "katrec_seed0.json").read_text())
    assert not third["training"]["from_cache"] and third["training"]["epochs_run"] == 1
    runs = M.load_runs(out)
    text = M.faithfulness_block(runs, datasets=("synthetic",))
    assert "synthetic, KATRec" in text and "| 10 |" in text
    assert M.faithfulness_block({}).endswith(M.NONE_YET + "\n")
    assert FA.sign_test(5, 5) == 1.0 and FA.sign_test(10, 0) == pytest.approx(2 / 2 ** 10)
