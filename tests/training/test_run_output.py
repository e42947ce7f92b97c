"""What a training run shows and writes (issue 16): no warning from the progress bar, the
dataset recorded in results.json and beside the best model, a curve whose loss axis holds only
losses and whose epoch axis has whole numbers, files with the user's umask."""
from __future__ import annotations

import json
import os
import stat
import warnings

import pytest
import torch

from kgseqgraph.data import leave_one_out
from kgseqgraph.datasets import Synthetic
from kgseqgraph.models.sequential import SASRec
from kgseqgraph.training import TrainConfig, Trainer
from kgseqgraph.training.curves import training_curve_figure
from kgseqgraph.training.run_files import DATASET_INFO_NAME


@pytest.fixture(scope="module")
def graph():
    return Synthetic(num_users=60, num_items=30, num_entities=6, num_relations=2, seq_len=8,
                     seed=2)[0]


def trainer(graph, tmp_path, **kw) -> Trainer:
    torch.manual_seed(0)
    model = SASRec.from_dataset(30, max_len=6, hidden_size=8,
                                encoder_kwargs={"num_layers": 1, "num_heads": 2})
    cfg = dict(epochs=2, batch_size=16, device="cpu", progress=False, output_dir=str(tmp_path),
               max_steps_per_epoch=2)
    cfg.update(kw)
    return Trainer(model, leave_one_out(graph), TrainConfig(**cfg), data=graph)


def test_progress_bar_does_not_warn(graph, tmp_path, capsys, monkeypatch):
    """The bar's loss was ``float()`` of a tensor that requires grad: a UserWarning every run."""
    # a bar is drawn only at a terminal outside CI; here stderr is captured, so say it is one
    monkeypatch.setattr("kgseqgraph.training.config.progress_enabled", lambda p: p is not False)
    t = trainer(graph, tmp_path, progress=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t.fit()
    assert [str(w.message) for w in caught if "requires_grad" in str(w.message)] == []
    assert "epoch 1/2" in capsys.readouterr().err  # the bar did run


def test_results_and_best_model_record_the_dataset(graph, tmp_path):
    t = trainer(graph, tmp_path)
    t.fit()
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["dataset"]["name"] == "synthetic"
    assert results["dataset"]["load_kwargs"]["seed"] == 2
    sidecar = json.loads((tmp_path / "best_model" / DATASET_INFO_NAME).read_text())
    assert sidecar == results["dataset"]
    line = t.epoch_summary(t.history[-1])
    assert line.startswith("epoch 2/2  loss ") and "valid NDCG@10" in line and line.endswith("s")


def test_curve_keeps_grad_norm_off_the_loss_axis_and_epochs_whole():
    from matplotlib.ticker import MaxNLocator

    history = [{"epoch": e, "train": {"loss": 9.0 - e, "kge": 1.0 / e, "grad_norm": 40.0 * e},
                "valid": {"NDCG@10": 0.1 * e}} for e in (1, 2, 3)]
    fig = training_curve_figure(history, best_epoch=3)
    ax_loss, ax_valid, ax_grad = fig.axes
    assert [ln.get_label() for ln in ax_loss.get_lines()] == ["loss", "kge"]
    assert [ln.get_label() for ln in ax_grad.get_lines()] == ["grad_norm (right axis)"]
    assert ax_grad.get_ylabel() == "grad_norm"
    for ax in (ax_loss, ax_valid):
        locator = ax.xaxis.get_major_locator()
        assert isinstance(locator, MaxNLocator) and locator._integer
        fig.canvas.draw()
        assert all(float(t).is_integer() for t in ax.get_xticks())


def test_run_files_get_the_umask_not_0600(graph, tmp_path):
    old = os.umask(0o022)
    try:
        trainer(graph, tmp_path).fit()
    finally:
        os.umask(old)
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode)
             for p in tmp_path.rglob("*") if p.is_file()}
    assert "best_model/model.safetensors" in modes and "checkpoint.pt" in modes
    assert set(modes.values()) == {0o644}, modes
