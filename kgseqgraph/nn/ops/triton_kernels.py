r"""Triton kernels for CSR segment softmax and the fused softmax-aggregate.

This module imports :mod:`triton` at import time; :mod:`kgseqgraph.nn.ops` only imports it
lazily (when the Triton backend is chosen), so CPU-only installs without Triton never touch it.

Layout conventions (all tensors contiguous, ``H`` heads, ``D`` features)::

    score [E, H]   x [E, H, D]   ptr [S + 1] (int64)   seg [E] (segment id of every edge)
    alpha [E, H]   out [S, H, D]  m, l [S, H] (float32, or float64 for float64 inputs)

For segment :math:`s = [p_s, p_{s+1})` and head :math:`h` the kernels compute

.. math::
    m_s = \max_{e \in s} \pi_e, \qquad
    \ell_s = \sum_{e \in s} e^{\pi_e - m_s}, \qquad
    \alpha_e = e^{\pi_e - m_s} / \ell_s, \qquad
    \mathrm{out}_s = \frac{1}{\ell_s} \sum_{e \in s} e^{\pi_e - m_s} x_e

with the *online* softmax recurrence: one pass over the segment in blocks of ``BLOCK_E`` edges;
when a block raises the running maximum from :math:`m` to :math:`m'`, the running denominator and
numerator are rescaled by :math:`e^{m - m'}`. The statistics are kept as the pair
:math:`(m_s, \ell_s)` rather than :math:`\mathrm{lse}_s = m_s + \log \ell_s`, which would lose
:math:`\alpha` precision for large scores (float32 spacing near :math:`10^4` is :math:`10^{-3}`).
A segment that is empty or whose scores are all :math:`-\infty` stores :math:`(0, 0)`; its
:math:`\alpha` is 0 and its output row is 0.

Interpreter support
-------------------
Each kernel is a plain Python function, wrapped on demand by :func:`get_kernels`: as a compiled
``JITFunction`` for CUDA, or as Triton's ``InterpretedFunction`` (the kernel body executed with
numpy, CPU tensors accepted) when ``TRITON_INTERPRET=1`` is set at call time. The kernel bodies
call only Triton *builtins* (reductions through ``tl.reduce``, ``tl.full`` instead of
``tl.zeros``): the ``@jit`` helpers of ``triton.language.standard`` (``tl.max``, ``tl.sum``,
``tl.zeros`` …) are compiled-only objects when Triton was imported without ``TRITON_INTERPRET``,
and the interpreter cannot call them. This way the interpreter works whether the variable was set
before or after :mod:`triton` was imported.
"""
from __future__ import annotations

import functools
from types import SimpleNamespace

import torch
import triton
import triton.language as tl
from torch import Tensor

from .dispatch import triton_interpret_mode as interpret_mode

__all__ = [
    "get_kernels",
    "interpret_mode",
    "softmax_fwd",
    "softmax_bwd",
    "aggregate_fwd",
    "aggregate_bwd",
    "alpha_from_stats",
    "compile_for_target",
]

_BLOCK_E = 64
_MAX_BLOCK_D = 128

# ``tl.reduce`` with the combine functions that ``tl.max`` / ``tl.sum`` use themselves; the
# interpreter recognises them and reduces with numpy.
_MAX_COMBINE = getattr(tl.standard, "_elementwise_max", None)
_SUM_COMBINE = getattr(tl.standard, "_sum_combine", None)
if _MAX_COMBINE is None or _SUM_COMBINE is None:  # pragma: no cover - other Triton versions

    @triton.jit
    def _MAX_COMBINE(a, b):
        return tl.maximum(a, b)

    @triton.jit
    def _SUM_COMBINE(a, b):
        return a + b


# ----------------------------------------------------------------------------------------------
# kernels (plain functions; wrapped by get_kernels)
# ----------------------------------------------------------------------------------------------
def _softmax_fwd_kernel(score_ptr, ptr_ptr, alpha_ptr, H,
                        BLOCK_E: tl.constexpr, ACC: tl.constexpr):
    """One program per (segment, head): an online max/sum pass, then a pass writing alpha."""
    s = tl.program_id(0)
    h = tl.program_id(1)
    start = tl.load(ptr_ptr + s)
    end = tl.load(ptr_ptr + s + 1)
    lanes = tl.arange(0, BLOCK_E)
    m = tl.reduce(tl.full([BLOCK_E], float("-inf"), ACC), 0, _MAX_COMBINE)  # running max
    ell = tl.reduce(tl.full([BLOCK_E], 0.0, ACC), 0, _SUM_COMBINE)  # running sum exp(pi - m)
    for e0 in range(start, end, BLOCK_E):
        offs = e0 + lanes
        mask = offs < end
        sc = tl.load(score_ptr + offs * H + h, mask=mask, other=float("-inf")).to(ACC)
        m_new = tl.maximum(m, tl.reduce(sc, 0, _MAX_COMBINE))  # true running max, may be -inf
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new).to(ACC)  # finite shift for exp
        ell = ell * tl.exp(m - m_use) + tl.reduce(tl.exp(sc - m_use), 0, _SUM_COMBINE)
        m = m_new
    m = tl.where(m == float("-inf"), 0.0, m).to(ACC)
    denom = tl.where(ell > 0, ell, 1.0).to(ACC)
    for e0 in range(start, end, BLOCK_E):
        offs = e0 + lanes
        mask = offs < end
        sc = tl.load(score_ptr + offs * H + h, mask=mask, other=float("-inf")).to(ACC)
        tl.store(alpha_ptr + offs * H + h, tl.exp(sc - m) / denom, mask=mask)


def _softmax_bwd_kernel(alpha_ptr, grad_ptr, ptr_ptr, gscore_ptr, H,
                        BLOCK_E: tl.constexpr, ACC: tl.constexpr):
    r"""One program per (segment, head): d pi = alpha * (g - sum_seg alpha * g)."""
    s = tl.program_id(0)
    h = tl.program_id(1)
    start = tl.load(ptr_ptr + s)
    end = tl.load(ptr_ptr + s + 1)
    lanes = tl.arange(0, BLOCK_E)
    acc = tl.full([BLOCK_E], 0.0, ACC)
    for e0 in range(start, end, BLOCK_E):
        offs = e0 + lanes
        mask = offs < end
        a = tl.load(alpha_ptr + offs * H + h, mask=mask, other=0.0).to(ACC)
        g = tl.load(grad_ptr + offs * H + h, mask=mask, other=0.0).to(ACC)
        acc += a * g
    dot = tl.reduce(acc, 0, _SUM_COMBINE)
    for e0 in range(start, end, BLOCK_E):
        offs = e0 + lanes
        mask = offs < end
        a = tl.load(alpha_ptr + offs * H + h, mask=mask, other=0.0).to(ACC)
        g = tl.load(grad_ptr + offs * H + h, mask=mask, other=0.0).to(ACC)
        tl.store(gscore_ptr + offs * H + h, a * (g - dot), mask=mask)


def _aggregate_fwd_kernel(score_ptr, x_ptr, ptr_ptr, out_ptr, m_ptr, l_ptr, H, D,
                          BLOCK_E: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr):
    r"""One program per (segment, head, feature tile): online softmax and weighted sum in one pass.

    Keeps the running max ``m``, denominator ``ell`` and numerator ``acc`` (a ``BLOCK_D``
    vector, :math:`\sum_e e^{\pi_e - m} x_e`); a new maximum rescales both by
    :math:`e^{m_{old} - m_{new}}`. Writes ``out = acc / ell`` and the statistics ``(m, ell)``.
    """
    s = tl.program_id(0).to(tl.int64)  # (s H + h) D indexes out: past 2^31 for big S H D
    h = tl.program_id(1)
    pd = tl.program_id(2)
    start = tl.load(ptr_ptr + s)
    end = tl.load(ptr_ptr + s + 1)
    lanes = tl.arange(0, BLOCK_E)
    offs_d = pd * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    m = tl.reduce(tl.full([BLOCK_E], float("-inf"), ACC), 0, _MAX_COMBINE)
    ell = tl.reduce(tl.full([BLOCK_E], 0.0, ACC), 0, _SUM_COMBINE)
    acc = tl.full([BLOCK_D], 0.0, ACC)
    for e0 in range(start, end, BLOCK_E):
        offs = e0 + lanes
        mask = offs < end
        sc = tl.load(score_ptr + offs * H + h, mask=mask, other=float("-inf")).to(ACC)
        m_new = tl.maximum(m, tl.reduce(sc, 0, _MAX_COMBINE))  # true running max, may be -inf
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new).to(ACC)  # finite shift for exp
        corr = tl.exp(m - m_use)
        p = tl.exp(sc - m_use)
        xb = tl.load(x_ptr + (offs[:, None] * H + h) * D + offs_d[None, :],
                     mask=mask[:, None] & dmask[None, :], other=0.0).to(ACC)
        acc = acc * corr + tl.reduce(p[:, None] * xb, 0, _SUM_COMBINE)
        ell = ell * corr + tl.reduce(p, 0, _SUM_COMBINE)
        m = m_new
    denom = tl.where(ell > 0, ell, 1.0).to(ACC)
    tl.store(out_ptr + (s * H + h) * D + offs_d, acc / denom, mask=dmask)
    m = tl.where(m == float("-inf"), 0.0, m).to(ACC)  # empty or all -inf: store (0, 0)
    tl.store(m_ptr + s * H + h, m, mask=pd == 0)
    tl.store(l_ptr + s * H + h, ell, mask=pd == 0)


def _aggregate_bwd_kernel(score_ptr, x_ptr, seg_ptr, m_ptr, l_ptr, gout_ptr, dot_ptr,
                          gscore_ptr, gx_ptr, E, H, D,
                          BLOCK_E: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr,
                          WRITE_GX: tl.constexpr):
    r"""One program per (block of edges, head); edge-parallel, so long segments do not serialise.

    With :math:`g_s = \partial L / \partial \mathrm{out}_s` and
    :math:`c_s = \langle g_s, \mathrm{out}_s \rangle` (``dot``, precomputed):
    :math:`\partial L/\partial x_e = \alpha_e g_s` and
    :math:`\partial L/\partial \pi_e = \alpha_e(\langle g_s, x_e\rangle - c_s)`.
    """
    pid = tl.program_id(0)
    h = tl.program_id(1)
    offs = pid.to(tl.int64) * BLOCK_E + tl.arange(0, BLOCK_E)
    mask = offs < E
    sid = tl.load(seg_ptr + offs, mask=mask, other=0)
    sc = tl.load(score_ptr + offs * H + h, mask=mask, other=float("-inf")).to(ACC)
    m = tl.load(m_ptr + sid * H + h, mask=mask, other=0.0).to(ACC)
    ell = tl.load(l_ptr + sid * H + h, mask=mask, other=1.0).to(ACC)
    alpha = tl.exp(sc - m) / tl.where(ell > 0, ell, 1.0).to(ACC)
    c = tl.load(dot_ptr + sid * H + h, mask=mask, other=0.0).to(ACC)
    gal = tl.full([BLOCK_E], 0.0, ACC)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        m2 = mask[:, None] & (offs_d < D)[None, :]
        g = tl.load(gout_ptr + (sid[:, None] * H + h) * D + offs_d[None, :], mask=m2,
                    other=0.0).to(ACC)
        xb = tl.load(x_ptr + (offs[:, None] * H + h) * D + offs_d[None, :], mask=m2,
                     other=0.0).to(ACC)
        gal += tl.reduce(g * xb, 1, _SUM_COMBINE)
        if WRITE_GX:
            tl.store(gx_ptr + (offs[:, None] * H + h) * D + offs_d[None, :],
                     alpha[:, None] * g, mask=m2)
    tl.store(gscore_ptr + offs * H + h, alpha * (gal - c), mask=mask)


_RAW = {
    "softmax_fwd": _softmax_fwd_kernel,
    "softmax_bwd": _softmax_bwd_kernel,
    "aggregate_fwd": _aggregate_fwd_kernel,
    "aggregate_bwd": _aggregate_bwd_kernel,
}


@functools.lru_cache(maxsize=2)
def get_kernels(interpret: bool) -> SimpleNamespace:
    """The kernels wrapped for compilation (``interpret=False``) or for Triton's interpreter."""
    if interpret:
        from triton.runtime.interpreter import InterpretedFunction

        return SimpleNamespace(**{k: InterpretedFunction(f) for k, f in _RAW.items()})
    from triton.runtime.jit import JITFunction

    return SimpleNamespace(**{k: JITFunction(f) for k, f in _RAW.items()})


def _kernels_for(t: Tensor) -> SimpleNamespace:
    if interpret_mode():
        return get_kernels(True)
    if t.device.type == "cuda":
        return get_kernels(False)
    raise RuntimeError(
        f"Triton kernels need CUDA tensors (got device {t.device}); set TRITON_INTERPRET=1 to run "
        "them in Triton's CPU interpreter")


def _acc(dtype: torch.dtype) -> tuple[torch.dtype, object]:
    return (torch.float64, tl.float64) if dtype == torch.float64 else (torch.float32, tl.float32)


def _block_d(D: int) -> int:
    return max(16, min(_MAX_BLOCK_D, triton.next_power_of_2(max(D, 1))))


# ----------------------------------------------------------------------------------------------
# launchers (no autograd here; see segment_softmax.py for the Functions)
# ----------------------------------------------------------------------------------------------
# The kernels index raw pointers as if every tensor were contiguous, so each launcher makes its
# inputs contiguous (a no-op for the usual case): e.g. the segment index ``edge_index[1]`` of an
# ``edge_index`` built as ``[E, 2].t()`` has stride 2, which read garbage (out-of-bounds on a GPU).
def softmax_fwd(score: Tensor, ptr: Tensor) -> Tensor:
    """``score [E, H]``, ``ptr [S + 1]`` → ``alpha [E, H]``."""
    score, ptr = score.contiguous(), ptr.contiguous()
    E, H = score.shape
    S = ptr.numel() - 1
    alpha = torch.empty_like(score)
    if S > 0 and H > 0 and E > 0:
        _kernels_for(score).softmax_fwd[(S, H)](
            score, ptr, alpha, H, BLOCK_E=_BLOCK_E, ACC=_acc(score.dtype)[1])
    return alpha


def softmax_bwd(alpha: Tensor, grad: Tensor, ptr: Tensor) -> Tensor:
    r"""``alpha * (g - sum_seg alpha * g)``, shape ``[E, H]``."""
    alpha, grad, ptr = alpha.contiguous(), grad.contiguous(), ptr.contiguous()
    E, H = alpha.shape
    S = ptr.numel() - 1
    gscore = torch.empty_like(alpha)
    if S > 0 and H > 0 and E > 0:
        _kernels_for(alpha).softmax_bwd[(S, H)](
            alpha, grad, ptr, gscore, H, BLOCK_E=_BLOCK_E, ACC=_acc(alpha.dtype)[1])
    return gscore


def aggregate_fwd(score: Tensor, x: Tensor, ptr: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``score [E, H]``, ``x [E, H, D]`` → ``(out [S, H, D], m [S, H], l [S, H])``."""
    score, x, ptr = score.contiguous(), x.contiguous(), ptr.contiguous()
    E, H, D = x.shape
    S = ptr.numel() - 1
    acc_t, acc_tl = _acc(x.dtype)
    out = torch.zeros((S, H, D), dtype=x.dtype, device=x.device)
    m = torch.zeros((S, H), dtype=acc_t, device=x.device)
    ell = torch.zeros((S, H), dtype=acc_t, device=x.device)
    if S > 0 and H > 0 and D > 0 and E > 0:
        bd = _block_d(D)
        _kernels_for(x).aggregate_fwd[(S, H, triton.cdiv(D, bd))](
            score, x, ptr, out, m, ell, H, D, BLOCK_E=_BLOCK_E, BLOCK_D=bd, ACC=acc_tl)
    elif E > 0 and S > 0 and H > 0:  # D == 0: no kernel, but alpha still needs the statistics
        m, ell = _stats_torch(score, ptr, acc_t)
    return out, m, ell


def _stats_torch(score: Tensor, ptr: Tensor, acc_t: torch.dtype) -> tuple[Tensor, Tensor]:
    s = score.to(acc_t)
    m = torch.segment_reduce(s, "max", offsets=ptr, axis=0)
    m = torch.where(m == float("-inf"), torch.zeros_like(m), m)
    counts = ptr[1:] - ptr[:-1]
    ex = (s - m.repeat_interleave(counts, dim=0, output_size=s.size(0))).exp()
    return m, torch.segment_reduce(ex, "sum", offsets=ptr, axis=0)


def alpha_from_stats(score: Tensor, index: Tensor, m: Tensor, ell: Tensor) -> Tensor:
    r""":math:`\alpha_e = e^{\pi_e - m_s} / \ell_s` (0 where :math:`\ell_s = 0`), in ``score``'s
    dtype."""
    ell = torch.where(ell > 0, ell, torch.ones_like(ell))
    alpha = (score.to(m.dtype) - m.index_select(0, index)).exp_().div_(ell.index_select(0, index))
    return alpha.to(score.dtype)


def aggregate_bwd(score: Tensor, x: Tensor, seg: Tensor, m: Tensor, ell: Tensor,
                  grad_out: Tensor, dot: Tensor, need_gx: bool) -> tuple[Tensor, Tensor | None]:
    """Gradients of :func:`aggregate_fwd`: ``(grad_score [E, H], grad_x [E, H, D] | None)``."""
    E, H, D = x.shape
    score, x, seg, m, ell, grad_out, dot = (t.contiguous() for t in (score, x, seg, m, ell,
                                                                     grad_out, dot))
    gscore = torch.empty_like(score)
    gx = torch.empty_like(x) if need_gx else None
    if E > 0 and H > 0:
        bd = min(_block_d(D), 64)
        _kernels_for(x).aggregate_bwd[(triton.cdiv(E, _BLOCK_E), H)](
            score, x, seg, m, ell, grad_out, dot, gscore, gx if gx is not None else gscore,
            E, H, D, BLOCK_E=_BLOCK_E, BLOCK_D=bd, ACC=_acc(x.dtype)[1], WRITE_GX=need_gx)
    return gscore, gx


def compile_for_target(arch: int = 90, dtype: torch.dtype = torch.float32) -> dict[str, int]:
    """Compile every kernel ahead of time for ``sm_<arch>`` (no GPU needed: ptxas ships with
    Triton).

    A check that the kernels are valid compiled Triton, not only valid for the interpreter. Needs
    Triton's standard library in compiled form (Triton imported without ``TRITON_INTERPRET``).

    Returns:
        Size in bytes of the cubin of each kernel.
    """
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = {torch.float32: "fp32", torch.float64: "fp64", torch.float16: "fp16",
             torch.bfloat16: "bf16"}
    f = "*" + names[dtype]
    fa = "*" + names[_acc(dtype)[0]]
    i64, i32, c = "*i64", "i32", "constexpr"
    acc = _acc(dtype)[1]
    K = get_kernels(False)
    jobs = {
        "softmax_fwd": (dict(score_ptr=f, ptr_ptr=i64, alpha_ptr=f, H=i32, BLOCK_E=c, ACC=c),
                        dict(BLOCK_E=_BLOCK_E, ACC=acc)),
        "softmax_bwd": (dict(alpha_ptr=f, grad_ptr=f, ptr_ptr=i64, gscore_ptr=f, H=i32,
                             BLOCK_E=c, ACC=c), dict(BLOCK_E=_BLOCK_E, ACC=acc)),
        "aggregate_fwd": (dict(score_ptr=f, x_ptr=f, ptr_ptr=i64, out_ptr=f, m_ptr=fa, l_ptr=fa,
                               H=i32, D=i32, BLOCK_E=c, BLOCK_D=c, ACC=c),
                          dict(BLOCK_E=_BLOCK_E, BLOCK_D=32, ACC=acc)),
        "aggregate_bwd": (dict(score_ptr=f, x_ptr=f, seg_ptr=i64, m_ptr=fa, l_ptr=fa, gout_ptr=f,
                               dot_ptr=f, gscore_ptr=f, gx_ptr=f, E=i32, H=i32, D=i32, BLOCK_E=c,
                               BLOCK_D=c, ACC=c, WRITE_GX=c),
                          dict(BLOCK_E=_BLOCK_E, BLOCK_D=32, ACC=acc, WRITE_GX=True)),
    }
    sizes = {}
    for name, (signature, constexprs) in jobs.items():
        compiled = triton.compile(ASTSource(getattr(K, name), signature, constexprs),
                                  target=GPUTarget("cuda", arch, 32))
        sizes[name] = len(compiled.asm.get("cubin", b""))
    return sizes
