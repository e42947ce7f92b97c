"""Torch path of the segment ops against hand-computed values, a naive loop, PyG and gradcheck."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch_geometric.utils import softmax as pyg_softmax

from kgseqgraph.nn.ops import (
    available_backends,
    index_to_ptr,
    ptr_to_index,
    segment_softmax,
    segment_softmax_aggregate,
)


# ----------------------------------------------------------------------------------------------
# helpers: an independent per-segment reference
# ----------------------------------------------------------------------------------------------
def make_ptr(counts: list[int]) -> torch.Tensor:
    ptr = torch.zeros(len(counts) + 1, dtype=torch.long)
    ptr[1:] = torch.tensor(counts).cumsum(0)
    return ptr


def loop_softmax(score: torch.Tensor, ptr: torch.Tensor) -> torch.Tensor:
    """Per-segment ``torch.softmax`` in float64, one slice at a time."""
    out = torch.zeros_like(score, dtype=torch.float64)
    for s in range(ptr.numel() - 1):
        a, b = int(ptr[s]), int(ptr[s + 1])
        if b > a:
            out[a:b] = torch.softmax(score[a:b].double(), dim=0)
    return out


def loop_aggregate(score: torch.Tensor, x: torch.Tensor, ptr: torch.Tensor) -> torch.Tensor:
    """``out_s = sum_e softmax(score[s])_e x_e`` per segment, float64, via einsum on each slice."""
    S = ptr.numel() - 1
    out = torch.zeros((S,) + x.shape[1:], dtype=torch.float64)
    for s in range(S):
        a, b = int(ptr[s]), int(ptr[s + 1])
        if b > a:
            w = torch.softmax(score[a:b].double(), dim=0)
            out[s] = torch.einsum("e...,e...d->...d", w, x[a:b].double())
    return out


# segments: empty (first, middle, last), single-edge, and one longer than any kernel block (3000)
COUNTS = [0, 1, 3, 0, 3000, 2, 1, 7, 0]


@pytest.fixture
def csr():
    g = torch.Generator().manual_seed(0)
    ptr = make_ptr(COUNTS)
    E = int(ptr[-1])
    return ptr, E, g


# ----------------------------------------------------------------------------------------------
# hand-computed values
# ----------------------------------------------------------------------------------------------
def test_hand_computed_softmax_and_aggregate():
    # segment 0: scores [0, ln 3] -> alpha [1/4, 3/4]; segment 1 empty; segment 2: one edge -> 1
    score = torch.tensor([0.0, math.log(3.0), 7.0])
    x = torch.tensor([[4.0, 0.0], [0.0, 8.0], [1.0, -1.0]])
    ptr = torch.tensor([0, 2, 2, 3])
    alpha = segment_softmax(score, ptr, backend="torch")
    torch.testing.assert_close(alpha, torch.tensor([0.25, 0.75, 1.0]))
    out, a2 = segment_softmax_aggregate(score, x, ptr, return_alpha=True, backend="torch")
    torch.testing.assert_close(out, torch.tensor([[1.0, 6.0], [0.0, 0.0], [1.0, -1.0]]))
    torch.testing.assert_close(a2, alpha)


def test_hand_computed_gradient():
    # one segment, scores [0, 0] -> alpha [.5, .5]; out = (x0 + x1)/2; L = <g, out>, g = [1]
    # dL/dx_e = alpha_e g = .5; dL/dpi_e = alpha_e(<g, x_e> - <g, out>) = .5 * (x_e - mean)
    score = torch.zeros(2, requires_grad=True)
    x = torch.tensor([[2.0], [6.0]], requires_grad=True)
    out = segment_softmax_aggregate(score, x, torch.tensor([0, 2]), backend="torch")
    out.sum().backward()
    torch.testing.assert_close(out.detach(), torch.tensor([[4.0]]))
    torch.testing.assert_close(x.grad, torch.tensor([[0.5], [0.5]]))
    torch.testing.assert_close(score.grad, torch.tensor([-1.0, 1.0]))


# ----------------------------------------------------------------------------------------------
# against the loop reference and PyG
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("heads", [None, 3])
def test_softmax_matches_loop_and_pyg(csr, dtype, heads):
    ptr, E, g = csr
    shape = (E,) if heads is None else (E, heads)
    score = (4 * torch.randn(shape, generator=g)).to(dtype)
    alpha = segment_softmax(score, ptr, backend="torch")
    assert alpha.shape == score.shape and alpha.dtype == dtype
    tol = dict(atol=1e-6, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(alpha.double(), loop_softmax(score, ptr), **tol)
    index = ptr_to_index(ptr, E)
    torch.testing.assert_close(alpha, pyg_softmax(score, index, num_nodes=len(COUNTS)), **tol)
    # per-segment sums are one for non-empty segments
    sums = torch.zeros((len(COUNTS),) + shape[1:], dtype=dtype).index_add_(0, index, alpha)
    expect = (torch.tensor(COUNTS) > 0).to(dtype)
    torch.testing.assert_close(sums, expect.view(-1, *([1] * (len(shape) - 1))).expand_as(sums),
                               **tol)


def test_softmax_with_unsorted_index_equals_ptr_path(csr):
    ptr, E, g = csr
    score = torch.randn(E, 2, generator=g)
    index = ptr_to_index(ptr, E)
    perm = torch.randperm(E, generator=g)
    by_index = segment_softmax(score[perm], index=index[perm], num_segments=len(COUNTS),
                               backend="torch")
    by_ptr = segment_softmax(score, ptr, backend="torch")
    torch.testing.assert_close(by_index, by_ptr[perm])
    # num_segments defaults to index.max() + 1 (trailing empty segment then absent; same alphas)
    torch.testing.assert_close(segment_softmax(score[perm], index=index[perm]), by_ptr[perm])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("heads", [None, 2])
def test_aggregate_matches_loop_and_pyg(csr, dtype, heads):
    ptr, E, g = csr
    D = 5
    shape = (E,) if heads is None else (E, heads)
    score = (3 * torch.randn(shape, generator=g)).to(dtype)
    x = torch.randn(shape + (D,), generator=g).to(dtype)
    out, alpha = segment_softmax_aggregate(score, x, ptr, return_alpha=True, backend="torch")
    S = len(COUNTS)
    assert out.shape == (S,) + shape[1:] + (D,) and out.dtype == dtype
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(out.double(), loop_aggregate(score, x, ptr), **tol)
    torch.testing.assert_close(alpha.double(), loop_softmax(score, ptr), **tol)
    assert torch.all(out[torch.tensor(COUNTS) == 0] == 0)  # empty segments -> zero rows
    out_pyg = segment_softmax_aggregate(score, x, ptr, backend="pyg")
    torch.testing.assert_close(out, out_pyg, **tol)


@pytest.mark.parametrize("heads", [None, 2])
def test_aggregate_gradients_match_pyg_autograd(csr, heads):
    ptr, E, g = csr
    shape = (E,) if heads is None else (E, heads)
    score0 = 2 * torch.randn(shape, generator=g)
    x0 = torch.randn(shape + (6,), generator=g)
    gout = torch.randn((len(COUNTS),) + shape[1:] + (6,), generator=g)
    galpha = torch.randn(shape, generator=g)
    grads = {}
    for backend in ("torch", "pyg"):
        s, x = score0.clone().requires_grad_(), x0.clone().requires_grad_()
        out, alpha = segment_softmax_aggregate(s, x, ptr, return_alpha=True, backend=backend)
        ((out * gout).sum() + (alpha * galpha).sum()).backward()
        grads[backend] = (s.grad, x.grad)
    torch.testing.assert_close(grads["torch"][0], grads["pyg"][0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(grads["torch"][1], grads["pyg"][1], atol=1e-6, rtol=1e-5)


def test_aggregate_only_one_input_requires_grad(csr):
    ptr, E, g = csr
    score0, x0 = torch.randn(E, generator=g), torch.randn(E, 4, generator=g)
    ref_s, ref_x = score0.clone().requires_grad_(), x0.clone().requires_grad_()
    segment_softmax_aggregate(ref_s, ref_x, ptr, backend="pyg").pow(2).sum().backward()
    s = score0.clone().requires_grad_()
    segment_softmax_aggregate(s, x0, ptr, backend="torch").pow(2).sum().backward()
    torch.testing.assert_close(s.grad, ref_s.grad, atol=1e-5, rtol=1e-4)
    x = x0.clone().requires_grad_()
    segment_softmax_aggregate(score0, x, ptr, backend="torch").pow(2).sum().backward()
    torch.testing.assert_close(x.grad, ref_x.grad, atol=1e-6, rtol=1e-5)
    # gradient flowing only through the returned alpha
    s2 = score0.clone().requires_grad_()
    _, alpha = segment_softmax_aggregate(s2, x0, ptr, return_alpha=True, backend="torch")
    alpha.pow(2).sum().backward()
    s3 = score0.clone().requires_grad_()
    pyg_softmax(s3, ptr_to_index(ptr, E), num_nodes=len(COUNTS)).pow(2).sum().backward()
    torch.testing.assert_close(s2.grad, s3.grad, atol=1e-6, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# gradcheck (float64)
# ----------------------------------------------------------------------------------------------
SMALL = make_ptr([2, 0, 1, 4, 0, 3])


@pytest.mark.parametrize("heads", [None, 2])
def test_gradcheck_segment_softmax(heads):
    g = torch.Generator().manual_seed(1)
    E = int(SMALL[-1])
    shape = (E,) if heads is None else (E, heads)
    score = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: segment_softmax(s, SMALL, backend="torch"), (score,))
    index = ptr_to_index(SMALL, E).flip(0)
    assert torch.autograd.gradcheck(
        lambda s: segment_softmax(s, index=index, num_segments=6, backend="torch"), (score,))


@pytest.mark.parametrize("heads", [None, 2])
@pytest.mark.parametrize("return_alpha", [False, True])
def test_gradcheck_segment_softmax_aggregate(heads, return_alpha):
    g = torch.Generator().manual_seed(2)
    E = int(SMALL[-1])
    shape = (E,) if heads is None else (E, heads)
    score = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    x = torch.randn(shape + (3,), generator=g, dtype=torch.float64, requires_grad=True)

    def fn(s, xx):
        return segment_softmax_aggregate(s, xx, SMALL, return_alpha=return_alpha, backend="torch")

    assert torch.autograd.gradcheck(fn, (score, x))


# ----------------------------------------------------------------------------------------------
# numerics and edge cases
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_scores_stay_finite(dtype):
    ptr = make_ptr([3, 2, 1, 4])
    score = torch.tensor([1e4, -1e4, 1e4 - 1.0, -1e4, -1e4 + 2.0, 1e4, 0.0, 5e3, -5e3, 1e4],
                         dtype=dtype, requires_grad=True)
    x = torch.randn(10, 4, dtype=dtype, requires_grad=True)
    out, alpha = segment_softmax_aggregate(score, x, ptr, return_alpha=True, backend="torch")
    (out.sum() + alpha.sum()).backward()
    for t in (out, alpha, score.grad, x.grad):
        assert torch.isfinite(t).all()
    e = math.exp(-1.0)
    torch.testing.assert_close(alpha[:3].double(),
                               torch.tensor([1 / (1 + e), 0.0, e / (1 + e)], dtype=torch.float64))
    torch.testing.assert_close(alpha[3:5].double(), torch.softmax(torch.tensor([0.0, 2.0]), 0)
                               .double())
    torch.testing.assert_close(alpha[6:].double(), torch.tensor([0.0, 0.0, 0.0, 1.0],
                                                                dtype=torch.float64))


def test_all_masked_segment_gives_zero_weights():
    ptr = make_ptr([2, 2])
    score = torch.tensor([float("-inf"), float("-inf"), 0.0, 1.0], requires_grad=True)
    x = torch.ones(4, 3, requires_grad=True)
    out, alpha = segment_softmax_aggregate(score, x, ptr, return_alpha=True, backend="torch")
    out.sum().backward()
    assert torch.equal(alpha[:2], torch.zeros(2)) and torch.equal(out[0], torch.zeros(3))
    torch.testing.assert_close(out[1], torch.ones(3))
    assert torch.isfinite(score.grad).all() and torch.isfinite(x.grad).all()
    assert torch.equal(segment_softmax(score.detach(), ptr)[:2], torch.zeros(2))


def test_no_edges():
    ptr = torch.zeros(4, dtype=torch.long)
    score = torch.zeros(0, requires_grad=True)
    x = torch.zeros(0, 5, requires_grad=True)
    out = segment_softmax_aggregate(score, x, ptr, backend="torch")
    assert out.shape == (3, 5) and torch.equal(out, torch.zeros(3, 5))
    out.sum().backward()
    assert score.grad.shape == (0,) and x.grad.shape == (0, 5)
    assert segment_softmax(score.detach(), ptr).shape == (0,)


def test_non_contiguous_and_mixed_dtype_inputs(csr):
    ptr, E, g = csr
    score = torch.randn(E, generator=g, dtype=torch.float64)
    x = torch.randn(4, E, generator=g).t()  # [E, 4], non-contiguous, float32
    out = segment_softmax_aggregate(score, x, ptr, backend="torch")
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, loop_aggregate(score, x, ptr))


def test_ptr_index_round_trip():
    ptr = make_ptr([0, 2, 0, 3, 1])
    index = ptr_to_index(ptr)
    assert index.tolist() == [1, 1, 3, 3, 3, 4]
    assert torch.equal(index_to_ptr(index, 5), ptr)


# ----------------------------------------------------------------------------------------------
# input validation and dispatch
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ptr, match", [
    (torch.tensor([0, 2, 3]), "end at the number of edges"),
    (torch.tensor([1, 2, 4]), "start at 0"),
    (torch.tensor([0, 3, 2, 4]), "non-decreasing"),
    (torch.tensor([[0, 4]]), "1-D"),
    (torch.tensor([0.0, 4.0]), "integer"),
])
def test_bad_ptr_raises(ptr, match):
    with pytest.raises(ValueError, match=match):
        segment_softmax(torch.zeros(4), ptr)


def test_bad_shapes_raise():
    ptr = torch.tensor([0, 4])
    with pytest.raises(ValueError, match="score must be"):
        segment_softmax(torch.zeros(4, 2, 2), ptr)
    with pytest.raises(ValueError, match=r"x must be \[E, D\]"):
        segment_softmax_aggregate(torch.zeros(4), torch.zeros(4), ptr)
    with pytest.raises(ValueError, match="does not match score"):
        segment_softmax_aggregate(torch.zeros(4), torch.zeros(3, 2), ptr)
    with pytest.raises(ValueError, match="either ptr"):
        segment_softmax(torch.zeros(4))
    with pytest.raises(ValueError, match="lie in"):
        segment_softmax(torch.zeros(3), index=torch.tensor([0, 1, 5]), num_segments=2)
    with pytest.raises(ValueError, match="backend must be one of"):
        segment_softmax(torch.zeros(4), ptr, backend="cuda")


def test_dispatch_on_cpu(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    backends = available_backends("cpu")
    assert backends[:1] == ("torch",) and "pyg" in backends and "triton" not in backends
    with pytest.raises((ValueError, ImportError), match="triton"):
        segment_softmax(torch.zeros(4), torch.tensor([0, 4]), backend="triton")
    # auto on CPU is the torch path, which equals the explicit one
    score = torch.randn(4)
    torch.testing.assert_close(segment_softmax(score, torch.tensor([0, 1, 4])),
                               segment_softmax(score, torch.tensor([0, 1, 4]), backend="torch"))


def test_scatter_backend_when_installed(csr):
    pytest.importorskip("torch_scatter", reason="torch_scatter is an optional comparison backend")
    ptr, E, g = csr
    score, x = torch.randn(E, generator=g), torch.randn(E, 3, generator=g)
    torch.testing.assert_close(segment_softmax_aggregate(score, x, ptr, backend="scatter"),
                               segment_softmax_aggregate(score, x, ptr, backend="torch"))


def test_works_without_triton_installed():
    """A CPU-only install without Triton: block ``import triton`` in a fresh interpreter. This also
    shows the kernel module is imported lazily (importing it would fail here)."""
    code = (
        "import sys\n"
        "sys.modules['triton'] = None  # any 'import triton' now raises ImportError\n"
        "import torch\n"
        "from kgseqgraph.nn.ops import available_backends, segment_softmax_aggregate as agg\n"
        "assert 'triton' not in available_backends('cpu')\n"
        "assert 'triton' not in available_backends('cuda')\n"
        "s = torch.randn(3, requires_grad=True)\n"
        "agg(s, torch.randn(3, 2), torch.tensor([0, 3])).sum().backward()\n"
        "assert s.grad is not None\n"
        "try:\n"
        "    agg(s, torch.randn(3, 2), torch.tensor([0, 3]), backend='triton')\n"
        "except ImportError as e:\n"
        "    assert 'triton' in str(e)\n"
        "else:\n"
        "    raise AssertionError('backend=triton without triton must raise ImportError')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env, cwd=Path(__file__).resolve().parents[3])
    assert proc.returncode == 0, proc.stderr[-3000:]


# ----------------------------------------------------------------------------------------------
# gather-free path: x is a node table read through src
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("heads", [None, 2])
@pytest.mark.parametrize("return_alpha", [False, True])
def test_src_path_equals_gathered_path(csr, heads, return_alpha):
    ptr, E, g = csr
    N = 40
    src = torch.randint(0, N, (E,), generator=g)
    shape = (E,) if heads is None else (E, heads)
    score = torch.randn(shape, generator=g, requires_grad=True)
    x = torch.randn((N,) + shape[1:] + (5,), generator=g, requires_grad=True)
    a = segment_softmax_aggregate(score, x, ptr, return_alpha, src=src, backend="torch")
    b = segment_softmax_aggregate(score, x.index_select(0, src), ptr, return_alpha,
                                  backend="torch")
    a, b = (a, b) if return_alpha else ((a,), (b,))
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v)
    ws = [torch.randn(t.shape, generator=g) for t in a]
    ga = torch.autograd.grad(sum((t * w).sum() for t, w in zip(a, ws)), (score, x))
    gb = torch.autograd.grad(sum((t * w).sum() for t, w in zip(b, ws)), (score, x))
    for u, v in zip(ga, gb):
        torch.testing.assert_close(u, v)
    # every row of the node table that no edge reads gets a zero gradient
    unread = torch.ones(N, dtype=torch.bool)
    unread[src] = False
    assert torch.equal(ga[1][unread], torch.zeros_like(ga[1][unread]))


@pytest.mark.parametrize("heads", [None, 2])
def test_gradcheck_src_path(heads):
    g = torch.Generator().manual_seed(3)
    E = int(SMALL[-1])
    src = torch.randint(0, 4, (E,), generator=g)  # repeated sources: gradients accumulate
    shape = (E,) if heads is None else (E, heads)
    score = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    x = torch.randn((4,) + shape[1:] + (3,), generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda s, xx: segment_softmax_aggregate(s, xx, SMALL, True, src=src, backend="torch"),
        (score, x))


def test_src_path_saves_no_edge_by_dim_tensor():
    """Autograd keeps O(E) scalars, not an [E, D] gather: the point of the src path."""
    E, N, D, S = 50_000, 100, 64, 1_000
    g = torch.Generator().manual_seed(4)
    index = torch.sort(torch.randint(0, S, (E,), generator=g)).values
    ptr = index_to_ptr(index, S)
    src = torch.randint(0, N, (E,), generator=g)
    score = torch.randn(E, generator=g, requires_grad=True)
    x = torch.randn(N, D, generator=g, requires_grad=True)

    def saved_numel(**kw) -> int:
        sizes: list[int] = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t,
                                                      lambda t: t):
            segment_softmax_aggregate(score, kw.pop("x"), ptr, index=index, backend="torch", **kw)
        return max(sizes)

    assert saved_numel(x=x, src=src) < E * D // 8
    assert saved_numel(x=x.index_select(0, src)) >= E * D  # the gathered path keeps x[src]


def test_src_other_backends_gather_first(csr):
    ptr, E, g = csr
    src = torch.randint(0, 10, (E,), generator=g)
    score, x = torch.randn(E, generator=g), torch.randn(10, 3, generator=g)
    ref = segment_softmax_aggregate(score, x, ptr, src=src, backend="torch")
    torch.testing.assert_close(segment_softmax_aggregate(score, x, ptr, src=src, backend="pyg"),
                               ref)


def test_src_bad_input_raises(csr):
    ptr, E, _ = csr
    score, x = torch.randn(E), torch.randn(10, 3)
    with pytest.raises(ValueError, match="src must be an integer tensor"):
        segment_softmax_aggregate(score, x, ptr, src=torch.zeros(E + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="src must be an integer tensor"):
        segment_softmax_aggregate(score, x, ptr, src=torch.zeros(E))
    with pytest.raises(ValueError, match="x has 10 rows"):
        segment_softmax_aggregate(score, x, ptr, src=torch.full((E,), 10))
    with pytest.raises(ValueError, match="node table"):
        segment_softmax_aggregate(score, torch.randn(10), ptr, src=torch.zeros(E, dtype=torch.long))
