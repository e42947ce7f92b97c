"""A fingerprint of a collaborative KG's structure, to tell whether two graphs are the same.

Graph models (KATRec, KIRec, KP4SR, LANCER) learn one row per node of the graph they were built
on; their saved weights are only meaningful over that same graph, with the same node order.
:func:`graph_fingerprint` summarises what must match — the node count of every node type and
every edge set, in order — as counts (readable in an error message) plus one SHA-256 over the
node counts, edge types and ``edge_index`` bytes. ``save_pretrained`` records it and
``from_pretrained(..., data=...)`` refuses a graph whose fingerprint differs.
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

__all__ = ["graph_fingerprint", "compare_fingerprints"]


def graph_fingerprint(data: Any) -> dict[str, Any] | None:
    """``{"sha256", "num_nodes", "num_edges"}`` of a :class:`~torch_geometric.data.HeteroData`
    (``None`` for anything without ``node_types`` / ``edge_types``).

    The hash covers, in sorted type order, every node type with its node count and every edge
    type with its ``edge_index`` (int64, row-major): a change of node order, of one edge, or of
    the edge order gives another hash. Node features and text are not included.
    """
    if not (hasattr(data, "node_types") and hasattr(data, "edge_types")):
        return None
    digest = hashlib.sha256()
    num_nodes: dict[str, int] = {}
    for node_type in sorted(data.node_types):
        n = int(data[node_type].num_nodes or 0)
        num_nodes[node_type] = n
        digest.update(f"node:{node_type}:{n};".encode())
    num_edges: dict[str, int] = {}
    for edge_type in sorted(data.edge_types):
        name = "__".join(edge_type)
        edge_index = data[edge_type].edge_index
        num_edges[name] = int(edge_index.size(1))
        digest.update(f"edge:{name}:{num_edges[name]};".encode())
        digest.update(np.ascontiguousarray(edge_index.cpu().numpy().astype(np.int64)).tobytes())
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
