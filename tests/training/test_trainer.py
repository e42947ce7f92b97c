"""Tests of the trainer with a small real model (item embeddings + GRU, next-item CE)."""
from __future__ import annotations

import json
import logging
import math
import os
import sys
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kgseqgraph.data import IGNORE_INDEX, Sequences, leave_one_out, pad_sequences, shifted_targets
from kgseqgraph.models.base import SequentialRecommender, register_model
from kgseqgraph.training import (LinearSchedule, TrainConfig, Trainer, load_checkpoint,
                                 plot_training_curve, run_training, seed_everything)

NUM_ITEMS = 20
TIMING_KEYS = {"train_seconds", "eval_seconds", "samples_per_second"}


# ------------------------------------------------------------------------------- toy model
@dataclass
class ToyConfig:
    num_items: int
    max_len: int = 6
    dim: int = 16
    dropout: float = 0.2
    keep_prob: float = 0.9


@register_model("_test_toy_gru")
class ToyGRU(SequentialRecommender):
    """Item embeddings → dropout → GRU; dot product with the item table; shifted next-item CE.

    ``training_batch`` drops each target with probability ``1 - keep_prob`` using the trainer's
    generator, and dropout uses the global RNG, so both RNG streams matter for resumption.
    """

    config_class = ToyConfig

    def __init__(self, config: ToyConfig, data=None) -> None:
        super().__init__(config)
        n, d = config.num_items, config.dim
        self.emb = nn.Embedding(n + 1, d, padding_idx=n)
        self.gru = nn.GRU(d, d, batch_first=True)
        self.drop = nn.Dropout(config.dropout)

    def _hidden(self, items):
        return self.gru(self.drop(self.emb(items)))[0]

    def training_batch(self, sequences, generator):
        batch = pad_sequences(sequences, self.config.max_len + 1, self.num_items)
        inp, tgt = shifted_targets(batch)
        drop = torch.rand(tgt.shape, generator=generator) >= self.config.keep_prob
        tgt = tgt.masked_fill(drop, IGNORE_INDEX)
        return {"items": inp.items, "targets": tgt}

    def loss(self, batch):
        logits = self._hidden(batch["items"]) @ self.emb.weight[: self.num_items].t()
        ce = F.cross_entropy(logits.reshape(-1, self.num_items), batch["targets"].reshape(-1),
                             ignore_index=IGNORE_INDEX)
        return {"loss": ce, "ce": ce.detach() * 2}

    def score(self, sequences):
        batch = pad_sequences(sequences, self.config.max_len, self.num_items)
        h = self._hidden(batch.items.to(self.emb.weight.device))[:, -1]
        return h @ self.emb.weight[: self.num_items].t()


def make_split(num_users: int = 48, seed: int = 0):
    """Users walk the item ring with a user-specific stride (1 or 3) plus 10% random jumps."""
    g = torch.Generator().manual_seed(seed)
    seqs = []
    for u in range(num_users):
        length = int(torch.randint(6, 13, (1,), generator=g))
        stride = 1 if u % 2 == 0 else 3
        item = int(torch.randint(0, NUM_ITEMS, (1,), generator=g))
        seq = [item]
        for _ in range(length - 1):
            if float(torch.rand(1, generator=g)) < 0.1:
                item = int(torch.randint(0, NUM_ITEMS, (1,), generator=g))
            else:
                item = (item + stride) % NUM_ITEMS
            seq.append(item)
        seqs.append(seq)
    return leave_one_out(Sequences.from_lists(seqs, NUM_ITEMS))


def make_model(seed: int = 0, **kw) -> ToyGRU:
    torch.manual_seed(seed)
    return ToyGRU(ToyConfig(NUM_ITEMS, **kw))


def config(**kw) -> TrainConfig:
    base = dict(seed=7, epochs=4, batch_size=16, lr=1e-2, device="cpu", progress=False,
                patience=None, ks=(1, 5, 10), eval_chunk_size=7)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def split():
    return make_split()


def strip_timings(history):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in history]


def brute_force_ndcg(scores, inputs, targets, k, exclude_history=True):
    """Independent reference: per-user loop, pessimistic ties, history excluded (target kept)."""
    total = 0.0
    for u in range(len(targets)):
        s = scores[u].tolist()
        t = int(targets[u])
        seen = set(inputs[u].tolist()) - {t} if exclude_history else set()
        rank = 1 + sum(1 for j in range(len(s)) if j != t and j not in seen and s[j] >= s[t])
        total += 1.0 / math.log2(rank + 1) if rank <= k else 0.0
    return total / len(targets)


# ------------------------------------------------------------------------------- config
def test_config_json_roundtrip_and_validation(tmp_path):
    cfg = TrainConfig(seed=3, epochs=2, ks=[5, 10], valid_metric="HR@5", output_dir=tmp_path,
                      grad_clip=None, patience=None, progress=True)
    back = TrainConfig.from_json(cfg.to_json())
    assert back == cfg and back.ks == (5, 10) and back.output_dir == str(tmp_path)
    assert json.loads(cfg.to_json())["ks"] == [5, 10]
    with pytest.raises(ValueError, match="cut-off"):
        TrainConfig(valid_metric="NDCG@50")
    with pytest.raises(ValueError, match="evaluators report"):
        TrainConfig(valid_metric="Recall@10")
    with pytest.raises(ValueError, match="evaluators report"):
        TrainConfig(valid_metric="NDCG")
    assert TrainConfig(valid_metric="MRR").valid_metric == "MRR"
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="unknown TrainConfig"):
        TrainConfig.from_dict({"epochs": 1, "lr_rate": 3})
    with pytest.raises(ValueError, match="sampled protocol"):
        TrainConfig(valid_metric="sampled-100/NDCG@10")
    with pytest.raises(ValueError, match="sampled protocol"):
        TrainConfig(valid_metric="sampled-100/NDCG@10", sampled_negatives=100,
                    sampled_strategy="popularity")
    assert TrainConfig(valid_metric="sampled-pop-9/HR@5", sampled_negatives=9,
                       sampled_strategy="popularity").sampled_protocol == "sampled-pop-9"
    # progress bars follow the one rule (tests/utils/test_progress.py)


def test_linear_schedule_values():
    s = LinearSchedule(total=10, warmup=2)
    assert [s(i) for i in range(5)] == [0.5, 1.0, 1.0, 0.875, 0.75]
    assert s(9) == pytest.approx(1 / 8) and s(10) == 0.0
    assert LinearSchedule(10, 0, decay=False)(7) == 1.0
    assert [LinearSchedule(4)(i) for i in range(4)] == [1.0, 0.75, 0.5, 0.25]


def test_model_must_match_split_and_config(split):
    with pytest.raises(ValueError, match="max_len"):
        Trainer(make_model(), split, config(max_len=9))
    with pytest.raises(ValueError, match="21 items"):
        Trainer(ToyGRU(ToyConfig(NUM_ITEMS + 1)), split, config())


# ------------------------------------------------------------------------------- training
def test_loss_falls_and_model_learns(split):
    model = make_model()
    trainer = Trainer(model, split, config(epochs=8, eval_every=4, lr=2e-2))
    before = trainer.evaluate("valid")["NDCG@10"]
    result = trainer.fit()
    losses = [r["train"]["loss"] for r in result.history]
    assert losses[-1] < 0.8 * losses[0]
    assert all(r["train"]["ce"] == pytest.approx(2 * r["train"]["loss"]) for r in result.history)
    assert "grad_norm" in result.history[0]["train"]
    # validation only at eval_every multiples; the learned walk beats the untrained model
    evaluated = [r["valid"] is not None for r in result.history]
    assert evaluated == [False, False, False, True, False, False, False, True]
    assert result.valid["NDCG@10"] > before + 0.1
    # linear decay: the last step's lr is lr / total_steps
    assert result.history[-1]["lr"] == pytest.approx(2e-2 / trainer.total_steps)
    assert result.timings["train_samples"] == 8 * len(trainer.windows)
    assert set(result.test) >= {"HR@10", "NDCG@10", "MRR"}


def test_evaluate_matches_brute_force(split):
    model = make_model(seed=1)
    for exclude in (True, False):
        trainer = Trainer(model, split, config(exclude_history=exclude))
        got = trainer.evaluate("test")
        model.eval()
        with torch.no_grad():
            scores = model.score(split.test_inputs)
        want = brute_force_ndcg(scores, split.test_inputs, split.test_targets, 10, exclude)
        assert got["NDCG@10"] == pytest.approx(want, abs=1e-12)
        assert model.training is False  # evaluate restores the mode it found


def test_sampled_metrics_are_labelled_and_correct(split):
    model = make_model(seed=2)
    cfg = config(sampled_negatives=5, valid_metric="sampled-5/NDCG@5", epochs=1)
    trainer = Trainer(model, split, cfg)
    got = trainer.evaluate("valid")
    assert "NDCG@10" in got and "sampled-5/NDCG@5" in got and "sampled-5/HR@1" in got
    negs = trainer.evaluator.negatives("valid", split.num_items, split.valid_inputs,
                                       split.valid_targets)
    assert negs.shape == (len(split.valid_targets), 5)
    model.eval()
    with torch.no_grad():
        scores = model.score(split.valid_inputs)
    total = 0.0
    for u in range(len(split.valid_targets)):
        t = int(split.valid_targets[u])
        n = negs[u].tolist()
        assert t not in n and not set(n) & set(split.valid_inputs[u].tolist())
        rank = 1 + sum(1 for j in n if scores[u, j] >= scores[u, t])
        total += 1.0 / math.log2(rank + 1) if rank <= 5 else 0.0
    assert got["sampled-5/NDCG@5"] == pytest.approx(total / len(split.valid_targets), abs=1e-12)
    # the same negatives at every validation; the selection metric may be a sampled one
    assert trainer.evaluate("valid") == got
    assert trainer.fit().valid["sampled-5/NDCG@5"] == trainer.best_metric


def test_selection_follows_valid_and_test_runs_once(split):
    """Scripted validation scores: the kept weights must be those of the best *valid* epoch."""
    script = {1: 0.10, 2: 0.30, 3: 0.20, 4: 0.25}
    stages, states = [], {}

    class ScriptedTrainer(Trainer):
        def evaluate(self, stage="valid"):
            stages.append(stage)
            real = super().evaluate(stage)
            if stage == "valid":
                real["NDCG@10"] = script[self.epoch + 1]
            return real

    def remember(trainer, record):
        states[record["epoch"]] = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    model = make_model()
    result = ScriptedTrainer(model, split, config(), callbacks=[remember]).fit()
    assert stages == ["valid"] * 4 + ["test"]
    assert result.best_epoch == 2 and result.valid["NDCG@10"] == 0.30
    for k, v in model.state_dict().items():
        assert torch.equal(v, states[2][k])
    assert not torch.equal(states[2]["emb.weight"], states[4]["emb.weight"])
    # the test metrics are those of the epoch-2 weights
    assert result.test == Trainer(model, split, config()).evaluate("test")


def test_early_stopping_after_patience(split):
    script = [0.1, 0.2, 0.2, 0.15, 0.19, 0.5, 0.6]

    class ScriptedTrainer(Trainer):
        def evaluate(self, stage="valid"):
            real = super().evaluate(stage)
            if stage == "valid":
                real["NDCG@10"] = script[self.epoch]
            return real

    result = ScriptedTrainer(make_model(), split, config(epochs=7, patience=3)).fit()
    assert result.stopped_early and result.epochs_run == 5
    assert result.best_epoch == 2
    assert [r["improved"] for r in result.history] == [True, True, False, False, False]


def test_seeded_runs_are_reproducible(split):
    a = Trainer(make_model(), split, config(epochs=2)).fit()
    b = Trainer(make_model(), split, config(epochs=2)).fit()
    c = Trainer(make_model(), split, config(epochs=2, seed=8)).fit()
    assert strip_timings(a.history) == strip_timings(b.history)
    assert a.test == b.test
    assert strip_timings(a.history) != strip_timings(c.history)


# ------------------------------------------------------------------------------- resume
class Killed(RuntimeError):
    pass


def kill_after(epoch):
    def callback(trainer, record):
        if record["epoch"] == epoch:
            raise Killed(f"simulated kill after epoch {epoch}")
    return callback


def test_resume_after_kill_gives_identical_run(split, tmp_path):
    run_a = Trainer(make_model(), split, config(output_dir=tmp_path / "a")).fit()
    model_a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]

    with pytest.raises(Killed):
        Trainer(make_model(), split, config(output_dir=tmp_path / "b"),
                callbacks=[kill_after(2)]).fit()
    ckpt = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert ckpt["epoch"] == 2 and len(ckpt["history"]) == 2
    assert ckpt["rng"]["generator"].dtype == torch.uint8
    assert not (tmp_path / "b" / "results.json").exists()

    # a fresh process would build a freshly initialised model: use a different init on purpose
    resumed = Trainer(make_model(seed=99), split, config(output_dir=tmp_path / "b"), resume=True)
    assert resumed.epoch == 2
    run_b = resumed.fit()
    assert strip_timings(run_b.history) == strip_timings(run_a.history)
    assert run_b.best_epoch == run_a.best_epoch
    assert run_b.valid == run_a.valid and run_b.test == run_a.test
    model_b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(model_a[k], model_b[k]) for k in model_a)
    # resuming a finished run trains nothing and reports the same test metrics
    again = Trainer(make_model(seed=3), split, config(output_dir=tmp_path / "a"), resume=True)
    assert again.fit().test == run_a.test and len(again.history) == 4

    # control: the restored global RNG matters (dropout), so the equality above is not vacuous
    with pytest.raises(Killed):
        Trainer(make_model(), split, config(output_dir=tmp_path / "c"),
                callbacks=[kill_after(2)]).fit()
    other = Trainer(make_model(), split, config(output_dir=tmp_path / "c"), resume=True)
    torch.manual_seed(12345)
    run_c = other.fit()
    assert [r["train"]["loss"] for r in run_c.history[2:]] != \
        [r["train"]["loss"] for r in run_a.history[2:]]


def test_resume_checks(split, tmp_path):
    with pytest.raises(FileNotFoundError):
        Trainer(make_model(), split, config(output_dir=tmp_path), resume=True)
    t = Trainer(make_model(), split, config(output_dir=tmp_path), resume="auto")
    assert t.epoch == 0
    with pytest.raises(Killed):
        Trainer(make_model(), split, config(output_dir=tmp_path, epochs=2),
                callbacks=[kill_after(1)]).fit()
    with pytest.raises(ValueError, match="lr"):
        Trainer(make_model(), split, config(output_dir=tmp_path, epochs=2, lr=0.5), resume=True)
    with pytest.raises(ValueError, match="different model"):
        Trainer(make_model(dim=8), split, config(output_dir=tmp_path, epochs=2), resume=True)
    # fields that do not change the trajectory may differ
    t = Trainer(make_model(), split, config(output_dir=tmp_path, epochs=2, eval_chunk_size=100),
                resume=True)
    assert t.epoch == 1


# ------------------------------------------------------------------------------- files
def test_output_files(split, tmp_path):
    model = make_model()
    cfg = config(epochs=3, output_dir=tmp_path)
    out = run_training(model, split, cfg)
    assert set(out) >= {"best_epoch", "valid", "test", "history", "timings"}
    assert out["timings"]["samples_per_second"] > 0

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [r["epoch"] for r in metrics["epochs"]] == [1, 2, 3]
    assert metrics["best_epoch"] == out["best_epoch"]
    assert metrics["epochs"][0]["train"]["loss"] == out["history"][0]["train"]["loss"]

    results = json.loads((tmp_path / "results.json").read_text())
    assert TrainConfig.from_dict(results["config"]) == cfg
    assert results["model"]["model"] == "_test_toy_gru"
    assert results["test"] == out["test"] and results["valid"] == out["valid"]
    assert results["versions"]["torch"] == torch.__version__
    assert results["split"]["users_evaluated"] == len(split.test_targets)

    png = (tmp_path / "training_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]

    # the saved best model reloads to the same scores
    reloaded = SequentialRecommender.from_pretrained(tmp_path / "best_model")
    assert isinstance(reloaded, ToyGRU)
    model.eval(), reloaded.eval()
    with torch.no_grad():
        assert torch.equal(model.score(split.test_inputs), reloaded.score(split.test_inputs))
    trainer = Trainer(make_model(seed=5), split, cfg)
    assert isinstance(trainer.load_best_model(), ToyGRU)


def test_checkpoint_write_is_atomic(split, tmp_path, monkeypatch):
    trainer = Trainer(make_model(), split, config(epochs=1, output_dir=tmp_path))
    trainer.fit()
    path = tmp_path / "checkpoint.pt"
    before = path.read_bytes()
    metrics_before = (tmp_path / "metrics.json").read_bytes()
    trainer.epoch = 17  # a different state that must NOT reach the disk

    def broken_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="simulated"):
        trainer.save_checkpoint()
    with pytest.raises(OSError, match="simulated"):
        trainer._write_epoch_files()
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert (tmp_path / "metrics.json").read_bytes() == metrics_before
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_curve_skipped_without_matplotlib(tmp_path, monkeypatch, caplog):
    import kgseqgraph.training.curves as curves

    history = [{"epoch": 1, "train": {"loss": 2.0}, "valid": {"NDCG@10": 0.1}},
               {"epoch": 2, "train": {"loss": 1.5}, "valid": None}]
    assert plot_training_curve(history, tmp_path / "c.png", best_epoch=1) == tmp_path / "c.png"
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    monkeypatch.setattr(curves, "_warned_missing", False)
    with caplog.at_level(logging.WARNING, logger="kgseqgraph"):
        assert plot_training_curve(history, tmp_path / "d.png") is None
    assert "matplotlib" in caplog.text and not (tmp_path / "d.png").exists()


def test_model_without_parameters_cannot_fit(split):
    from kgseqgraph.models import Popularity, PopularityConfig

    pop = Popularity(PopularityConfig(NUM_ITEMS, max_len=6)).fit(split.train)
    trainer = Trainer(pop, split, config())
    with pytest.raises(ValueError, match="no trainable parameters"):
        trainer.fit()
    got = trainer.evaluate("valid")["NDCG@10"]
    scores = pop.score(split.valid_inputs)
    want = brute_force_ndcg(scores, split.valid_inputs, split.valid_targets, 10)
    assert got == pytest.approx(want, abs=1e-12)


def test_seed_everything_seeds_all():
    import random

    import numpy as np

    seed_everything(11)
    a = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    seed_everything(11)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == a
    with pytest.raises(ValueError):
        seed_everything(1.5)


def test_resume_accepts_configs_from_before_new_fields_and_compute_only_changes():
    """A checkpoint written before a config field existed still describes the same model (the
    field takes its default); compute-only fields (KATRec's kg_recompute) may change; a real
    difference is refused, naming the field."""
    from kgseqgraph.datasets import Synthetic
    from kgseqgraph.models import KATRec, SASRec
    from kgseqgraph.training.checkpoint import model_mismatch as _model_mismatch

    sas = SASRec.from_dataset(30, max_len=8, hidden_size=16)
    old = sas.config_dict()
    for new_field in ("prediction_head", "head_layer_norm_eps"):
        old["config"].pop(new_field)
    assert _model_mismatch(sas, old) is None
    other = sas.config_dict()
    other["config"]["hidden_size"] = 32
    assert "hidden_size: checkpoint 32, now 16" in _model_mismatch(sas, other)
    assert "model 'bert4rec'" in _model_mismatch(sas, {**sas.config_dict(), "model": "bert4rec"})

    data = Synthetic(num_users=40, num_items=20, num_entities=6, num_relations=2, seq_len=6,
                     seed=0)[0]
    kat = KATRec.from_dataset(data, max_len=8, hidden_size=16, kg_dim=8, kg_hidden=[8])
    saved = kat.config_dict()
    saved["config"]["kg_recompute"] = True
    assert _model_mismatch(kat, saved) is None
    no_graph = {k: v for k, v in kat.config_dict().items() if k != "graph"}
    assert _model_mismatch(kat, no_graph) is None  # written before fingerprints: unknown
    moved = kat.config_dict()
    moved["graph"] = {**moved["graph"], "sha256": "0" * 64}
    assert _model_mismatch(kat, moved) == ("trained on another graph: same node and edge counts, "
                                           "but different edges or node order")
