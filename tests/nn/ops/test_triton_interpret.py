"""Triton kernels (forward and backward) run in Triton's interpreter on CPU vs the torch path.

``TRITON_INTERPRET=1`` is set per test with ``monkeypatch`` (and removed afterwards), so the rest of
the suite is unaffected. That is enough here even though Triton is already imported: our kernels
are kept as plain functions and wrapped for the interpreter at call time
(``kgseqgraph.nn.ops.triton_kernels.get_kernels``), not by ``@triton.jit`` at import time.
The interpreter executes every program of the grid in Python with numpy, so sizes stay small.

``test_triton_compile.py`` compiles the kernels ahead of time for real NVIDIA targets (no GPU
needed), through the same launchers, so a kernel that the interpreter accepts but the compiler
rejects still fails CI.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed (pip install triton)")

from kgseqgraph.nn.ops import (  # noqa: E402
    available_backends,
    ptr_to_index,
    segment_softmax,
    segment_softmax_aggregate,
)


@pytest.fixture(autouse=True)
def interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def make_ptr(counts: list[int]) -> torch.Tensor:
    ptr = torch.zeros(len(counts) + 1, dtype=torch.long)
    ptr[1:] = torch.tensor(counts).cumsum(0)
    return ptr


# empty segments, single edges, one segment spanning many kernel blocks (BLOCK_E = 64)
COUNTS = [0, 1, 3, 0, 3000, 2, 65, 0]
FP32 = dict(atol=1e-5, rtol=1e-4)


def test_dispatch_allows_triton_on_cpu_in_interpret_mode():
    assert "triton" in available_backends("cpu")
    # "auto" still picks the torch path on CPU
    ptr = make_ptr([2, 1])
    score = torch.randn(3)
    torch.testing.assert_close(segment_softmax(score, ptr),
                               segment_softmax(score, ptr, backend="triton"))


@pytest.mark.parametrize("heads", [None, 2])
def test_softmax_forward_backward(heads):
    g = torch.Generator().manual_seed(0)
    ptr = make_ptr(COUNTS)
    E = int(ptr[-1])
    shape = (E,) if heads is None else (E, heads)
    score0 = 5 * torch.randn(shape, generator=g)
    grad = torch.randn(shape, generator=g)
    res = {}
    for backend in ("torch", "triton"):
        s = score0.clone().requires_grad_()
        alpha = segment_softmax(s, ptr, backend=backend)
        alpha.backward(grad)
        res[backend] = (alpha.detach(), s.grad)
    torch.testing.assert_close(res["triton"][0], res["torch"][0], **FP32)
    torch.testing.assert_close(res["triton"][1], res["torch"][1], **FP32)


def test_softmax_sorted_index_without_ptr():
    g = torch.Generator().manual_seed(1)
    ptr = make_ptr([2, 0, 5, 1])
    index = ptr_to_index(ptr)
    score = torch.randn(8, generator=g)
    torch.testing.assert_close(segment_softmax(score, index=index, backend="triton"),
                               segment_softmax(score, ptr, backend="torch"), **FP32)
    with pytest.raises(ValueError, match="CSR order"):
        segment_softmax(score, index=index.flip(0), backend="triton")


@pytest.mark.parametrize("heads, D", [(None, 32), (2, 5), (None, 130)])
def test_aggregate_forward_backward(heads, D):
    # D=130 exercises two feature tiles in the forward kernel and three in the backward loop
    counts = COUNTS if D <= 32 else [0, 1, 70, 3]
    g = torch.Generator().manual_seed(2)
    ptr = make_ptr(counts)
    E, S = int(ptr[-1]), len(counts)
    shape = (E,) if heads is None else (E, heads)
    score0 = 3 * torch.randn(shape, generator=g)
    x0 = torch.randn(shape + (D,), generator=g)
    gout = torch.randn((S,) + shape[1:] + (D,), generator=g)
    galpha = torch.randn(shape, generator=g)
    res = {}
    for backend in ("torch", "triton"):
        s, x = score0.clone().requires_grad_(), x0.clone().requires_grad_()
        out, alpha = segment_softmax_aggregate(s, x, ptr, return_alpha=True, backend=backend)
        ((out * gout).sum() + (alpha * galpha).sum()).backward()
        res[backend] = (out.detach(), alpha.detach(), s.grad, x.grad)
    for got, want in zip(res["triton"], res["torch"]):
        torch.testing.assert_close(got, want, **FP32)
    empty = torch.tensor(counts) == 0
    assert torch.equal(res["triton"][0][empty], torch.zeros_like(res["triton"][0][empty]))


def test_aggregate_score_only_gradient_and_no_alpha():
    g = torch.Generator().manual_seed(3)
    ptr = make_ptr([3, 0, 4])
    score0, x = torch.randn(7, generator=g), torch.randn(7, 6, generator=g)
    grads = []
    for backend in ("torch", "triton"):
        s = score0.clone().requires_grad_()
        segment_softmax_aggregate(s, x, ptr, backend=backend).pow(2).sum().backward()
        grads.append(s.grad)
    torch.testing.assert_close(grads[1], grads[0], **FP32)


def test_extreme_and_masked_scores():
    ptr = make_ptr([3, 2, 2])
    score = torch.tensor([1e4, -1e4, 1e4 - 1.0, -1e4, -1e4 + 2.0,
                          float("-inf"), float("-inf")], requires_grad=True)
    x = torch.randn(7, 4, generator=torch.Generator().manual_seed(4), requires_grad=True)
    out, alpha = segment_softmax_aggregate(score, x, ptr, return_alpha=True, backend="triton")
    out.sum().backward()
    ref_out, ref_alpha = segment_softmax_aggregate(score.detach(), x.detach(), ptr,
                                                   return_alpha=True, backend="torch")
    torch.testing.assert_close(out, ref_out, **FP32)
    torch.testing.assert_close(alpha, ref_alpha, **FP32)
    assert torch.equal(out[2], torch.zeros(4)) and torch.equal(alpha[5:], torch.zeros(2))
    assert torch.isfinite(score.grad).all() and torch.isfinite(x.grad).all()
    a = segment_softmax(score.detach(), ptr, backend="triton")
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, ref_alpha, **FP32)


def test_masked_prefix_longer_than_a_block():
    """-inf scores filling the first block(s), then finite ones far below 0: the running max must
    stay the true max (-inf) until finite scores arrive, or exp underflows to an all-zero alpha."""
    ptr = make_ptr([150, 3])
    score = torch.full((153,), float("-inf"))
    score[130:150] = -1e4 + torch.arange(20.0)
    score[150:] = torch.tensor([-5e3, -5e3 - 1.0, float("-inf")])
    x = torch.randn(153, 4, generator=torch.Generator().manual_seed(6))
    ref_out, ref_alpha = segment_softmax_aggregate(score, x, ptr, return_alpha=True,
                                                   backend="torch")
    assert ref_alpha[130:150].sum().item() == pytest.approx(1.0)
    out, alpha = segment_softmax_aggregate(score, x, ptr, return_alpha=True, backend="triton")
    torch.testing.assert_close(out, ref_out, **FP32)
    torch.testing.assert_close(alpha, ref_alpha, **FP32)
    torch.testing.assert_close(segment_softmax(score, ptr, backend="triton"), ref_alpha, **FP32)


@pytest.mark.parametrize("dtype, atol", [(torch.float16, 4e-3), (torch.bfloat16, 3e-2)],
                         ids=["fp16", "bf16"])
def test_half_precision_with_a_64_wide_feature_tile(dtype, atol):
    """float16 / bfloat16 inputs (float32 accumulation, one rounding on store) with D=64, the
    forward tile width the launcher picks for 33..64 features, against float64 on the same
    rounded inputs; atol relative to each tensor's largest entry."""
    g = torch.Generator().manual_seed(8)
    ptr = make_ptr([0, 1, 70, 5])
    E, S = int(ptr[-1]), 4
    score0 = (3 * torch.randn(E, generator=g)).to(dtype)
    x0 = torch.randn(E, 64, generator=g).to(dtype)
    gout = torch.randn(S, 64, generator=g).to(dtype)
    res = {}
    for backend, dt in (("triton", dtype), ("torch", torch.float64)):
        s = score0.to(dt, copy=True).requires_grad_()
        x = x0.to(dt, copy=True).requires_grad_()
        out = segment_softmax_aggregate(s, x, ptr, backend=backend)
        out.backward(gout.to(dt))
        res[backend] = (out.detach(), s.grad, x.grad)
    assert res["triton"][0].dtype == dtype
    for got, want in zip(res["triton"], res["torch"]):
        scale = float(want.abs().max())
        torch.testing.assert_close(got.double(), want, atol=atol * scale, rtol=atol)


def test_strided_segment_index():
    """The launchers make their inputs contiguous: row 1 of an ``[E, 2].t()`` edge index (stride
    2) as ``index`` gave NaN gradients before (the kernel reads ``seg`` as a raw pointer)."""
    g = torch.Generator().manual_seed(9)
    ptr = make_ptr([3, 0, 70])
    E = int(ptr[-1])
    index = torch.stack([torch.arange(E), ptr_to_index(ptr)], 1).t()[1]
    assert index.stride() == (2,)
    score0, x0 = torch.randn(E, generator=g), torch.randn(E, 4, generator=g)
    grads = []
    for backend in ("torch", "triton"):
        s, x = score0.clone().requires_grad_(), x0.clone().requires_grad_()
        segment_softmax_aggregate(s, x, ptr, index=index, backend=backend).pow(2).sum().backward()
        grads.append((s.grad, x.grad))
    for got, want in zip(grads[1], grads[0]):
        torch.testing.assert_close(got, want, **FP32)


def test_gradcheck_float64_in_interpreter():
    g = torch.Generator().manual_seed(5)
    ptr = make_ptr([2, 0, 3, 1])
    score = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda s, xx: segment_softmax_aggregate(s, xx, ptr, return_alpha=True, backend="triton"),
        (score, x))
    assert torch.autograd.gradcheck(lambda s: segment_softmax(s, ptr, backend="triton"), (score,))


def test_interpreter_when_env_set_before_triton_import():
    """CI may export TRITON_INTERPRET=1 for the whole run (Triton's stdlib then interpreted too)."""
    code = (
        "import os, torch, triton\n"
        "from triton.runtime.interpreter import InterpretedFunction\n"
        "import triton.language as tl\n"
        "assert isinstance(tl.standard.max, InterpretedFunction)\n"
        "from kgseqgraph.nn.ops import segment_softmax_aggregate as agg\n"
        "ptr = torch.tensor([0, 2, 2, 70]); g = torch.Generator().manual_seed(0)\n"
        "s0, x0 = torch.randn(70, generator=g), torch.randn(70, 3, generator=g)\n"
        "res = []\n"
        "for b in ('torch', 'triton'):\n"
        "    s, x = s0.clone().requires_grad_(), x0.clone().requires_grad_()\n"
        "    out = agg(s, x, ptr, backend=b); out.pow(2).sum().backward()\n"
        "    res.append((out.detach(), s.grad, x.grad))\n"
        "for a, b in zip(*res):\n"
        "    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)\n"
    )
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=env, cwd=Path(__file__).resolve().parents[3])
    assert proc.returncode == 0, proc.stderr[-3000:]
