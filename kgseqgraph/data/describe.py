"""A one-call summary of a collaborative KG: what a user checks first after loading data."""
from __future__ import annotations

from typing import Any

from torch_geometric.data import HeteroData

from .graph import INTERACTS, kg_edge_types
from .sequences import user_sequences

__all__ = ["describe", "format_description"]


def describe(data: HeteroData) -> dict[str, Any]:
    """Counts per node and edge type, interaction density and sequence-length statistics.

    Returns a JSON-serialisable dict with keys ``nodes``, ``edges``, ``relations``,
    ``interactions``, ``density`` (interactions / (users × items)), ``sequence_length``
    (min / mean / median / max / p90 and the number of users under 3 interactions) and
    ``build_report`` (what the builder filtered or merged).
    """
    nodes = {t: int(data[t].num_nodes or 0) for t in data.node_types}
    edges = {"__".join(et): int(data[et].edge_index.size(1)) for et in data.edge_types}
    n_inter = int(data[INTERACTS].edge_index.size(1)) if INTERACTS in data.edge_types else 0
    n_users, n_items = nodes.get("user", 0), nodes.get("item", 0)
    out: dict[str, Any] = {
        "nodes": nodes,
        "edges": edges,
        "relations": len(getattr(data, "relation_names", {}) or {}),
        "kg_edges": sum(int(data[et].edge_index.size(1)) for et in kg_edge_types(data)),
        "interactions": n_inter,
        "density": n_inter / (n_users * n_items) if n_users and n_items else 0.0,
    }
    if n_inter:
        lengths = user_sequences(data).lengths.double()
        out["sequence_length"] = {
            "min": int(lengths.min()), "mean": float(lengths.mean()),
            "median": float(lengths.median()), "p90": float(lengths.quantile(0.9)),
            "max": int(lengths.max()), "users_under_3": int((lengths < 3).sum()),
        }
    out["build_report"] = dict(getattr(data, "build_report", {}) or {})
    return out


def format_description(summary: dict[str, Any]) -> str:
    """A human-readable rendering of :func:`describe`'s output."""
    lines = ["nodes: " + ", ".join(f"{k}={v:,}" for k, v in summary["nodes"].items()),
             f"interactions: {summary['interactions']:,} (density {summary['density']:.4%})",
             f"KG: {summary['relations']} relations, {summary['kg_edges']:,} edges "
             "(reverse edges included)"]
    if "sequence_length" in summary:
        s = summary["sequence_length"]
        lines.append(f"sequence length: min {s['min']}, median {s['median']:.0f}, "
                     f"mean {s['mean']:.1f}, p90 {s['p90']:.0f}, max {s['max']}; "
                     f"{s['users_under_3']} users under 3")
    if summary.get("build_report"):
        lines.append("build report: " + ", ".join(f"{k}={v:,}" for k, v in summary["build_report"].items()))
    return "\n".join(lines)
