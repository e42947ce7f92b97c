r"""The preprocessed sequential datasets of S3-Rec (Zhou et al., CIKM 2020): Amazon Beauty,
Sports_and_Outdoors, Toys_and_Games, Yelp and LastFM.

Files (``root/raw``), from ``RUCAIBox/CIKM2020-S3Rec`` commit ``2a81540a``, folder ``data/``:

* ``<Name>.txt`` — one user a line: ``user_id item_id item_id …``, items in time order; there are
  no timestamps, so ``time`` is the position in the line (0, 1, …). An item repeated in a line
  is a real repeat interaction and is kept (its positions differ).
* ``<Name>_item2attributes.json`` — ``{"item_id": [attribute_id, …]}``.

The attributes become a one-relation KG: a triple ``(item, has_attribute, attribute)`` per pair,
with the item itself as head (so KG propagation reaches the items of the sequences) and one
``entity`` node per attribute id (``raw_id`` = the attribute id).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch_geometric.data import HeteroData

from ..data.errors import LINE_COLUMN, DataFormatError
from ..data.graph import build_collaborative_kg
from .base import NamedKGDataset, RawFile, positions_within, read_adjacency

__all__ = ["S3Rec", "HAS_ATTRIBUTE"]

#: the relation between an item and each of its attributes.
HAS_ATTRIBUTE = "has_attribute"

_REPO = "RUCAIBox/CIKM2020-S3Rec"
_COMMIT = "2a81540ae18615d88ef88227b0c066e5b74781e5"
_NAMES = ("Beauty", "Sports_and_Outdoors", "Toys_and_Games", "Yelp", "LastFM")
_SHA256 = {
    "Beauty.txt": "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8",
    "Beauty_item2attributes.json":
        "129e40f67486f6877eff0f5318cfa8530ee8ac23d8b0d1de04e1bb7a2ba0b2d4",
    "Yelp.txt": "724b219106b81dd2349027da997334ddb6da9fe2f152ad6e0d97a93170f7caed",
    "Yelp_item2attributes.json": "f25acd5e1e680e0b22fd4e3f4fb6be4b2a7461e9222610616e3e1ee6702dd58d",
}
_ITEM_PREFIX = "item:"  # link key of an item in the triples' head column


#: the card's statistics of each file with a known sha256 (datasets/s3rec.md), as
#: S3Rec.process counts them
_EXPECTED = {
    "Beauty.txt": {"users": 22_363, "interactions": 198_502, "items": 12_101},
    "Beauty_item2attributes.json": {"items": 12_101, "attributes": 637},
    "Yelp.txt": {"users": 30_431, "interactions": 316_354, "items": 20_033},
    "Yelp_item2attributes.json": {"items": 20_033, "attributes": 1_001},
}
#: names of the datasets in kgseqgraph.datasets.load_dataset
_REGISTRY_NAMES = {"Beauty": "beauty", "Sports_and_Outdoors": "sports", "Toys_and_Games": "toys",
                   "Yelp": "yelp", "LastFM": "lastfm"}


def _raw(name: str) -> RawFile:
    return RawFile(name=name,
                   url=f"https://raw.githubusercontent.com/{_REPO}/{_COMMIT}/data/{name}",
                   sha256=_SHA256.get(name), source=f"{_REPO}@{_COMMIT[:8]}: data/{name}",
                   expected=_EXPECTED.get(name))


def read_item2attributes(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read ``{"item": [attr, …]}``.

    Returns:
        ``(keys, items, attributes)``: every item key, and the aligned (item, attribute) pairs.

    Raises:
        DataFormatError: empty file, invalid JSON (with its line), not an object, a non-integer
            key or attribute.
    """
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise DataFormatError(str(path), 'file is empty; expected a JSON object {"item_id": '
                                         '[attribute_id, ...]}')
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(str(path), f"invalid JSON: {exc.msg}", exc.lineno) from None
    if not isinstance(obj, dict):
        raise DataFormatError(str(path), f'expected a JSON object {{"item_id": [attribute_id, '
                                         f'...]}}, got {type(obj).__name__}')
    keys: list[int] = []
    items: list[int] = []
    attrs: list[int] = []
    for key, values in obj.items():
        try:
            item = int(key)
            keys.append(item)
        except ValueError:
            raise DataFormatError(str(path), f"item id key {key!r} is not an integer") from None
        if not isinstance(values, list) or not all(
                isinstance(a, int) and not isinstance(a, bool) for a in values):
            raise DataFormatError(str(path), f"item {key!r}: expected a list of integer attribute "
                                             f"ids, got {values!r:.80}")
        items.extend([item] * len(values))
        attrs.extend(values)
    return (np.asarray(keys, dtype=np.int64), np.asarray(items, dtype=np.int64),
            np.asarray(attrs, dtype=np.int64))


class S3Rec(NamedKGDataset):
    r"""An S3-Rec dataset: user sequences plus item attributes as a one-relation KG.

    The graph: ``user`` nodes in increasing user id; ``item`` nodes in increasing item id (every
    id in the sequences or the attribute file); ``entity`` nodes = attributes; edges
    ``('user', 'interacts', 'item')`` with ``time`` = position in the user's line,
    ``('item', 'has_attribute', 'entity')`` and its reverse; ``data['item'].text`` =
    ``"attributes: 3, 17, 42"`` (the files carry no names).

    Args:
        root: dataset folder: the raw files in ``root/raw`` or directly in ``root`` (several
            names may share it).
        name: ``"Beauty"``, ``"Sports_and_Outdoors"``, ``"Toys_and_Games"``, ``"Yelp"`` or
            ``"LastFM"`` (case-insensitive).
        kg: read the attribute file (``False``: sequences only).
        **kwargs: :class:`~kgseqgraph.datasets.base.KGDataset` options.
    """

    processing_version = 1
    card = "datasets/s3rec.md"

    def __init__(self, root: str | Path, name: str, *, kg: bool = True, **kwargs: Any) -> None:
        canon = {n.lower(): n for n in _NAMES}
        if name.lower() not in canon:
            raise ValueError(f"unknown S3-Rec dataset {name!r}; expected one of {list(_NAMES)}")
        self.name = canon[name.lower()]
        self.kg = kg
        super().__init__(root, **kwargs)

    @property
    def raw_files(self) -> list[RawFile]:
        files = [_raw(f"{self.name}.txt")]
        if self.kg:
            files.append(_raw(f"{self.name}_item2attributes.json"))
        return files

    @property
    def dataset_name(self) -> str:
        return _REGISTRY_NAMES[self.name]

    def process(self) -> HeteroData:
        p_seq = self.raw_path(f"{self.name}.txt")
        adj = read_adjacency(p_seq, allow_empty_lists=False,
                             expected="a user id followed by at least one item id")
        dup = pd.Index(adj.line_users).duplicated()
        if dup.any():
            k = int(np.flatnonzero(dup)[0])
            raise DataFormatError(str(p_seq), f"user {adj.line_users[k]} has a second line",
                                  int(adj.line_numbers[k]))
        self.record_counts(p_seq.name, users=len(adj.line_users), interactions=len(adj.items),
                           items=len(np.unique(adj.items)))
        inter = pd.DataFrame({"user": adj.users, "item": adj.items,
                              "time": positions_within(adj.lengths), LINE_COLUMN: adj.item_lines})
        catalogue = np.unique(adj.items)
        triples = links = item_text = None
        sources = {"interactions": str(p_seq)}
        if self.kg:
            p_attr = self.raw_path(f"{self.name}_item2attributes.json")
            keys, a_items, a_attrs = read_item2attributes(p_attr)
            self.record_counts(p_attr.name, items=len(keys), attributes=len(np.unique(a_attrs)))
            catalogue = np.union1d(catalogue, keys)
            heads = np.char.add(_ITEM_PREFIX, a_items.astype(str)).astype(object)
            triples = pd.DataFrame({"head": heads, "relation": HAS_ATTRIBUTE,
                                    "tail": a_attrs.astype(object)})
            # link the items that have attributes (the others are in no triple: counted in
            # items_without_attributes, not reported as dangling links)
            with_attr = np.unique(a_items)
            links = pd.DataFrame({"item": with_attr,
                                  "entity": np.char.add(_ITEM_PREFIX, with_attr.astype(str))
                                  .astype(object)})
            # "attributes: a, b, c" per item, in the file's attribute order.
            texts = pd.Series(a_attrs.astype(str)).groupby(a_items, sort=False).agg(", ".join)
            item_text = pd.DataFrame({"item": catalogue, "text": ""})
            pos = pd.Index(catalogue).get_indexer(texts.index)
            item_text.loc[pos, "text"] = "attributes: " + texts.to_numpy(dtype=object)
            sources.update(triples=str(p_attr), links=str(p_attr), item_text=str(p_attr))
        data = build_collaborative_kg(inter, triples, links, item_text,
                                      items=catalogue.tolist(),
                                      users=np.sort(adj.line_users).tolist(), sources=sources)
        if self.kg:
            # items are their own KG nodes: no separate linked entity id
            data["item"].entity_raw_id = [""] * int(data["item"].num_nodes)
            n_attr_less = int(len(catalogue) - len(np.unique(a_items)))
            if n_attr_less:
                data.build_report = {**data.build_report, "items_without_attributes": n_attr_less}
        return data
