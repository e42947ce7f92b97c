"""Triton segment softmax / fused softmax-aggregation on CUDA against the float64 torch
reference on the CPU: forward and backward, float32 / float16 / bfloat16, empty, single-edge,
block-boundary, long and power-law (skewed) segments, scores of +-1e4 and -inf, one and several
heads, every feature-tile width the launcher picks; the gather-free ``src=`` paths; run-to-run
determinism.

The reference is computed from the *same rounded inputs* (the low-precision tensors upcast to
float64), so the tolerances (:data:`cudatest.TOL`) measure the kernels' own rounding only.
"""
from __future__ import annotations

import pytest
import torch
from cudatest import UNIT_ROUNDOFF, assert_close_scaled, on_cpu, size

from kgseqgraph.nn.ops import (
    available_backends,
    ptr_to_index,
    segment_softmax,
    segment_softmax_aggregate,
    segment_weighted_sum,
)
from kgseqgraph.nn.ops.dispatch import resolve_backend

pytestmark = pytest.mark.cuda

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def make_ptr(counts) -> torch.Tensor:
    ptr = torch.zeros(len(counts) + 1, dtype=torch.long)
    ptr[1:] = torch.as_tensor(counts).cumsum(0)
    return ptr


def power_law_counts(num_edges: int, num_segments: int, seed: int = 0) -> list[int]:
    """Pareto(1, 1.2) segment weights, edges spread by a multinomial: heavy tail, some empty."""
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(num_segments, generator=g, dtype=torch.float64).clamp_min(1e-12).pow(-1 / 1.2)
    owner = torch.multinomial(w, num_edges, replacement=True, generator=g)
    return torch.bincount(owner, minlength=num_segments).tolist()


#: segment layouts: empty / single / around BLOCK_E=64 boundaries; one long segment spanning
#: thousands of blocks; a power-law (skewed) graph with E/S = 10
GRAPHS = {
    "mixed": [0, 1, 3, 0, 63, 64, 65, 2, 0, 127, 128, 129, 0],
    "long": [2, size(200_000, 4_000), 0, 1, 7],
    "skewed": power_law_counts(size(300_000, 6_000), size(30_000, 600)),
}


def reference(score, x, ptr, gout, galpha):
    """float64 CPU torch path: (out, alpha, grad score, grad x)."""
    s = score.detach().cpu().double().requires_grad_()
    xx = x.detach().cpu().double().requires_grad_()
    out, alpha = segment_softmax_aggregate(s, xx, ptr.cpu(), return_alpha=True, backend="torch")
    torch.autograd.backward([out, alpha], [gout.cpu().double(), galpha.cpu().double()])
    return out.detach(), alpha.detach(), s.grad, xx.grad


def run(score, x, ptr, gout, galpha, backend="triton", src=None, return_alpha=True):
    s = score.detach().clone().requires_grad_()
    xx = x.detach().clone().requires_grad_()
    res = segment_softmax_aggregate(s, xx, ptr, return_alpha=return_alpha, src=src,
                                    backend=backend)
    if return_alpha:
        out, alpha = res
        torch.autograd.backward([out, alpha], [gout, galpha])
    else:
        out, alpha = res, None
        out.backward(gout)
    return out.detach(), None if alpha is None else alpha.detach(), s.grad, xx.grad


def inputs(counts, heads, D, dtype, device, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    ptr = make_ptr(counts)
    E, S = int(ptr[-1]), len(counts)
    hs = () if heads is None else (heads,)
    score = (scale * torch.randn((E, *hs), generator=g)).to(dtype)
    x = torch.randn((E, *hs, D), generator=g).to(dtype)
    gout = torch.randn((S, *hs, D), generator=g).to(dtype)
    galpha = torch.randn((E, *hs), generator=g).to(dtype)
    return [t.to(device) for t in (score, x, ptr, gout, galpha)]


def grad_score_bound(want, x, ptr, gout, galpha, dtype):
    r"""Per-edge error bound of :math:`\partial L/\partial \pi_e = \alpha_e(\langle g_s, x_e
    \rangle - \langle g_s, \mathrm{out}_s\rangle) + \alpha_e(\bar\alpha_e - \sum_s
    \alpha\bar\alpha)`: in ``dtype`` the stored ``out`` and :math:`\langle g_s,
    \mathrm{out}_s\rangle` (a ``bmm`` in ``dtype``) and :math:`\alpha` are rounded once, so
    the difference carries ``u * alpha * (sum_d |g x| + sum_d |g out| + |alpha_bar| + ...)``
    however small the result is (cancellation). Four unit roundoffs of that."""
    out, alpha = want[0], want[1]
    index = ptr_to_index(ptr.cpu(), alpha.size(0))
    g = gout.cpu().double().index_select(0, index)
    term = (g.abs() * x.cpu().double().abs()).sum(-1) \
        + (g.abs() * out.abs().index_select(0, index)).sum(-1)
    ga = galpha.cpu().double().abs()
    seg = torch.zeros_like(out[..., 0]).index_add_(0, index, alpha * ga).index_select(0, index)
    return 4 * UNIT_ROUNDOFF[dtype] * alpha * (term + ga + seg)


def check(got, want, dtype, what, counts, bound=None):
    names = ("out", "alpha", "grad_score", "grad_x")
    for name, g, w in zip(names, got, want):
        if g is None:
            continue
        assert_close_scaled(g, w, dtype, f"{what} {name}",
                            extra=bound if name == "grad_score" else None)
    empty = torch.as_tensor(counts) == 0
    assert torch.equal(got[0].cpu()[empty], torch.zeros_like(got[0].cpu()[empty])), \
        f"{what}: empty segments must give zero rows"


# ------------------------------------------------------------------------------ dispatch
def test_auto_selects_triton_on_cuda(device):
    if on_cpu():
        pytest.skip("CPU mode: 'auto' is the torch path on the CPU by design")
    assert "triton" in available_backends(device), "triton is not importable on this machine"
    assert resolve_backend("auto", device) == "triton"


# ------------------------------------------------------------------------------ softmax
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("graph", list(GRAPHS))
@pytest.mark.parametrize("heads", [None, 3])
def test_segment_softmax_forward_backward(device, graph, dtype, heads):
    counts = GRAPHS[graph]
    score, _, ptr, _, galpha = inputs(counts, heads, 1, dtype, device, scale=5.0)
    s = score.clone().requires_grad_()
    alpha = segment_softmax(s, ptr, backend="triton")
    alpha.backward(galpha)
    ref_s = score.cpu().double().requires_grad_()
    ref = segment_softmax(ref_s, ptr.cpu(), backend="torch")
    ref.backward(galpha.cpu().double())
    assert alpha.dtype == dtype and alpha.device.type == device.type
    assert_close_scaled(alpha, ref, dtype, f"{graph} alpha")
    assert_close_scaled(s.grad, ref_s.grad, dtype, f"{graph} grad_score")
    # every non-empty segment's weights sum to one (per head)
    sums = torch.segment_reduce(alpha.detach().cpu().double(), "sum", offsets=ptr.cpu(), axis=0)
    nonempty = torch.as_tensor(counts) > 0
    torch.testing.assert_close(sums[nonempty], torch.ones_like(sums[nonempty]),
                               atol=50 * torch.finfo(dtype).eps, rtol=0)


# ------------------------------------------------------------------------------ aggregate
#: (heads, D): the forward kernel's feature tile is 16 (D=5), 32, 64 and 128 (D=130: two tiles),
#: the backward's 16 / 32 / 64 (D=130: three loop steps); several heads with a tile of 16
SHAPES = [(None, 5), (None, 32), (None, 64), (None, 130), (3, 16)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("graph", list(GRAPHS))
@pytest.mark.parametrize("heads, D", SHAPES, ids=[f"H{h}-D{d}" for h, d in SHAPES])
def test_softmax_aggregate_forward_backward(device, graph, dtype, heads, D):
    counts = GRAPHS[graph]
    if graph == "skewed" and D > 64 and on_cpu():
        pytest.skip("CPU mode: the interpreter is too slow for this shape")
    args = inputs(counts, heads, D, dtype, device, seed=D)
    got = run(*args)
    assert got[0].dtype == dtype and got[0].device.type == device.type
    want = reference(*args)
    _, x, ptr, gout, galpha = args
    check(got, want, dtype, f"{graph} H={heads} D={D}", counts,
          grad_score_bound(want, x, ptr, gout, galpha, dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_score_only_gradient_without_alpha(device, dtype):
    """``x`` without ``requires_grad`` and no alpha returned: the backward kernel's
    ``WRITE_GX=False`` variant and the path without the softmax backward."""
    counts = GRAPHS["mixed"]
    score, x, ptr, gout, galpha = inputs(counts, None, 32, dtype, device, seed=7)
    s = score.clone().requires_grad_()
    out = segment_softmax_aggregate(s, x, ptr, backend="triton")
    out.backward(gout)
    zero = torch.zeros_like(galpha)
    want = reference(score, x, ptr, gout, zero)
    assert_close_scaled(s.grad, want[2], dtype, "grad_score",
                        extra=grad_score_bound(want, x, ptr, gout, zero, dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_extreme_and_masked_scores(device, dtype):
    """Scores of +-1e4 (exp overflows without the max shift), -inf (masked edges, a fully
    masked segment) and a masked prefix longer than a block before finite scores."""
    counts = [3, 2, 2, 150, 3]
    score = torch.tensor([1e4, -1e4, 1e4 - 1.0, -1e4, -1e4 + 2.0, float("-inf"), float("-inf")]
                         + [float("-inf")] * 130 + (-1e4 + torch.arange(20.0)).tolist()
                         + [-5e3, -5e3 - 1.0, float("-inf")])
    g = torch.Generator().manual_seed(3)
    E, S = score.numel(), len(counts)
    x = torch.randn(E, 8, generator=g)
    gout, galpha = torch.randn(S, 8, generator=g), torch.randn(E, generator=g)
    args = [t.to(dtype).to(device) for t in (score, x)] + [make_ptr(counts).to(device)] + \
        [t.to(dtype).to(device) for t in (gout, galpha)]
    got = run(*args)
    want = reference(*args)
    bound = grad_score_bound(want, *args[1:], dtype)
    for t in got:
        assert torch.isfinite(t).all(), "the kernels must give finite results for +-1e4 / -inf"
    check(got, want, dtype, "extreme", counts, bound)
    assert torch.equal(got[0][2].cpu(), torch.zeros(8, dtype=dtype)), "fully masked segment"
    assert torch.equal(got[1][5:7].cpu(), torch.zeros(2, dtype=dtype))
    alpha = segment_softmax(args[0], args[2], backend="triton")
    assert_close_scaled(alpha, want[1], dtype, "segment_softmax extreme")


def test_noncontiguous_index(device):
    """A segment index with stride 2 (row 1 of an ``[E, 2].t()`` edge index) must give the
    results of a contiguous one (the kernels index raw pointers)."""
    counts = GRAPHS["mixed"]
    score, x, ptr, gout, galpha = inputs(counts, None, 16, torch.float32, device, seed=5)
    E = score.numel()
    pairs = torch.stack([torch.arange(E, device=device), ptr_to_index(ptr, E)], 1)
    index = pairs.t()[1]
    assert index.stride() == (2,)
    s = score.clone().requires_grad_()
    out = segment_softmax_aggregate(s, x, ptr, index=index, backend="triton")
    out.backward(gout)
    _, _, ref_gs, _ = reference(score, x, ptr, gout, torch.zeros_like(galpha))
    assert_close_scaled(s.grad, ref_gs, torch.float32, "grad_score, strided index")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_triton_is_deterministic(device, dtype):
    """No atomics: two runs give bit-identical outputs and gradients."""
    args = inputs(GRAPHS["skewed"], None, 32, dtype, device, seed=11)
    a, b = run(*args), run(*args)
    for name, u, v in zip(("out", "alpha", "grad_score", "grad_x"), a, b):
        assert torch.equal(u, v), f"{name} differs between two identical runs"


# ------------------------------------------------------------------------------ gather-free
#: the torch path computes in the input dtype (segment sums in bfloat16 drift by ~n u over n
#: edges), so it is checked in float32; the kernels accumulate in float32 in every dtype
SRC_CASES = [("auto", torch.float32), ("torch", torch.float32), ("triton", torch.float32),
             ("auto", torch.bfloat16), ("triton", torch.bfloat16)]


@pytest.mark.parametrize("backend, dtype", SRC_CASES, ids=[f"{b}-{d}" for b, d in SRC_CASES])
def test_gather_free_src_paths(device, backend, dtype):
    """``src=``: ``x`` is a node table and edge ``e`` reads ``x[src[e]]``. On CUDA ``auto`` and
    ``triton`` gather and run the kernels; ``torch`` is the gather-free embedding_bag /
    index_add_ path, here on the device under test."""
    if on_cpu() and backend == "auto" and dtype != torch.float32:
        pytest.skip("CPU mode: 'auto' is the torch path, checked in float32")
    counts = GRAPHS["skewed"]
    ptr = make_ptr(counts)
    E, S, N, D = int(ptr[-1]), len(counts), size(50_000, 500), 32
    g = torch.Generator().manual_seed(13)
    score = (3 * torch.randn(E, generator=g)).to(dtype)
    table = torch.randn(N, D, generator=g).to(dtype)
    src = torch.randint(N, (E,), generator=g)
    gout = torch.randn(S, D, generator=g).to(dtype)
    galpha = torch.randn(E, generator=g).to(dtype)
    dev = [t.to(device) for t in (score, table, ptr, gout, galpha)]
    got = run(*dev, backend=backend, src=src.to(device))
    # reference: float64 on the CPU, gathered explicitly
    s = score.double().requires_grad_()
    xt = table.double().requires_grad_()
    out, alpha = segment_softmax_aggregate(s, xt[src], ptr, return_alpha=True, backend="torch")
    torch.autograd.backward([out, alpha], [gout.double(), galpha.double()])
    want = (out.detach(), alpha.detach(), s.grad, xt.grad)
    bound = grad_score_bound(want, table[src], ptr, gout, galpha, dtype)
    for name, a, b in zip(("out", "alpha", "grad_score", "grad_table"), got, want):
        assert_close_scaled(a, b, dtype, f"src= {backend} {name}",
                            extra=bound if name == "grad_score" else None)


@pytest.mark.parametrize("heads", [None, 2])
def test_segment_weighted_sum_on_device(device, heads):
    counts = GRAPHS["skewed"]
    ptr = make_ptr(counts)
    E, S, N, D = int(ptr[-1]), len(counts), size(50_000, 500), 24
    hs = () if heads is None else (heads,)
    g = torch.Generator().manual_seed(17)
    alpha = torch.rand((E, *hs), generator=g)
    table = torch.randn((N, *hs, D), generator=g)
    src = torch.randint(N, (E,), generator=g)
    grad = torch.randn((S, *hs, D), generator=g)

    def go(dev, dtype):
        a = alpha.to(dev, dtype, copy=True).requires_grad_()
        t = table.to(dev, dtype, copy=True).requires_grad_()
        out = segment_weighted_sum(a, t, ptr.to(dev), src.to(dev))
        out.backward(grad.to(dev, dtype))
        return out.detach(), a.grad, t.grad

    got, want = go(device, torch.float32), go("cpu", torch.float64)
    for name, a, b in zip(("out", "grad_alpha", "grad_table"), got, want):
        assert_close_scaled(a, b, torch.float32, f"segment_weighted_sum {name}")
