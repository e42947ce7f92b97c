"""Catalogue cross-entropy in blocks: the value and gradients of ``F.cross_entropy``."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kgseqgraph.nn.losses import (
    DEFAULT_CPU_BLOCK_BYTES,
    DEFAULT_MAX_LOGIT_BYTES,
    catalogue_cross_entropy,
)


def _case(m=37, n=53, d=8, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(m, d, dtype=dtype, generator=g).requires_grad_()
    w = torch.randn(n, d, dtype=dtype, generator=g).requires_grad_()
    y = torch.randint(0, n, (m,), generator=g)
    return h, w, y


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("block_rows", [1, 5, 36])
def test_blocked_equals_cross_entropy(reduction, block_rows):
    h, w, y = _case()
    ref = F.cross_entropy(h @ w.t(), y, reduction=reduction)
    ref_gh, ref_gw = torch.autograd.grad(ref * 1.7, (h, w))
    budget = 2 * block_rows * 53 * 8  # float64 logits + one temporary: block_rows rows a block
    out = catalogue_cross_entropy(h, w, y, reduction, max_logit_bytes=budget)
    gh, gw = torch.autograd.grad(out * 1.7, (h, w))
    assert torch.allclose(out, ref, rtol=1e-12, atol=1e-12)
    assert torch.allclose(gh, ref_gh, rtol=1e-10, atol=1e-12)
    assert torch.allclose(gw, ref_gw, rtol=1e-10, atol=1e-12)


def test_within_budget_is_exactly_cross_entropy():
    h, w, y = _case(dtype=torch.float32)
    assert 37 * 53 * 4 <= DEFAULT_MAX_LOGIT_BYTES
    assert torch.equal(catalogue_cross_entropy(h, w, y), F.cross_entropy(h @ w.t(), y))
    assert torch.equal(catalogue_cross_entropy(h, w, y, max_logit_bytes=None),
                       F.cross_entropy(h @ w.t(), y))


def test_float32_blocked_close_and_gradcheck():
    h, w, y = _case(dtype=torch.float32)
    ref = F.cross_entropy(h @ w.t(), y)
    out = catalogue_cross_entropy(h, w, y, max_logit_bytes=4 * 53 * 4)
    assert torch.allclose(out, ref, rtol=1e-6)
    h, w, y = _case(m=9, n=11, d=4)
    assert torch.autograd.gradcheck(
        lambda a, b: catalogue_cross_entropy(a, b, y, max_logit_bytes=2 * 11 * 8), (h, w))


def test_only_weight_needs_grad_and_errors():
    h, w, y = _case()
    h = h.detach()
    out = catalogue_cross_entropy(h, w, y, max_logit_bytes=3 * 53 * 8)
    (gw,) = torch.autograd.grad(out, (w,))
    (ref,) = torch.autograd.grad(F.cross_entropy(h @ w.t(), y), (w,))
    assert torch.allclose(gw, ref, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="reduction"):
        catalogue_cross_entropy(h, w, y, reduction="none")
    with pytest.raises(ValueError, match="hidden"):
        catalogue_cross_entropy(h, w[:, :3], y)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("budget", [None, 2 * 5 * 53 * 8])  # whole logits / blocks of 5 rows
def test_label_smoothing_equals_torch_label_smoothing(reduction, budget):
    """Value and gradients of ``F.cross_entropy(..., label_smoothing=0.1)`` on both paths (the
    blocked one adds the smoothing term without logits)."""
    h, w, y = _case()
    ref = F.cross_entropy(h @ w.t(), y, reduction=reduction, label_smoothing=0.1)
    assert not torch.allclose(ref, F.cross_entropy(h @ w.t(), y, reduction=reduction))
    ref_grads = torch.autograd.grad(ref * 1.3, (h, w))
    out = catalogue_cross_entropy(h, w, y, reduction, max_logit_bytes=budget,
                                  label_smoothing=0.1)
    grads = torch.autograd.grad(out * 1.3, (h, w))
    assert torch.allclose(out, ref, rtol=1e-12, atol=1e-12)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="label_smoothing"):
        catalogue_cross_entropy(h, w, y, label_smoothing=1.0)


def test_cpu_tensors_run_in_cache_sized_blocks():
    """On the CPU, logits above ``cpu_block_bytes`` go through the blocked path even within
    ``max_logit_bytes`` (a speed choice): same value and gradients to float rounding;
    ``cpu_block_bytes=None`` and ``max_logit_bytes=None`` keep the one-pass path, bit for bit."""
    h, w, y = _case(m=70, n=20_000, d=8, dtype=torch.float32)
    assert DEFAULT_CPU_BLOCK_BYTES < 70 * 20_000 * 4 <= DEFAULT_MAX_LOGIT_BYTES
    ref = F.cross_entropy(h @ w.t(), y)
    ref_grads = torch.autograd.grad(ref, (h, w))
    out = catalogue_cross_entropy(h, w, y)
    assert out.grad_fn.name() != ref.grad_fn.name()  # the blocked autograd function, not nll
    assert torch.allclose(out, ref, rtol=1e-6)
    for g, r in zip(torch.autograd.grad(out, (h, w)), ref_grads):  # float32 rounding
        assert (g - r).abs().max() <= 1e-5 * r.abs().max()
    for opt_out in ({"cpu_block_bytes": None}, {"max_logit_bytes": None}):
        one_pass = catalogue_cross_entropy(h, w, y, **opt_out)
        assert torch.equal(one_pass, ref) and one_pass.grad_fn.name() == ref.grad_fn.name()
    # a smaller block budget: smaller blocks, the same loss
    small = catalogue_cross_entropy(h, w, y, cpu_block_bytes=2 * 3 * 20_000 * 4)
    assert torch.allclose(small, ref, rtol=1e-6)
