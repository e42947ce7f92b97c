r"""The KGAT datasets (Wang et al., KDD 2019): ``amazon-book``, ``last-fm`` and ``yelp2018``.

Files (``root/raw``), from ``xiangwang1223/knowledge_graph_attention_network`` commit
``c03737be``, folder ``Data/<name>/``:

* ``train.txt``, ``test.txt`` — ``user item item …`` (remapped ids; a test line may hold only the
  user id);
* ``kg_final.txt`` — ``head relation tail`` (remapped ids; the repository ships it zipped for
  amazon-book and yelp2018, and the loader downloads and extracts it);
* ``user_list.txt`` — ``org_id remap_id``; ``item_list.txt`` — ``org_id remap_id freebase_id``
  (yelp2018 quirk: ``freebase_id`` glued to ``remap_id``, e.g. ``0ydUq…``);
* ``entity_list.txt`` — ``org_id remap_id``, split on the LAST space: org_ids may contain
  spaces or be empty; ``relation_list.txt`` — ``org_id remap_id``.

KGAT numbers items and entities in one space: item ``i`` is KG entity ``i``, so a KG id below
the number of items is an item node and the rest are ``entity`` nodes.

There are no timestamps. ``time`` is the position in the user's combined list: train items
first (in file order), then test items, so a chronological split by position ends in the test
items. ``data['user', 'interacts', 'item'].is_test`` marks the edges read from ``test.txt``: the
original KGAT split is ``~is_test`` / ``is_test``. KGAT's own loader de-duplicates items within a
user's list; this loader keeps repeats (counted in ``build_report['repeated_user_item']``).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import HeteroData

from ..data.errors import LINE_COLUMN, DataFormatError
from ..data.graph import INTERACTS, build_collaborative_kg
from .base import (NamedKGDataset, RawFile, positions_within, read_adjacency,
                   read_lines, split_rows, to_int)

__all__ = ["KGATDataset", "read_id_list", "read_item_list"]

_REPO = "xiangwang1223/knowledge_graph_attention_network"
_COMMIT = "c03737be46ac26a0b5431efe149828e982ffbbfb"
_NAMES = ("amazon-book", "last-fm", "yelp2018")
_SHA256: dict[str, dict[str, str]] = {
    "amazon-book": {
        "train.txt": "4d10106bb06a77e11df660429903c0067aeb85b86431807836b0d8b7edc30c38",
        "test.txt": "f47eff9d35fb95c07d74251a991478a84095ce6c5969b0dafcb4afe99fc716ec",
        "user_list.txt": "ae2e001d4e49fd82d4c7e25f950827a8be2fbd5c6f3a16dacb2d104edb32310e",
        "item_list.txt": "efea8518cd68e515584fdfbfca95f318b25ef551c64498c5935897c2b02e436f",
        "entity_list.txt": "b03e9cb7eeab38756f0b10c06478a611201a7d42cb16acb8513624dda05270ca",
        "relation_list.txt": "50fe9c6560224b20d8ace78ae8ca0b8dad39248f6dc900f6744b633ba8c33f4b",
    },
    "last-fm": {
        "test.txt": "bb79750f3a034e5ce5bc4aa8541cdc9d456ea51158f0059f84167942bd9837b2",
        "user_list.txt": "3ccf277897bbc1cdc7ca6689f76045397462a8dc69615a7e47ed10f88e180f0d",
        "item_list.txt": "0e4991b5b8a292e82dc5fe3ca34bd04dc90bdeee63e0b99d71b4b8d93c129e80",
        "entity_list.txt": "56741c54984c929682ffb89f5e255ebdbf862fa031157220474139824d4f9ba7",
        "relation_list.txt": "069643eab7dea9e21b02e8c7b8df4af91fb70f0628a5a36cb3091cfcb87d8e7d",
    },
    "yelp2018": {
        "test.txt": "ad1034bf609176893abcce4b7b9266d9f02fcc05e13966aa078b432df02a78f0",
        "user_list.txt": "49b8f178a6a6ee71d0d0b06242628afe9289d27734d44fa31f6d07aa4611b7be",
        "item_list.txt": "1ba988c00ea8d97945a5fb0f6cbb3867e55f327e2c341bcfe55c5a5584b06a9d",
        "entity_list.txt": "bb6390ee1568eed802d5113a6b4b38e76402bce88519186d2a99402955571801",
        "relation_list.txt": "f5b19de6fc169ec6f4ac9943cce7614d1427b32130a6063f990721b45e636abc",
    },
}
#: the card's statistics of each file with a known sha256 (datasets/kgat.md), as
#: KGATDataset.process counts them
_EXPECTED: dict[str, dict[str, dict[str, int]]] = {
    "amazon-book": {
        "train.txt": {"users": 70_679, "interactions": 652_514, "items": 24_915},
        "test.txt": {"users": 70_679, "interactions": 193_920, "items": 21_832},
        "user_list.txt": {"rows": 70_679}, "item_list.txt": {"rows": 24_915},
        "entity_list.txt": {"rows": 113_487}, "relation_list.txt": {"rows": 39},
    },
    "last-fm": {
        "test.txt": {"users": 23_566, "interactions": 616_336, "items": 46_720},
        "user_list.txt": {"rows": 23_566}, "item_list.txt": {"rows": 48_123},
        "entity_list.txt": {"rows": 106_389}, "relation_list.txt": {"rows": 9},
    },
    "yelp2018": {
        "test.txt": {"users": 45_919, "interactions": 253_578, "items": 39_469},
        "user_list.txt": {"rows": 45_919}, "item_list.txt": {"rows": 45_538},
        "entity_list.txt": {"rows": 136_499}, "relation_list.txt": {"rows": 42},
    },
}
#: datasets whose kg_final.txt is only in the repository as kg_final.txt.zip
_ZIPPED_KG = {"amazon-book", "yelp2018"}


def _raw(name: str, file: str) -> RawFile:
    path = f"Data/{name}/{file}"
    member = None
    if file == "kg_final.txt" and name in _ZIPPED_KG:
        path, member = path + ".zip", file
    return RawFile(name=file, url=f"https://raw.githubusercontent.com/{_REPO}/{_COMMIT}/{path}",
                   sha256=_SHA256[name].get(file), source=f"{_REPO}@{_COMMIT[:8]}: {path}",
                   archive_member=member, expected=_EXPECTED[name].get(file))


def _check_header(lines: list[str], path: Path, expected: str) -> None:
    first = lines[0].split()
    if not first or first[0] != "org_id" or "remap_id" not in first:
        raise DataFormatError(str(path), f"missing header; expected the line {expected!r}", 1)


def _check_remap(remap: np.ndarray, lines: np.ndarray, path: Path) -> None:
    """remap ids must be exactly 0..n-1 (each once)."""
    n = len(remap)
    bad = (remap < 0) | (remap >= n)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise DataFormatError(str(path), f"remap_id {remap[k]} out of range 0..{n - 1} "
                                         f"({n} rows)", int(lines[k]))
    dup = pd.Index(remap).duplicated()
    if dup.any():
        k = int(np.flatnonzero(dup)[0])
        raise DataFormatError(str(path), f"remap_id {remap[k]} listed twice", int(lines[k]))


def read_id_list(path: Path, *, check_remap: bool = True) -> tuple[list[str], np.ndarray]:
    """Read an ``org_id remap_id`` list (users, entities, relations), splitting on the last space
    (org_ids may contain spaces or be empty).

    Returns:
        ``(org_ids, remap_ids)`` in file order.
    """
    lines = read_lines(path, "a header 'org_id remap_id' and one 'org_id remap_id' line per id")
    _check_header(lines, path, "org_id remap_id")
    rows, numbers = split_rows(lines[1:], path, sep=" ", min_fields=2, rsplit_last=True,
                               first_line=2, expected="'org_id remap_id'")
    remap = to_int([r[1] for r in rows], numbers, path, "remap_id")
    if check_remap:
        _check_remap(remap, numbers, path)
    return [r[0] for r in rows], remap


def read_item_list(path: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """Read ``item_list.txt`` (``org_id remap_id freebase_id``).

    Handles the yelp2018 quirk where ``freebase_id`` is glued to ``remap_id`` (two fields,
    the second being ``<remap_id><freebase_id>``; there the freebase id equals the org_id, which
    disambiguates the split; otherwise the leading digits are the remap id).

    Returns:
        ``(org_ids, remap_ids, freebase_ids)`` in file order.
    """
    lines = read_lines(path, "a header 'org_id remap_id freebase_id' and one line per item")
    _check_header(lines, path, "org_id remap_id freebase_id")
    rows, numbers = split_rows(lines[1:], path, sep=" ", min_fields=2, max_fields=3, first_line=2,
                               expected="'org_id remap_id freebase_id'")
    org, remap_tok, fb = [], [], []
    for r, ln in zip(rows, numbers.tolist()):
        org.append(r[0])
        if len(r) == 3:
            remap_tok.append(r[1])
            fb.append(r[2])
            continue
        glued = r[1]
        if r[0] and glued.endswith(r[0]) and glued[: -len(r[0])].isdigit():
            remap_tok.append(glued[: -len(r[0])])
            fb.append(r[0])
            continue
        m = re.match(r"(\d+)(\S*)$", glued)
        if m is None:
            raise DataFormatError(str(path), f"truncated line: expected 'org_id remap_id "
                                             f"freebase_id', got {' '.join(r)!r}", ln)
        remap_tok.append(m.group(1))
        fb.append(m.group(2))
    remap = to_int(remap_tok, numbers, path, "remap_id")
    _check_remap(remap, numbers, path)
    return org, remap, fb


class KGATDataset(NamedKGDataset):
    r"""A KGAT dataset as one collaborative KG.

    The graph: ``user`` nodes = KGAT user remap ids ``0..n_users-1`` (``org_id`` from
    ``user_list.txt``); ``item`` nodes = item remap ids ``0..n_items-1`` (``org_id``,
    ``freebase_id``); ``entity`` nodes = KG ids ``>= n_items`` that occur in a triple
    (``raw_id`` = KG remap id, ``org_id`` from ``entity_list.txt``); ``('user', 'interacts',
    'item')`` with ``time`` = position (train then test) and ``is_test``; one edge type per KG
    relation (names from ``relation_list.txt``, sanitised) plus reverses.

    Args:
        root: dataset folder: the raw files in ``root/raw`` or directly in ``root`` (use one
            root per KGAT dataset, the file names are the same for all three).
        name: ``"amazon-book"``, ``"last-fm"`` or ``"yelp2018"``.
        kg: read ``kg_final.txt``, ``entity_list.txt`` and ``relation_list.txt``; ``False``
            builds the user–item graph only (the files shared with the tests lack
            ``kg_final.txt``).
        **kwargs: :class:`~kgseqgraph.datasets.base.KGDataset` options.
    """

    processing_version = 1
    card = "datasets/kgat.md"

    def __init__(self, root: str | Path, name: str, *, kg: bool = True, **kwargs: Any) -> None:
        if name not in _NAMES:
            raise ValueError(f"unknown KGAT dataset {name!r}; expected one of {list(_NAMES)}")
        self.name = name
        self.kg = kg
        super().__init__(root, **kwargs)

    @property
    def raw_files(self) -> list[RawFile]:
        files = ["train.txt", "test.txt", "user_list.txt", "item_list.txt"]
        if self.kg:
            files += ["kg_final.txt", "entity_list.txt", "relation_list.txt"]
        return [_raw(self.name, f) for f in files]

    @property
    def dataset_name(self) -> str:
        return f"kgat-{self.name}"

    def _missing_message(self, missing: list[RawFile]) -> str:
        msg = super()._missing_message(missing)
        if self.kg and any(f.name == "kg_final.txt" for f in missing):
            msg += (f"\nTo load the interactions without the knowledge graph, pass kg=False: "
                    f"KGATDataset({str(self.root)!r}, {self.name!r}, kg=False).")
        return msg

    def process(self) -> HeteroData:
        raw = self.raw_path
        user_org, user_remap = read_id_list(raw("user_list.txt"))
        item_org, item_remap, item_fb = read_item_list(raw("item_list.txt"))
        n_users, n_items = len(user_org), len(item_org)
        self.record_counts("user_list.txt", rows=n_users)
        self.record_counts("item_list.txt", rows=n_items)

        expected = "a user id followed by item ids"
        tr = read_adjacency(raw("train.txt"), allow_empty_lists=True, expected=expected)
        te = read_adjacency(raw("test.txt"), allow_empty_lists=True, expected=expected)
        # Each user's train items come first, then their test items: time = position in that list.
        for adj, path in ((tr, raw("train.txt")), (te, raw("test.txt"))):
            self.record_counts(path.name, users=len(adj.line_users), interactions=len(adj.items),
                               items=len(np.unique(adj.items)))
            dup = pd.Index(adj.line_users).duplicated()
            if dup.any():
                k = int(np.flatnonzero(dup)[0])
                raise DataFormatError(str(path), f"user {adj.line_users[k]} has a second line",
                                      int(adj.line_numbers[k]))
        train_len = np.zeros(n_users, dtype=np.int64)
        ok = (tr.line_users >= 0) & (tr.line_users < n_users)
        train_len[tr.line_users[ok]] = tr.lengths[ok]
        t_train = positions_within(tr.lengths)
        te_users_ok = np.clip(te.users, 0, max(n_users - 1, 0))
        t_test = positions_within(te.lengths) + train_len[te_users_ok]
        users = np.concatenate([tr.users, te.users])
        items = np.concatenate([tr.items, te.items])
        time = np.concatenate([t_train, t_test])
        is_test = np.concatenate([np.zeros(len(tr.users), bool), np.ones(len(te.users), bool)])
        line = np.concatenate([tr.item_lines, te.item_lines])
        # Rows from two files: the builder names one source, so check ids here, per file.
        for u_arr, i_arr, l_arr, path in ((tr.users, tr.items, tr.item_lines, raw("train.txt")),
                                          (te.users, te.items, te.item_lines, raw("test.txt"))):
            for arr, n, what in ((u_arr, n_users, "user"), (i_arr, n_items, "item")):
                bad = (arr < 0) | (arr >= n)
                if bad.any():
                    k = int(np.flatnonzero(bad)[0])
                    raise DataFormatError(str(path), f"{what} id {arr[k]} is not in "
                                                     f"{what}_list.txt (ids 0..{n - 1})",
                                          int(l_arr[k]))
        inter = pd.DataFrame({"user": users, "item": items, "time": time, "is_test": is_test,
                              LINE_COLUMN: line})
        report: dict[str, int] = {
            "train_interactions": int(len(tr.users)),
            "test_interactions": int(len(te.users)),
            "test_users_without_items": int((te.lengths == 0).sum()),
            "train_users_without_items": int((tr.lengths == 0).sum()),
            "repeated_user_item": int(pd.MultiIndex.from_arrays([users, items]).duplicated().sum()),
        }

        triples = links = None
        sources = {"interactions": f"{raw('train.txt')} + {raw('test.txt')}"}
        ent_org: dict[int, str] = {}
        if self.kg:
            p_kg = raw("kg_final.txt")
            rel_org, rel_remap = read_id_list(raw("relation_list.txt"))
            e_org, e_remap = read_id_list(raw("entity_list.txt"))
            self.record_counts("relation_list.txt", rows=len(rel_org))
            self.record_counts("entity_list.txt", rows=len(e_org))
            ent_org = dict(zip(e_remap.tolist(), e_org))
            lines = read_lines(p_kg, "'head relation tail' lines of integer ids")
            rows, numbers = split_rows(lines, p_kg, sep=None, min_fields=3, max_fields=3,
                                       expected="'head relation tail' (3 integer ids)")
            flat = [t for r in rows for t in r]
            ids = to_int(flat, np.repeat(numbers, 3), p_kg, "head/relation/tail id").reshape(-1, 3)
            rel_names = np.empty(len(rel_remap), dtype=object)
            rel_names[rel_remap] = rel_org
            bad = (ids[:, 1] < 0) | (ids[:, 1] >= len(rel_remap))
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                raise DataFormatError(str(p_kg), f"relation {ids[k, 1]} is not in "
                                                 f"relation_list.txt", int(numbers[k]))
            neg = ids[:, [0, 2]] < 0
            if neg.any():
                k = int(np.flatnonzero(neg.any(1))[0])
                raise DataFormatError(str(p_kg), "negative entity id", int(numbers[k]))
            triples = pd.DataFrame({"head": ids[:, 0], "relation": rel_names[ids[:, 1]],
                                    "tail": ids[:, 2], LINE_COLUMN: numbers})
            # item i is KG entity i: link the items the KG mentions (the others have no KG
            # edges either way; counted in items_not_in_kg, not reported as dangling links)
            in_kg = np.unique(ids[:, [0, 2]])
            in_kg = in_kg[in_kg < n_items]
            report["items_not_in_kg"] = int(n_items - len(in_kg))
            links = pd.DataFrame({"item": in_kg, "entity": in_kg})
            sources.update(triples=str(p_kg), links=str(raw("item_list.txt")))

        # the builder carries is_test along with each edge, in its (user, time, row) order
        data = build_collaborative_kg(inter, triples, links, None, items=list(range(n_items)),
                                      users=list(range(n_users)), sources=sources,
                                      edge_columns=["is_test"])

        user_org_out = [""] * n_users
        for r, o in zip(user_remap.tolist(), user_org):
            user_org_out[r] = o
        data["user"].org_id = user_org_out
        org_out, fb_out = [""] * n_items, [""] * n_items
        for r, o, f in zip(item_remap.tolist(), item_org, item_fb):
            org_out[r], fb_out[r] = o, f
        data["item"].org_id = org_out
        data["item"].freebase_id = fb_out
        if self.kg:
            data["item"].entity_raw_id = [""] * n_items  # item i is KG entity i
            data["entity"].org_id = [ent_org.get(int(e), "") for e in data["entity"].raw_id]
        data.build_report = {**data.build_report, **{k: v for k, v in report.items() if v}}
        return data

    def split_masks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The original KGAT split: boolean masks over ``data['user', 'interacts', 'item']``
        edges, ``(train, test)``."""
        flag = self.data[INTERACTS].is_test
        return ~flag, flag

