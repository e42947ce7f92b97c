r"""The collaborative knowledge graph: interactions, KG triples, item links and item text as one
:class:`~torch_geometric.data.HeteroData`.

Layout (see ``DESIGN.md``):

* node types ``user``, ``item`` and ``entity`` (KG entities that are not items), each with
  ``num_nodes`` and ``raw_id`` (the original ids, in node order);
* ``('user', 'interacts', 'item')`` with ``edge_index``, ``time`` and optional ``rating``;
  ``time`` is int64 when every input time is a whole number (Unix seconds, positions), float64
  when some are fractional (never rounded: ``0.3, 0.1, 0.2`` keep their order); datetimes become
  seconds since the epoch (UTC for time-zone-aware ones, float64 when sub-second);
  edges are stored sorted by user, then time, then input row (a stable sort), so every user's
  time-ordered sequence is a contiguous slice; reverse ``('item', 'rev_interacts', 'user')``;
* one edge type per KG relation and node-type pair: ``('item', rel, 'entity')``,
  ``('entity', rel, 'entity')``, ``('entity', rel, 'item')`` and ``('item', rel, 'item')``, where
  ``rel`` is the relation name sanitised to an identifier (``film.film.genre`` →
  ``film_film_genre``) and ``data.relation_names`` maps it back; every KG edge type has a reverse
  ``rev_<rel>`` edge type;
* ``data['item'].text`` (``list[str]``) when item text is given;
* ``data.build_report``: counts of everything that was filtered, merged or defaulted; whatever
  was dropped or looks like an input mistake (duplicates, dangling links) is also reported with
  one :class:`~kgseqgraph.data.DataWarning` per build (:func:`warn_build_report`).

A KG head or tail that is linked to an item (``links`` frame) becomes that item's node, so KG
propagation reaches the items that sequences are made of.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import warnings
from collections.abc import Iterator
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import HeteroData

from .errors import LINE_COLUMN, DataFormatError, DataWarning

__all__ = [
    "BuildReport",
    "INTERACTS",
    "build_collaborative_kg",
    "sanitize_relation",
    "kg_edge_types",
    "REPORT_REASONS",
    "warn_build_report",
    "deferred_report_warnings",
]

log = logging.getLogger("kgseqgraph")

INTERACTS = ("user", "interacts", "item")
REV_INTERACTS = ("item", "rev_interacts", "user")
_NODE_TYPES = ("user", "item", "entity")


#: ``build_report`` keys that are reported with a :class:`DataWarning` (what was dropped, or
#: looks like an input mistake), with what they count. Loaders add their own keys here.
REPORT_REASONS: dict[str, str] = {
    "interactions_duplicate_kept": "interaction rows repeating an earlier (user, item, time), "
                                   "kept (drop_duplicate_interactions=True drops them)",
    "interactions_duplicate_dropped": "interaction rows repeating an earlier (user, item, time), "
                                      "dropped",
    "links_unknown_item_dropped": "links whose item is not in the catalogue, dropped",
    "links_duplicate": "repeated (item, entity) links, merged",
    "links_entity_to_several_items": "links of an entity already linked to another item (the "
                                     "first link is kept)",
    "links_entity_not_in_kg": "links to an entity that no triple mentions (those items get no KG "
                              "edges)",
    "triples_duplicate_dropped": "repeated (head, relation, tail) triples, dropped",
    "item_text_unknown_item_dropped": "item-text rows for items not in the catalogue, dropped",
    "user_features_unknown_user_dropped": "user-feature rows for users without interactions, "
                                          "dropped",
}


def warn_build_report(report: dict[str, int], what: str = "the collaborative KG",
                      stacklevel: int = 2) -> str | None:
    """Issue one :class:`DataWarning` listing the :data:`REPORT_REASONS` counts of ``report``
    (a ``data.build_report``) that are non-zero, and return its text (``None``: nothing to
    report). Dataset loaders call it again when they read a graph from their cache, so the
    warning never disappears after the first load."""
    lines = [f"{report[k]:,} {why} [{k}]" for k, why in REPORT_REASONS.items() if report.get(k)]
    if not lines:
        return None
    text = f"{what}: " + "; ".join(lines) + " (counts in data.build_report)"
    warnings.warn(text, DataWarning, stacklevel=stacklevel + 1)
    return text


_WARN_IN_BUILDER: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "kgseqgraph_warn_in_builder", default=True)


@contextlib.contextmanager
def deferred_report_warnings() -> Iterator[None]:
    """Inside this block :func:`build_collaborative_kg` does not warn about its report: the
    caller (a dataset loader, which adds counts of its own) calls :func:`warn_build_report` once
    for the final ``build_report``."""
    token = _WARN_IN_BUILDER.set(False)
    try:
        yield
    finally:
        _WARN_IN_BUILDER.reset(token)


@dataclass
class BuildReport:
    """What the builder filtered, merged or defaulted, so nothing is dropped silently."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, key: str, n: int, why: str | None = None) -> None:
        """Count ``n`` under ``key`` (nothing when ``n`` is 0). ``why`` is kept for the
        reader of the code; what is reported to the user is :data:`REPORT_REASONS`."""
        if n:
            self.counts[key] = self.counts.get(key, 0) + int(n)

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)


def sanitize_relation(name: str) -> str:
    """Turn a relation name (e.g. a Freebase path or URL) into an identifier usable as edge type.

    ``film.film.genre`` → ``film_film_genre``;
    ``http://rdf.freebase.com/ns/type.object.type`` → ``type_object_type``.
    """
    s = str(name).strip()
    s = re.sub(r"^https?://rdf\.freebase\.com/ns/", "", s)
    s = re.sub(r"^https?://[^/]+/", "", s)
    s = re.sub(r"[^0-9A-Za-z_]+", "_", s).strip("_")
    if not s:
        raise ValueError(f"relation name {name!r} has no identifier characters")
    if s[0].isdigit():
        s = "r_" + s
    return s


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (for readable error messages)."""
    return value.item() if isinstance(value, np.generic) else value


def _where(frame: pd.DataFrame, pos: int, source: str) -> tuple[str, int | None]:
    if LINE_COLUMN in frame.columns:
        return source, int(frame[LINE_COLUMN].iloc[pos])
    return f"{source} (row {pos})", None


def _require_columns(frame: pd.DataFrame, cols: Sequence[str], source: str, expected: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{source}: expected a pandas DataFrame with columns {expected}, "
                        f"got {type(frame).__name__}")
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise DataFormatError(source, f"missing column(s) {missing}; expected columns {expected}, "
                                      f"found {[c for c in frame.columns if c != LINE_COLUMN]}")


def _check_no_nulls(frame: pd.DataFrame, cols: Sequence[str], source: str) -> None:
    for col in cols:
        null = frame[col].isna().to_numpy()
        if null.any():
            pos = int(np.flatnonzero(null)[0])
            src, line = _where(frame, pos, source)
            raise DataFormatError(src, f"empty value in column {col!r} ({int(null.sum())} such rows)",
                                  line)


def _time_columns(frame: pd.DataFrame, source: str) -> tuple[np.ndarray, np.ndarray]:
    """``(key, stored)``: an exact sort key of the ``time`` column and the values to store.

    Numbers: int64 when all are whole (``key`` = ``stored``), else float64 (never rounded).
    Datetimes (time-zone aware ones converted to UTC): seconds since the epoch, int64 when all
    are whole seconds, else float64 seconds with the exact int64 nanoseconds as the sort key
    (so two events a nanosecond apart keep their order even where float64 cannot tell them
    apart).
    """
    col = frame["time"]
    if col.dtype == object and pd.api.types.infer_dtype(col, skipna=True) in {
            "datetime", "datetime64", "date", "mixed"} and any(
            isinstance(v, (pd.Timestamp, np.datetime64)) or hasattr(v, "tzinfo") for v in col[:1]):
        try:  # datetime objects, possibly with several time zones: all to UTC
            col = pd.to_datetime(col, utc=True)
        except (TypeError, ValueError) as exc:
            raise DataFormatError(source, f"column 'time' mixes datetimes with other values "
                                          f"({exc}); expected numbers or datetimes") from None
    if isinstance(col.dtype, pd.DatetimeTZDtype):
        col = col.dt.tz_convert("UTC").dt.tz_localize(None)
    if pd.api.types.is_datetime64_any_dtype(col):
        ns = col.astype("datetime64[ns]").to_numpy().astype(np.int64)
        whole = ns // 1_000_000_000
        if (ns % 1_000_000_000 == 0).all():
            return whole, whole
        return ns, ns.astype(np.float64) / 1e9
    numeric = pd.to_numeric(col, errors="coerce")
    bad = numeric.isna().to_numpy() | ~np.isfinite(numeric.to_numpy(dtype=np.float64, na_value=np.nan))
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        src, line = _where(frame, pos, source)
        raise DataFormatError(src, f"column 'time' must be a number or a datetime, got "
                                   f"{_plain(col.iloc[pos])!r}", line)
    values = numeric.to_numpy()
    if np.issubdtype(values.dtype, np.floating):
        whole = np.floor(values) == values
        if whole.all() and np.abs(values).max(initial=0.0) < 2.0**63:
            values = values.astype(np.int64)  # e.g. RecBole's "timestamp:float" columns
        else:
            values = values.astype(np.float64)
        return values, values
    values = values.astype(np.int64)
    return values, values


def _index(values: pd.Series, order: Sequence[Hashable]) -> np.ndarray:
    """Positions of ``values`` in ``order`` (-1 where absent)."""
    idx = pd.Index(order)
    return idx.get_indexer(values)


def _user_time_order(u: np.ndarray, time: np.ndarray) -> np.ndarray | None:
    """The stable order by ``(user, time)`` (ties keep the input row order), or ``None`` when the
    rows already are in that order — checked in one vectorised pass, which saves the sort (about
    5 s at 20M interactions) for sources that list each user's interactions chronologically."""
    if len(u) < 2:
        return None
    du = u[1:] - u[:-1]
    if bool(((du > 0) | ((du == 0) & (time[1:] >= time[:-1]))).all()):
        return None
    return np.lexsort((time, u))  # lexsort is stable: equal keys keep the input row order


def _key_array(col: pd.Series) -> np.ndarray:
    """A KG id column as a numpy array: integer columns stay integer (hashing 10M int64 keys is
    several times faster, and ~5x smaller, than hashing Python ints in an object array); any other
    column becomes an object array."""
    arr = col.to_numpy()
    return arr if arr.dtype.kind in "iu" else col.to_numpy(dtype=object)


def build_collaborative_kg(
    interactions: pd.DataFrame,
    triples: pd.DataFrame | None = None,
    links: pd.DataFrame | None = None,
    item_text: pd.DataFrame | pd.Series | dict | None = None,
    *,
    items: Sequence[Hashable] | None = None,
    users: Sequence[Hashable] | None = None,
    sources: dict[str, str] | None = None,
    unknown_links: str = "error",
    drop_duplicate_interactions: bool = False,
    edge_columns: Sequence[str] = (),
) -> HeteroData:
    r"""Build the collaborative KG from pandas frames.

    Args:
        interactions: columns ``user``, ``item``, ``time`` and optionally ``rating``. Ids may be
            any hashable values; ``time`` is a number (seconds, or a position when the source only
            has order) or a datetime.
        triples: KG triples, columns ``head``, ``relation``, ``tail``.
        links: item → KG entity links, columns ``item``, ``entity``. A KG head/tail equal to a
            linked entity becomes that item's node.
        item_text: item descriptions: a frame with ``item`` and ``text`` columns, a Series or a
            dict indexed by item id.
        items: the item catalogue in node order (default: items in order of first appearance in
            ``interactions``). Items listed here but never interacted with are kept as nodes.
        users: the user order (default: order of first appearance).
        sources: names used in error messages, keys ``interactions``, ``triples``, ``links``,
            ``item_text`` (e.g. the file names a loader read).
        unknown_links: what to do with a link whose item is not in the catalogue: ``"error"``
            (default) raises :class:`DataFormatError` naming the row, ``"drop"`` drops and counts.
        drop_duplicate_interactions: drop rows repeating the same (user, item, time); repeated
            consumption at different times is always kept. Counted either way.
        edge_columns: further numeric or boolean ``interactions`` columns to keep as per-edge
            attributes of ``interacts`` and ``rev_interacts``, in the edges' order (e.g. KGAT's
            ``is_test``).

    Returns:
        The :class:`~torch_geometric.data.HeteroData` described in this module's docstring.
    """
    src = {"interactions": "interactions", "triples": "triples", "links": "links",
           "item_text": "item_text"}
    src.update(sources or {})
    if unknown_links not in {"error", "drop"}:
        raise ValueError(f"unknown_links must be 'error' or 'drop', got {unknown_links!r}")
    report = BuildReport()
    data = HeteroData()
    item_order = _add_interactions(data, interactions, items, users, src, report,
                                   drop_duplicate_interactions, tuple(edge_columns))
    entity_to_item = _link_items(data, links, item_order, src, report, unknown_links)
    _add_triples(data, triples, entity_to_item, src, report)
    _add_item_text(data, item_text, item_order, src, report)
    data.build_report = report.as_dict()
    if _WARN_IN_BUILDER.get():
        what = src["interactions"] if sources and "interactions" in sources else "interactions"
        warn_build_report(data.build_report, f"collaborative KG of {what}")
    return data


def _add_interactions(data: HeteroData, interactions: pd.DataFrame,
                      items: Sequence[Hashable] | None, users: Sequence[Hashable] | None,
                      src: dict[str, str], report: BuildReport,
                      drop_duplicate_interactions: bool,
                      edge_columns: Sequence[str]) -> list[Hashable]:
    """User and item nodes and the time-sorted ``interacts`` / ``rev_interacts`` edges (with
    ``time``, ``rating`` and the ``edge_columns``); returns the item order."""
    _require_columns(interactions, ["user", "item", "time"], src["interactions"],
                     "user,item,time[,rating]")
    if len(interactions) == 0:
        raise DataFormatError(src["interactions"], "no interactions (empty input); expected at "
                                                   "least one user,item,time row")
    _check_no_nulls(interactions, ["user", "item", "time"], src["interactions"])
    inter = interactions.reset_index(drop=True)
    time_key, time = _time_columns(inter, src["interactions"])

    user_order = list(pd.unique(inter["user"])) if users is None else list(users)
    item_order = list(pd.unique(inter["item"])) if items is None else list(items)
    if len(set(item_order)) != len(item_order):
        raise ValueError("`items` lists an item id more than once")
    u = _index(inter["user"], user_order)
    i = _index(inter["item"], item_order)
    for arr, col, what in ((u, "user", "`users`"), (i, "item", "`items`")):
        if (arr < 0).any():
            pos = int(np.flatnonzero(arr < 0)[0])
            s, line = _where(inter, pos, src["interactions"])
            raise DataFormatError(s, f"{col} {_plain(inter[col].iloc[pos])!r} is not in the given {what}", line)

    extra = {}
    for col in edge_columns:
        if col not in inter.columns:
            raise DataFormatError(src["interactions"], f"missing column {col!r} (edge_columns)")
        values = inter[col].to_numpy()
        if values.dtype == object:
            raise DataFormatError(src["interactions"], f"edge column {col!r} must be numeric or "
                                                      f"boolean, got {inter[col].dtype}")
        extra[col] = values

    rating = None
    if "rating" in inter.columns:
        rating = pd.to_numeric(inter["rating"], errors="coerce").to_numpy(np.float32)
        if np.isnan(rating).any():
            pos = int(np.flatnonzero(np.isnan(rating))[0])
            s, line = _where(inter, pos, src["interactions"])
            raise DataFormatError(s, f"column 'rating' must be numeric, got {_plain(inter['rating'].iloc[pos])!r}",
                                  line)

    # Stable sort by (user, time, input row): each user's sequence becomes a contiguous slice.
    order = _user_time_order(u, time_key)
    if order is not None:
        u, i, time, time_key = u[order], i[order], time[order], time_key[order]
        rating = rating[order] if rating is not None else None
        extra = {k: v[order] for k, v in extra.items()}
    dup = np.zeros(len(u), dtype=bool)
    # a repeat of an earlier (user, item, time) row; with equal keys the rows are adjacent only
    # when they are also the same item, so compare per (user, time) group
    same_ut = np.zeros(len(u), dtype=bool)
    same_ut[1:] = (u[1:] == u[:-1]) & (time_key[1:] == time_key[:-1])
    if same_ut.any():
        dup = pd.DataFrame({"u": u, "i": i, "t": time_key}).duplicated().to_numpy()
    del time_key
    n_dup = int(dup.sum())
    if drop_duplicate_interactions:
        keep = ~dup
        u, i, time = u[keep], i[keep], time[keep]
        rating = rating[keep] if rating is not None else None
        extra = {k: v[keep] for k, v in extra.items()}
        report.add("interactions_duplicate_dropped", n_dup, "rows repeating (user, item, time)")
    else:
        report.add("interactions_duplicate_kept", n_dup)
    report.counts["interactions"] = len(u)

    data["user"].num_nodes = len(user_order)
    data["user"].raw_id = user_order
    data["item"].num_nodes = len(item_order)
    data["item"].raw_id = item_order
    ei = torch.from_numpy(np.stack([u, i]).astype(np.int64, copy=False))
    data[INTERACTS].edge_index = ei
    data[INTERACTS].time = torch.from_numpy(time)
    if rating is not None:
        data[INTERACTS].rating = torch.from_numpy(rating)
    data[REV_INTERACTS].edge_index = ei.flip(0)
    data[REV_INTERACTS].time = data[INTERACTS].time
    for col, values in extra.items():
        tensor = torch.from_numpy(np.ascontiguousarray(values))
        data[INTERACTS][col] = data[REV_INTERACTS][col] = tensor
    return item_order


def _link_items(data: HeteroData, links: pd.DataFrame | None, item_order: list[Hashable],
                src: dict[str, str], report: BuildReport,
                unknown_links: str) -> dict[Hashable, int]:
    """Item → KG entity links: ``data['item'].entity_raw_id`` and the entity → item node map."""
    entity_to_item: dict[Hashable, int] = {}
    item_entity: list[Hashable | None] = [None] * len(item_order)
    if links is not None:
        _require_columns(links, ["item", "entity"], src["links"], "item,entity")
        _check_no_nulls(links, ["item", "entity"], src["links"])
        lk = links.reset_index(drop=True)
        li = _index(lk["item"], item_order)
        unknown = li < 0
        if unknown.any():
            if unknown_links == "error":
                pos = int(np.flatnonzero(unknown)[0])
                s, line = _where(lk, pos, src["links"])
                raise DataFormatError(s, f"links item {_plain(lk['item'].iloc[pos])!r} is not an item of the "
                                         f"interactions/catalogue ({int(unknown.sum())} such links); "
                                         f"pass unknown_links='drop' to drop them", line)
            report.add("links_unknown_item_dropped", int(unknown.sum()),
                       "links to items not in the catalogue")
        n_ambiguous = n_duplicate = 0
        for item_idx, ent in zip(li[~unknown].tolist(), lk["entity"][~unknown].tolist()):
            prev = entity_to_item.get(ent)
            if prev is None:
                entity_to_item[ent] = item_idx
                if item_entity[item_idx] is None:
                    item_entity[item_idx] = ent
            elif prev == item_idx:
                n_duplicate += 1
            else:
                n_ambiguous += 1
        report.add("links_duplicate", n_duplicate, "repeated (item, entity) links")
        report.add("links_entity_to_several_items", n_ambiguous,
                   "entity linked to more than one item: the first link is kept")
        report.counts["linked_items"] = sum(e is not None for e in item_entity)
        data["item"].entity_raw_id = [("" if e is None else str(e)) for e in item_entity]
    return entity_to_item


def _relation_identifiers(relations: Sequence[str], frame: pd.DataFrame, source: str,
                          relation_names: dict[str, str]) -> list[str]:
    """The edge-type identifier of every relation (:func:`sanitize_relation`), filling
    ``relation_names`` (identifier → source name); a name without identifier characters, two
    names sanitising alike, or a reserved name is an error naming the first such triple."""
    names: list[str] = []
    for r in relations:
        try:
            s = sanitize_relation(r)
        except ValueError:
            s = None
        problem = None
        if s is None:
            problem = (f"relation name {r!r} has no letter, digit or underscore; expected a "
                       f"non-empty relation name (e.g. 'film.film.genre')")
        elif s in relation_names and relation_names[s] != r:
            problem = (f"relations {relation_names[s]!r} and {r!r} both sanitise to {s!r}; "
                       f"rename one")
        elif s in {"interacts", "rev_interacts"} or s.startswith("rev_"):
            problem = f"relation {r!r} uses a reserved name ({s!r}); rename it"
        if problem is not None:
            rows = np.flatnonzero(frame["relation"].astype(str).to_numpy() == r)
            where, line = _where(frame, int(rows[0]), source)
            raise DataFormatError(where, f"{problem} ({len(rows)} such triples)", line)
        relation_names[s] = r
        names.append(s)
    return names


def _add_triples(data: HeteroData, triples: pd.DataFrame | None,
                 entity_to_item: dict[Hashable, int], src: dict[str, str],
                 report: BuildReport) -> None:
    """Entity nodes and one edge type per KG relation and node-type pair (with ``rev_`` reverses);
    ``data.relation_names`` maps the identifiers back to the source's relation names."""
    relation_names: dict[str, str] = {}
    if triples is not None:
        _require_columns(triples, ["head", "relation", "tail"], src["triples"], "head,relation,tail")
        _check_no_nulls(triples, ["head", "relation", "tail"], src["triples"])
        tr = triples.reset_index(drop=True)
        heads = _key_array(tr["head"])
        tails = _key_array(tr["tail"])
        if heads.dtype != tails.dtype:  # e.g. int64 and uint64 would stack as float64
            heads, tails = heads.astype(object), tails.astype(object)
        # One hash pass over every head and tail: the codes number the distinct KG keys in order
        # of first appearance (row-wise, head before tail); `both` holds the keys in that order.
        codes, both = pd.factorize(np.stack([heads, tails], axis=1).reshape(-1))
        del heads, tails
        h_code, t_code = codes[0::2], codes[1::2]
        r_code, r_raw = pd.factorize(tr["relation"])
        # duplicated triples: compared on the integer codes (same equality as on the raw values,
        # several times faster than hashing the raw columns at 10M rows)
        n_keys, n_rel = max(len(both), 1), max(len(r_raw), 1)
        if n_keys * n_keys * n_rel < 2**62:  # one int64 key per triple: one hash pass
            key = (h_code.astype(np.int64) * n_rel + r_code) * n_keys + t_code
            dup = pd.Series(key).duplicated().to_numpy()
            del key
        else:
            dup = pd.DataFrame({"h": h_code, "r": r_code, "t": t_code}).duplicated().to_numpy()
        n_triples = len(tr) - int(dup.sum())
        report.add("triples_duplicate_dropped", int(dup.sum()), "repeated (head, relation, tail)")
        if dup.any():  # a repeat never comes first, so the orders of first appearance stay
            keep = ~dup
            h_code, t_code, r_code = h_code[keep], t_code[keep], r_code[keep]
        del dup, codes
        linked = pd.Index(list(entity_to_item.keys()))
        linked_item = np.fromiter(entity_to_item.values(), dtype=np.int64, count=len(entity_to_item))
        # Entities that are not items, in order of first appearance (heads then tails, row-wise).
        lpos = linked.get_indexer(both) if len(linked) else np.full(len(both), -1)
        key_is_item = lpos >= 0
        report.add("links_entity_not_in_kg", len(linked) - int(key_is_item.sum()))
        ent_keys = both[~key_is_item]
        entity_order = ent_keys.tolist()  # Python scalars (raw ids), whatever the array's dtype
        key_node = np.empty(len(both), dtype=np.int64)  # node index of each distinct key
        key_node[key_is_item] = linked_item[lpos[key_is_item]]
        key_node[~key_is_item] = np.arange(len(ent_keys))
        h_pos, h_item = key_node[h_code], key_is_item[h_code]
        t_pos, t_item = key_node[t_code], key_is_item[t_code]
        # relation names: equal after str() means the same relation (first appearance order)
        str_code, rel_uniques = pd.factorize(np.array([str(r) for r in r_raw], dtype=object))
        rel_codes = str_code[r_code]
        names = _relation_identifiers(rel_uniques, tr, src["triples"], relation_names)
        data["entity"].num_nodes = len(entity_order)
        data["entity"].raw_id = entity_order
        # one edge type per (relation, head is item, tail is item): group with one stable sort
        group = rel_codes.astype(np.int64) * 4 + h_item.astype(np.int64) * 2 + t_item
        # few distinct groups: a 16-bit key gets numpy's radix sort (10x faster at 10M triples)
        small = len(group) == 0 or int(group.max()) < 2**15
        order = np.argsort(group.astype(np.int16) if small else group, kind="stable")
        sorted_group = group[order]
        starts = np.flatnonzero(np.concatenate([[True], sorted_group[1:] != sorted_group[:-1]])) \
            if len(group) else np.zeros(0, dtype=np.int64)
        keys = sorted_group[starts]
        ends = np.append(starts[1:], len(order))
        n_item_item = 0
        for key, a, b in zip(keys.tolist(), starts.tolist(), ends.tolist()):
            sel = order[a:b]
            rel_name = names[key // 4]
            ht = "item" if (key // 2) % 2 else "entity"
            tt = "item" if key % 2 else "entity"
            e = torch.from_numpy(np.stack([h_pos[sel], t_pos[sel]]))
            data[ht, rel_name, tt].edge_index = e
            data[tt, f"rev_{rel_name}", ht].edge_index = e.flip(0)
            if ht == tt == "item":
                n_item_item += len(sel)
        report.counts["triples"] = n_triples
        report.counts["triples_item_item"] = n_item_item
        report.counts["relations"] = len(relation_names)
    else:
        data["entity"].num_nodes = 0
        data["entity"].raw_id = []
    data.relation_names = relation_names


def _add_item_text(data: HeteroData, item_text: pd.DataFrame | pd.Series | dict | None,
                   item_order: list[Hashable], src: dict[str, str], report: BuildReport) -> None:
    """``data['item'].text``: one string per item (empty where the source has none)."""
    if item_text is not None:
        if isinstance(item_text, dict):
            item_text = pd.Series(item_text)
        if isinstance(item_text, pd.Series):
            item_text = pd.DataFrame({"item": item_text.index, "text": item_text.to_numpy()})
        _require_columns(item_text, ["item", "text"], src["item_text"], "item,text")
        it = item_text.reset_index(drop=True)
        pos = _index(it["item"], item_order)
        report.add("item_text_unknown_item_dropped", int((pos < 0).sum()),
                   "text rows for items not in the catalogue")
        texts = [""] * len(item_order)
        for p, t in zip(pos.tolist(), it["text"].tolist()):
            if p >= 0:
                texts[p] = "" if (t is None or (isinstance(t, float) and np.isnan(t))) else str(t)
        report.add("items_without_text", sum(1 for t in texts if not t))
        data["item"].text = texts


def kg_edge_types(data: HeteroData, include_reverse: bool = True) -> list[tuple[str, str, str]]:
    """The KG edge types of ``data`` (everything except the user–item interaction edges)."""
    out = []
    for et in data.edge_types:
        if et[1] in {"interacts", "rev_interacts"}:
            continue
        if not include_reverse and et[1].startswith("rev_"):
            continue
        out.append(et)
    return out
