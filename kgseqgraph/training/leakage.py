"""The guard against leakage through the graph: no model trained on a split may have been built
over that split's held-out interactions (:attr:`~kgseqgraph.data.LeaveOneOutSplit.train_graph`)."""
from __future__ import annotations

from typing import Any

__all__ = ["check_no_leak"]


def check_no_leak(model: Any, split: Any) -> None:
    """Refuse a graph model built over a graph that holds held-out interactions of ``split``.

    A graph model records the fingerprint of the part of its graph its weights depend on
    (:meth:`~kgseqgraph.models.base.SequentialRecommender.fingerprint_node_types`); when that
    part has users, it must be the split's training graph, edge for edge."""
    recorded = getattr(model, "graph_fingerprint", None)
    graph = getattr(split, "graph", None)
    if recorded is None or graph is None or "user" not in recorded.get("num_nodes", {}):
        return
    from ..data.fingerprint import graph_fingerprint

    node_types = tuple(recorded["num_nodes"])
    expected = graph_fingerprint(split.train_graph, node_types)
    if recorded["sha256"] == expected["sha256"]:
        return
    full = graph_fingerprint(graph, node_types)
    why = ("it holds the held-out (validation/test) interactions" if recorded["sha256"]
           == full["sha256"] else "it is not this split's training graph")
    raise ValueError(f"{type(model).__name__} was built over a graph with users whose "
                     f"interactions differ from the split's training graph ({why}): a model "
                     "that propagates over user–item edges would see the targets it is tested "
                     "on. Build it from split.train_graph.")
