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

__all__ = ["RelationalGraph", "relational_view"]


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
