"""Multi-process (DDP) training on CPU with the gloo backend.

The main test trains SASRec, BERT4Rec and KATRec (dropout 0) once in this process and once as two
``torchrun`` processes with the same global batch, and checks that the loss trajectories agree,
that the sharded evaluation equals the single-process one exactly, that only one set of run
files is written, and that a killed 2-process run resumes to the uninterrupted result.

Run as a script (``python -m torch.distributed.run --nproc_per_node=2 <this file> OUT``) it is the
per-rank worker: it runs :func:`run_all` and rank 0 writes the results to ``OUT/result.json``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from kgseqgraph.data import leave_one_out
from kgseqgraph.data.batching import training_windows
from kgseqgraph.datasets.synthetic import make_synthetic
from kgseqgraph.models.factory import build_model
from kgseqgraph.training import TrainConfig, Trainer, seed_everything
from kgseqgraph.training.distributed import DistributedContext, is_main_process

NO_DROPOUT = {"hidden_dropout": 0.0, "attn_dropout": 0.0, "num_layers": 1}
MODELS: dict[str, dict[str, Any]] = {
    "sasrec": {"hidden_size": 16, "max_len": 8, "encoder_kwargs": NO_DROPOUT},
    "bert4rec": {"hidden_size": 16, "max_len": 8, "encoder_kwargs": NO_DROPOUT, "mask_prob": 0.3},
    "katrec": {"max_len": 8, "encoder_kwargs": NO_DROPOUT, "mask_prob": 0.3,
               "kg_dim": 8, "kg_hidden": [4, 4], "kg_dropout": 0.0, "kge_batch_size": 32,
               "pretrain_bprmf_epochs": 1},
}
#: SASRec: one step an epoch, so the epoch losses are the per-step trajectory; the cloze models
#: run whole epochs (49 windows in batches of 14: the last batch, 7 windows, splits 4 / 3).
STEPS = {"sasrec": 1, "bert4rec": None, "katrec": None}
EPOCHS = 4


def _split():
    data = make_synthetic(num_users=61, num_items=40, num_entities=12, num_relations=3, seq_len=6,
                          seed=0)
    return data, leave_one_out(data)


def _config(name: str, output_dir: Path) -> TrainConfig:
    return TrainConfig(seed=0, epochs=EPOCHS, batch_size=14, lr=1e-2, patience=None,
                       eval_every=EPOCHS, ks=(5, 10), sampled_negatives=10, device="cpu",
                       num_threads=1, output_dir=str(output_dir),
                       max_steps_per_epoch=STEPS[name])


class _Kill(Exception):
    pass


def _kill_after_epoch_2(trainer: Trainer, record: dict[str, Any]) -> None:
    if record["epoch"] == 2:
        raise _Kill


def run_all(root: Path) -> dict[str, Any]:
    """Train every model of :data:`MODELS` (and a killed-and-resumed SASRec) under ``root``;
    returns what the test compares. Every rank of a multi-process run returns the same."""
    torch.set_num_threads(1)
    data, split = _split()
    out: dict[str, Any] = {}
    for name, options in MODELS.items():
        seed_everything(0)  # the same initial weights on every rank
        trainer = Trainer(build_model(name, split.train_graph, **options), split,
                          _config(name, root / name), data=data)
        before = trainer.evaluate("valid")  # sharded by users when there are several ranks
        result = trainer.fit()
        out[name] = {"before": before, "valid": result.valid, "test": result.test,
                     "train": [r["train"] for r in result.history],
                     "samples": [r["samples"] for r in result.history],
                     "world_size": trainer.distributed.world_size}
    # a run killed after epoch 2 and resumed from its checkpoint
    seed_everything(0)
    cfg = _config("sasrec", root / "resumed")
    model = build_model("sasrec", data, **MODELS["sasrec"])
    try:
        Trainer(model, split, cfg, data=data, callbacks=[_kill_after_epoch_2]).fit()
    except _Kill:
        pass
    seed_everything(123)  # resuming must not depend on the fresh process's RNG
    model = build_model("sasrec", data, **MODELS["sasrec"])
    result = Trainer(model, split, cfg, data=data, resume=True).fit()
    out["resumed"] = {"train": [r["train"] for r in result.history], "test": result.test}
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[dict[str, Any], dict[str, Any], Path]:
    root = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "true",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[2]),
                                                      os.environ.get("PYTHONPATH")]))}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.Popen(  # started first: the two ranks run while this process trains
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         __file__, str(root / "ddp")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        single = run_all(root / "single")
        stdout, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:  # torchrun stops its workers on SIGTERM
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert proc.returncode == 0, stdout[-5000:]
    ddp = json.loads((root / "ddp" / "result.json").read_text())
    return single, ddp, root


@pytest.mark.parametrize("name", list(MODELS))
def test_two_processes_follow_the_single_process_trajectory(runs, name):
    single, ddp, _ = runs
    assert single[name]["world_size"] == 1 and ddp[name]["world_size"] == 2
    assert ddp[name]["samples"] == single[name]["samples"]  # the same global batches
    one, two = single[name]["train"], ddp[name]["train"]
    assert [sorted(r) for r in two] == [sorted(r) for r in one]
    for key in one[0]:  # loss, rec_loss, grad_norm (and kge_loss for KATRec)
        a = torch.tensor([r[key] for r in one], dtype=torch.float64)
        b = torch.tensor([r[key] for r in two], dtype=torch.float64)
        torch.testing.assert_close(b, a, rtol=2e-5, atol=1e-6, msg=f"{name} {key}: {a} vs {b}")
    assert len(set(r["loss"] for r in one)) == EPOCHS  # the trajectory moves


@pytest.mark.parametrize("name", list(MODELS))
def test_sharded_evaluation_equals_single_process(runs, name):
    single, ddp, _ = runs
    before = single[name]["before"]
    # 61 validation users split 31 / 30; full-ranking and sampled-10 metrics, bit for bit
    assert any(k.startswith("sampled-10/") for k in before)
    assert ddp[name]["before"] == before
    for stage in ("valid", "test"):  # trained weights agree to float rounding
        assert ddp[name][stage].keys() == single[name][stage].keys()
        for key, value in single[name][stage].items():
            assert ddp[name][stage][key] == pytest.approx(value, abs=1e-6), (stage, key)


def test_rank_0_writes_the_run_files_and_resume_works(runs):
    single, ddp, root = runs
    run = root / "ddp" / "sasrec"
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["best_model", "checkpoint.pt", "metrics.json", "results.json", "training_curve.png"])
    results = json.loads((run / "results.json").read_text())
    assert results["world_size"] == 2 and results["test"] == ddp["sasrec"]["test"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert [e["train"] for e in metrics["epochs"]] == ddp["sasrec"]["train"]
    # killed after epoch 2, resumed from rank 0's checkpoint: the uninterrupted 2-process run
    assert ddp["resumed"]["train"] == ddp["sasrec"]["train"]
    assert ddp["resumed"]["test"] == ddp["sasrec"]["test"]
    assert single["resumed"]["train"] == single["sasrec"]["train"]


# ------------------------------------------------------------------- in-process unit tests
def test_the_data_gives_an_uneven_last_batch():
    _, split = _split()
    assert len(training_windows(split.train, 8)) % 14 == 7  # see STEPS


def test_batch_size_must_be_a_multiple_of_the_world_size():
    data, split = _split()
    model = build_model("sasrec", data, **MODELS["sasrec"])
    with pytest.raises(ValueError, match="batch_size=15 .* multiple of 2"):
        Trainer(model, split, TrainConfig(batch_size=15, device="cpu"),
                distributed=DistributedContext(rank=0, world_size=2))


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("name,smoothing", [("bert4rec", 0.0), ("katrec", 0.0), ("sasrec", 0.0),
                                            ("bert4rec", 0.1)])
def test_shard_losses_average_to_the_global_loss(name, smoothing, world_size):
    """The ``shard_batch`` contract behind the DDP equality: the mean over ranks of the shards'
    losses and gradients is the global batch's, even when the shards hold different numbers of
    masked tokens (13 rows: uneven blocks); with label smoothing too."""
    torch.set_num_threads(1)
    data, split = _split()
    seed_everything(0)
    model = build_model(name, split.train_graph, label_smoothing=smoothing, **MODELS[name])
    windows = training_windows(split.train, 8)
    batch = model.training_batch(windows.select(torch.arange(13)),
                                 torch.Generator().manual_seed(1))

    def loss_and_grads(b):
        model.zero_grad()
        loss = model.loss(b)["loss"]
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    loss, grads = loss_and_grads(batch)
    parts = [loss_and_grads(model.shard_batch(batch, r, world_size)) for r in range(world_size)]
    if name != "sasrec":  # cloze: the blocks really hold different numbers of targets
        counts = {int((model.shard_batch(batch, r, world_size)["targets"] >= 0).sum())
                  for r in range(world_size)}
        assert len(counts) > 1
    torch.testing.assert_close(sum(p[0] for p in parts) / world_size, loss)
    for i, g in enumerate(grads):
        torch.testing.assert_close(sum(p[1][i] for p in parts) / world_size, g, atol=2e-6,
                                   rtol=1e-4)


def test_shard_range_covers_users_in_rank_order():
    for n in (0, 1, 5, 61):
        blocks = [DistributedContext(rank=r, world_size=3).shard_range(n) for r in range(3)]
        assert blocks[0][0] == 0 and blocks[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
        assert max(e - s for s, e in blocks) - min(e - s for s, e in blocks) <= 1


if __name__ == "__main__":  # one rank of the torchrun launch in the `runs` fixture
    result = run_all(Path(sys.argv[1]))
    if is_main_process():
        (Path(sys.argv[1]) / "result.json").write_text(json.dumps(result))
