"""Exported scorers (torch.export, ONNX, TorchScript) score as the eager models do."""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from kgseqgraph.data import Sequences, leave_one_out, training_windows
from kgseqgraph.datasets import Synthetic
from kgseqgraph.export import ExportVerificationError, export_scorer, load_exported
from kgseqgraph.models import (BERT4Rec, GRU4Rec, KATRec, Popularity, PopularityConfig, SASRec,
                               SequenceScorer)

SMALL = dict(max_len=8, hidden_size=16)
ENC = {"sasrec": dict(num_layers=1, num_heads=2), "bert4rec": dict(num_layers=1, num_heads=2),
       "gru4rec": dict(), "katrec": dict(num_layers=1, num_heads=2)}
# variable lengths: one item, empty, longer than any window, repeats, exactly a window
SEQS = [[3], [], list(range(1, 13)), [5, 5, 7], list(range(20, 28)), [9, 30]]


@pytest.fixture(scope="module")
def data():
    return Synthetic(num_users=80, num_items=40, num_entities=10, num_relations=3, seq_len=10,
                     seed=2)[0]


def _trained(name: str, data, steps: int = 5) -> torch.nn.Module:
    """A tiny model moved off its initialisation by a few Adam steps, in eval mode."""
    torch.manual_seed(0)
    n = int(data["item"].num_nodes)
    if name == "katrec":
        model = KATRec.from_dataset(leave_one_out(data).train_graph, kg_dim=8, kg_hidden=[4, 4],
                                    kge_batch_size=64, pretrain_bprmf_epochs=0,
                                    encoder_kwargs=ENC[name], max_len=SMALL["max_len"])
    elif name == "bert4rec_head":  # with BERT4Rec's prediction head and output bias
        model = BERT4Rec.from_dataset(n, encoder_kwargs=ENC["bert4rec"], prediction_head=True,
                                      **SMALL)
    else:
        cls = {"sasrec": SASRec, "bert4rec": BERT4Rec, "gru4rec": GRU4Rec}[name]
        model = cls.from_dataset(n, encoder_kwargs=ENC[name], **SMALL)
    train = training_windows(leave_one_out(data).train, SMALL["max_len"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        batch = model.training_batch(train.select(torch.randperm(len(train), generator=g)[:32]), g)
        loss = model.loss(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _eager(model, seqs: list[list[int]]) -> torch.Tensor:
    with torch.no_grad():
        return model.score(Sequences.from_lists(seqs, model.num_items))


@pytest.mark.parametrize("name,fmt", [("sasrec", "pt2"), ("bert4rec", "pt2"), ("gru4rec", "pt2"),
                                      ("katrec", "pt2"), ("sasrec", "onnx"), ("katrec", "onnx"),
                                      ("gru4rec", "torchscript"), ("bert4rec_head", "pt2"),
                                      ("bert4rec_head", "onnx")])
def test_exported_scores_equal_eager_scores(tmp_path, data, name, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    model = _trained(name, data)
    path = export_scorer(model, tmp_path / f"scorer.{fmt}", fmt)
    exported = load_exported(path)
    assert exported.format == fmt
    assert exported.metadata["model"] == name.removesuffix("_head")
    assert exported.num_items == model.num_items
    assert exported.window == model.serving_window
    # batches of 6, 1 and 13 rows (the capture example had 2), padding of every amount
    for seqs in (SEQS, SEQS[2:3], SEQS * 2 + [[11]]):
        items = exported.pad(seqs)
        got = exported(items)
        assert got.shape == (len(seqs), model.num_items)
        torch.testing.assert_close(got, _eager(model, seqs), atol=1e-5, rtol=1e-4)
    if exported.dynamic_length:  # fewer columns than the window: the short rows still agree
        short = [s for s in SEQS if len(s) <= 3]
        items = exported.pad(short, length=3)
        assert items.shape == (len(short), 3)
        torch.testing.assert_close(exported(items), _eager(model, short), atol=1e-5, rtol=1e-4)
    # the file is the model as it was: training on does not change the exported scores
    before = exported(exported.pad(SEQS))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    assert not torch.allclose(_eager(model, SEQS), before, atol=1e-3)
    torch.testing.assert_close(exported(exported.pad(SEQS)), before, atol=0, rtol=0)


def test_katrec_export_freezes_the_graph_enriched_table(tmp_path, data):
    model = _trained("katrec", data)
    path = export_scorer(model, tmp_path / "katrec.pt2")
    exported = load_exported(path)
    want = _eager(model, SEQS)
    got = exported(exported.pad(SEQS))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    # the output fusion is baked in too: scoring against the input table instead differs
    emb = model.item_embedder
    tables = model.frozen_item_tables()
    with torch.no_grad():
        tied = SequenceScorer(copy.deepcopy(model.encoder), tables.input, model.num_items,
                              model.serving_window, append_mask_token=True,
                              head=copy.deepcopy(model.head))
        no_fusion = tied(exported.pad(SEQS))
    assert (no_fusion - want).abs().max() > 1e-2
    # the KG propagation is baked in: changing the TransR table moves the eager scores only
    with torch.no_grad():
        emb.kge.node_emb.weight.mul_(-1.5)
    model.train().eval()  # drop the eval-mode table cache
    assert (_eager(model, SEQS) - want).abs().max() > 1e-3
    torch.testing.assert_close(exported(exported.pad(SEQS)), got, atol=0, rtol=0)
    # no PyTorch Geometric needed to serve: load and score with torch_geometric unimportable
    torch.save({"items": exported.pad(SEQS), "scores": got}, tmp_path / "expected.pt")
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch_geometric"] = None  # any import of it raises ImportError
        import torch
        from kgseqgraph.export import load_exported
        scorer = load_exported({str(path)!r})
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        torch.testing.assert_close(scorer(expected["items"]), expected["scores"], atol=0, rtol=0)
        assert not any(m.startswith("torch_geometric") and sys.modules[m] is not None
                       for m in sys.modules)
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")


def test_exclude_history_and_fixed_length(tmp_path, data):
    model = _trained("sasrec", data)
    path = export_scorer(model, tmp_path / "excl.pt2", exclude_history=True, dynamic_length=False)
    exported = load_exported(path)
    assert exported.metadata["exclude_history"] and not exported.dynamic_length
    items = exported.pad(SEQS)
    assert items.shape == (len(SEQS), model.serving_window)  # fixed: always the full window
    with pytest.raises(ValueError, match="columns"):
        exported(items[:, -3:])
    got = exported(items)
    want = _eager(model, SEQS)
    for row, seq in enumerate(SEQS):
        seen = sorted(set(seq[-model.serving_window:]))
        assert torch.isinf(got[row, seen]).all() and (got[row, seen] < 0).all()
        want[row, seen] = float("-inf")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    # top-k as model.recommend gives it (histories within the window: the same items excluded)
    short = [s for s in SEQS if len(s) <= model.serving_window]
    top = torch.topk(exported(exported.pad(short)), k=5, dim=1).indices
    assert torch.equal(top, model.recommend(short, k=5)[0])


class _DataDependentScorer(SequenceScorer):
    """Scales scores by a statistic of the input that tracing freezes into a constant."""

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return super().forward(items) * float((items == self.padding_id).float().mean() + 1)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit
def test_verification_rejects_a_wrong_export_and_writes_nothing(tmp_path, data):
    model = _trained("sasrec", data, steps=1)
    scorer = _DataDependentScorer(copy.deepcopy(model.encoder), model.frozen_item_table(),
                                  model.num_items, model.serving_window, append_mask_token=False)
    target = tmp_path / "bad.pt"
    with pytest.raises(ExportVerificationError, match="differ"):
        export_scorer(scorer, target, "torchscript", dynamic_length=True)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(NotImplementedError, match="no tensor scorer"):
        export_scorer(Popularity(PopularityConfig(num_items=5)), tmp_path / "pop.pt2")
    with pytest.raises(ValueError, match="format"):
        export_scorer(model, tmp_path / "x.bin", "tflite")


def test_cli_exports_a_saved_katrec_over_the_named_dataset(tmp_path):
    from kgseqgraph.cli import main
    from kgseqgraph.datasets.registry import load_dataset

    # what the CLI loads for --dataset synthetic --seed 3; the model is built over its training graph
    graph = leave_one_out(load_dataset("synthetic", seed=3)).train_graph
    torch.manual_seed(0)
    model = KATRec.from_dataset(graph, kg_dim=8, kg_hidden=[8], encoder_kwargs=ENC["katrec"],
                                pretrain_bprmf_epochs=0, **SMALL).eval()
    model.save_pretrained(tmp_path / "run" / "best_model")
    out = tmp_path / "scorer.pt2"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["export", "--model-dir", str(tmp_path / "run" / "best_model"),
                     "--output", str(out), "--dataset", "synthetic", "--seed", "3"])
    assert code == 0
    report = json.loads(stdout.getvalue())
    assert report["model"] == "katrec" and report["format"] == "pt2"
    assert report["graph"] == "synthetic" and report["output"] == str(out)
    exported = load_exported(out)
    torch.testing.assert_close(exported(exported.pad(SEQS)), _eager(model, SEQS),
                               atol=1e-5, rtol=1e-4)
    assert exported.metadata["graph"]["sha256"] == model.graph_fingerprint["sha256"]
    # the same command over another graph of the same sizes is refused, naming the problem
    with pytest.raises(SystemExit, match="trained on another graph"):
        main(["export", "--model-dir", str(tmp_path / "run" / "best_model"),
              "--output", str(tmp_path / "other.pt2"), "--dataset", "synthetic", "--seed", "4"])
    assert not (tmp_path / "other.pt2").exists()
