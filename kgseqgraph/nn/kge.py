r"""Translational knowledge-graph embeddings (TransE, TransR) with KGAT's pairwise loss.

A triple :math:`(h, r, t)` is scored by a *distance* :math:`f(h, r, t)`: lower means more
plausible. Both models are trained with the pairwise (BPR-style) loss of KGAT,

.. math::
    \mathcal{L}_{\mathrm{KG}} = \frac{1}{|\mathcal{B}|}
    \sum_{(h, r, t, t') \in \mathcal{B}}
    -\ln \sigma\big(f(h, r, t') - f(h, r, t)\big)
    + \lambda\, \mathcal{R}(h, r, t, t'),

where :math:`t'` is a corrupted tail drawn uniformly from all nodes (optionally *filtered* so that
:math:`(h, r, t')` is not a known triple, see :func:`sample_negative_tails`) and
:math:`\mathcal{R}` is the L2 penalty on the (projected) embeddings that enter the score.

Graphs are taken in the package's relation-typed homogeneous form
(:class:`~kgseqgraph.data.RelationalGraph`); :func:`kg_triples` converts a collaborative KG
:class:`~torch_geometric.data.HeteroData`, a :class:`~kgseqgraph.data.RelationalGraph` or an
``(edge_index, edge_type)`` pair into :class:`Triples`.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Embedding, Parameter
from torch_geometric.data import HeteroData

from ..data.triples import TripleIndex, Triples, kg_triples
from ..data.views import RelationalGraph

__all__ = [
    "Triples",
    "kg_triples",
    "TripleIndex",
    "relation_matmul",
    "sample_negative_tails",
    "sample_triples_by_head",
    "KGEModel",
    "TransE",
    "TransR",
]

log = logging.getLogger("kgseqgraph")


def relation_matmul(x: Tensor, relation: Tensor, weight: Tensor,
                    index: Tensor | None = None) -> Tensor:
    r"""Per-row relation-specific linear map: ``out[m] = x[index[m]] @ weight[relation[m]]``.

    Rows are grouped by relation (one stable sort) and each group is one dense matmul, which
    avoids gathering an ``[M, d_in, d_out]`` stack of matrices (and its slow scatter-add backward).

    Args:
        x: ``[N, d_in]``.
        relation: ``[M]`` relation of each output row.
        weight: ``[R, d_in, d_out]``.
        index: ``[M]`` rows of ``x`` to use (default: ``x`` itself, ``M = N``).
    """
    if weight.dim() != 3 or x.dim() != 2 or x.size(1) != weight.size(1):
        raise ValueError(f"expected x [N, d_in] and weight [R, d_in, d_out] with the same d_in, "
                         f"got {tuple(x.shape)} and {tuple(weight.shape)}")
    m = relation.numel() if index is None else index.numel()
    if relation.shape != (m,) or (index is None and m != x.size(0)):
        raise ValueError(f"relation must have one entry per output row ({m}), "
                         f"got shape {tuple(relation.shape)}")
    if m == 0:
        return x.new_zeros(0, weight.size(2))
    order = torch.argsort(relation, stable=True)
    counts = torch.bincount(relation, minlength=weight.size(0)).tolist()
    rows = order if index is None else index[order]
    parts = x.index_select(0, rows).split(counts)
    out = torch.cat([p @ w for p, w in zip(parts, weight.unbind(0)) if p.size(0)])
    return out.new_empty(out.shape).index_copy(0, order, out)


def sample_negative_tails(head: Tensor, relation: Tensor, tail: Tensor, num_nodes: int, *,
                          generator: torch.Generator | None = None,
                          filter_index: TripleIndex | None = None,
                          max_tries: int = 10) -> Tensor:
    r"""Corrupt tails uniformly: :math:`t' \sim \mathcal{U}\{0, \dots, N-1\}`.

    With ``filter_index`` the sample is *filtered*: draws with :math:`(h, r, t')` in the index
    (including :math:`t' = t`) are redrawn, up to ``max_tries`` rounds; the few that still collide
    after that are kept (and counted in the debug log).

    Args:
        head, relation, tail: the positive triples, shape ``[B]``.
        num_nodes: number of candidate tails :math:`N`.
        generator: random generator (pass a seeded one for reproducible runs).
        filter_index: known triples to avoid.
        max_tries: redraw rounds for filtered sampling.
    """
    if num_nodes < 1:
        raise ValueError(f"num_nodes must be positive, got {num_nodes}")
    neg = torch.randint(num_nodes, tail.shape, generator=generator, device=tail.device)
    if filter_index is None:
        return neg
    bad = filter_index.contains(head, relation, neg)
    for _ in range(max_tries):
        n_bad = int(bad.sum())
        if n_bad == 0:
            break
        redraw = torch.randint(num_nodes, (n_bad,), generator=generator, device=tail.device)
        neg[bad] = redraw
        idx = bad.nonzero().view(-1)
        bad[idx] = filter_index.contains(head[idx], relation[idx], redraw)
    else:
        if bad.any():
            log.debug("sample_negative_tails: %d negatives still collide after %d tries",
                      int(bad.sum()), max_tries)
    return neg


def sample_triples_by_head(ptr: Tensor, size: int,
                           generator: torch.Generator | None = None) -> Tensor:
    r"""Indices of ``size`` triples drawn as KGAT's and KATRec's loaders draw them: a head
    uniformly among the nodes that have triples, then one of that head's triples uniformly.

    (Drawing triples uniformly instead would weight each head by its degree: on a collaborative KG
    the users and the most popular items would dominate the TransR loss.)

    Args:
        ptr: ``[N + 1]`` CSR offsets of the triples sorted by head
            (:attr:`~kgseqgraph.data.RelationalGraph.ptr`).
        size: number of triples.
        generator: random generator.

    Returns:
        ``LongTensor[size]`` of positions in the head-sorted triple list.
    """
    degree = ptr[1:] - ptr[:-1]
    heads = (degree > 0).nonzero().view(-1)
    if heads.numel() == 0:
        raise ValueError("no triples to sample from")
    head = heads[torch.randint(heads.numel(), (size,), generator=generator)]
    offset = (torch.rand(size, generator=generator, dtype=torch.float64)
              * degree[head].double()).long().clamp_(max=degree[head] - 1)
    return ptr[head] + offset


class KGEModel(torch.nn.Module):
    r"""Base class of the translational KGE models: node and relation embeddings, the distance
    :math:`f(h, r, t)` (lower = more plausible), KGAT's pairwise loss and candidate scoring.

    Subclasses implement :meth:`project` (the node embeddings as seen by relation :math:`r`).

    Args:
        num_nodes: number of nodes (items and entities, optionally users).
        num_relations: number of relation types :math:`R` (reverse relations count separately).
        embedding_dim: node embedding size :math:`d_e`.
        relation_dim: relation embedding size :math:`d_r` (default: ``embedding_dim``).
        reg_weight: L2 coefficient :math:`\lambda`.
    """

    def __init__(self, num_nodes: int, num_relations: int, embedding_dim: int,
                 relation_dim: int | None = None, reg_weight: float = 1e-5) -> None:
        super().__init__()
        for name, v in (("num_nodes", num_nodes), ("num_relations", num_relations),
                        ("embedding_dim", embedding_dim)):
            if int(v) < 1:
                raise ValueError(f"{name} must be a positive integer, got {v}")
        if reg_weight < 0:
            raise ValueError(f"reg_weight must be >= 0, got {reg_weight}")
        self.num_nodes = int(num_nodes)
        self.num_relations = int(num_relations)
        self.embedding_dim = int(embedding_dim)
        self.relation_dim = int(relation_dim or embedding_dim)
        self.reg_weight = float(reg_weight)
        self.node_emb = Embedding(self.num_nodes, self.embedding_dim)
        self.rel_emb = Embedding(self.num_relations, self.relation_dim)

    @classmethod
    def from_graph(cls, graph: HeteroData | RelationalGraph | tuple[Tensor, Tensor],
                   embedding_dim: int = 64, *, node_types: Sequence[str] = ("item", "entity"),
                   num_nodes: int | None = None, num_relations: int | None = None, **kwargs):
        """Build a model sized for ``graph`` (see :func:`kg_triples` for the accepted forms)."""
        tr = kg_triples(graph, node_types=node_types, num_nodes=num_nodes,
                        num_relations=num_relations)
        return cls(tr.num_nodes, tr.num_relations, embedding_dim, **kwargs)

    def reset_parameters(self) -> None:
        """Xavier-uniform initialisation (as KGAT)."""
        torch.nn.init.xavier_uniform_(self.node_emb.weight)
        torch.nn.init.xavier_uniform_(self.rel_emb.weight)

    # ------------------------------------------------------------------ scoring
    def project(self, x: Tensor, relation: Tensor) -> Tensor:
        """Node embeddings ``x[B, d_e]`` seen through relation ``relation[B]`` → ``[B, d_r]``."""
        raise NotImplementedError

    def _parts(self, relation: Tensor, *nodes: Tensor) -> tuple[Tensor, ...]:
        """``e_r`` and the projections of each node tensor, computed in one grouped call."""
        b = relation.numel()
        proj = self.project_nodes(torch.cat(nodes), relation.repeat(len(nodes)))
        return (self.rel_emb(relation), *proj.split(b))

    def project_nodes(self, node: Tensor, relation: Tensor) -> Tensor:
        """Embeddings of nodes ``node[B]`` projected into relations ``relation[B]``."""
        return self.project(self.node_emb(node), relation)

    def forward(self, head: Tensor, relation: Tensor, tail: Tensor) -> Tensor:
        r"""Distance :math:`f(h, r, t)` of each triple, shape ``[B]`` (lower = more plausible)."""
        er, ph, pt = self._parts(relation, head, tail)
        return (ph + er - pt).pow(2).sum(-1)

    score = forward

    def loss(self, head: Tensor, relation: Tensor, tail: Tensor, neg_tail: Tensor) -> Tensor:
        r"""KGAT's pairwise loss with L2 regularisation (see the module docstring):

        .. math::
            \frac{1}{B}\sum_b \mathrm{softplus}\big(f(h_b, r_b, t_b) - f(h_b, r_b, t'_b)\big)
            + \frac{\lambda}{2B}\sum_b \big(\|\mathbf{W}_r\mathbf{e}_h\|^2 + \|\mathbf{e}_r\|^2
            + \|\mathbf{W}_r\mathbf{e}_t\|^2 + \|\mathbf{W}_r\mathbf{e}_{t'}\|^2\big)

        (:math:`-\ln\sigma(x) = \mathrm{softplus}(-x)`; for TransE :math:`\mathbf{W}_r = I`.)
        """
        er, ph, pt, pn = self._parts(relation, head, tail, neg_tail)
        pos = (ph + er - pt).pow(2).sum(-1)
        neg = (ph + er - pn).pow(2).sum(-1)
        loss = F.softplus(pos - neg).mean()
        if self.reg_weight > 0:
            reg = (ph.pow(2).sum(-1) + er.pow(2).sum(-1) + pt.pow(2).sum(-1)
                   + pn.pow(2).sum(-1)).mean() / 2
            loss = loss + self.reg_weight * reg
        return loss

    def projected_nodes(self, relation: int) -> Tensor:
        """All node embeddings projected into relation ``relation``'s space, ``[N, d_r]``."""
        w = self.node_emb.weight
        return self.project(w, torch.full((w.size(0),), relation, dtype=torch.long, device=w.device))

    @torch.no_grad()
    def score_all_tails(self, head: Tensor, relation: Tensor) -> Tensor:
        r"""Distances :math:`f(h_b, r_b, t)` to every node :math:`t`, shape ``[B, N]``.

        Computed per relation as :math:`\|q\|^2 - 2 q^\top p_t + \|p_t\|^2` with
        :math:`q = \mathbf{W}_r\mathbf{e}_h + \mathbf{e}_r`, :math:`p_t = \mathbf{W}_r\mathbf{e}_t`.
        """
        out = torch.empty(head.numel(), self.num_nodes, device=self.node_emb.weight.device)
        for r in torch.unique(relation).tolist():
            sel = (relation == r).nonzero().view(-1)
            p = self.projected_nodes(r)
            q = p[head[sel]] + self.rel_emb.weight[r]
            d = q.pow(2).sum(-1, keepdim=True) - 2 * q @ p.t() + p.pow(2).sum(-1)
            out[sel] = d.clamp_min_(0)
        return out

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(num_nodes={self.num_nodes}, "
                f"num_relations={self.num_relations}, embedding_dim={self.embedding_dim}, "
                f"relation_dim={self.relation_dim}, reg_weight={self.reg_weight})")


class TransE(KGEModel):
    r"""TransE from `"Translating Embeddings for Modeling Multi-relational Data"
    <https://papers.nips.cc/paper/5071-translating-embeddings-for-modeling-multi-relational-data>`_
    (Bordes et al., 2013), with a squared distance:

    .. math::
        f(h, r, t) = \| \mathbf{e}_h + \mathbf{e}_r - \mathbf{e}_t \|_2^2 .

    Args:
        num_nodes: number of nodes :math:`N`.
        num_relations: number of relations :math:`R`.
        embedding_dim: embedding size :math:`d` (nodes and relations).
        reg_weight: L2 coefficient :math:`\lambda` of :meth:`loss`.
    """

    def __init__(self, num_nodes: int, num_relations: int, embedding_dim: int = 64,
                 reg_weight: float = 1e-5) -> None:
        super().__init__(num_nodes, num_relations, embedding_dim, embedding_dim, reg_weight)
        self.reset_parameters()

    def project(self, x: Tensor, relation: Tensor) -> Tensor:
        return x


class TransR(KGEModel):
    r"""TransR from `"Learning Entity and Relation Embeddings for Knowledge Graph Completion"
    <https://ojs.aaai.org/index.php/AAAI/article/view/9491>`_ (Lin et al., 2015), as used by KGAT
    and KATRec: entities live in :math:`\mathbb{R}^{d_e}`, each relation has its own space
    :math:`\mathbb{R}^{d_r}` with a projection :math:`\mathbf{W}_r \in \mathbb{R}^{d_r\times d_e}`
    (stored transposed, ``rel_proj[r]`` of shape ``[d_e, d_r]``, so
    :math:`\mathbf{W}_r\mathbf{e} =` ``e @ rel_proj[r]``):

    .. math::
        f(h, r, t) = \| \mathbf{W}_r\mathbf{e}_h + \mathbf{e}_r - \mathbf{W}_r\mathbf{e}_t \|_2^2 .

    ``rel_emb`` and ``rel_proj`` can be shared with
    :class:`~kgseqgraph.nn.conv.KGAttentionConv` (pass them as ``rel_emb=model.rel_emb.weight,
    rel_proj=model.rel_proj``), as KATRec does.

    Args:
        num_nodes: number of nodes :math:`N`.
        num_relations: number of relations :math:`R`.
        embedding_dim: entity embedding size :math:`d_e`.
        relation_dim: relation space size :math:`d_r` (default: :math:`d_e`).
        reg_weight: L2 coefficient :math:`\lambda` of :meth:`loss`.
    """

    def __init__(self, num_nodes: int, num_relations: int, embedding_dim: int = 64,
                 relation_dim: int | None = None, reg_weight: float = 1e-5) -> None:
        super().__init__(num_nodes, num_relations, embedding_dim, relation_dim, reg_weight)
        self.rel_proj = Parameter(torch.empty(self.num_relations, self.embedding_dim,
                                              self.relation_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        # Xavier bound of one [d_e, d_r] matrix (KGAT initialises W_r with Xavier-uniform).
        bound = math.sqrt(6.0 / (self.embedding_dim + self.relation_dim))
        torch.nn.init.uniform_(self.rel_proj, -bound, bound)

    def project(self, x: Tensor, relation: Tensor) -> Tensor:
        if x.dim() != 2 or relation.shape != x.shape[:1]:
            raise ValueError(f"expected x [B, d_e] and relation [B], got {tuple(x.shape)} and "
                             f"{tuple(relation.shape)}")
        return relation_matmul(x, relation, self.rel_proj)

    def projected_nodes(self, relation: int) -> Tensor:
        return self.node_emb.weight @ self.rel_proj[relation]

    def project_nodes(self, node: Tensor, relation: Tensor) -> Tensor:
        return relation_matmul(self.node_emb.weight, relation, self.rel_proj, index=node)
