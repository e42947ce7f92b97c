r"""Segment softmax and the fused softmax-weighted aggregation (the KG-attention step).

For edges :math:`e = (h, r, t)` grouped into segments by their head :math:`h` (CSR order,
segment :math:`s` owns edges :math:`[p_s, p_{s+1})`), with scores :math:`\pi_e`:

.. math::
    \alpha_e = \frac{\exp(\pi_e - m_s)}{\sum_{e' \in s} \exp(\pi_{e'} - m_s)},
    \qquad m_s = \max_{e \in s} \pi_e,
    \qquad \mathrm{out}_s = \sum_{e \in s} \alpha_e \, x_e .

Subtracting the segment maximum :math:`m_s` keeps every exponent :math:`\le 0`, so scores of any
magnitude (e.g. :math:`\pm 10^4`) give finite results. Empty segments give a zero output row; a
segment whose scores are all :math:`-\infty` gets :math:`\alpha = 0` (a fully masked neighbourhood).

Gradients (both implemented by hand in :class:`torch.autograd.Function` s, so autograd stores no
intermediate graph). With :math:`\bar\alpha_e = \partial L / \partial \alpha_e`:

.. math::
    \frac{\partial L}{\partial \pi_e} = \alpha_e \Big(\bar\alpha_e - \sum_{e' \in s}
    \alpha_{e'} \bar\alpha_{e'}\Big).

For the aggregation, with :math:`g_s = \partial L / \partial \mathrm{out}_s`, one has
:math:`\bar\alpha_e = \langle g_s, x_e \rangle` and
:math:`\sum_{e' \in s} \alpha_{e'} \bar\alpha_{e'} = \langle g_s, \mathrm{out}_s \rangle`, hence no
segment reduction is needed in the backward pass:

.. math::
    \frac{\partial L}{\partial x_e} = \alpha_e \, g_s, \qquad
    \frac{\partial L}{\partial \pi_e} = \alpha_e \big(\langle g_s, x_e \rangle
    - \langle g_s, \mathrm{out}_s \rangle\big).

Multi-head: ``score [E, H]`` with ``x [E, H, D]`` gives ``out [S, H, D]``, one softmax per head.

CPU implementation notes (``backend="torch"``): segment max/sum use :func:`torch.segment_reduce`
on the CSR offsets; the weighted sum is a weighted :func:`torch.nn.functional.embedding_bag`
over the CSR rows (FBGEMM-backed and multi-threaded on CPU, no ``[E, D]`` temporary); the
backward pass takes :math:`\langle g_s, x_e\rangle` with a sampled dense-dense product
(:func:`torch.sparse.sampled_addmm` on the CSR pattern) and forms :math:`\alpha_e g_s` with one
fused gather-and-scale, so its only ``[E, D]`` allocation is :math:`\partial L/\partial x`
itself. PyG's path (``softmax`` + scatter-sum of ``alpha * x`` under autograd) materialises
``alpha * x`` in the forward and several ``[E, D]`` tensors in the backward.
"""
from __future__ import annotations

import logging
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .dispatch import resolve_backend

__all__ = ["segment_softmax", "segment_softmax_aggregate", "segment_weighted_sum", "ptr_to_index",
           "index_to_ptr"]

logger = logging.getLogger("kgseqgraph")


# ----------------------------------------------------------------------------------------------
# input handling
# ----------------------------------------------------------------------------------------------
def ptr_to_index(ptr: Tensor, num_edges: int | None = None) -> Tensor:
    """Segment id of every edge from CSR offsets: ``ptr = [0, 2, 2, 3]`` → ``[0, 0, 2]``."""
    counts = ptr[1:] - ptr[:-1]
    S = counts.numel()
    return torch.repeat_interleave(torch.arange(S, device=ptr.device), counts,
                                   output_size=num_edges)


def index_to_ptr(index: Tensor, num_segments: int) -> Tensor:
    """CSR offsets ``[S + 1]`` from a *sorted* segment index."""
    counts = torch.bincount(index, minlength=num_segments)
    ptr = torch.zeros(num_segments + 1, dtype=torch.long, device=index.device)
    torch.cumsum(counts, 0, out=ptr[1:])
    return ptr


def _check_ptr(ptr: Tensor, num_edges: int, device: torch.device) -> Tensor:
    if not isinstance(ptr, Tensor) or ptr.dim() != 1 or ptr.numel() < 1:
        raise ValueError("ptr must be a 1-D LongTensor of CSR offsets [num_segments + 1], got "
                         f"{type(ptr).__name__} of shape {tuple(getattr(ptr, 'shape', ()))}")
    if ptr.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"ptr must be an integer tensor (int64), got {ptr.dtype}")
    if ptr.device != device:
        raise ValueError(f"ptr is on {ptr.device} but the scores are on {device}")
    ptr = ptr.long().contiguous()
    if ptr.device.type == "cpu":  # cheap here; skipped on CUDA to avoid host syncs
        if int(ptr[0]) != 0 or int(ptr[-1]) != num_edges:
            raise ValueError(f"ptr must start at 0 and end at the number of edges ({num_edges}), "
                             f"got ptr[0]={int(ptr[0])}, ptr[-1]={int(ptr[-1])}")
        if ptr.numel() > 1 and bool((ptr[1:] < ptr[:-1]).any()):
            raise ValueError("ptr must be non-decreasing (edges sorted by segment, CSR order)")
    return ptr


def _check_src(src: Tensor, x: Tensor, per_edge: Tensor) -> Tensor:
    """Check a node table ``x`` and the row ``src[e]`` of it that each edge of ``per_edge``
    (scores or weights, ``[E]`` or ``[E, H]``) reads; returns ``src`` as int64. The row range is
    checked on CPU only (on CUDA it would cost a host sync per call)."""
    E = per_edge.size(0)
    if not isinstance(src, Tensor) or src.shape != (E,) or src.dtype not in (torch.int32,
                                                                             torch.int64):
        raise ValueError(f"src must be an integer tensor [E] with E={E} (one row of x per edge), "
                         f"got {getattr(src, 'dtype', type(src))} "
                         f"{tuple(getattr(src, 'shape', ()))}")
    if not isinstance(x, Tensor) or x.dim() != per_edge.dim() + 1 or not x.is_floating_point():
        raise ValueError("with src, x must be a floating-point node table [N, D] for "
                         f"{E} edges, or [N, H, D] for H heads; got "
                         f"{getattr(x, 'dtype', type(x))} {tuple(getattr(x, 'shape', ()))}")
    if per_edge.dim() == 2 and x.size(1) != per_edge.size(1):
        raise ValueError(f"x has {x.size(1)} heads but the edges have {per_edge.size(1)}")
    if not (x.device == src.device == per_edge.device):
        raise ValueError(f"the edge values, x and src must be on one device, got "
                         f"{per_edge.device}, {x.device} and {src.device}")
    if src.device.type == "cpu" and E and (int(src.min()) < 0 or int(src.max()) >= x.size(0)):
        raise ValueError(f"src holds rows in [{int(src.min())}, {int(src.max())}] but x has "
                         f"{x.size(0)} rows")
    return src.long()


def _check_index(index: Tensor, num_edges: int, device: torch.device) -> Tensor:
    if not isinstance(index, Tensor) or index.dim() != 1 or index.numel() != num_edges:
        raise ValueError(f"index must be a 1-D LongTensor with one entry per edge ({num_edges}), "
                         f"got shape {tuple(getattr(index, 'shape', ()))}")
    if index.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"index must be an integer tensor (int64), got {index.dtype}")
    if index.device != device:
        raise ValueError(f"index is on {index.device} but the scores are on {device}")
    return index.long()


def _check_score(score: Tensor) -> None:
    if not isinstance(score, Tensor) or score.dim() not in (1, 2):
        raise ValueError("score must be a tensor of shape [E] or [E, H], got "
                         f"shape {tuple(getattr(score, 'shape', ()))}")
    if not score.is_floating_point():
        raise ValueError(f"score must be a floating-point tensor, got {score.dtype}")


def _is_sorted(index: Tensor) -> bool:
    return index.numel() < 2 or bool((index[1:] >= index[:-1]).all())


# ----------------------------------------------------------------------------------------------
# torch building blocks (no autograd; called inside the Functions)
# ----------------------------------------------------------------------------------------------
def _seg_sum(t: Tensor, ptr: Tensor | None, index: Tensor, S: int) -> Tensor:
    if ptr is not None:
        return torch.segment_reduce(t, "sum", offsets=ptr, axis=0)
    return t.new_zeros((S,) + t.shape[1:]).index_add_(0, index, t)


def _seg_max(t: Tensor, ptr: Tensor | None, index: Tensor, S: int) -> Tensor:
    if ptr is not None:
        return torch.segment_reduce(t, "max", offsets=ptr, axis=0)
    idx = index.view((-1,) + (1,) * (t.dim() - 1)).expand_as(t)
    return t.new_full((S,) + t.shape[1:], float("-inf")).scatter_reduce_(
        0, idx, t, "amax", include_self=False)


def _softmax_torch(score: Tensor, ptr: Tensor | None, index: Tensor, S: int) -> Tensor:
    """Stable segment softmax of ``score [E, H]`` (no autograd)."""
    m = _seg_max(score, ptr, index, S)
    m = torch.where(m == float("-inf"), torch.zeros_like(m), m)  # empty / all -inf segments
    ex = (score - m.index_select(0, index)).exp_()
    den = _seg_sum(ex, ptr, index, S)
    den = torch.where(den > 0, den, torch.ones_like(den))
    return ex.div_(den.index_select(0, index))


def _softmax_bwd_torch(alpha: Tensor, grad: Tensor, ptr: Tensor | None, index: Tensor,
                       S: int) -> Tensor:
    ag = alpha * grad
    return ag.sub_(alpha * _seg_sum(ag, ptr, index, S).index_select(0, index))


def _csr_layout(ptr: Tensor, index: Tensor, E: int, H: int) -> tuple[Tensor, Tensor, Tensor | None]:
    r"""CSR structure ``(crow, col, pos)`` of the ``[S H, E H]`` attention matrix.

    Row ``(s, h)`` holds the edges of segment ``s`` for head ``h``; column ``e H + h`` is row
    ``(e, h)`` of ``x.view(E * H, D)``. ``pos[e H + h]`` is where entry ``(e, h)`` sits in the
    CSR value array (``None`` for a single head, where it is the identity).
    """
    if H == 1:
        return ptr, torch.arange(E, device=ptr.device), None
    S = ptr.numel() - 1
    dev = ptr.device
    counts = ptr[1:] - ptr[:-1]
    heads = torch.arange(H, device=dev)
    crow = torch.empty(S * H + 1, dtype=torch.long, device=dev)
    crow[:-1] = (ptr[:-1, None] * H + heads[None, :] * counts[:, None]).reshape(-1)
    crow[-1] = E * H
    start = ptr.index_select(0, index)
    pos = ((start * (H - 1) + torch.arange(E, device=dev))[:, None]
           + heads[None, :] * counts.index_select(0, index)[:, None]).reshape(-1)
    col = torch.empty(E * H, dtype=torch.long, device=dev)
    col[pos] = torch.arange(E * H, device=dev)
    return crow, col, pos


def _csr_values(layout: tuple[Tensor, Tensor, Tensor | None], alpha: Tensor) -> Tensor:
    """``alpha [E, H]`` in the value order of :func:`_csr_layout`."""
    pos = layout[2]
    if pos is None:
        return alpha.reshape(-1)
    vals = torch.empty(alpha.numel(), dtype=alpha.dtype, device=alpha.device)
    vals[pos] = alpha.reshape(-1)
    return vals


def _csr_weighted_sum(layout: tuple[Tensor, Tensor, Tensor | None], vals: Tensor, x: Tensor,
                      S: int, src: Tensor | None = None) -> Tensor:
    r"""``out[s, h] = \sum_{e \in s} \alpha[e, h] x[e, h]``: a weighted ``embedding_bag`` over the
    CSR rows (each row ``(s, h)`` is one bag of rows of ``x.view(E * H, D)``); multi-threaded on
    CPU, empty bags give zeros, and no ``[E, H, D]`` temporary is formed. With ``src``, ``x`` is
    a node table ``[N, H, D]`` and edge ``e`` reads row ``src[e]`` of it."""
    crow, col, _ = layout
    _, H, D = x.shape
    if D == 0 or col.numel() == 0:
        return x.new_zeros((S, H, D))
    if src is not None:
        col = _source_columns(layout, src, H)
    out = F.embedding_bag(col, x.reshape(-1, D), crow, mode="sum", per_sample_weights=vals,
                          include_last_offset=True)
    return out.view(S, H, D)


def _csr_edge_dots(layout: tuple[Tensor, Tensor, Tensor | None], vals: Tensor, g: Tensor,
                   x: Tensor) -> Tensor:
    r"""``dots[e, h] = \langle g[seg(e), h], x[e, h] \rangle`` by a sampled dense-dense product
    (SDDMM on the CSR pattern), without gathering ``g`` to ``[E, H, D]``."""
    crow, col, pos = layout
    E, H, D = x.shape
    S = g.size(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        A = torch.sparse_csr_tensor(crow, col, vals, size=(S * H, E * H), check_invariants=False)
        dots = torch.sparse.sampled_addmm(A, g.reshape(S * H, D), x.reshape(E * H, D).t(),
                                          beta=0.0).values()
    return (dots if pos is None else dots.index_select(0, pos)).view(E, H)


def _gather_scaled(g: Tensor, index: Tensor, alpha: Tensor) -> Tensor:
    r"""``G[e, h] = \alpha[e, h] \, g[seg(e), h]`` (``[E, H, D]``) in one fused gather-and-scale
    (``embedding_bag`` with bags of size one)."""
    E, H = alpha.shape
    D = g.size(-1)
    if D == 0 or E == 0:
        return g.new_zeros((E, H, D))
    idx = index if H == 1 else (index[:, None] * H + torch.arange(H, device=index.device)).view(-1)
    offsets = torch.arange(E * H, device=index.device)
    out = F.embedding_bag(idx, g.reshape(-1, D), offsets, mode="sum",
                          per_sample_weights=alpha.reshape(-1))
    return out.view(E, H, D)


_EDGE_CHUNK = 16384  # edges per chunk of the gather-free paths: temporaries stay cache-sized


def _gathered_edge_dots(g: Tensor, index: Tensor, x: Tensor, src: Tensor) -> Tensor:
    r"""``dots[e, ...] = \langle g[index[e], ...], x[src[e], ...] \rangle`` (a sum over the last
    dimension; ``g``, ``x`` of shape ``[*, D]`` or ``[*, H, D]``) in chunks of edges, so no
    ``[E, ..., D]`` tensor exists at any time."""
    E = index.numel()
    out = g.new_empty((E, *g.shape[1:-1]))
    for s in range(0, E, _EDGE_CHUNK):
        sl = slice(s, s + _EDGE_CHUNK)
        torch.sum(g.index_select(0, index[sl]) * x.index_select(0, src[sl]), -1, out=out[sl])
    return out


def _scatter_scaled(g: Tensor, index: Tensor, alpha: Tensor, src: Tensor, N: int) -> Tensor:
    r"""``gx[n, ...] = \sum_{e: src[e] = n} \alpha[e, ...]\, g[index[e], ...]`` (``[N, D]`` or
    ``[N, H, D]``), accumulated chunk by chunk with ``index_add_`` (no ``[E, ..., D]`` tensor)."""
    gx = g.new_zeros((N, *g.shape[1:]))
    for s in range(0, index.numel(), _EDGE_CHUNK):
        sl = slice(s, s + _EDGE_CHUNK)
        gx.index_add_(0, src[sl], g.index_select(0, index[sl]).mul_(alpha[sl].unsqueeze(-1)))
    return gx


def _source_columns(layout: tuple[Tensor, Tensor, Tensor | None], src: Tensor, H: int) -> Tensor:
    """The layout's columns (rows ``e H + h`` of the per-edge values) mapped to rows
    ``src[e] H + h`` of the node table ``x.view(N * H, D)``."""
    col = layout[1]
    if H == 1:
        return src.index_select(0, col)
    return src.index_select(0, col // H) * H + col % H


# ----------------------------------------------------------------------------------------------
# autograd Functions
# ----------------------------------------------------------------------------------------------
class _SegmentSoftmax(torch.autograd.Function):
    """``score [E, H]`` → ``alpha [E, H]``; backend ``"torch"`` or ``"triton"``."""

    @staticmethod
    def forward(ctx: Any, score: Tensor, ptr: Tensor | None, index: Tensor | None, S: int,
                backend: str) -> Tensor:
        if backend == "triton":
            from . import triton_kernels as tk

            alpha = tk.softmax_fwd(score.contiguous(), ptr)
        else:
            alpha = _softmax_torch(score, ptr, index, S)
        ctx.save_for_backward(alpha, ptr, index)
        ctx.S, ctx.backend = S, backend
        return alpha

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        alpha, ptr, index = ctx.saved_tensors
        if ctx.backend == "triton":
            from . import triton_kernels as tk

            gscore = tk.softmax_bwd(alpha, grad.contiguous(), ptr)
        else:
            gscore = _softmax_bwd_torch(alpha, grad, ptr, index, ctx.S)
        return gscore, None, None, None, None


class _SegmentSoftmaxAggregate(torch.autograd.Function):
    """``(score [E, H], x [E, H, D])`` → ``(out [S, H, D], alpha [E, H] or empty)``."""

    @staticmethod
    def forward(ctx: Any, score: Tensor, x: Tensor, ptr: Tensor, index: Tensor, backend: str,
                want_alpha: bool, src: Tensor | None = None) -> tuple[Tensor, Tensor]:
        ctx.set_materialize_grads(False)
        S = ptr.numel() - 1
        ctx.src = src
        if src is not None:  # gather-free: x is the node table, edge e reads x[src[e]]
            if backend == "triton":
                raise ValueError("the gather-free path (src=...) has no Triton kernel")
            alpha = _softmax_torch(score, ptr, index, S)
            layout = _csr_layout(ptr, index, *score.shape)
            out = _csr_weighted_sum(layout, _csr_values(layout, alpha), x, S, src)
            ctx.layout = layout
            ctx.save_for_backward(score, x, ptr, index, out, None, None, alpha)
        elif backend == "triton":
            from . import triton_kernels as tk

            out, m, ell = tk.aggregate_fwd(score, x, ptr)
            alpha = tk.alpha_from_stats(score, index, m, ell) if want_alpha else None
            ctx.save_for_backward(score, x, ptr, index, out, m, ell, alpha)
        else:
            alpha = _softmax_torch(score, ptr, index, S)
            layout = _csr_layout(ptr, index, *score.shape)
            vals = _csr_values(layout, alpha)
            out = _csr_weighted_sum(layout, vals, x, S)
            ctx.layout = layout  # index tensors only (no outputs on ctx: no reference cycle)
            ctx.save_for_backward(score, x, ptr, index, out, None, None, alpha)
        ctx.backend = backend
        if alpha is None or not want_alpha:
            alpha_out = score.new_empty(0)
            ctx.mark_non_differentiable(alpha_out)
            return out, alpha_out
        return out, alpha

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor | None,
                 grad_alpha: Tensor | None) -> tuple[Tensor | None, ...]:
        score, x, ptr, index, out, m, ell, alpha = ctx.saved_tensors
        need_score, need_x = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        src = ctx.src
        _, H, D = x.shape
        S = ptr.numel() - 1
        triton = ctx.backend == "triton"
        if triton:
            from . import triton_kernels as tk
        gscore = gx = None
        if grad_out is not None:
            dot = torch.bmm(grad_out.reshape(S * H, 1, D),
                            out.reshape(S * H, D, 1)).view(S, H)  # <g_s, out_s>
            if src is not None:
                if need_score:  # <g_s, x[src_e]>, chunk by chunk
                    gal = _gathered_edge_dots(grad_out, index, x, src)
                    gscore = gal.sub_(dot.index_select(0, index)).mul_(alpha)
                if need_x:
                    gx = _scatter_scaled(grad_out, index, alpha, src, x.size(0))
            elif triton:
                gscore, gx = tk.aggregate_bwd(score, x, index, m, ell, grad_out.contiguous(),
                                              dot, need_x)
            else:
                if need_score:
                    vals = _csr_values(ctx.layout, alpha)
                    gal = _csr_edge_dots(ctx.layout, vals, grad_out, x)  # <g_s, x_e>
                    gscore = gal.sub_(dot.index_select(0, index)).mul_(alpha)
                if need_x:  # alpha_e * g_s: the only [E, H, D] allocation
                    gx = _gather_scaled(grad_out, index, alpha)
        if grad_alpha is not None and grad_alpha.numel() > 0 and need_score:
            if alpha is None:
                alpha = tk.alpha_from_stats(score, index, m, ell)
            if triton:
                extra = tk.softmax_bwd(alpha, grad_alpha.contiguous(), ptr)
            else:
                extra = _softmax_bwd_torch(alpha, grad_alpha, ptr, index, S)
            gscore = extra if gscore is None else gscore.add_(extra)
        if gscore is None and need_score:
            gscore = torch.zeros_like(score)
        return (gscore if need_score else None), gx, None, None, None, None, None


class _SegmentWeightedSum(torch.autograd.Function):
    """``(alpha [E, H], x [N, H, D], src [E])`` → ``out [S, H, D]``, gather-free (torch)."""

    @staticmethod
    def forward(ctx: Any, alpha: Tensor, x: Tensor, ptr: Tensor, index: Tensor,
                src: Tensor) -> Tensor:
        layout = _csr_layout(ptr, index, *alpha.shape)
        out = _csr_weighted_sum(layout, _csr_values(layout, alpha), x, ptr.numel() - 1, src)
        ctx.save_for_backward(alpha, x, index, src)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        alpha, x, index, src = ctx.saved_tensors
        galpha = gx = None
        if ctx.needs_input_grad[0]:
            galpha = _gathered_edge_dots(grad, index, x, src)
        if ctx.needs_input_grad[1]:
            gx = _scatter_scaled(grad, index, alpha, src, x.size(0))
        return galpha, gx, None, None, None


def segment_weighted_sum(alpha: Tensor, x: Tensor, ptr: Tensor, src: Tensor, *,
                         index: Tensor | None = None) -> Tensor:
    r"""Weighted sum of gathered rows over CSR segments, without an ``[E, D]`` tensor.

    .. math::
        \mathrm{out}_s = \sum_{e = p_s}^{p_{s+1} - 1} \alpha_e \, x_{\mathrm{src}_e}, \qquad
        \frac{\partial L}{\partial \alpha_e} = \langle g_s, x_{\mathrm{src}_e} \rangle, \qquad
        \frac{\partial L}{\partial x_n} = \sum_{e:\,\mathrm{src}_e = n} \alpha_e\, g_s

    The aggregation step of a KG layer that reuses given attention weights (KGAT's shared
    attention). Forward: one weighted ``embedding_bag``; backward: edge dots and an ``index_add_``
    in chunks of edges, so autograd keeps ``alpha``, ``x`` and the indices only (PyG's
    ``propagate`` keeps the ``[E, D]`` gather and message).

    Args:
        alpha: weights ``[E]`` (or ``[E, H]``), edges sorted by segment.
        x: node table ``[N, D]`` (or ``[N, H, D]``).
        ptr: CSR offsets ``[S + 1]``; empty segments give zero rows.
        src: ``[E]`` row of ``x`` each edge reads.
        index: optional segment id of every edge (``ptr_to_index(ptr)``, not checked).
    """
    _check_score(alpha)
    E = alpha.size(0)
    src = _check_src(src, x, alpha)
    ptr = _check_ptr(ptr, E, alpha.device)
    index = ptr_to_index(ptr, E) if index is None else _check_index(index, E, alpha.device)
    dtype = torch.promote_types(alpha.dtype, x.dtype)
    single = alpha.dim() == 1
    a2 = (alpha.unsqueeze(1) if single else alpha).to(dtype).contiguous()
    x3 = (x.unsqueeze(1) if single else x).to(dtype).contiguous()
    out = _SegmentWeightedSum.apply(a2, x3, ptr, index, src)
    return out.squeeze(1) if single else out


# ----------------------------------------------------------------------------------------------
# comparison paths (plain autograd)
# ----------------------------------------------------------------------------------------------
def _softmax_pyg(score: Tensor, ptr: Tensor | None, index: Tensor, S: int) -> Tensor:
    from torch_geometric.utils import softmax

    return softmax(score, index, ptr, num_nodes=S)


def _aggregate_pyg(score: Tensor, x: Tensor, ptr: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """What a PyG ``MessagePassing`` layer does: ``softmax(score, index)`` then scatter-sum."""
    from torch_geometric.utils import scatter, softmax

    S = ptr.numel() - 1
    alpha = softmax(score, index, num_nodes=S)
    return scatter(alpha.unsqueeze(-1) * x, index, 0, dim_size=S, reduce="sum"), alpha


def _softmax_scatter(score: Tensor, index: Tensor, S: int) -> Tensor:
    from torch_scatter.composite import scatter_softmax

    return scatter_softmax(score, index, dim=0, dim_size=S)


def _aggregate_scatter(score: Tensor, x: Tensor, ptr: Tensor,
                       index: Tensor) -> tuple[Tensor, Tensor]:
    from torch_scatter import segment_csr

    alpha = _softmax_scatter(score, index, ptr.numel() - 1)
    return segment_csr(alpha.unsqueeze(-1) * x, ptr, reduce="sum"), alpha


# ----------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------
def segment_softmax(score: Tensor, ptr: Tensor | None = None, index: Tensor | None = None,
                    num_segments: int | None = None, *, backend: str = "auto") -> Tensor:
    r"""Softmax of ``score`` within each segment (all edges sharing a head node).

    .. math::
        \alpha_e = \frac{\exp(\pi_e - m_s)}{\sum_{e' \in s} \exp(\pi_{e'} - m_s)},
        \qquad m_s = \max_{e' \in s} \pi_{e'}, \quad s = \mathrm{seg}(e)

    with backward :math:`\partial L/\partial \pi_e = \alpha_e (\bar\alpha_e -
    \sum_{e' \in s} \alpha_{e'} \bar\alpha_{e'})`.

    Args:
        score: scores :math:`\pi`, shape ``[E]`` or ``[E, H]`` (one softmax per column/head).
        ptr: CSR offsets ``[S + 1]`` (edges sorted by segment); preferred, and required by the
            Triton backend unless ``index`` is sorted.
        index: segment id of every edge ``[E]``; any order (used when ``ptr`` is not given).
        num_segments: ``S`` when only ``index`` is given (default ``index.max() + 1``).
        backend: ``"auto" | "torch" | "triton" | "pyg" | "scatter"`` (see
            :mod:`kgseqgraph.nn.ops.dispatch`).

    Returns:
        :math:`\alpha`, same shape and dtype as ``score``. Segments whose scores are all
        :math:`-\infty` give :math:`\alpha = 0`.

    Example:
        >>> score = torch.tensor([0.0, 0.0, 5.0])
        >>> segment_softmax(score, ptr=torch.tensor([0, 2, 2, 3]))
        tensor([0.5000, 0.5000, 1.0000])
    """
    _check_score(score)
    E = score.size(0)
    if ptr is None and index is None:
        raise ValueError("segment_softmax needs either ptr (CSR offsets) or index (segment ids)")
    if ptr is not None:
        ptr = _check_ptr(ptr, E, score.device)
        S = ptr.numel() - 1
        if num_segments is not None and num_segments != S:
            raise ValueError(f"num_segments={num_segments} disagrees with ptr ({S} segments)")
        if index is not None:
            index = _check_index(index, E, score.device)
    else:
        index = _check_index(index, E, score.device)
        if num_segments is None:
            num_segments = int(index.max()) + 1 if E > 0 else 0
        S = int(num_segments)
        if E > 0 and index.device.type == "cpu" and (int(index.min()) < 0
                                                    or int(index.max()) >= S):
            raise ValueError(f"index values must lie in [0, {S}), got "
                             f"[{int(index.min())}, {int(index.max())}]")
    name = resolve_backend(backend, score.device)
    if index is None and name != "triton":
        index = ptr_to_index(ptr, E)
    if name == "pyg":
        return _softmax_pyg(score, ptr, index, S)
    if name == "scatter":
        return _softmax_scatter(score, index, S)
    if name == "triton" and ptr is None:
        if not _is_sorted(index):
            if backend == "triton":
                raise ValueError("backend='triton' needs CSR order: pass ptr or a sorted index")
            logger.debug("segment_softmax: unsorted index, using the torch path instead of Triton")
            name = "torch"
        else:
            ptr = index_to_ptr(index, S)
    s2 = score.unsqueeze(1) if score.dim() == 1 else score
    alpha = _SegmentSoftmax.apply(s2, ptr, index, S, name)
    return alpha.view_as(score)


def segment_softmax_aggregate(score: Tensor, x: Tensor, ptr: Tensor, return_alpha: bool = False,
                              *, index: Tensor | None = None, src: Tensor | None = None,
                              backend: str = "auto") -> Tensor | tuple[Tensor, Tensor]:
    r"""Fused attention aggregation over CSR segments: softmax of the scores, weighted sum of ``x``.

    .. math::
        \mathrm{out}_s = \sum_{e = p_s}^{p_{s+1} - 1} \alpha_e \, x_e, \qquad
        \alpha_e = \frac{\exp(\pi_e - m_s)}{\sum_{e' \in s} \exp(\pi_{e'} - m_s)}

    Backward (hand-written, no stored autograd graph), with :math:`g_s = \partial L /
    \partial \mathrm{out}_s`:

    .. math::
        \frac{\partial L}{\partial x_e} = \alpha_e g_s, \qquad
        \frac{\partial L}{\partial \pi_e} = \alpha_e \big(\langle g_s, x_e\rangle -
        \langle g_s, \mathrm{out}_s\rangle\big)

    (plus the softmax backward of :math:`\partial L/\partial\alpha` when ``alpha`` is returned and
    used). The Triton backend runs one online-softmax pass per segment (running max, denominator
    and numerator rescaled on each new maximum) and an edge-parallel backward kernel.

    Args:
        score: attention logits :math:`\pi`, ``[E]`` (single head) or ``[E, H]``.
        x: per-edge values (e.g. the gathered tail embeddings), ``[E, D]`` for a ``[E]`` score, or
            ``[E, H, D]`` for a ``[E, H]`` score.
        ptr: CSR offsets ``[S + 1]``; edges sorted by segment. Empty segments give zero rows.
        return_alpha: also return the attention weights :math:`\alpha` (same shape as ``score``).
        index: optional segment id of every edge if already at hand; must equal
            ``ptr_to_index(ptr)`` (not checked), saves recomputing it.
        src: optional ``[E]`` row of ``x`` that every edge reads. With it, ``x`` is a node table
            ``[N, D]`` (``[N, H, D]``) and :math:`x_e` is ``x[src[e]]``; the ``"torch"`` backend
            then never forms an ``[E, D]`` tensor: the forward pass is an ``embedding_bag`` over
            ``src``, the backward pass takes :math:`\langle g_s, x_{src_e}\rangle` and
            accumulates :math:`\partial L/\partial x` with ``index_add_`` in chunks of edges.
            Autograd then keeps ``O(E)`` scalars per call instead of ``O(E D)``: this is what lets
            the KG layers run on graphs of tens of millions of edges. The other backends gather
            ``x[src]`` first and run as without ``src``.
        backend: ``"auto" | "torch" | "triton" | "pyg" | "scatter"``.

    Returns:
        ``out`` of shape ``[S, D]`` (or ``[S, H, D]``), and ``alpha`` if ``return_alpha``.
    """
    _check_score(score)
    if src is not None:
        src = _check_src(src, x, score)
        if resolve_backend(backend, score.device) != "torch":
            x, src = x.index_select(0, src), None
    if not isinstance(x, Tensor) or x.dim() != score.dim() + 1:
        raise ValueError("x must be [E, D] for a score of shape [E], or [E, H, D] for [E, H]; "
                         f"got score {tuple(score.shape)} and x {tuple(getattr(x, 'shape', ()))}")
    if src is None and x.shape[:score.dim()] != score.shape:
        raise ValueError(f"x {tuple(x.shape)} does not match score {tuple(score.shape)} in its "
                         "leading (edge[, head]) dimensions")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got {x.dtype}")
    if x.device != score.device:
        raise ValueError(f"x is on {x.device} but score is on {score.device}")
    E = score.size(0)
    ptr = _check_ptr(ptr, E, score.device)
    index = ptr_to_index(ptr, E) if index is None else _check_index(index, E, score.device)
    dtype = torch.promote_types(score.dtype, x.dtype)
    score, x = score.to(dtype), x.to(dtype)
    name = resolve_backend(backend, score.device)
    if name in ("pyg", "scatter"):
        fn = _aggregate_pyg if name == "pyg" else _aggregate_scatter
        out, alpha = fn(score, x, ptr, index)
        return (out, alpha) if return_alpha else out
    single = score.dim() == 1
    s2 = (score.unsqueeze(1) if single else score).contiguous()
    x3 = (x.unsqueeze(1) if single else x).contiguous()
    out, alpha = _SegmentSoftmaxAggregate.apply(s2, x3, ptr, index, name, return_alpha, src)
    out = out.squeeze(1) if single else out
    if return_alpha:
        return out, alpha.view_as(score)
    return out
