"""A fingerprint of a collaborative KG's structure, to tell whether two graphs are the same.

Graph models (KATRec, KIRec, KP4SR, LANCER) learn one row per item / entity node of the graph
they were built on; their saved weights are only meaningful over that same knowledge graph, with
the same node order. :func:`graph_fingerprint` summarises its structure — the node count of each
of the given node types and every edge set among them, in order — as counts (readable in an error
message) plus one SHA-256 over the node counts, edge types and ``edge_index`` bytes.
``save_pretrained`` records it and ``from_pretrained(..., data=...)`` refuses a graph whose
fingerprint differs. Interactions (``user`` nodes) are left out by default, so a grown
interaction log over the same KG still loads; node features and text are not hashed (models that
read item text, as LANCER, are only checked on the structure).
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["graph_fingerprint", "compare_fingerprints"]


def graph_fingerprint(data: Any, node_types: Sequence[str] | None = ("item", "entity")
                      ) -> dict[str, Any] | None:
    """``{"sha256", "num_nodes", "num_edges"}`` of a :class:`~torch_geometric.data.HeteroData`
    (``None`` for anything without ``node_types`` / ``edge_types``).

    The hash covers, in sorted type order, each node type of ``node_types`` present in the graph
    (``None``: all) with its node count, and every edge type between two of them with its
    ``edge_index`` (int64, row-major): a change of node order, of one edge, or of the edge order
    gives another hash. Node features and text are not included.
    """
    if not (hasattr(data, "node_types") and hasattr(data, "edge_types")):
        return None
    keep = set(data.node_types) if node_types is None else set(node_types)
    digest = hashlib.sha256()
    num_nodes: dict[str, int] = {}
    for node_type in sorted(t for t in data.node_types if t in keep):
        n = int(data[node_type].num_nodes or 0)
        num_nodes[node_type] = n
        digest.update(f"node:{node_type}:{n};".encode())
    num_edges: dict[str, int] = {}
    for edge_type in sorted(t for t in data.edge_types if t[0] in keep and t[2] in keep):
        name = "__".join(edge_type)
        edge_index = data[edge_type].edge_index
        num_edges[name] = int(edge_index.size(1))
        digest.update(f"edge:{name}:{num_edges[name]};".encode())
        digest.update(np.ascontiguousarray(edge_index.cpu().numpy().astype(np.int64, copy=False)))
    return {"sha256": digest.hexdigest(), "num_nodes": num_nodes, "num_edges": num_edges}


def compare_fingerprints(expected: dict[str, Any], got: dict[str, Any]) -> str | None:
    """``None`` when the two fingerprints are equal, else what differs, in words."""
    if expected.get("sha256") == got.get("sha256"):
        return None
    diffs = []
    for key, label in (("num_nodes", "nodes"), ("num_edges", "edges")):
        a, b = expected.get(key, {}), got.get(key, {})
        for name in sorted(set(a) | set(b)):
            if a.get(name) != b.get(name):
                diffs.append(f"{label} of {name!r}: {a.get(name)} expected, {b.get(name)} given")
    if not diffs:
        diffs.append("same node and edge counts, but different edges or node order")
    return "; ".join(diffs)
