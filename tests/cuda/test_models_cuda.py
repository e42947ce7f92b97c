"""SASRec, BERT4Rec and KATRec on CUDA: a training step against the float64 CPU step (loss and
every gradient), ``Trainer.fit`` and full-ranking / sampled evaluation on the device against the
same run on the CPU, scores of the same weights, and bf16 autocast (AMP) training.

Dropout is off, the FFN activation is GELU and KATRec's KG layers run with ``negative_slope=1``
so that nothing has a kink at 0 (a pre-activation within float32 rounding of a kink takes the
other branch on the other device: a legitimate difference that would make gradient comparisons
flaky).
"""
from __future__ import annotations

import copy

import pytest
import torch
from cudatest import assert_close_scaled, on_cpu, size
from cudatest import build as build_for

from kgseqgraph.data import leave_one_out
from kgseqgraph.data.batching import training_windows
from kgseqgraph.datasets.synthetic import make_synthetic
from kgseqgraph.nn.conv import KGAttentionConv
from kgseqgraph.training import TrainConfig, Trainer, seed_everything

pytestmark = pytest.mark.cuda

F32 = torch.float32
ENCODER = {"hidden_dropout": 0.0, "attn_dropout": 0.0, "num_layers": 2, "num_heads": 2,
           "activation": "gelu"}
MODELS = {
    "sasrec": {"hidden_size": 32, "max_len": 12, "encoder_kwargs": ENCODER},
    "bert4rec": {"hidden_size": 32, "max_len": 12, "encoder_kwargs": ENCODER, "mask_prob": 0.3},
    # KATRec's width: kg_dim + sum(kg_hidden) = 40 (the paper wiring reads e* directly)
    "katrec": {"hidden_size": 40, "max_len": 12, "encoder_kwargs": ENCODER, "mask_prob": 0.3,
               "kg_dim": 16, "kg_hidden": [16, 8], "kg_dropout": 0.0, "kge_batch_size": 64},
}
#: KATRec with the KG layers' bounded-memory path (relation projections recomputed in backward;
#: the gather-free torch aggregation on every device)
MODELS["katrec-recompute"] = {**MODELS["katrec"], "kg_recompute": True}
BATCH = 64


@pytest.fixture(scope="module")
def data_split():
    data = make_synthetic(num_users=size(800, 150), num_items=size(400, 60),
                          num_entities=size(80, 20), num_relations=4, seq_len=10, seed=0)
    return data, leave_one_out(data)


def build(name: str, data_split) -> torch.nn.Module:
    data, split = data_split
    seed_everything(0)
    model = build_for(name.split("-")[0], split, data, **MODELS[name])
    for module in model.modules():  # no kink in the KG aggregators (see the module docstring)
        if isinstance(module, KGAttentionConv):
            module.negative_slope = 1.0
    return model


def batch_of(model, split, seed: int = 0) -> dict:
    windows = training_windows(split.train, model.config.max_len)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(windows), generator=g)[:BATCH]
    return model.training_batch(windows.select(idx), g)


def to(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def loss_and_grads(model, batch, autocast: torch.device | None = None):
    """The losses (under bf16 autocast on ``autocast``'s device type when given) and the
    gradients (backward outside autocast, as PyTorch recommends)."""
    model.zero_grad(set_to_none=True)
    if autocast is None:
        losses = model.loss(batch)
    else:
        with torch.autocast(autocast.type, dtype=torch.bfloat16):
            losses = model.loss(batch)
    losses["loss"].backward()
    return ({k: v.detach() for k, v in losses.items()},
            {n: p.grad for n, p in model.named_parameters() if p.grad is not None})


@pytest.mark.parametrize("name", list(MODELS))
def test_training_step_matches_cpu_float64(device, data_split, name):
    data, split = data_split
    ref = build(name, data_split).double()
    model = copy.deepcopy(ref).to(device, F32)
    model.train(), ref.train()
    batch = batch_of(ref, split)
    want_losses, want = loss_and_grads(ref, batch)
    got_losses, got = loss_and_grads(model, to(batch, device))
    assert got_losses["loss"].device.type == device.type
    for k in want_losses:
        assert_close_scaled(got_losses[k], want_losses[k], F32, f"{name} {k}")
    assert got.keys() == want.keys() and len(want) > 0
    for n in want:
        assert_close_scaled(got[n], want[n], F32, f"{name} grad {n}")


def _config(device, out) -> TrainConfig:
    return TrainConfig(seed=0, epochs=2, batch_size=32, lr=3e-3, patience=None, eval_every=1,
                       ks=(5, 10), sampled_negatives=20, device=str(device), num_threads=1,
                       output_dir=str(out), max_steps_per_epoch=4, progress=False)


@pytest.mark.parametrize("name", list(MODELS))
def test_trainer_fit_and_full_ranking_evaluation_match_cpu(device, data_split, name, tmp_path):
    """Two short epochs on the device and on the CPU from the same weights and batches: the loss
    trajectories agree to float32 rounding (amplified a little by Adam), and the evaluation of
    identical weights on both devices gives the same full-ranking and sampled metrics (a rank
    may flip on a near-tie: at most 2 users' worth of difference)."""
    data, split = data_split
    cpu_model = build(name, data_split)
    dev_model = copy.deepcopy(cpu_model)
    runs = {}
    for where, model in (("cpu", cpu_model), ("dev", dev_model)):
        dev = "cpu" if where == "cpu" else device
        trainer = Trainer(model, split, _config(dev, tmp_path / where), data=data)
        result = trainer.fit()
        runs[where] = (trainer, result)
    (t_cpu, r_cpu), (t_dev, r_dev) = runs["cpu"], runs["dev"]
    assert next(t_dev.model.parameters()).device.type == device.type
    for a, b in zip(r_cpu.history, r_dev.history):
        for key in a["train"]:
            assert b["train"][key] == pytest.approx(a["train"][key], rel=1e-3, abs=1e-5), key
    assert (tmp_path / "dev" / "results.json").exists()
    # the same weights on both devices: identical metrics up to near-tie rank flips
    t_cpu.model.load_state_dict({k: v.cpu() for k, v in t_dev.model.state_dict().items()})
    users = len(split.targets("test"))
    m_cpu, m_dev = t_cpu.evaluate("test"), t_dev.evaluate("test")
    assert m_dev.keys() == m_cpu.keys() and any(k.startswith("sampled-20/") for k in m_dev)
    for k in m_cpu:
        assert m_dev[k] == pytest.approx(m_cpu[k], abs=2.0 / users), k
    # and the scores themselves
    t_cpu.model.eval(), t_dev.model.eval()
    inputs = split.test_inputs.select(torch.arange(min(users, 64)))
    with torch.no_grad():
        s_cpu = t_cpu.model.score(inputs).double()
        s_dev = t_dev.model.score(inputs)
    assert s_dev.device.type == device.type
    assert_close_scaled(s_dev, s_cpu, F32, f"{name} scores", factor=5)


@pytest.mark.parametrize("name", list(MODELS))
def test_bf16_autocast_training(device, data_split, name):
    """AMP: the loss under bf16 autocast is the float32 loss to bf16 accuracy, its gradient
    points the same way, and training under autocast lowers the loss of a fixed batch."""
    data, split = data_split
    model = build(name, data_split).to(device)
    ref = copy.deepcopy(model)
    model.train(), ref.train()
    batch = to(batch_of(model, split), device)
    amp_losses, amp_grads = loss_and_grads(model, batch, autocast=device)
    ref_losses, ref_grads = loss_and_grads(ref, batch)
    loss, want = float(amp_losses["loss"]), float(ref_losses["loss"])
    assert torch.isfinite(amp_losses["loss"]) and loss == pytest.approx(want, rel=3e-2)
    flat = torch.cat([amp_grads[n].float().flatten() for n in ref_grads])
    flat_ref = torch.cat([ref_grads[n].flatten() for n in ref_grads])
    assert torch.isfinite(flat).all()
    cos = torch.nn.functional.cosine_similarity(flat, flat_ref, dim=0)
    assert cos > 0.98, f"{name}: gradient under autocast has cosine {float(cos):.4f} to fp32's"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(size(25, 12)):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = model.loss(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        out.backward()
        opt.step()
        losses.append(float(out))
    assert all(map(lambda v: v == v, losses)), losses  # no NaN
    assert losses[-1] < 0.9 * losses[0], f"{name}: autocast training did not learn: {losses}"


def test_katrec_runs_the_triton_kernels_on_cuda(device, data_split):
    """On CUDA, KATRec's KG layers take the fused Triton path ("auto"), not a silent fallback."""
    if on_cpu():
        pytest.skip("CPU mode: 'auto' is the torch path on the CPU")
    from kgseqgraph.nn.ops import triton_kernels as tk

    data, split = data_split
    model = build("katrec", data_split).to(device)
    calls = []
    real = tk.aggregate_fwd

    def spy(*a, **k):
        calls.append(a[1].device.type)
        return real(*a, **k)

    tk.aggregate_fwd = spy
    try:
        model.loss(to(batch_of(model, split), device))["loss"].backward()
    finally:
        tk.aggregate_fwd = real
    assert calls and set(calls) == {"cuda"}


def test_catalogue_cross_entropy_keeps_one_pass_on_the_gpu():
    """The CPU's cache-sized blocks are a CPU choice: on the GPU, logits within
    ``max_logit_bytes`` take the one-pass ``F.cross_entropy`` path, bit for bit."""
    import torch.nn.functional as F

    from cudatest import device_under_test

    from kgseqgraph.nn.losses import DEFAULT_CPU_BLOCK_BYTES, catalogue_cross_entropy

    dev = device_under_test()
    g = torch.Generator().manual_seed(0)
    h = torch.randn(70, 8, generator=g).to(dev)
    w = torch.randn(20_000, 8, generator=g).to(dev)
    y = torch.randint(0, 20_000, (70,), generator=g).to(dev)
    assert 70 * 20_000 * 4 > DEFAULT_CPU_BLOCK_BYTES
    out, ref = catalogue_cross_entropy(h, w, y), F.cross_entropy(h @ w.t(), y)
    if dev.type == "cpu":  # KGSEQGRAPH_CUDA_TESTS_ON_CPU: the CPU path blocks
        assert torch.allclose(out, ref, rtol=1e-6)
    else:
        assert torch.equal(out, ref)
