r"""MovieLens-100K in RecBole's atomic-file format, with its Freebase knowledge graph.

Files (``root/raw``), from ``RUCAIBox/RecBole`` commit ``774080f7`` (the last one shipping the KG):

* ``ml-100k.inter`` — ``user_id:token  item_id:token  rating:float  timestamp:float``;
* ``ml-100k.item`` — ``item_id:token  movie_title:token_seq  release_year:token  class:token_seq``;
* ``ml-100k.user`` — ``user_id  age  gender  occupation  zip_code`` (optional);
* ``ml-100k.kg`` — ``head_id  relation_id  tail_id`` Freebase triples (24 relations);
* ``ml-100k.link`` — ``item_id  entity_id``: item → Freebase mid (the KB4Rec linkage).

Atomic files are tab-separated with a ``name:type`` header; columns are found by name, so their
order does not matter. Users and items are numbered in increasing order of their (integer) ids.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import HeteroData

from ..data.errors import LINE_COLUMN, DataFormatError
from ..data.graph import build_collaborative_kg
from .base import KGDataset, RawFile, read_lines, split_rows, to_float, to_int

__all__ = ["MovieLens100K", "read_atomic"]

_REPO = "RUCAIBox/RecBole"
_COMMIT = "774080f7e87322dfd20f1edc1a35aa69aac03fb7"
_DIR = "recbole/dataset_example/ml-100k"
_SHA256 = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
    "ml-100k.kg": "200a0636fa07c218119a42e5bac7aa3e26e3665a6f919c1b22909bd412b14779",
    "ml-100k.link": "524dca2c3d62619688ab99b3ec53ea2acb9b64d38eafec3e02bdd0dc6bb7d948",
}


#: the card's statistics of each file (datasets/ml-100k.md), as MovieLens100K.process counts them
_EXPECTED = {
    "ml-100k.inter": {"rows": 100_000, "users": 943, "items": 1682},
    "ml-100k.item": {"rows": 1682},
    "ml-100k.user": {"rows": 943},
    "ml-100k.kg": {"rows": 91_631, "relations": 24},
    "ml-100k.link": {"rows": 1598},
}


def _raw(name: str, optional: bool = False) -> RawFile:
    return RawFile(
        name=name,
        url=f"https://raw.githubusercontent.com/{_REPO}/{_COMMIT}/{_DIR}/{name}",
        sha256=_SHA256[name],
        source=f"{_REPO}@{_COMMIT[:8]}: {_DIR}/{name}",
        optional=optional,
        expected=_EXPECTED[name],
    )


def read_atomic(
    path: Path, required: list[str], optional: list[str] | None = None
) -> tuple[dict[str, list[str]], np.ndarray]:
    """Read a RecBole atomic file (tab-separated, header ``name:type``).

    Args:
        path: the file.
        required: column names (without ``:type``) that must be in the header.
        optional: columns read when present.

    Returns:
        ``({column: tokens}, line_numbers)`` for the non-blank data lines.

    Raises:
        DataFormatError: empty file, missing column in the header (line 1), truncated line.
    """
    lines = read_lines(path, f"a header with columns {required} and data lines")
    header = [h.split(":", 1)[0].strip() for h in lines[0].split("\t")]
    missing = [c for c in required if c not in header]
    if missing:
        raise DataFormatError(str(path), f"header lacks column(s) {missing}; expected "
                                         f"tab-separated name:type columns including {required}, "
                                         f"found {header}", 1)
    rows, numbers = split_rows(lines[1:], path, sep="\t", min_fields=len(header),
                               max_fields=len(header), first_line=2,
                               expected=f"{len(header)} tab-separated fields ({', '.join(header)})")
    if not rows:
        raise DataFormatError(str(path), "no data lines after the header")
    wanted = list(required) + [c for c in (optional or []) if c in header]
    cols = {c: [r[header.index(c)] for r in rows] for c in wanted}
    return cols, numbers


class MovieLens100K(KGDataset):
    r"""MovieLens-100K (943 users, 1,682 movies, 100,000 ratings) with the Freebase KG RecBole
    ships for it (91,631 triples, 24 relations, 1,598 movies linked to Freebase mids).

    The graph (see :func:`~kgseqgraph.data.build_collaborative_kg`):

    * ``user`` nodes in increasing user id (``raw_id``); with ``ml-100k.user``: ``age`` (int64,
      -1 unknown), ``gender``, ``occupation``, ``zip_code`` (lists of str);
    * ``item`` nodes in increasing item id; ``text`` = ``"Toy Story (1995). Genres: Animation,
      Children's, Comedy"``, ``title`` (list of str), ``year`` (int64, -1 unknown),
      ``entity_raw_id`` (the linked Freebase mid, ``""`` if none);
    * ``('user', 'interacts', 'item')`` with ``time`` (Unix seconds, int64; float64 when the
      file has fractional timestamps, which are never rounded) and ``rating``;
    * one edge type per Freebase relation (``film.film.genre`` → ``film_film_genre``) plus
      ``rev_*``; a triple on a linked movie's mid lands on that movie's ``item`` node.

    Args:
        root: dataset folder: the raw files in ``root/raw`` or directly in ``root``.
        kg: read ``ml-100k.kg``/``ml-100k.link`` (``False``: interactions and item text only).
        user_features: attach ``ml-100k.user`` when present.
        **kwargs: :class:`~kgseqgraph.datasets.base.KGDataset` options (``force_reload``,
            ``download``, ``timeout``, ``progress``, ``verify``).
    """

    processing_version = 1
    card = "datasets/ml-100k.md"
    dataset_name = "ml-100k"

    def __init__(self, root: str | Path, *, kg: bool = True, user_features: bool = True,
                 **kwargs: Any) -> None:
        self.kg = kg
        self.user_features = user_features
        super().__init__(root, **kwargs)

    @property
    def raw_files(self) -> list[RawFile]:
        files = [_raw("ml-100k.inter"), _raw("ml-100k.item")]
        if self.user_features:
            files.append(_raw("ml-100k.user", optional=True))
        if self.kg:
            files += [_raw("ml-100k.kg"), _raw("ml-100k.link")]
        return files

    @property
    def processed_file_names(self) -> list[str]:
        return ["data.pt" if self.kg else "data_nokg.pt"]

    def params(self) -> dict[str, Any]:
        return {"kg": self.kg, "user_features": self.user_features}

    def process(self) -> HeteroData:
        p_inter, p_item = self.raw_path("ml-100k.inter"), self.raw_path("ml-100k.item")
        report: dict[str, int] = {}

        cols, lines = read_atomic(p_inter, ["user_id", "item_id", "timestamp"], ["rating"])
        user = to_int(cols["user_id"], lines, p_inter, "user_id")
        item = to_int(cols["item_id"], lines, p_inter, "item_id")
        # float64 as read: whole numbers become int64 seconds in the graph, fractional times are
        # kept (never rounded)
        time = to_float(cols["timestamp"], lines, p_inter, "timestamp")
        self.record_counts("ml-100k.inter", rows=len(lines), users=len(np.unique(user)),
                           items=len(np.unique(item)))
        inter = pd.DataFrame({"user": user, "item": item, "time": time, LINE_COLUMN: lines})
        if "rating" in cols:
            inter["rating"] = to_float(cols["rating"], lines, p_inter, "rating")

        icols, ilines = read_atomic(p_item, ["item_id"], ["movie_title", "release_year", "class"])
        item_ids = to_int(icols["item_id"], ilines, p_item, "item_id")
        self.record_counts("ml-100k.item", rows=len(ilines))
        dup = pd.Index(item_ids).duplicated()
        if dup.any():
            k = int(np.flatnonzero(dup)[0])
            raise DataFormatError(str(p_item), f"item_id {item_ids[k]} listed twice",
                                  int(ilines[k]))
        catalogue = np.union1d(item_ids, item)
        report["items_without_metadata"] = int(len(catalogue) - len(item_ids))
        users = np.unique(user)

        titles = icols.get("movie_title", [""] * len(item_ids))
        years_raw = icols.get("release_year", [""] * len(item_ids))
        genres_raw = icols.get("class", [""] * len(item_ids))
        years = np.array([int(y) if y.strip().isdigit() else -1 for y in years_raw], dtype=np.int64)
        texts = []
        for title, year, genres in zip(titles, years.tolist(), genres_raw):
            g = [x for x in genres.split() if x.lower() != "unknown"]
            t = title.strip()
            if year >= 0:
                t += f" ({year})"
            if g:
                t += f". Genres: {', '.join(g)}"
            texts.append(t)
        item_text = pd.DataFrame({"item": item_ids, "text": texts})

        triples = links = None
        sources = {"interactions": str(p_inter), "item_text": str(p_item)}
        if self.kg:
            p_kg, p_link = self.raw_path("ml-100k.kg"), self.raw_path("ml-100k.link")
            kcols, klines = read_atomic(p_kg, ["head_id", "relation_id", "tail_id"])
            self.record_counts("ml-100k.kg", rows=len(klines),
                               relations=len(set(kcols["relation_id"])))
            triples = pd.DataFrame({"head": kcols["head_id"], "relation": kcols["relation_id"],
                                    "tail": kcols["tail_id"], LINE_COLUMN: klines})
            lcols, llines = read_atomic(p_link, ["item_id", "entity_id"])
            self.record_counts("ml-100k.link", rows=len(llines))
            # object dtype: Python ints, so builder messages read "item 99", not np.int64(99)
            link_items = to_int(lcols["item_id"], llines, p_link, "item_id").astype(object)
            links = pd.DataFrame({"item": link_items,
                                  "entity": lcols["entity_id"], LINE_COLUMN: llines})
            sources.update(triples=str(p_kg), links=str(p_link))

        data = build_collaborative_kg(inter, triples, links, item_text,
                                      items=catalogue.tolist(), users=users.tolist(),
                                      sources=sources)

        pos = pd.Index(catalogue).get_indexer(item_ids)
        title_out = [""] * len(catalogue)
        year_out = np.full(len(catalogue), -1, dtype=np.int64)
        for p, t in zip(pos.tolist(), titles):
            title_out[p] = t.strip()
        year_out[pos] = years
        data["item"].title = title_out
        data["item"].year = torch.from_numpy(year_out)

        p_user = self.raw_path("ml-100k.user")
        if self.user_features and p_user.exists():
            report.update(self._attach_users(data, users, p_user))
            self.record_counts("ml-100k.user", rows=report.pop("_user_rows"))
        data.build_report = {**data.build_report, **{k: v for k, v in report.items() if v}}
        return data

    @staticmethod
    def _attach_users(data: HeteroData, users: np.ndarray, path: Path) -> dict[str, int]:
        cols, lines = read_atomic(path, ["user_id"], ["age", "gender", "occupation", "zip_code"])
        ids = to_int(cols["user_id"], lines, path, "user_id")
        pos = pd.Index(users).get_indexer(ids)
        known = pos >= 0
        n = len(users)
        if "age" in cols:
            age = np.full(n, -1, dtype=np.int64)
            age[pos[known]] = to_int(cols["age"], lines, path, "age")[known]
            data["user"].age = torch.from_numpy(age)
        for c in ("gender", "occupation", "zip_code"):
            if c in cols:
                out = [""] * n
                for p, v in zip(pos[known].tolist(), np.asarray(cols[c], dtype=object)[known]):
                    out[p] = v
                setattr(data["user"], c, out)
        covered = np.zeros(n, dtype=bool)
        covered[pos[known]] = True
        return {"user_features_unknown_user_dropped": int((~known).sum()),
                "users_without_features": int((~covered).sum()), "_user_rows": len(lines)}
