"""Export on CUDA: a model on the GPU is exported (``torch.export`` / ONNX / TorchScript, each
verified by ``export_scorer`` against the eager scorer on the GPU), loaded back on the GPU and on
the CPU, and scores as the same weights do in eager mode on the CPU."""
from __future__ import annotations

import copy

import pytest
import torch
from cudatest import assert_close_scaled, build, size

from kgseqgraph.data import leave_one_out
from kgseqgraph.data.batching import training_windows
from kgseqgraph.datasets.synthetic import make_synthetic
from kgseqgraph.export import export_scorer, load_exported

pytestmark = pytest.mark.cuda

SMALL = {"hidden_size": 32, "max_len": 10,
         "encoder_kwargs": {"num_layers": 2, "num_heads": 2, "hidden_dropout": 0.1}}
KATREC = {**SMALL, "hidden_size": 40, "kg_dim": 16, "kg_hidden": [16, 8], "kge_batch_size": 64}
SEQS = [[3], [], list(range(1, 15)), [5, 5, 7], [9, 30, 2, 8]]


@pytest.fixture(scope="module")
def data():
    return make_synthetic(num_users=size(300, 80), num_items=size(200, 50),
                          num_entities=size(40, 15), num_relations=3, seq_len=10, seed=1)


def trained(name, data, device):
    """A model moved off its initialisation by a few Adam steps on ``device``, in eval mode."""
    torch.manual_seed(0)
    split = leave_one_out(data)
    model = build(name, split, data, **(KATREC if name == "katrec" else SMALL)).to(device)
    windows = training_windows(split.train, model.config.max_len)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(5):
        batch = model.training_batch(windows.select(torch.randperm(len(windows),
                                                                    generator=g)[:32]), g)
        loss = model.loss({k: v.to(device) for k, v in batch.items()})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


CASES = [("sasrec", "pt2"), ("katrec", "pt2"), ("katrec", "onnx"), ("sasrec", "torchscript")]


@pytest.mark.parametrize("name, fmt", CASES, ids=[f"{n}-{f}" for n, f in CASES])
def test_export_from_the_gpu(device, data, tmp_path, name, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    model = trained(name, data, device)
    cpu_model = copy.deepcopy(model).to("cpu")
    path = export_scorer(model, tmp_path / f"scorer.{fmt}", fmt)  # verified on the device
    exported = load_exported(path)
    assert exported.metadata["device"].startswith(device.type)
    items = exported.pad(SEQS)
    with torch.no_grad():
        want = cpu_model.scorer()(items).double()  # eager, CPU, the same weights
    got = exported(items)
    if fmt != "onnx":  # ONNX Runtime (CPU provider) returns host tensors
        assert got.device.type == device.type
    assert_close_scaled(got, want, torch.float32, f"{name} {fmt} exported on the device",
                        factor=5)
    if fmt == "pt2":  # the same file moved to the CPU at load time
        on_cpu = load_exported(path, device="cpu")
        got_cpu = on_cpu(items)
        assert got_cpu.device.type == "cpu"
        assert_close_scaled(got_cpu, want, torch.float32, f"{name} pt2 loaded on the CPU",
                            factor=5)
