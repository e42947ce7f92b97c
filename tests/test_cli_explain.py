"""``kgseqgraph explain``: the attention paths of a saved graph model, for a user of its dataset."""
from __future__ import annotations

import json
import math

import pytest

from kgseqgraph.cli import main

QUICK = ["--epochs", "1", "--max-steps-per-epoch", "2", "--batch-size", "32", "--max-len", "10"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KGSEQGRAPH_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def run(argv):
    return main([str(a) for a in argv])


def test_explain_a_users_recommendation(tmp_path, capsys):
    assert run(["train", "--model", "katrec", *QUICK, "--output-dir", "k",
                "--set", "kg_dim=8", "--set", "kg_hidden=[8,8]"]) == 0
    capsys.readouterr()
    assert run(["explain", "--model-dir", "k/best_model", "--user", "7", "-k", "4", "--json",
                "--png", "paths.png"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dataset"] == "synthetic" and out["user"] == "7" and out["history"]
    assert out["item"]["rank"] == 1 and out["item"]["raw_id"] not in out["history"]
    assert 1 <= len(out["paths"]) <= 4
    scores = [p["score"] for p in out["paths"]]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)
    for p in out["paths"]:
        assert len(p["alphas"]) == p["length"] <= 2
        # the product of the attention along it (parallel edges of one path add up)
        assert p["score"] >= math.prod(p["alphas"]) * (1 - 1e-5)
        assert p["history_item"] in out["history"]
    assert (tmp_path / "paths.png").read_bytes()[:4] == b"\x89PNG"
    # the same as recommend's first item
    assert run(["recommend", "--model-dir", "k/best_model", "--user", "7", "-k", "1",
                "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["items"][0]["raw_id"] == out["item"]["raw_id"]
    # a chosen item, a history of raw ids, the readable table
    assert run(["explain", "--model-dir", "k/best_model", "--items", "3", "4", "5",
                "--item", "6"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("why ") and "rank" in text
    # knowledge-only paths; paths start at the 9 items the model reads (max_len 10, cloze), so
    # try a few windows until one reaches its top item through entities
    found = []
    for start in range(0, 40, 9):
        assert run(["explain", "--model-dir", "k/best_model", "--items",
                    *range(start, start + 9), "--through", "entity", "--json"]) == 0
        knowledge = json.loads(capsys.readouterr().out)
        assert knowledge["through"] == ["entity"]
        assert all("user " not in p["path"] for p in knowledge["paths"])
        found += knowledge["paths"]
    assert found
    assert any("user " in p["path"] for p in out["paths"])
    with pytest.raises(SystemExit, match="unknown item id"):
        run(["explain", "--model-dir", "k/best_model", "--items", "3", "--item", "99999"])
    with pytest.raises(SystemExit, match="unknown user"):
        run(["explain", "--model-dir", "k/best_model", "--user", "nobody"])


def test_explain_refuses_a_model_without_a_graph(tmp_path, capsys):
    assert run(["train", "--model", "sasrec", *QUICK, "--hidden-size", "8",
                "--output-dir", "s"]) == 0
    with pytest.raises(SystemExit, match="explain needs a graph model"):
        run(["explain", "--model-dir", "s/best_model", "--user", "7", "--dataset",
             "synthetic"])
