r"""Raw item ids (the dataset's own: MovieLens movie ids, ASINs…) ↔ item node indices
``0 … N-1`` of a collaborative KG, and the items' titles.

Models and exported scorers work on node indices; :class:`ItemIdMap` translates at the edges::

    ids = ItemIdMap.from_graph(data)            # or item_id_map(data)
    recs = ids.recommend(model, [[1, 50, 181]], k=5)   # raw ids in, raw ids + titles out
    recs[0][0].raw_id, recs[0][0].title, recs[0][0].score

Lookups accept the raw id itself or its string form (``"50"`` finds raw id ``50``), so ids typed
on a command line work.
"""
from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor

__all__ = ["ItemIdMap", "Recommendation", "item_id_map"]


class _Recommender(Protocol):
    def recommend(self, item_sequences: list[list[int]], k: int = 10,
                  exclude_seen: bool = True) -> tuple[Tensor, Tensor]: ...


class Recommendation(NamedTuple):
    """One recommended item: ``rank`` (1 = best), node ``index``, ``raw_id``, ``title``
    (``None`` when the dataset has no titles) and ``score``."""

    rank: int
    index: int
    raw_id: Any
    title: str | None
    score: float


class ItemIdMap:
    """The item catalogue of a graph: node index ``i`` is raw id ``raw_ids[i]``.

    Args:
        raw_ids: raw id of every item node, in node order (``data['item'].raw_id``).
        titles: title of every item (``data['item'].title``), or ``None``.

    Raises:
        ValueError: a raw id listed twice, or ``titles`` of another length.
    """

    def __init__(self, raw_ids: Sequence[Hashable], titles: Sequence[str] | None = None) -> None:
        self.raw_ids = list(raw_ids)
        self._index: dict[Hashable, int] = {}
        for i, r in enumerate(self.raw_ids):
            if self._index.setdefault(r, i) != i:
                raise ValueError(f"raw item id {r!r} is listed twice (nodes {self._index[r]} "
                                 f"and {i})")
        by_str: dict[str, int] = {}
        clash: set[str] = set()
        for i, r in enumerate(self.raw_ids):
            key = str(r)
            if key in by_str:
                clash.add(key)
            by_str[key] = i
        self._by_str = {k: v for k, v in by_str.items() if k not in clash}
        if titles is not None and len(titles) != len(self.raw_ids):
            raise ValueError(f"{len(titles)} titles for {len(self.raw_ids)} items")
        self.titles = None if titles is None else [str(t) if t else "" for t in titles]

    @classmethod
    def from_graph(cls, data: Any) -> ItemIdMap:
        """The map of ``data['item']`` (``raw_id``, and ``title`` when the loader attached one;
        without ``raw_id`` the raw ids are the node indices)."""
        store = data["item"]
        n = int(store.num_nodes)
        raw = list(store.raw_id) if "raw_id" in store else list(range(n))
        titles = list(store.title) if "title" in store else None
        return cls(raw, titles)

    def __len__(self) -> int:
        return len(self.raw_ids)

    def __repr__(self) -> str:
        head = ", ".join(repr(r) for r in self.raw_ids[:3])
        return (f"ItemIdMap({len(self)} items: {head}{', …' if len(self) > 3 else ''}; "
                f"titles: {'yes' if self.titles is not None else 'no'})")

    # ------------------------------------------------------------------ lookups
    def index(self, raw_id: Any) -> int:
        """Node index of ``raw_id`` (or of its string form); ``KeyError`` naming it if unknown."""
        try:
            hit = self._index.get(raw_id)
        except TypeError:  # unhashable (e.g. a list read back from JSON)
            hit = None
        if hit is None:
            hit = self._by_str.get(str(raw_id))
        if hit is None:
            sample = ", ".join(repr(r) for r in self.raw_ids[:3])
            raise KeyError(f"unknown item id {raw_id!r}: not among the {len(self):,} items of "
                           f"this dataset (raw ids look like {sample}…)")
        return hit

    def encode(self, raw_ids: Iterable[Any]) -> list[int]:
        """Node indices of ``raw_ids``; every unknown id is named in one ``KeyError``."""
        out, unknown = [], []
        for r in raw_ids:
            try:
                out.append(self.index(r))
            except KeyError:
                unknown.append(r)
        if unknown:
            sample = ", ".join(repr(r) for r in self.raw_ids[:3])
            raise KeyError(f"unknown item id(s) {unknown[:10]!r}"
                           f"{f' (and {len(unknown) - 10} more)' if len(unknown) > 10 else ''}: "
                           f"not among the {len(self):,} items of this dataset (raw ids look "
                           f"like {sample}…)")
        return out

    def decode(self, indices: Iterable[int] | Tensor) -> list[Any]:
        """Raw ids of node ``indices``."""
        if isinstance(indices, Tensor):
            indices = indices.reshape(-1).tolist()
        out = []
        for i in indices:
            i = int(i)
            if not 0 <= i < len(self):
                raise IndexError(f"item index {i} out of range 0..{len(self) - 1}")
            out.append(self.raw_ids[i])
        return out

    def title(self, index: int) -> str | None:
        """Title of node ``index`` (``None`` when the dataset has none)."""
        if self.titles is None:
            return None
        return self.titles[int(index)] or None

    # ------------------------------------------------------------------ recommending
    def recommend(self, model: _Recommender, histories: Sequence[Sequence[Any]], k: int = 10,
                  exclude_seen: bool = True) -> list[list[Recommendation]]:
        """Top-``k`` items for each history of raw ids (oldest first), as raw ids and titles.

        Args:
            model: anything with ``recommend(list[list[int]], k, exclude_seen) -> (indices,
                scores)`` on node indices: a
                :class:`~kgseqgraph.models.SequentialRecommender` or a loaded exported scorer
                (:class:`~kgseqgraph.export.ExportedScorer`).
            histories: raw item ids per user, oldest first.
            k: items per user.
            exclude_seen: never recommend an item of the history.
        """
        encoded = [self.encode(h) for h in histories]
        top, scores = model.recommend(encoded, k=k, exclude_seen=exclude_seen)
        out = []
        for row_idx, row_scores in zip(torch.as_tensor(top).tolist(),
                                       torch.as_tensor(scores).tolist()):
            out.append([Recommendation(r + 1, i, self.raw_ids[i], self.title(i), float(s))
                        for r, (i, s) in enumerate(zip(row_idx, row_scores))])
        return out

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (raw ids that are neither int nor str are written as ``str``)."""
        raw = [r if isinstance(r, (int, str)) and not isinstance(r, bool) else str(r)
               for r in self.raw_ids]
        return {"raw_ids": raw, "titles": self.titles}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ItemIdMap:
        """Inverse of :meth:`to_dict`."""
        return cls(d["raw_ids"], d.get("titles"))


def item_id_map(data: Any) -> ItemIdMap:
    """:meth:`ItemIdMap.from_graph` of ``data``."""
    return ItemIdMap.from_graph(data)
