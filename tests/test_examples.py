"""The examples run as documented (short budgets here; the README runs them in full)."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_katrec_yelp_synthetic_writes_results(tmp_path, capsys):
    module = _load("katrec_yelp")
    out = tmp_path / "res.json"
    assert module.main(["--dataset", "synthetic", "--epochs", "1", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "full ranking" in printed and "SAMPLED" in printed
    result = json.loads(out.read_text())
    assert set(result["results"]) == {"bert4rec", "katrec"}
    for res in result["results"].values():
        # one epoch on the synthetic data: the planted sequences are already above chance
        # (10 of 500 items: NDCG@10 ~ 0.01), and sampled metrics come labelled, apart
        assert 0.02 < res["test"]["NDCG@10"] < 1.0
        assert res["test"]["sampled-100/NDCG@10"] > res["test"]["NDCG@10"]


def test_custom_model_from_layers_trains_one_step():
    module = _load("custom_model_from_layers")
    from kgseqgraph.data import leave_one_out
    from kgseqgraph.datasets import Synthetic

    data = Synthetic(num_users=60, num_items=40, num_entities=8, num_relations=2, seq_len=8)[0]
    split = leave_one_out(data)
    model = module.MyKGGRU4Rec(module.KGGRUConfig(num_items=40, max_len=10), data=data)
    batch = model.training_batch(split.train, torch.Generator().manual_seed(0))
    loss = model.loss(batch)["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    assert model.item_embedder.kg.node_emb.weight.grad is not None
    assert model.score(split.test_inputs).shape == (len(split.test_inputs), 40)


def test_explain_katrec_runs_offline_and_writes_the_png(tmp_path, capsys):
    module = _load("explain_katrec")
    png = tmp_path / "why.png"
    assert module.main(["--epochs", "1", "--png", str(png), "--paths", "4"]) == 0
    printed = capsys.readouterr().out
    assert "top recommendation" in printed and ("←[" in printed or "—[" in printed)
    assert "added 'new-item'" in printed
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.realdata
@pytest.mark.parametrize("name,extra", [("kp4sr_ml100k", ["--set", "degree=2"]),
                                        ("lancer_ml100k", ["--set", "hidden_size=16"])])
def test_text_model_examples_write_accuracy_records(tmp_path, name, extra):
    from kgseqgraph.testing import require_data

    require_data("ml-100k", "ml-100k/ml-100k.inter", "ml-100k/ml-100k.kg")
    module = _load(name)
    argv = ["--users", "25", "--epochs", "1", "--max-steps-per-epoch", "2", "--batch-size", "8",
            "--results-dir", str(tmp_path), "--variant", "smoke", *extra]
    assert module.main(argv) == 0
    model = name.split("_")[0]
    record = json.loads((tmp_path / f"{model}-smoke_seed0.json").read_text())
    for key in ("dataset", "model", "seed", "config", "best_epoch", "epochs_run", "valid", "test",
                "wall_seconds", "cpu_seconds", "git_commit", "command", "versions", "date"):
        assert key in record
    assert record["config"]["users"] == 25 and record["dataset"] == "ml-100k"
    assert "sampled-100/NDCG@10" in record["test"] and "HR@5" in record["test"]
    assert record["command"].endswith(" ".join(argv))
