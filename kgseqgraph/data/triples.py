r"""KG triples over one global node index: reading them from a graph, indexing them for
membership tests, and a leak-free train/valid/test split for link prediction.

* :func:`kg_triples` reads the typed triples ``(head, relation, tail)`` of a collaborative KG
  (through :func:`~kgseqgraph.data.relational_view`), a :class:`~kgseqgraph.data.RelationalGraph`
  or an ``(edge_index, edge_type)`` pair;
* :class:`TripleIndex` answers "is this a known triple?" and "which tails does :math:`(h, r)`
  have?" with binary searches over sorted ``int64`` keys (filtered negatives and filtered ranks);
* :func:`split_triples` assigns whole node pairs :math:`\{h, t\}` to train/valid/test, so a
  held-out fact cannot leak through its reverse or an inverse relation of the source KG.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from .views import RelationalGraph, relational_view

__all__ = ["Triples", "kg_triples", "TripleIndex", "KGSplit", "split_triples"]


class Triples(NamedTuple):
    """KG triples over one global node index: ``(head[e], relation[e], tail[e])``."""

    head: Tensor
    relation: Tensor
    tail: Tensor
    num_nodes: int
    num_relations: int


def kg_triples(graph: HeteroData | RelationalGraph | tuple[Tensor, Tensor],
               node_types: Sequence[str] = ("item", "entity"), include_reverse: bool = True,
               num_nodes: int | None = None, num_relations: int | None = None) -> Triples:
    r"""Read the typed triples of a knowledge graph.

    Args:
        graph: one of

            * the collaborative KG :class:`~torch_geometric.data.HeteroData` (every edge type is a
              relation; flattened with :func:`~kgseqgraph.data.relational_view` over
              ``node_types``, items first);
            * a :class:`~kgseqgraph.data.RelationalGraph`;
            * a tuple ``(edge_index, edge_type)`` in the package's message-passing convention
              (the same as :attr:`RelationalGraph.edge_index` and
              :class:`~kgseqgraph.nn.conv.KGAttentionConv`): ``edge_index[0]`` is the **tail**
              (message source) and ``edge_index[1]`` the **head** (the node that aggregates).
        node_types: node types to keep when ``graph`` is a ``HeteroData``.
        include_reverse: keep the ``rev_*`` relations when ``graph`` is a ``HeteroData``.
        num_nodes: number of nodes for the tuple form (default: ``edge_index.max() + 1``).
        num_relations: number of relations for the tuple form (default: ``edge_type.max() + 1``).
    """
    if isinstance(graph, HeteroData):
        graph = relational_view(graph, node_types=node_types, include_reverse=include_reverse)
    if isinstance(graph, RelationalGraph):
        return Triples(graph.head, graph.relation, graph.tail, graph.num_nodes,
                       graph.num_relations)
    if isinstance(graph, (tuple, list)) and len(graph) == 2:
        edge_index, edge_type = graph
        if not (isinstance(edge_index, Tensor) and edge_index.dim() == 2
                and edge_index.size(0) == 2):
            got = tuple(edge_index.shape) if isinstance(edge_index, Tensor) else type(edge_index)
            raise ValueError(f"expected edge_index of shape [2, E] (row 0: tail, row 1: head), "
                             f"got {got}")
        if not (isinstance(edge_type, Tensor) and edge_type.shape == (edge_index.size(1),)):
            got = tuple(edge_type.shape) if isinstance(edge_type, Tensor) else type(edge_type)
            raise ValueError(f"expected edge_type of shape [{edge_index.size(1)}], got {got}")
        n = num_nodes if num_nodes is not None else (
            int(edge_index.max()) + 1 if edge_index.numel() else 0)
        r = num_relations if num_relations is not None else (
            int(edge_type.max()) + 1 if edge_type.numel() else 0)
        return Triples(edge_index[1], edge_type, edge_index[0], n, r)
    raise TypeError("expected a HeteroData, a RelationalGraph or an (edge_index, edge_type) tuple, "
                    f"got {type(graph).__name__}")


class TripleIndex:
    r"""Membership tests and per-``(h, r)`` tail lists for a set of triples.

    Triples are encoded as sorted ``int64`` keys :math:`(h R + r) N + t`, so membership is a
    binary search and the true tails of a query :math:`(h, r)` are one contiguous key range.
    """

    def __init__(self, head: Tensor, relation: Tensor, tail: Tensor, num_nodes: int,
                 num_relations: int) -> None:
        if num_nodes * num_nodes * max(num_relations, 1) >= 2 ** 62:
            raise ValueError(f"graph too large for int64 triple keys ({num_nodes} nodes, "
                             f"{num_relations} relations)")
        self.num_nodes = int(num_nodes)
        self.num_relations = int(num_relations)
        self.keys = torch.unique(self._key(head, relation, tail))  # sorted

    def _key(self, head: Tensor, relation: Tensor, tail: Tensor) -> Tensor:
        return (head.long() * self.num_relations + relation.long()) * self.num_nodes + tail.long()

    def __len__(self) -> int:
        return int(self.keys.numel())

    def contains(self, head: Tensor, relation: Tensor, tail: Tensor) -> Tensor:
        """Boolean mask: which of the given triples are in the index."""
        k = self._key(head, relation, tail).to(self.keys.device)
        pos = torch.searchsorted(self.keys, k).clamp_(max=max(len(self) - 1, 0))
        if len(self) == 0:
            return torch.zeros_like(k, dtype=torch.bool)
        return self.keys[pos] == k

    def true_tails(self, head: Tensor, relation: Tensor) -> tuple[Tensor, Tensor]:
        """All known tails of each query ``(head[b], relation[b])``.

        Returns:
            ``(query, tail)``: flat tensors, ``tail[j]`` is a known tail of query ``query[j]``.
        """
        base = (head.long() * self.num_relations + relation.long()) * self.num_nodes
        base = base.to(self.keys.device)
        lo = torch.searchsorted(self.keys, base)
        hi = torch.searchsorted(self.keys, base + self.num_nodes)
        counts = hi - lo
        query = torch.repeat_interleave(torch.arange(head.numel(), device=lo.device), counts)
        start = torch.repeat_interleave(lo - torch.cumsum(counts, 0) + counts, counts)
        pos = start + torch.arange(query.numel(), device=lo.device)
        return query, self.keys[pos] - base[query]


@dataclass
class KGSplit:
    """Indices into a :class:`Triples` for train / valid / test."""

    train: Tensor
    valid: Tensor
    test: Tensor

    def sizes(self) -> dict[str, int]:
        return {"train": int(self.train.numel()), "valid": int(self.valid.numel()),
                "test": int(self.test.numel())}


def split_triples(triples: Triples, ratios: tuple[float, float, float] = (0.9, 0.05, 0.05),
                  seed: int = 0, group_node_pairs: bool = True) -> KGSplit:
    r"""Seeded train/valid/test split of KG triples.

    Args:
        triples: the triples (with reverse relations, as :func:`kg_triples`
            returns them).
        ratios: fractions for train, valid and test (must sum to 1).
        seed: seed of the permutation.
        group_node_pairs: split unordered node pairs :math:`\{h, t\}` rather than single triples,
            so both directions of a fact (and inverse relations) stay in the same part.
    """
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise ValueError(f"ratios must be three non-negative fractions summing to 1, got {ratios}")
    h, t = triples.head, triples.tail
    if group_node_pairs:
        lo, hi = torch.minimum(h, t), torch.maximum(h, t)
        _, group = torch.unique(lo * triples.num_nodes + hi, return_inverse=True)
    else:
        group = torch.arange(h.numel())
    n_groups = int(group.max()) + 1 if group.numel() else 0
    gen = torch.Generator().manual_seed(seed)
    part_of_rank = torch.empty(n_groups, dtype=torch.long)
    perm = torch.randperm(n_groups, generator=gen)
    n_train = int(round(ratios[0] * n_groups))
    n_valid = int(round(ratios[1] * n_groups))
    part_of_rank[perm[:n_train]] = 0
    part_of_rank[perm[n_train:n_train + n_valid]] = 1
    part_of_rank[perm[n_train + n_valid:]] = 2
    part = part_of_rank[group]
    return KGSplit(*(torch.nonzero(part == p).view(-1) for p in range(3)))
