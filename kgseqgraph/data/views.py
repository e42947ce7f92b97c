r"""A relation-typed homogeneous view of the collaborative KG, for KG layers (TransR, KGAT-style
attention) that work on one node set with typed edges.

Nodes are laid out type after type (``item`` first, so item ``i`` is node ``i``; then ``entity``;
then ``user`` when interactions are included). Every edge is a triple ``(head, relation, tail)``
of global node ids. Triples are sorted by head (stable), and ``ptr`` is the CSR pointer over heads:
the triples with head ``h`` are ``ptr[h]:ptr[h+1]`` — the segment a head's attention softmax runs
over. Reverse relations (``rev_<rel>``, ``rev_interacts``) are separate relation types, as in KGAT.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from .sequences import _ranges

__all__ = ["RelationalGraph", "relational_view", "sample_neighbors", "sample_relation_tails"]


@dataclass
class RelationalGraph:
    """Triples ``(head[e], relation[e], tail[e])`` over one global node index, sorted by head."""

    head: Tensor
    relation: Tensor
    tail: Tensor
    ptr: Tensor
    num_nodes: int
    node_offsets: dict[str, int]
    node_counts: dict[str, int]
    relation_names: list[str]

    @property
    def num_edges(self) -> int:
        return int(self.head.numel())

    @property
    def num_relations(self) -> int:
        return len(self.relation_names)

    @property
    def edge_index(self) -> Tensor:
        """``[2, E]`` in PyG's source→target convention: messages flow from tail to head, so the
        head is the target whose neighbourhood is aggregated."""
        return torch.stack([self.tail, self.head])

    def node_slice(self, node_type: str) -> slice:
        start = self.node_offsets[node_type]
        return slice(start, start + self.node_counts[node_type])

    def to(self, device: torch.device | str) -> RelationalGraph:
        return RelationalGraph(self.head.to(device), self.relation.to(device), self.tail.to(device),
                               self.ptr.to(device), self.num_nodes, dict(self.node_offsets),
                               dict(self.node_counts), list(self.relation_names))


def relational_view(
    data: HeteroData,
    node_types: Sequence[str] = ("item", "entity"),
    include_reverse: bool = True,
) -> RelationalGraph:
    """Flatten the edge types among ``node_types`` of ``data`` into typed triples.

    Args:
        data: the collaborative KG from :func:`~kgseqgraph.data.build_collaborative_kg`.
        node_types: node types to keep, in the order their ids are laid out. The default is the
            item–entity KG (KATRec); add ``"user"`` for KGAT's collaborative KG, where
            ``interacts``/``rev_interacts`` become two more relations.
        include_reverse: keep the ``rev_*`` edge types (KGAT and KATRec use both directions).
    """
    node_types = list(node_types)
    unknown = [t for t in node_types if t not in data.node_types]
    if unknown:
        raise ValueError(f"node types {unknown} are not in the graph (has {data.node_types})")
    offsets, counts, start = {}, {}, 0
    for t in node_types:
        n = int(data[t].num_nodes or 0)
        offsets[t], counts[t] = start, n
        start += n
    kept = set(node_types)
    rel_index: dict[str, int] = {}
    heads, rels, tails = [], [], []
    for et in data.edge_types:
        src, rel, dst = et
        if src not in kept or dst not in kept:
            continue
        if not include_reverse and rel.startswith("rev_"):
            continue
        ei = data[et].edge_index
        r = rel_index.setdefault(rel, len(rel_index))
        heads.append(ei[0] + offsets[src])
        tails.append(ei[1] + offsets[dst])
        rels.append(torch.full((ei.size(1),), r, dtype=torch.long))
    if heads:
        head, tail, relation = torch.cat(heads), torch.cat(tails), torch.cat(rels)
    else:
        head = tail = relation = torch.empty(0, dtype=torch.long)
    order = torch.argsort(head, stable=True)
    head, tail, relation = head[order], tail[order], relation[order]
    ptr = torch.zeros(start + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(torch.bincount(head, minlength=start), 0)
    return RelationalGraph(head, relation, tail, ptr, start, offsets, counts, list(rel_index))


def _segments(graph: RelationalGraph, heads: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The triples of ``heads``: ``(edge ids, owner row in heads, degree of each head)``."""
    heads = heads.to(graph.ptr.device).long()
    deg = graph.ptr[heads + 1] - graph.ptr[heads]
    edges = _ranges(graph.ptr[heads], deg)
    owner = torch.repeat_interleave(torch.arange(heads.numel(), device=deg.device), deg)
    return edges, owner, deg


def _rank_in_segment(owner: Tensor) -> Tensor:
    """Position of each element inside its run of equal ``owner`` values (``owner`` sorted)."""
    if owner.numel() == 0:
        return owner.clone()
    start = torch.ones_like(owner, dtype=torch.bool)
    start[1:] = owner[1:] != owner[:-1]
    first = torch.cummax(torch.where(start, torch.arange(owner.numel()), 0), 0).values
    return torch.arange(owner.numel()) - first


def _keys(n: int, generator: torch.Generator | None) -> Tensor:
    return (torch.rand(n, generator=generator) if generator is not None
            else torch.arange(n, dtype=torch.float64))


def _first_k_per_owner(values: Tensor, owner: Tensor, num_owners: int, k: int,
                       generator: torch.Generator | None) -> Tensor:
    """``[num_owners, k]``: up to ``k`` of each owner's ``values``, a uniform draw without
    replacement (``generator``) or the first ``k`` in the given order (``None``); ``-1`` pads."""
    order = torch.argsort(_keys(values.numel(), generator), stable=True)
    order = order[torch.argsort(owner[order], stable=True)]
    values, owner = values[order], owner[order]
    rank = _rank_in_segment(owner)
    keep = rank < k
    out = torch.full((num_owners, k), -1, dtype=torch.long)
    out[owner[keep], rank[keep]] = values[keep]
    return out


def sample_neighbors(graph: RelationalGraph, heads: Tensor, k: int,
                     generator: torch.Generator | None = None) -> Tensor:
    """Up to ``k`` triples of each head: a uniform draw without replacement (``generator``) or the
    first ``k`` in the view's order (``None``).

    Returns:
        ``[len(heads), k]`` edge ids into the view (``graph.tail[e]``, ``graph.relation[e]``),
        ``-1`` where a head has fewer than ``k`` triples.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    edges, owner, _ = _segments(graph, heads)
    return _first_k_per_owner(edges, owner, heads.numel(), k, generator)


def sample_relation_tails(graph: RelationalGraph, heads: Tensor, k: int,
                          generator: torch.Generator | None = None) -> Tensor:
    r"""KP4SR's knowledge of a node: up to ``k`` of its relations, one tail for each.

    With a ``generator`` (training) the relations are a uniform draw without replacement among the
    head's relations and each tail a uniform draw among the relation's tails, so every call gives
    fresh knowledge; without one (evaluation) they are the first ``k`` relations in relation-id
    order and the first tail of each (the view's edge order), the same every time.

    Returns:
        ``[len(heads), k]`` edge ids into the view, ``-1`` where a head has fewer relations.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    edges, owner, _ = _segments(graph, heads)
    rel = graph.relation[edges]
    # one tail per (head, relation): the smallest key of the group (uniform with random keys)
    key = _keys(edges.numel(), generator)
    order = torch.argsort(key, stable=True)
    group = owner * (graph.num_relations + 1) + rel
    order = order[torch.argsort(group[order], stable=True)]
    g_sorted = group[order]
    first = torch.ones_like(g_sorted, dtype=torch.bool)
    first[1:] = g_sorted[1:] != g_sorted[:-1]
    chosen = order[first]                           # one edge per group, groups by (owner, rel)
    # up to k groups per head: random order, or relation order
    return _first_k_per_owner(edges[chosen], owner[chosen], heads.numel(), k, generator)
