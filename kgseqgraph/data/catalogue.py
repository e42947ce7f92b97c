r"""Changing a collaborative KG's item catalogue: reorder its items, keep the first ones, or
append new items with their KG facts.

Item nodes are numbered ``0 … N-1`` and models hold one row per item in that order, so a new
item is always **appended** (node ``N``, ``N + 1``, …): the existing items keep their indices and a
trained model can be extended with :meth:`~kgseqgraph.models.SequentialRecommender.add_items`.

* :func:`reorder_items` — the same graph with the items in another order (every per-item
  attribute — ``raw_id``, ``title``, ``text``, feature tensors — and every edge remapped);
* :func:`first_items` — the graph restricted to items ``0 … n-1`` (edges touching the others
  removed, with their per-edge attributes);
* :func:`append_items` — new items (raw ids, text, titles) and their KG triples, given in the
  dataset's own ids, appended to the catalogue; each fact also gets its ``rev_`` edge, as the
  builder does.

All three return shallow copies: node and edge stores that do not change are shared with the
input graph, never modified in place.
"""
from __future__ import annotations

import copy
from collections.abc import Hashable, Sequence
from typing import Any

import pandas as pd
import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from .graph import sanitize_relation

__all__ = ["reorder_items", "first_items", "append_items", "per_item_keys"]


def per_item_keys(data: HeteroData) -> list[str]:
    """The attributes of ``data['item']`` with one entry per item (tensors with ``N`` rows,
    lists/tuples of length ``N``), besides ``num_nodes``."""
    store = data["item"]
    n = int(store.num_nodes)
    keys = []
    for key, value in store.items():
        if key == "num_nodes":
            continue
        if isinstance(value, Tensor) and value.dim() > 0 and value.size(0) == n:
            keys.append(key)
        elif isinstance(value, (list, tuple)) and len(value) == n:
            keys.append(key)
    return keys


def _take(value: Any, index: Tensor) -> Any:
    if isinstance(value, Tensor):
        return value[index]
    return [value[i] for i in index.tolist()]


def _edge_keys(store: Any, num_edges: int) -> list[str]:
    return [k for k, v in store.items() if k != "edge_index" and (
        (isinstance(v, Tensor) and v.dim() > 0 and v.size(0) == num_edges)
        or (isinstance(v, (list, tuple)) and len(v) == num_edges))]


def _filter_edges(new: Any, old: Any, keep: Tensor) -> None:
    num_edges = int(old.edge_index.size(1))
    for key in _edge_keys(old, num_edges):
        new[key] = _take(old[key], keep.nonzero().view(-1))
    new.edge_index = old.edge_index[:, keep]


def reorder_items(data: HeteroData, order: Tensor | Sequence[int]) -> HeteroData:
    """``data`` with item node ``k`` being the old item ``order[k]`` (a permutation of
    ``0 … N-1``): per-item attributes and every edge touching items are remapped; edge order and
    per-edge attributes are kept."""
    n = int(data["item"].num_nodes)
    order = torch.as_tensor(order, dtype=torch.long).view(-1)
    if order.numel() != n or not torch.equal(torch.sort(order).values, torch.arange(n)):
        raise ValueError(f"order must be a permutation of the {n} items")
    new_of_old = torch.empty(n, dtype=torch.long)
    new_of_old[order] = torch.arange(n)
    out = copy.copy(data)
    for key in per_item_keys(data):
        out["item"][key] = _take(data["item"][key], order)
    for edge_type in data.edge_types:
        src, _, dst = edge_type
        if "item" not in (src, dst):
            continue
        ei = data[edge_type].edge_index.clone()
        if src == "item":
            ei[0] = new_of_old[ei[0]]
        if dst == "item":
            ei[1] = new_of_old[ei[1]]
        out[edge_type].edge_index = ei
    return out


def first_items(data: HeteroData, n: int) -> HeteroData:
    """``data`` restricted to item nodes ``0 … n-1``: the other items and every edge touching
    them (interactions and KG facts, with their per-edge attributes) removed. Users and entities
    are all kept (an entity whose facts were all with removed items is left without edges)."""
    total = int(data["item"].num_nodes)
    if not 0 <= n <= total:
        raise ValueError(f"n must lie in [0, {total}], got {n}")
    out = copy.copy(data)
    out["item"].num_nodes = n
    for key in per_item_keys(data):
        value = data["item"][key]
        out["item"][key] = value[:n] if isinstance(value, Tensor) else list(value[:n])
    for edge_type in data.edge_types:
        src, _, dst = edge_type
        if "item" not in (src, dst):
            continue
        ei = data[edge_type].edge_index
        keep = torch.ones(ei.size(1), dtype=torch.bool)
        if src == "item":
            keep &= ei[0] < n
        if dst == "item":
            keep &= ei[1] < n
        _filter_edges(out[edge_type], data[edge_type], keep)
    return out


def _node_lookup(data: HeteroData, new_ids: list[Hashable]
                 ) -> dict[str, dict[Any, tuple[str, int]]]:
    """Per node type (``item`` — new items, existing items by raw id or linked KG entity id —
    and ``entity``): raw id and its ``str`` → (node type, index)."""
    lookup: dict[str, dict[Any, tuple[str, int]]] = {"item": {}, "entity": {}}

    def add(kind: str, key: Any, node: tuple[str, int]) -> None:
        lookup[kind].setdefault(key, node)
        lookup[kind].setdefault(str(key), node)

    store = data["item"]
    n = int(store.num_nodes)
    for k, r in enumerate(new_ids):
        add("item", r, ("item", n + k))
    raw = list(store.raw_id) if "raw_id" in store else list(range(n))
    for i, r in enumerate(raw):
        add("item", r, ("item", i))
    if "entity_raw_id" in store:
        for i, e in enumerate(store.entity_raw_id):
            if e != "":
                add("item", e, ("item", i))
    if "entity" in data.node_types and "raw_id" in data["entity"]:
        for i, e in enumerate(data["entity"].raw_id):
            add("entity", e, ("entity", i))
    return lookup


def _resolve(lookup: dict[str, dict[Any, tuple[str, int]]], value: Any, kind: Any,
             row: int) -> tuple[str, int]:
    kinds = ["item", "entity"] if kind is None or (isinstance(kind, float) and kind != kind) \
        else [str(kind)]
    if any(k not in lookup for k in kinds):
        raise ValueError(f"triples row {row}: node type {kind!r} must be 'item' or 'entity'")
    hits = [lookup[k].get(value, lookup[k].get(str(value))) for k in kinds]
    hits = [h for h in hits if h is not None]
    if not hits:
        raise ValueError(f"triples row {row}: {value!r} is neither a new item, an item nor an "
                         "entity of the graph (new entities are not supported)")
    if len(hits) > 1:
        raise ValueError(f"triples row {row}: {value!r} is both an item and an entity id; say "
                         "which with a head_type / tail_type column ('item' or 'entity')")
    return hits[0]


def append_items(data: HeteroData, raw_ids: Sequence[Hashable],
                 triples: pd.DataFrame | None = None, text: Sequence[str] | None = None,
                 titles: Sequence[str] | None = None,
                 features: dict[str, Tensor] | None = None) -> HeteroData:
    """``data`` with new items appended to the catalogue (nodes ``N … N+M-1``) and their facts.

    Args:
        data: the collaborative KG (e.g. a model's training graph).
        raw_ids: the new items' raw ids (none may already be an item of ``data``).
        triples: their KG facts, columns ``head``, ``relation``, ``tail`` in the dataset's own
            ids: a head or tail is a new item, an existing item (its raw id, or the KG entity it
            is linked to) or an existing entity — optional ``head_type`` / ``tail_type``
            columns (``"item"`` / ``"entity"``) settle ids that name both; every triple must
            involve a new item, and the relation must be one of ``data``'s (its source name or
            identifier). Each fact is added with its ``rev_`` reverse.
        text, titles: the new items' ``data['item'].text`` / ``.title`` (``""`` by default when
            the graph has these lists).
        features: rows ``[M, F]`` of per-item tensors (e.g. ``{"x_text": …}``). A per-item
            tensor of ``data`` not given here is extended with ``-1`` (integers) or ``NaN``
            (floats), so a model reading it refuses the new items until the features exist.

    Raises:
        ValueError: a raw id already in the catalogue or given twice, an unknown node or
            relation, a triple without a new item, a feature of the wrong shape.
    """
    raw_ids = list(raw_ids)
    m = len(raw_ids)
    store = data["item"]
    n = int(store.num_nodes)
    existing = set(map(str, store.raw_id)) if "raw_id" in store else set(map(str, range(n)))
    clash = [r for r in raw_ids if str(r) in existing]
    if clash:
        raise ValueError(f"new item id(s) {clash[:5]} are already items of the graph")
    if len(set(map(str, raw_ids))) != m:
        raise ValueError("raw_ids lists an item more than once")
    out = copy.copy(data)
    out["item"].num_nodes = n + m
    given = {"text": text, "title": titles}
    features = dict(features or {})
    for key in per_item_keys(data):
        value = store[key]
        if key == "raw_id":
            out["item"].raw_id = list(value) + raw_ids
        elif isinstance(value, Tensor):
            extra = features.pop(key, None)
            if extra is None:
                fill = -1 if not value.is_floating_point() else float("nan")
                extra = torch.full((m, *value.shape[1:]), fill, dtype=value.dtype)
            extra = torch.as_tensor(extra, dtype=value.dtype)
            if tuple(extra.shape) != (m, *value.shape[1:]):
                raise ValueError(f"features[{key!r}] must be [{m}, *{tuple(value.shape[1:])}], "
                                 f"got {tuple(extra.shape)}")
            out["item"][key] = torch.cat([value, extra])
        else:
            extra = given.get(key)
            if extra is not None and len(extra) != m:
                raise ValueError(f"{key}: {len(extra)} values for {m} new items")
            default = "" if all(isinstance(v, str) for v in value[:1]) else None
            out["item"][key] = list(value) + (list(extra) if extra is not None else [default] * m)
    for key, value in given.items():
        if value is not None and key not in per_item_keys(data):
            if len(value) != m:
                raise ValueError(f"{key}: {len(value)} values for {m} new items")
            out["item"][key] = [""] * n + list(value)
    if features:
        raise ValueError(f"features {sorted(features)} are not per-item tensors of the graph")
    if triples is not None and len(triples):
        _append_triples(out, data, raw_ids, triples)
    return out


def _append_triples(out: HeteroData, data: HeteroData, raw_ids: list[Hashable],
                    triples: pd.DataFrame) -> None:
    missing = [c for c in ("head", "relation", "tail") if c not in triples.columns]
    if missing:
        raise ValueError(f"triples need columns head, relation, tail (missing {missing})")
    names = dict(getattr(data, "relation_names", {}) or {})
    by_source = {str(v): k for k, v in names.items()}
    known = set(names) | {et[1] for et in data.edge_types
                          if et[1] not in ("interacts", "rev_interacts")
                          and not et[1].startswith("rev_")}
    lookup = _node_lookup(data, raw_ids)
    n = int(data["item"].num_nodes)
    groups: dict[tuple[str, str, str], list[tuple[int, int]]] = {}
    none = [None] * len(triples)
    head_type = triples["head_type"].tolist() if "head_type" in triples.columns else none
    tail_type = triples["tail_type"].tolist() if "tail_type" in triples.columns else none
    for row, (h, r, t) in enumerate(zip(triples["head"], triples["relation"],
                                        triples["tail"])):
        hn = _resolve(lookup, h, head_type[row], row)
        tn = _resolve(lookup, t, tail_type[row], row)
        if not ((hn[0] == "item" and hn[1] >= n) or (tn[0] == "item" and tn[1] >= n)):
            raise ValueError(f"triples row {row}: ({h!r}, {r!r}, {t!r}) involves no new item")
        rel = by_source.get(str(r))
        if rel is None:
            try:
                rel = sanitize_relation(str(r))
            except ValueError:
                rel = None
        if rel not in known:
            raise ValueError(f"triples row {row}: unknown relation {r!r} (the graph has "
                             f"{sorted(names.values()) or sorted(known)})")
        groups.setdefault((hn[0], rel, tn[0]), []).append((hn[1], tn[1]))
    for (ht, rel, tt), pairs in groups.items():
        e = torch.tensor(pairs, dtype=torch.long).t()
        for edge_type, ei in (((ht, rel, tt), e), ((tt, f"rev_{rel}", ht), e.flip(0))):
            if edge_type in data.edge_types:
                out[edge_type].edge_index = torch.cat([data[edge_type].edge_index, ei], 1)
            else:
                out[edge_type].edge_index = ei
