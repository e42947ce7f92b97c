r"""Relation-space attention logits of KG attention layers, with custom autograd.

For typed edges :math:`e = (t \to h)` of relation :math:`r`,

.. math::
    \pi_e = (\mathbf{W}_r\mathbf{x}_t)^\top \tanh(\mathbf{W}_r\mathbf{x}_h + \mathbf{e}_r),

computed once per distinct ``(node, relation)`` pair (:func:`pair_index`), one dense matmul per
relation, and the per-edge dot product taken by :class:`_GatherDot`, which keeps no
:math:`|\mathcal{E}| \times d_r` tensor for the backward pass. With ``recompute=True``
(:class:`_RecomputedRelationScores`) nothing per edge or per pair is kept at all: the projections
are recomputed in backward, one relation at a time.

Public API: :func:`relation_scores`, :func:`pair_index`, :func:`relation_groups`,
:class:`PairIndex`.
"""
from __future__ import annotations

import itertools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .segment_softmax import _gathered_edge_dots, _scatter_scaled

__all__ = ["PairIndex", "pair_index", "relation_groups", "relation_scores"]


_DOT_CHUNK = 16384  # edges per chunk in _GatherDot: small temporaries stay in cache and are reused


class PairIndex(NamedTuple):
    """The distinct ``(node, relation)`` pairs at one end of the edges, grouped by relation, and
    the edges grouped by pair (for the backward pass of :class:`_GatherDot`)."""

    node: Tensor  # [U] node of each distinct pair; pairs sorted by (relation, node)
    counts: list[int]  # [R] pairs per relation
    inverse: Tensor  # [E] pair of every edge
    order: Tensor  # [E] edges sorted by pair (stable)
    offsets: Tensor  # [U + 1] CSR offsets of the pairs in ``order``


def pair_index(node: Tensor, edge_type: Tensor, num_nodes: int, num_relations: int) -> PairIndex:
    """The distinct ``(node[e], edge_type[e])`` pairs of an edge set, grouped by relation."""
    uniq, inv = torch.unique(edge_type * num_nodes + node, return_inverse=True)
    counts = torch.bincount(uniq // num_nodes, minlength=num_relations).tolist()
    order = torch.argsort(inv, stable=True)
    offsets = torch.zeros(uniq.numel() + 1, dtype=torch.long, device=node.device)
    torch.cumsum(torch.bincount(inv, minlength=uniq.numel()), 0, out=offsets[1:])
    return PairIndex(uniq % num_nodes, counts, inv, order, offsets)


class _GatherDot(torch.autograd.Function):
    r"""``out[e] = <a[ia[e]], b[ib[e]]>`` (a sampled dense-dense product) that keeps no ``[E, d]``
    tensor for the backward pass. The forward pass gathers in cache-sized chunks; the backward
    pass is two weighted segment sums, :math:`\partial a_u = \sum_{e: ia[e] = u} g_e\,
    b_{ib[e]}` (and symmetrically for ``b``), each one ``embedding_bag`` over the edges grouped by
    their ``a`` (resp. ``b``) row — no scatter-add."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, pa: PairIndex, pb: PairIndex) -> Tensor:
        ia, ib = pa.inverse, pb.inverse
        # under autocast a and b may differ in dtype (a bf16 matmul vs a float32 tanh(. + bias))
        out = a.new_empty(ia.numel(), dtype=torch.result_type(a, b))
        for s in range(0, ia.numel(), _DOT_CHUNK):
            sl = slice(s, s + _DOT_CHUNK)
            torch.sum(a.index_select(0, ia[sl]) * b.index_select(0, ib[sl]), -1, out=out[sl])
        ctx.save_for_backward(a, b)
        ctx.pairs = (pa, pb)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        a, b = ctx.saved_tensors
        pa, pb = ctx.pairs

        def seg(p: PairIndex, other: PairIndex, rows: Tensor, like: Tensor) -> Tensor:
            weights = grad.index_select(0, p.order).to(rows.dtype)  # embedding_bag: one dtype
            return F.embedding_bag(other.inverse.index_select(0, p.order), rows, p.offsets,
                                   mode="sum", per_sample_weights=weights,
                                   include_last_offset=True).to(like.dtype)

        ga = seg(pa, pb, b, a) if ctx.needs_input_grad[0] else None
        gb = seg(pb, pa, a, b) if ctx.needs_input_grad[1] else None
        return ga, gb, None, None


class _Layout(NamedTuple):
    """What the recomputing backward needs of an edge set besides the embeddings."""

    edge_type: Tensor
    num_relations: int
    tails: PairIndex
    heads: PairIndex
    by_relation: Tensor | None
    relation_offsets: list[int] | None


class _RecomputedRelationScores(torch.autograd.Function):
    r""":math:`\pi_e` of every edge, one relation at a time, keeping nothing per edge or per
    ``(node, relation)`` pair for the backward pass: it saves the node table and the relation
    parameters and recomputes each relation's projections
    :math:`\mathbf{k} = \mathbf{W}_r\mathbf{x}_t`,
    :math:`\mathbf{q} = \tanh(\mathbf{W}_r\mathbf{x}_h + \mathbf{e}_r)` in backward. With
    :math:`g_e = \partial L / \partial \pi_e` and :math:`\mathbf{u} = \mathbf{W}_r\mathbf{x}_h +
    \mathbf{e}_r`:

    .. math::
        \bar{\mathbf{k}}_p = \sum_{e: t(e) = p} g_e \mathbf{q}_{h(e)}, \quad
        \bar{\mathbf{q}}_p = \sum_{e: h(e) = p} g_e \mathbf{k}_{t(e)}, \quad
        \bar{\mathbf{u}} = \bar{\mathbf{q}} \odot (1 - \mathbf{q}^2),

    :math:`\partial\mathbf{W}_r = \mathbf{X}_t^\top \bar{\mathbf{K}} + \mathbf{X}_h^\top
    \bar{\mathbf{U}}`, :math:`\partial\mathbf{e}_r = \sum \bar{\mathbf{u}}`, and the node
    gradients :math:`\bar{\mathbf{K}}\mathbf{W}_r^\top`, :math:`\bar{\mathbf{U}}
    \mathbf{W}_r^\top` added at the pairs' nodes. Peak extra memory: the largest relation's
    pair blocks, instead of all pairs of all relations held from forward to backward; the price
    is the projections computed twice.
    """

    @staticmethod
    def forward(ctx, x: Tensor, rel_emb: Tensor, rel_proj: Tensor, plan: _Layout) -> Tensor:
        ctx.save_for_backward(x, rel_emb, rel_proj)
        ctx.plan = plan
        score = x.new_empty(plan.edge_type.numel())
        for b in _per_relation(x, rel_emb, rel_proj, plan):
            score[b.edges] = _gathered_edge_dots(b.k, b.tl, b.q, b.hl).to(score.dtype)
        return score

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, rel_emb, rel_proj = ctx.saved_tensors
        plan = ctx.plan
        gx = torch.zeros_like(x)
        g_emb = torch.zeros_like(rel_emb)
        g_proj = torch.zeros_like(rel_proj)
        for b in _per_relation(x, rel_emb, rel_proj, plan):
            g = grad.index_select(0, b.edges)
            gk = _scatter_scaled(b.q, b.hl, g, b.tl, b.k.size(0))  # gk[tl] += g * q[hl]
            gu = _scatter_scaled(b.k, b.tl, g, b.hl, b.q.size(0)).mul_(1.0 - b.q * b.q)
            w = rel_proj[b.relation]
            g_proj[b.relation] = b.xt.t() @ gk + b.xh.t() @ gu
            g_emb[b.relation] = gu.sum(0)
            gx.index_add_(0, b.t_rows, gk @ w.t())
            gx.index_add_(0, b.h_rows, gu @ w.t())
        return gx, g_emb, g_proj, None


class _RelationBlock(NamedTuple):
    """One relation's edges and projections (see :func:`_per_relation`)."""

    relation: int
    edges: Tensor  # [E_r] its edges
    tl: Tensor  # [E_r] local tail-pair index of each edge
    hl: Tensor  # [E_r] local head-pair index of each edge
    t_rows: Tensor  # [P_t] node of each tail pair
    h_rows: Tensor  # [P_h] node of each head pair
    xt: Tensor  # [P_t, d] x at the tail pairs
    xh: Tensor  # [P_h, d] x at the head pairs
    k: Tensor  # [P_t, d_r] W_r x_t
    q: Tensor  # [P_h, d_r] tanh(W_r x_h + e_r)


def _per_relation(x: Tensor, rel_emb: Tensor, rel_proj: Tensor, plan: _Layout):
    """For every relation with edges, a :class:`_RelationBlock`: its edges, the local pair
    index of their tails/heads, and the relation's tail and head projections."""
    t, h = plan.tails, plan.heads
    by_rel, rel_off = plan.by_relation, plan.relation_offsets
    if by_rel is None:
        by_rel, rel_off = relation_groups(plan.edge_type, plan.num_relations)
    t_off = [0, *itertools.accumulate(t.counts)]
    h_off = [0, *itertools.accumulate(h.counts)]
    for r in range(plan.num_relations):
        if rel_off[r + 1] == rel_off[r]:
            continue
        edges = by_rel[rel_off[r]:rel_off[r + 1]]
        tl = t.inverse.index_select(0, edges) - t_off[r]
        hl = h.inverse.index_select(0, edges) - h_off[r]
        t_rows, h_rows = t.node[t_off[r]:t_off[r + 1]], h.node[h_off[r]:h_off[r + 1]]
        xt, xh = x.index_select(0, t_rows), x.index_select(0, h_rows)
        w = rel_proj[r]
        k = xt @ w
        q = torch.tanh(torch.addmm(rel_emb[r], xh, w))
        yield _RelationBlock(r, edges, tl, hl, t_rows, h_rows, xt, xh, k, q)


def relation_groups(edge_type: Tensor, num_relations: int) -> tuple[Tensor, list[int]]:
    """Edges sorted by relation (stable) and the CSR offsets of every relation's block."""
    order = torch.argsort(edge_type, stable=True)
    offsets = [0, *itertools.accumulate(torch.bincount(edge_type, minlength=num_relations)
                                        .tolist())]
    return order, offsets


def relation_scores(x: Tensor, rel_emb: Tensor, rel_proj: Tensor, edge_type: Tensor,
                    tails: PairIndex, heads: PairIndex, *, recompute: bool = False,
                    by_relation: Tensor | None = None,
                    relation_offsets: list[int] | None = None) -> Tensor:
    r""":math:`\pi_e` of every edge (see the module docstring), shape ``[E]``.

    Args:
        x: node embeddings ``[N, d]``.
        rel_emb: :math:`\mathbf{e}_r`, ``[R, d_r]``.
        rel_proj: :math:`\mathbf{W}_r`, ``[R, d, d_r]`` (applied as ``x @ rel_proj[r]``).
        edge_type: relation of every edge ``[E]``.
        tails, heads: :func:`pair_index` of the edges' tails and heads.
        recompute: keep nothing per edge or pair for backward (:class:`_RecomputedRelationScores`).
        by_relation, relation_offsets: :func:`relation_groups` of ``edge_type`` when already
            computed (the recompute path needs them).
    """
    if edge_type.numel() == 0:
        return x.new_zeros(0)
    num_relations = rel_proj.size(0)
    if recompute:
        layout = _Layout(edge_type, num_relations, tails, heads, by_relation, relation_offsets)
        return _RecomputedRelationScores.apply(x, rel_emb, rel_proj, layout)
    weights, biases = rel_proj.unbind(0), rel_emb.unbind(0)
    xt = x.index_select(0, tails.node).split(tails.counts)
    xh = x.index_select(0, heads.node).split(heads.counts)
    k = torch.cat([xr @ w for xr, w, c in zip(xt, weights, tails.counts) if c])
    q = torch.cat([torch.tanh(xr @ w + b)
                   for xr, w, b, c in zip(xh, weights, biases, heads.counts) if c])
    return _GatherDot.apply(k, q, tails, heads)
