r"""Why this item? Paths through the collaborative KG, scored by the model's own attention.

For any model built on the KG item embedder (KATRec, KG-SASRec, KG-GRU4Rec — anything whose
``item_embedder`` has a :class:`~kgseqgraph.nn.embed.KGEnricher`), :func:`explain` returns the
top-:math:`k` paths that connect a user's history to a recommended item.

**What a path is.** The enricher propagates messages from the tail :math:`t` of every triple
:math:`(h, r, t)` to its head :math:`h`, weighted by
:math:`\alpha(h, r, t) = \mathrm{softmax}_{h}\,\pi(h, r, t)`; with ``reuse_attention`` (KGAT's
scheme, the default) one :math:`\alpha` per edge, computed from TransR's parameters, serves
every layer. With :math:`L` layers, a history item :math:`i`'s embedding reaches the recommended
item :math:`j`'s :math:`\mathbf{e}^{*}_j` along every walk
:math:`i = v_\ell \to v_{\ell-1} \to \dots \to v_0 = j` in message direction, :math:`\ell \le L`
(each step an edge whose head is the next node). A path is such a walk without repeated nodes,
and its **score** is the product of the attention along it (KGAT's case study):

.. math::
    s(i \to \dots \to j) = \prod_{m=1}^{\ell} \alpha(v_{m-1}, r_m, v_m).

Summed over all walks of length :math:`\ell`, these products are the :math:`(j, i)` entry of
:math:`A^{\ell}`, :math:`A_{h t} = \sum_r \alpha(h, r, t)`: the share of :math:`i`'s layer-0
embedding mixed into :math:`j`'s layer-:math:`\ell` neighbourhood aggregate, before the layers'
non-linearities. This direction (into the recommended item) is the one scored because a
candidate's score :math:`\mathbf{h}_u^\top\hat{\mathbf{E}}_j` differs from another candidate's
only through :math:`j`'s own row, built from :math:`\mathbf{e}^{*}_j`: what flows into it is what
makes :math:`j` the recommendation. The walks run over the model's own graph — its buffers, built
from the training graph — so a path through a user (item → user → item) uses training
interactions only.

The weights are the trained model's, in eval mode: :meth:`KGEnricher.attention_weights` runs
layer 1's attention exactly as the forward pass does (no dropout acts on it). Without attention
(the NoAtten ablation) the paths are scored by the fixed propagation weights.

**Search.** Walks grow backwards from :math:`j` one layer at a time; a walk is kept only while
the history is still reachable in the layers left, and only the :math:`k` best walks into each
node are extended (a :math:`k`-best-paths dynamic programme: exact for the top :math:`k` up to
the no-repeated-node rule).

:func:`plot_explanation` draws the paths (matplotlib); :func:`scores_without_edges` recomputes
scores with edges removed (the deletion test of ``benchmarks/explain_faithfulness.py``).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..data.sequences import Sequences

__all__ = ["AttentionGraph", "edge_attention", "attention_paths", "explain",
           "plot_explanation", "fact_ids", "fact_edges", "scores_without_edges", "kg_enricher",
           "relation_label", "hop_text"]


def kg_enricher(model: Any) -> Any:
    """The :class:`~kgseqgraph.nn.embed.KGEnricher` of a model built on the KG item embedder."""
    enricher = getattr(getattr(model, "item_embedder", None), "enricher", None)
    if enricher is None or not hasattr(enricher, "attention_weights"):
        raise TypeError(f"{type(model).__name__} is not built on the KG item embedder: explain "
                        "needs a graph model (KATRec, KG-SASRec, KG-GRU4Rec)")
    return enricher


@dataclass
class AttentionGraph:
    r"""The edges a model propagates over, with their attention: triple ``e`` is
    ``(head[e], relation[e], tail[e])`` with weight ``alpha[e]`` (messages flow tail → head);
    sorted by head, ``ptr`` the CSR offsets. Node ids are the model's view's (items, then the
    other node types: ``node_offsets``)."""

    head: Tensor
    relation: Tensor
    tail: Tensor
    alpha: Tensor
    ptr: Tensor
    num_nodes: int
    node_offsets: dict[str, int]
    node_counts: dict[str, int]
    relation_names: list[str]

    def node_type(self, node: int) -> tuple[str, int]:
        """``(type, index within the type)`` of a view node."""
        for t, start in self.node_offsets.items():
            if start <= node < start + self.node_counts[t]:
                return t, node - start
        raise IndexError(f"node {node} out of range")


def edge_attention(model: Any) -> AttentionGraph:
    """The model's edges and :math:`\\alpha` (eval mode, as its forward pass uses them)."""
    enricher = kg_enricher(model)
    was_training = model.training
    model.eval()
    try:
        alpha = enricher.attention_weights().cpu()
    finally:
        model.train(was_training)
    ei = enricher.edge_index.cpu()
    return AttentionGraph(ei[1], enricher.edge_type.cpu(), ei[0], alpha, enricher.ptr.cpu(),
                          enricher.num_nodes, dict(enricher.node_offsets),
                          dict(enricher.node_counts), list(enricher.relation_names))


def _reach_masks(graph: AttentionGraph, sources: Tensor, depth: int,
                 through: Tensor) -> list[Tensor]:
    """``masks[d]``: nodes ``v`` with a walk ``source → … → v`` of at most ``d`` edges whose
    intermediate nodes are all ``through``."""
    mask = torch.zeros(graph.num_nodes, dtype=torch.bool)
    mask[sources] = True
    is_source = mask.clone()
    masks = [mask]
    for _ in range(depth):
        nxt = masks[-1].clone()
        passable = masks[-1] & (is_source | through)
        nxt[graph.head[passable[graph.tail]]] = True
        masks.append(nxt)
    return masks


def _top_per_group(group: Tensor, weight: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` largest ``weight`` of every ``group`` value (ties: lower index)."""
    if group.numel() == 0:
        return group
    order = torch.argsort(weight, descending=True, stable=True)
    order = order[torch.argsort(group[order], stable=True)]
    g = group[order]
    start = torch.ones_like(g, dtype=torch.bool)
    start[1:] = g[1:] != g[:-1]
    first = torch.cummax(torch.where(start, torch.arange(g.numel()), 0), 0).values
    rank = torch.arange(g.numel()) - first
    return order[rank < k]


def _merge_parallel(graph: AttentionGraph, nodes: Tensor, edges: Tensor,
                    weight: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One walk per sequence of (node, relation): walks over parallel edges (the same triple
    twice, e.g. a repeated interaction) are one path, with the sum of their weights (what the
    propagation sums too); the first walk's edges represent it."""
    if nodes.size(0) < 2:
        return nodes, edges, weight
    key = torch.cat([nodes, graph.relation[edges]], 1)
    uniq, inverse = torch.unique(key, dim=0, return_inverse=True)
    if uniq.size(0) == key.size(0):
        return nodes, edges, weight
    total = torch.zeros(uniq.size(0), dtype=weight.dtype).index_add_(0, inverse, weight)
    first = torch.full((uniq.size(0),), key.size(0), dtype=torch.long).scatter_reduce_(
        0, inverse, torch.arange(key.size(0)), "amin")
    return nodes[first], edges[first], total


def attention_paths(graph: AttentionGraph, sources: Sequence[int] | Tensor, target: int,
                    max_length: int, k: int = 10, through: Tensor | None = None
                    ) -> list[tuple[list[int], list[int], float]]:
    """The ``k`` best paths (product of ``alpha``) from any of ``sources`` to ``target`` in
    message direction, of at most ``max_length`` edges and without repeated nodes (see the
    module docstring); ``through`` (a ``[num_nodes]`` bool mask) restricts the nodes a path may
    pass through (its ends excepted).

    Returns:
        ``(nodes, edges, score)`` per path, best first: ``nodes`` from the source to
        ``target``, ``edges[m]`` the edge (index into ``graph``) from ``nodes[m]`` to
        ``nodes[m + 1]`` (its head is ``nodes[m + 1]``). Parallel edges (the same triple more
        than once, as a repeated interaction) make one path whose score sums theirs; ``edges``
        then names the first. Ties: shorter first, then by nodes.
    """
    sources = torch.as_tensor(list(sources) if not isinstance(sources, Tensor) else sources,
                              dtype=torch.long).view(-1)
    if max_length < 1 or k < 1:
        raise ValueError("max_length and k must be >= 1")
    is_source = torch.zeros(graph.num_nodes, dtype=torch.bool)
    is_source[sources] = True
    if through is None:
        through = torch.ones(graph.num_nodes, dtype=torch.bool)
    reach = _reach_masks(graph, sources, max_length - 1, through)
    nodes = torch.tensor([[int(target)]])
    edges = torch.zeros(1, 0, dtype=torch.long)
    weight = torch.ones(1, dtype=graph.alpha.dtype)
    found: list[tuple[list[int], list[int], float]] = []
    for step in range(1, max_length + 1):
        # the history is still reachable, and the tail is a source or may be passed through
        allowed = reach[max_length - step][graph.tail] & (is_source | through)[graph.tail]
        kept = allowed.nonzero().view(-1)  # edges sorted by head: a CSR over them
        ptr = torch.zeros(graph.num_nodes + 1, dtype=torch.long)
        ptr[1:] = torch.cumsum(torch.bincount(graph.head[kept], minlength=graph.num_nodes), 0)
        end = nodes[:, -1]
        counts = ptr[end + 1] - ptr[end]
        total = int(counts.sum())
        if total == 0:
            break
        walk = torch.repeat_interleave(torch.arange(end.numel()), counts, output_size=total)
        offset = torch.arange(total) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts,
                                                               counts, output_size=total)
        e = kept[ptr[end][walk] + offset]
        tail = graph.tail[e]
        simple = ~(nodes[walk] == tail.unsqueeze(1)).any(1)
        walk, e, tail = walk[simple], e[simple], tail[simple]
        nodes = torch.cat([nodes[walk], tail.unsqueeze(1)], 1)
        edges = torch.cat([edges[walk], e.unsqueeze(1)], 1)
        weight = weight[walk] * graph.alpha[e]
        nodes, edges, weight = _merge_parallel(graph, nodes, edges, weight)
        done = is_source[nodes[:, -1]]
        if done.any():
            best = torch.argsort(weight[done], descending=True, stable=True)[:k]
            for row in done.nonzero().view(-1)[best].tolist():
                found.append((nodes[row].flip(0).tolist(), edges[row].flip(0).tolist(),
                              float(weight[row])))
        if step < max_length:
            go_on = through[nodes[:, -1]].nonzero().view(-1)
            keep = go_on[_top_per_group(nodes[go_on, -1], weight[go_on], k)]
            nodes, edges, weight = nodes[keep], edges[keep], weight[keep]
    found.sort(key=lambda p: (-p[2], len(p[1]), p[0]))
    return found[:k]


# ------------------------------------------------------------------ names
def relation_label(data: Any, identifier: str) -> tuple[str, bool]:
    """``(label, reverse)`` of a relation identifier: the source's name of the relation
    (``data.relation_names``; ``interacts`` for interactions) and whether the identifier is the
    ``rev_`` reverse of it."""
    reverse = identifier.startswith("rev_")
    base = identifier[4:] if reverse else identifier
    source = dict(getattr(data, "relation_names", {}) or {}) if data is not None else {}
    return str(source.get(base, base)), reverse


class _Names:
    """Readable names of view nodes from the model's graph (raw ids, titles)."""

    def __init__(self, graph: AttentionGraph, data: Any) -> None:
        self.graph, self.data = graph, data
        if data is not None:
            for t, count in graph.node_counts.items():
                have = int(data[t].num_nodes or 0) if t in data.node_types else -1
                if have != count:
                    raise ValueError(f"data has {have} {t} nodes, the model's graph {count}: "
                                     "pass the graph the model was built on")

    def raw_id(self, node: int) -> Any:
        t, i = self.graph.node_type(node)
        store = self.data[t] if self.data is not None else None
        if store is not None and "raw_id" in store:
            return store.raw_id[i]
        return i

    def name(self, node: int) -> str:
        t, i = self.graph.node_type(node)
        raw = self.raw_id(node)
        if t == "item" and self.data is not None:
            store = self.data["item"]
            for key in ("title", "text"):
                if key in store and i < len(store[key]) and store[key][i]:
                    text = str(store[key][i])
                    return text if len(text) <= 60 else text[:57] + "…"
            return f"item {raw}"
        return f"{t} {raw}"


def hop_text(label: str, reverse: bool, to: str) -> str:
    """One hop of a path, towards node ``to`` (message direction), as the fact it comes from:
    the edge's head is ``to`` and its triple ``(to, rel, previous)``; the reverse ``rev_X`` of a
    relation ``X`` is the fact ``(previous, X, to)``, written ``—[X]→``; a forward one is
    ``(to, X, previous)``, written ``←[X]—``."""
    return f"—[{label}]→ {to}" if reverse else f"←[{label}]— {to}"


def explain(model: Any, history: Sequence[int] | Tensor, item: int | None = None,
            data: Any = None, k: int = 10, max_length: int | None = None,
            through: Sequence[str] | None = None):
    """The top-``k`` attention paths from ``history`` to ``item`` (default: the model's top
    recommendation for ``history``), as a :class:`pandas.DataFrame`, best first.

    Args:
        model: a model built on the KG item embedder (KATRec, KG-SASRec, …), trained.
        history: the user's items (node indices ``0 … N-1``), oldest first. Paths start at the
            items the model reads (the newest ``model.serving_window`` of them); the whole
            history is excluded from the ranking.
        item: the item to explain (default: the top-1 item, history excluded).
        data: the model's graph (its ``train_graph``), for raw ids, titles and relation names.
        k: number of paths.
        max_length: longest path (default and at most: the number of propagation layers).
        through: node types a path may pass through (default: all; ``("entity",)`` or
            ``("entity", "item")``: knowledge paths only, no user in between).

    Returns:
        One row per path: ``rank``, ``score`` (product of attention), ``length``,
        ``history_item`` / ``history_raw_id`` / ``history_name`` (where it starts), ``path``
        (readable: ``A —[rel]→ B`` reads "A rel B", ``A ←[rel]— B`` reads "B rel A"), and per
        hop (lists, history end first) ``nodes`` (view node ids), ``node_types``, ``raw_ids``,
        ``names``, ``relations`` (the edge's relation identifier), ``alphas`` and ``edges``
        (indices into :func:`edge_attention`'s graph). ``df.attrs`` holds the item (``item``,
        ``item_raw_id``, ``item_name``), its ``item_score`` and rank for ``history``,
        ``history``, the ``window`` paths start from, ``max_length`` and the model's name.
    """
    import pandas as pd

    enricher = kg_enricher(model)
    layers = len(enricher.convs)
    max_length = layers if max_length is None else int(max_length)
    if not 1 <= max_length <= layers:
        raise ValueError(f"max_length must lie in [1, {layers}] (the model's layers)")
    hist = torch.as_tensor(list(history) if not isinstance(history, Tensor) else history,
                           dtype=torch.long).view(-1)
    if hist.numel() == 0:
        raise ValueError("the history is empty: nothing to explain the item from")
    seqs = Sequences.from_lists([hist.tolist()], model.num_items)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            scores = model.score(seqs)[0].float()
    finally:
        model.train(was_training)
    ranked = scores.clone()
    ranked[hist] = float("-inf")
    if item is None:
        item = int(torch.argmax(ranked))
    item = int(item)
    if not 0 <= item < model.num_items:
        raise ValueError(f"item {item} out of range 0..{model.num_items - 1}")
    graph = edge_attention(model)
    names = _Names(graph, data)
    item_node = graph.node_offsets["item"] + item
    # paths start only at the items the model reads: its serving window (the newest
    # ``serving_window`` items); older items cannot change the score, so they explain nothing
    read = hist[-model.serving_window:]
    sources = torch.unique(read) + graph.node_offsets["item"]
    mask = None
    if through is not None:
        unknown = sorted(set(through) - set(graph.node_offsets))
        if unknown:
            raise ValueError(f"through: node types {unknown} are not in the model's graph "
                             f"({list(graph.node_offsets)})")
        mask = torch.zeros(graph.num_nodes, dtype=torch.bool)
        for t in through:
            s0 = graph.node_offsets[t]
            mask[s0:s0 + graph.node_counts[t]] = True
    paths = attention_paths(graph, sources, item_node, max_length, k, through=mask)
    rows = []
    for rank, (nodes, edges, score) in enumerate(paths, start=1):
        rel_names = [graph.relation_names[int(graph.relation[e])] for e in edges]
        node_names = [names.name(v) for v in nodes]
        text = node_names[0]
        for m, rel in enumerate(rel_names):
            text += " " + hop_text(*relation_label(data, rel), node_names[m + 1])
        rows.append({
            "rank": rank, "score": score, "length": len(edges),
            "history_item": nodes[0] - graph.node_offsets["item"],
            "history_raw_id": names.raw_id(nodes[0]), "history_name": node_names[0],
            "path": text, "nodes": nodes,
            "node_types": [graph.node_type(v)[0] for v in nodes],
            "raw_ids": [names.raw_id(v) for v in nodes], "names": node_names,
            "relations": rel_names, "alphas": [float(graph.alpha[e]) for e in edges],
            "edges": edges})
    columns = ["rank", "score", "length", "history_item", "history_raw_id", "history_name",
               "path", "nodes", "node_types", "raw_ids", "names", "relations", "alphas", "edges"]
    df = pd.DataFrame(rows, columns=columns)
    df.attrs.update({
        "item": item, "item_raw_id": names.raw_id(item_node), "item_name": names.name(item_node),
        "item_score": float(scores[item]), "item_rank": int((ranked >= ranked[item]).sum()),
        "history": hist.tolist(), "window": read.tolist(), "max_length": max_length,
        "through": None if through is None else list(through),
        "model": getattr(model, "model_name", type(model).__name__),
        "relation_labels": {n: relation_label(data, n)[0] for n in graph.relation_names}})
    return df


# ------------------------------------------------------------------ figure
_COLOURS = {"item": "#4C72B0", "entity": "#DD8452", "user": "#55A868"}


def plot_explanation(df: Any, path: str | Path | None = None, ax: Any = None,
                     title: str | None = None) -> Any:
    """Draw the paths of :func:`explain` (history items left, the recommended item right,
    other nodes in columns by their distance to the item; line width ∝ path score, edges labelled with their relation) and
    save it as ``path`` (PNG) when given. Returns the matplotlib figure."""
    import matplotlib

    if ax is None and path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if len(df) == 0:
        raise ValueError("no paths to draw")
    depth = int(df["length"].max())
    pos: dict[int, tuple[float, float]] = {}
    label: dict[int, str] = {}
    kind: dict[int, str] = {}
    columns: dict[float, list[int]] = {}
    for _, row in df.iterrows():
        n = len(row["nodes"])
        for h, (v, name, t) in enumerate(zip(row["nodes"], row["names"], row["node_types"])):
            if v in label:
                continue
            # history items left, the item right, the others by their distance to the item
            x = 0.0 if h == 0 else float(depth - (n - 1 - h))
            columns.setdefault(x, []).append(v)
            label[v], kind[v] = name, t
    for x, vs in columns.items():
        for y, v in enumerate(vs):
            pos[v] = (x, -(y - (len(vs) - 1) / 2))
    height = max(len(vs) for vs in columns.values())
    if ax is None:
        fig, ax = plt.subplots(figsize=(2.8 * (depth + 1) + 2.5, 0.7 * height + 1.6))
    else:
        fig = ax.figure
    top = float(df["score"].max())
    drawn = set()
    for _, row in df.iloc[::-1].iterrows():
        width = 0.8 + 4.0 * float(row["score"]) / top
        for m, rel in enumerate(row["relations"]):
            a, b = row["nodes"][m], row["nodes"][m + 1]
            (x0, y0), (x1, y1) = pos[a], pos[b]
            ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                        arrowprops=dict(arrowstyle="-|>", lw=width, color="#888888",
                                        alpha=0.6, shrinkA=14, shrinkB=14))
            if (a, b) not in drawn:
                drawn.add((a, b))
                shown = df.attrs.get("relation_labels", {}).get(rel, rel)
                ax.text((x0 + x1) / 2, (y0 + y1) / 2, f"{shown}\nα={row['alphas'][m]:.2g}",
                        fontsize=6, ha="center", va="center", color="#333333",
                        bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8))
    for v, (x, y) in pos.items():
        ax.scatter([x], [y], s=260, color=_COLOURS.get(kind[v], "#999999"), zorder=3,
                   edgecolors="black", linewidths=0.5)
        text = label[v] if len(label[v]) <= 34 else label[v][:32] + "…"
        ha = "right" if x == 0 else "left" if x == depth else "center"
        dx = -0.08 if x == 0 else 0.08 if x == depth else 0.0
        dy = 0.0 if ha != "center" else 0.28
        ax.text(x + dx, y + dy, text, fontsize=7, ha=ha, va="center", zorder=4)
    for t, c in _COLOURS.items():
        if t in kind.values():
            ax.scatter([], [], s=60, color=c, label=t, edgecolors="black", linewidths=0.5)
    ax.legend(loc="lower right", fontsize=7, frameon=False)
    ax.set_xlim(-1.6, depth + 1.6)
    ax.set_ylim(-(height + 1) / 2 - 0.2, (height + 1) / 2 + 0.2)
    ax.axis("off")
    ax.set_title(title or f"Why {df.attrs.get('item_name', 'this item')}? top {len(df)} "
                 f"attention paths ({df.attrs.get('model', 'model')})", fontsize=9)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=130, metadata={"Software": None})
    return fig


# ------------------------------------------------------------------ deletion
def fact_ids(graph: AttentionGraph) -> Tensor:
    """``[E]`` the fact each edge belongs to: an edge ``(h, r, t)``, its reverse
    ``(t, rev_r, h)`` (``interacts`` ↔ ``rev_interacts``) and their parallel copies share one
    id (``0 … F-1``)."""
    names = graph.relation_names
    index = {n: r for r, n in enumerate(names)}
    base = torch.tensor([index.get(n[4:], r) if n.startswith("rev_") else r
                         for r, n in enumerate(names)], dtype=torch.long)
    lo, hi = torch.minimum(graph.head, graph.tail), torch.maximum(graph.head, graph.tail)
    key = torch.stack([lo, hi, base[graph.relation]], 1)
    return torch.unique(key, dim=0, return_inverse=True)[1]


def fact_edges(graph: AttentionGraph, edges: Sequence[int] | Tensor,
               facts: Tensor | None = None) -> Tensor:
    """Every edge of the facts ``edges`` belong to (see :func:`fact_ids`; pass ``facts`` to
    reuse them), sorted: each edge, its reverse and their parallel copies."""
    edges = torch.as_tensor(list(edges) if not isinstance(edges, Tensor) else edges,
                            dtype=torch.long).view(-1)
    if edges.numel() == 0:
        return edges
    facts = fact_ids(graph) if facts is None else facts
    return torch.isin(facts, facts[edges]).nonzero().view(-1)


@contextlib.contextmanager
def _without(model: Any, remove: Tensor) -> Iterator[None]:
    enricher = kg_enricher(model)
    keep = torch.ones(enricher.edge_index.size(1), dtype=torch.bool)
    keep[remove] = False
    model._table_cache = None
    try:
        with enricher.edges_kept(keep):
            yield
    finally:
        model._table_cache = None


@torch.no_grad()
def scores_without_edges(model: Any, histories: Sequence[Sequence[int]],
                         remove: Sequence[int] | Tensor = ()) -> Tensor:
    """Scores ``[B, N]`` of ``histories`` by ``model`` (eval mode) when the edges ``remove``
    (indices into :func:`edge_attention`'s graph; see :func:`fact_edges` for both directions of
    a fact) are taken out of the graph — every head's attention renormalised over its remaining
    edges, as if the graph had never held them."""
    seqs = Sequences.from_lists([list(h) for h in histories], model.num_items)
    remove = torch.as_tensor(list(remove) if not isinstance(remove, Tensor) else remove,
                             dtype=torch.long)
    was_training = model.training
    model.eval()
    try:
        with _without(model, remove):
            return model.score(seqs).float()
    finally:
        model.train(was_training)
