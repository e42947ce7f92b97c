r"""Knowledge prompts (KP4SR, Zhai et al., 2023): KG triples rendered as sentences by relation
templates.

A template is a sentence with the placeholders ``[X]`` (the triple's head) and ``[Y]`` (its
tail). A triple :math:`(h, r, t)` becomes

.. math::
    \mathrm{prompt}(h, r, t) = \mathrm{template}_r\big[\,[X] \mapsto \mathrm{name}(h),\;
        [Y] \mapsto \mathrm{name}(t)\,\big].

KP4SR renders every triple of a relational view once (:func:`render_triples`) and samples which
ones enter each example's knowledge tree (:func:`~kgseqgraph.data.sample_relation_tails`).
:func:`knowledge_prompts` is a static alternative: a fixed budget of prompts per item, chosen as
follows.

The knowledge prompts of an item :math:`i` are the renderings of its 1-hop triples (the item as
head *or* tail of the original triple — the graph's ``rev_*`` edges are read back into the
original direction, so one template per relation suffices), optionally followed by 2-hop triples
:math:`(e, r', e')` of its neighbours :math:`e`. Each item keeps at most ``max_per_item`` prompts
(the budget); what the budget cut is counted in :attr:`KnowledgePrompts.report`.

Selection under the budget is deterministic: relations are visited round-robin in priority order
(the order of the template mapping, relations without a template last), and within a relation the
neighbours with the highest degree in that relation come first (well-connected entities recur
across items, so a model can learn something from them). Pairs of inverse relations that state
the same fact twice (``film.film.genre`` / ``film.film_genre.films_in_this_genre``) are
de-duplicated with :data:`FREEBASE_INVERSES` (the first relation in priority order is kept).

Entity names: the Freebase KGs shipped with ML-100K (RecBole/KB4Rec) carry **mids only**
(``m.04t36``), no names. An entity that is an item is named by the item's title; any other
entity gets a readable fallback ``"<type word> <mid>"`` (``"director m.0bxtg"``, the type word
from :data:`FREEBASE_TYPE_WORDS` for the relation that reached it) unless the caller passes a
``names`` mapping ``raw id → name`` (e.g. from a Freebase/Wikidata dump), which always wins.
"""
from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import HeteroData

__all__ = [
    "FREEBASE_FILM_TEMPLATES",
    "FREEBASE_INVERSES",
    "FREEBASE_TYPE_WORDS",
    "ATTRIBUTE_TEMPLATES",
    "DEFAULT_TEMPLATES",
    "load_templates",
    "validate_template",
    "render_template",
    "fallback_template",
    "resolve_templates",
    "EntityNames",
    "KnowledgePrompts",
    "knowledge_prompts",
    "render_triples",
]

log = logging.getLogger("kgseqgraph")

#: One template per Freebase film relation of ML-100K (RecBole's KB4Rec KG), both directions.
#: ``[X]`` is the head of the triple as stored in the KG, ``[Y]`` its tail. The order is the
#: default priority used when an item has more triples than its prompt budget.
FREEBASE_FILM_TEMPLATES: dict[str, str] = {
    "film.film.genre": "The genre of [X] is [Y].",
    "film.film_genre.films_in_this_genre": "Films in genre [X] include [Y].",
    "film.film.directed_by": "[X] is directed by [Y].",
    "film.director.film": "[X] directed [Y].",
    "film.film.actor": "[X] stars [Y].",
    "film.actor.film": "[X] acted in [Y].",
    "film.film.written_by": "[X] is written by [Y].",
    "film.writer.film": "[X] wrote [Y].",
    "film.film.subjects": "The subject of [X] is [Y].",
    "film.film_subject.films": "Films on subject [X] include [Y].",
    "film.film.sequel": "The sequel of [X] is [Y].",
    "film.film.prequel": "The prequel of [X] is [Y].",
    "film.film.produced_by": "[X] is produced by [Y].",
    "film.producer.film": "[X] produced [Y].",
    "film.film.language": "The language of [X] is [Y].",
    "film.film.country": "[X] was made in [Y].",
    "film.film.rating": "The content rating of [X] is [Y].",
    "film.content_rating.film": "Films rated [X] include [Y].",
    "film.film.production_companies": "[X] is produced by company [Y].",
    "film.production_company.films": "Company [X] produced [Y].",
    "film.film.cinematography": "The cinematographer of [X] is [Y].",
    "film.cinematographer.film": "[X] shot [Y].",
    "film.film.award_won": "[X] won the award [Y].",
    "film.film.award_nomination": "[X] was nominated for the award [Y].",
}

#: S3-Rec attribute datasets (one relation ``has_attribute``, see ``kgseqgraph.datasets.s3rec``).
ATTRIBUTE_TEMPLATES: dict[str, str] = {"has_attribute": "[X] has attribute [Y]."}

#: The templates used when the caller passes none.
DEFAULT_TEMPLATES: dict[str, str] = {**FREEBASE_FILM_TEMPLATES, **ATTRIBUTE_TEMPLATES}

#: Relation pairs that state the same fact in opposite directions (each listed both ways).
FREEBASE_INVERSES: dict[str, str] = {}
for _a, _b in [("film.film.genre", "film.film_genre.films_in_this_genre"),
               ("film.film.directed_by", "film.director.film"),
               ("film.film.actor", "film.actor.film"),
               ("film.film.written_by", "film.writer.film"),
               ("film.film.subjects", "film.film_subject.films"),
               ("film.film.sequel", "film.film.prequel"),
               ("film.film.produced_by", "film.producer.film"),
               ("film.film.rating", "film.content_rating.film"),
               ("film.film.production_companies", "film.production_company.films"),
               ("film.film.cinematography", "film.cinematographer.film"),
               ("book.written_work.author", "book.author.works_written"),
               ("book.written_work.subjects", "book.book_subject.works"),
               ("book.book.genre", "media_common.literary_genre.books_in_this_genre"),
               ("book.book.characters", "book.book_character.appears_in_book"),
               ("book.written_work.next_in_series", "book.written_work.previous_in_series"),
               ("book.written_work.part_of_series", "book.literary_series.works_in_this_series"),
               ("media_common.adapted_work.adaptations", "media_common.adaptation.adapted_from")]:
    FREEBASE_INVERSES[_a] = _b
    FREEBASE_INVERSES[_b] = _a

#: Type word of the entity on each side of a relation, ``relation → (head word, tail word)``
#: (``""``: the side is normally an item and is named by its title), for readable fallback names.
FREEBASE_TYPE_WORDS: dict[str, tuple[str, str]] = {
    "film.film.genre": ("", "genre"),
    "film.film_genre.films_in_this_genre": ("genre", ""),
    "film.film.directed_by": ("", "director"),
    "film.director.film": ("director", ""),
    "film.film.actor": ("", "actor"),
    "film.actor.film": ("actor", ""),
    "film.film.written_by": ("", "writer"),
    "film.writer.film": ("writer", ""),
    "film.film.subjects": ("", "subject"),
    "film.film_subject.films": ("subject", ""),
    "film.film.sequel": ("", "film"),
    "film.film.prequel": ("", "film"),
    "film.film.produced_by": ("", "producer"),
    "film.producer.film": ("producer", ""),
    "film.film.language": ("", "language"),
    "film.film.country": ("", "country"),
    "film.film.rating": ("", "rating"),
    "film.content_rating.film": ("rating", ""),
    "film.film.production_companies": ("", "company"),
    "film.production_company.films": ("company", ""),
    "film.film.cinematography": ("", "cinematographer"),
    "film.cinematographer.film": ("cinematographer", ""),
    "film.film.award_won": ("", "award"),
    "film.film.award_nomination": ("", "award"),
    "has_attribute": ("", "attribute"),
}

_PLACEHOLDERS = ("[X]", "[Y]")


def validate_template(relation: str, template: str) -> str:
    """Check that ``template`` holds ``[X]`` and ``[Y]`` exactly once each; return it stripped."""
    if not isinstance(template, str):
        raise ValueError(f"template of relation {relation!r} must be a string, got "
                         f"{type(template).__name__}")
    t = template.strip()
    for ph in _PLACEHOLDERS:
        if t.count(ph) != 1:
            raise ValueError(f"template of relation {relation!r} must contain {ph} exactly once, "
                             f"got {template!r}")
    return t


def load_templates(path: str | os.PathLike) -> dict[str, str]:
    """Read a JSON object ``relation → template`` (e.g. the KP4SR authors'
    ``relation2template.json``) and validate every template."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a JSON object relation -> template, got "
                         f"{type(obj).__name__}")
    return {str(k): validate_template(str(k), v) for k, v in obj.items()}


def render_template(template: str, head: str, tail: str) -> str:
    """Fill ``[X]`` with ``head`` and ``[Y]`` with ``tail`` (in one pass, so a name containing a
    placeholder is never substituted twice)."""
    return re.sub(r"\[X\]|\[Y\]", lambda m: head if m.group(0) == "[X]" else tail, template)


def fallback_template(relation: str) -> str:
    """A template for a relation without one: ``"[X] <words of the last path segment> [Y]."``
    (``film.film.music`` → ``"[X] music [Y]."``)."""
    last = re.split(r"[./#]", str(relation).rstrip("./#"))[-1] or str(relation)
    words = re.sub(r"[_\W]+", " ", last).strip() or "related to"
    return f"[X] {words} [Y]."


def resolve_templates(relation_names: Mapping[str, str],
                      templates: Mapping[str, str] | None = None,
                      missing: str = "fallback") -> tuple[dict[str, str], list[str]]:
    """Template of every relation of a graph.

    Args:
        relation_names: ``data.relation_names`` (sanitised edge-type name → original name).
        templates: ``original or sanitised name → template``; ``None`` uses
            :data:`DEFAULT_TEMPLATES`.
        missing: ``"fallback"`` (:func:`fallback_template`), ``"skip"`` (the relation yields no
            prompts) or ``"error"``.

    Returns:
        ``(sanitised name → template, sanitised names that fell back or were skipped)``.
    """
    if missing not in {"fallback", "skip", "error"}:
        raise ValueError(f"missing must be 'fallback', 'skip' or 'error', got {missing!r}")
    templates = DEFAULT_TEMPLATES if templates is None else templates
    out: dict[str, str] = {}
    without: list[str] = []
    for key, orig in relation_names.items():
        t = templates.get(orig, templates.get(key))
        if t is not None:
            out[key] = validate_template(orig, t)
            continue
        if missing == "error":
            raise ValueError(f"no template for relation {orig!r}; pass one (keys may be the "
                             f"original or the sanitised name {key!r})")
        without.append(key)
        if missing == "fallback":
            out[key] = fallback_template(orig)
    if without:
        log.info("knowledge prompts: %d relation(s) without a template (%s): %s", len(without),
                 missing, ", ".join(relation_names[k] for k in without))
    return out, without


class EntityNames:
    """Names of the KG nodes used in prompts.

    Args:
        data: the collaborative KG.
        names: ``raw id → name`` for entities (and items, matched on their linked entity id or
            their raw id); overrides every default. Freebase mids of ML-100K have no names, so
            this is the way to plug real names in.
        item_names: names of the items in node order (default: ``data['item'].title``, else
            ``data['item'].text``, else ``"item <raw id>"``).
        type_words: ``relation → (head word, tail word)`` used by the entity fallback.
    """

    def __init__(self, data: HeteroData, names: Mapping[str, str] | None = None,
                 item_names: Sequence[str] | None = None,
                 type_words: Mapping[str, tuple[str, str]] | None = None) -> None:
        item = data["item"]
        n_items = int(item.num_nodes)
        names = {str(k): str(v) for k, v in (names or {}).items()}
        if item_names is None:
            raw = list(item.raw_id) if "raw_id" in item else list(range(n_items))
            base = (list(item.title) if "title" in item else
                    list(item.text) if "text" in item else [""] * n_items)
            linked = list(item.entity_raw_id) if "entity_raw_id" in item else [""] * n_items
            item_names = []
            for i in range(n_items):
                given = names.get(linked[i]) if linked[i] else None
                given = given if given is not None else names.get(str(raw[i]))
                item_names.append(given or str(base[i]).strip() or f"item {raw[i]}")
        if len(item_names) != n_items:
            raise ValueError(f"item_names has {len(item_names)} entries for {n_items} items")
        self.items = [str(x) for x in item_names]
        ent = data["entity"] if "entity" in data.node_types else None
        self.entity_raw = ([str(x) for x in ent.raw_id] if ent is not None and "raw_id" in ent
                           else [])
        self.names = names
        self.type_words = dict(FREEBASE_TYPE_WORDS if type_words is None else type_words)

    def item(self, index: int) -> str:
        return self.items[index]

    def entity(self, index: int, relation: str | None = None, side: str = "tail") -> str:
        """Name of entity ``index``, reached as the ``side`` (``"head"``/``"tail"``) of
        ``relation`` (original name) — only used to pick the fallback's type word."""
        raw = self.entity_raw[index] if index < len(self.entity_raw) else str(index)
        given = self.names.get(raw)
        if given is not None:
            return given
        word = ""
        if relation is not None and relation in self.type_words:
            word = self.type_words[relation][0 if side == "head" else 1]
        return f"{word} {raw}" if word else raw

    def node(self, node_type: str, index: int, relation: str | None = None,
             side: str = "tail") -> str:
        return self.item(index) if node_type == "item" else self.entity(index, relation, side)


@dataclass
class KnowledgePrompts:
    """Knowledge prompts of every item, in CSR form.

    Attributes:
        ptr: ``[N + 1]``; item ``i`` owns ``texts[ptr[i]:ptr[i + 1]]``.
        texts: the prompts.
        relations: original relation name of each prompt.
        hops: 1 or 2 for each prompt.
        report: ``triples_available`` (1-hop triples after de-duplication), ``prompts_kept``,
            ``prompts_truncated`` (cut by the budget), ``items_truncated``, ``items_without``
            (items with no knowledge), ``inverse_duplicates_dropped``, ``two_hop_kept``,
            ``relations_without_template``.
    """

    ptr: torch.Tensor
    texts: list[str]
    relations: list[str]
    hops: list[int]
    report: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.ptr.numel() - 1)

    def __getitem__(self, item: int) -> list[str]:
        return self.texts[int(self.ptr[item]):int(self.ptr[item + 1])]


def _item_edges(data: HeteroData, rel_ok: Callable[[str], bool]
                ) -> list[tuple[str, str, str, np.ndarray, np.ndarray, bool]]:
    """Every edge type touching an item, read in the original triple direction:
    ``(relation key, item side, other node type, item idx, other idx, item_is_head)``."""
    out = []
    for src, rel, dst in data.edge_types:
        if rel in {"interacts", "rev_interacts"} or "edge_index" not in data[src, rel, dst]:
            continue
        ei = data[src, rel, dst].edge_index.numpy()
        if rel.startswith("rev_"):
            key, head_t, tail_t, head, tail = rel[4:], dst, src, ei[1], ei[0]
        else:
            key, head_t, tail_t, head, tail = rel, src, dst, ei[0], ei[1]
        if not rel_ok(key):
            continue
        if head_t == "item" and not rel.startswith("rev_"):
            out.append((key, "head", tail_t, head, tail, True))
        if tail_t == "item" and rel.startswith("rev_"):
            out.append((key, "tail", head_t, tail, head, False))
    return out


def knowledge_prompts(
    data: HeteroData,
    templates: Mapping[str, str] | None = None,
    *,
    names: EntityNames | None = None,
    entity_names: Mapping[str, str] | None = None,
    item_names: Sequence[str] | None = None,
    max_per_item: int = 5,
    two_hop: int = 0,
    relations: Sequence[str] | None = None,
    missing_template: str = "fallback",
    inverses: Mapping[str, str] | None = None,
) -> KnowledgePrompts:
    r"""Render the knowledge prompts of every item of ``data``.

    Args:
        data: collaborative KG (``data.relation_names``, KG edge types).
        templates: ``relation → template`` (original or sanitised names); ``None`` =
            :data:`DEFAULT_TEMPLATES`. Its key order sets the selection priority.
        names: an :class:`EntityNames`; built from ``data``, ``entity_names`` and
            ``item_names`` when ``None``.
        entity_names: ``raw id → name`` (see :class:`EntityNames`).
        item_names: item names in node order (e.g. ``"<item_5>"`` tokens instead of titles).
        max_per_item: budget of prompts per item (1-hop and 2-hop together).
        two_hop: slots of the budget reserved for 2-hop prompts :math:`(e, r', e')`, for
            neighbours :math:`e` of the item (:math:`e'` never the item itself), taken in the
            order of the item's 1-hop rows; 1-hop prompts get ``max_per_item - two_hop`` slots
            (reserved slots that 2-hop triples cannot fill stay empty).
        relations: restrict to these relations (original or sanitised names).
        missing_template: see :func:`resolve_templates`.
        inverses: inverse relation pairs to de-duplicate (default :data:`FREEBASE_INVERSES`;
            ``{}`` keeps both).

    Returns:
        :class:`KnowledgePrompts`.
    """
    if max_per_item < 0 or two_hop < 0:
        raise ValueError("max_per_item and two_hop must be >= 0")
    rel_names: dict[str, str] = dict(getattr(data, "relation_names", {}) or {})
    tmpl, without = resolve_templates(rel_names, templates, missing_template)
    keys, tmpl = _relation_order(rel_names, tmpl, templates, relations)
    rel_id = {k: r for r, k in enumerate(keys)}
    names = names or EntityNames(data, entity_names, item_names)
    n_items = int(data["item"].num_nodes)

    rows = _item_rows(data, rel_id)
    rows, n_inv = _drop_inverse_duplicates(
        rows, keys, rel_names, FREEBASE_INVERSES if inverses is None else inverses)
    final = _prompt_order(rows)
    hop2 = _two_hop_adjacency(data, rel_id) if two_hop else {}

    item, rel, other_item, other, item_head = (rows[c] for c in _ROW_COLUMNS)
    texts: list[str] = []
    rels: list[str] = []
    hops: list[int] = []
    counts_per_item = np.bincount(item, minlength=n_items) if len(item) else np.zeros(n_items,
                                                                                      np.int64)
    bounds = np.zeros(n_items + 1, np.int64)
    bounds[1:] = np.cumsum(counts_per_item)
    ptr = [0]
    truncated = items_truncated = without_items = two_hop_kept = 0
    for i in range(n_items):
        item_rows = final[bounds[i]:bounds[i + 1]]
        kept = item_rows[:max_per_item - min(two_hop, max_per_item)]
        dropped = len(item_rows) - len(kept)
        item_name = names.item(i)
        for row in kept.tolist():  # 1-hop prompts
            key = keys[int(rel[row])]
            orig = rel_names[key]
            o_t = "item" if other_item[row] else "entity"
            if item_head[row]:
                text = render_template(tmpl[key], item_name,
                                       names.node(o_t, int(other[row]), orig, "tail"))
            else:
                text = render_template(tmpl[key], names.node(o_t, int(other[row]), orig, "head"),
                                       item_name)
            texts.append(text)
            rels.append(orig)
            hops.append(1)
        room = max_per_item - len(kept)
        if two_hop and room > 0:  # 2-hop prompts (e, r', e') around the item's neighbours
            budget = min(two_hop, room)
            for row in item_rows.tolist():
                if budget == 0:
                    break
                o_t = "item" if other_item[row] else "entity"
                for r2, t_t, t, head_is_node in hop2.get((o_t, int(other[row])), []):
                    if budget == 0:
                        break
                    if t_t == "item" and t == i:
                        continue
                    key2 = keys[r2]
                    orig2 = rel_names[key2]
                    nm = names.node(o_t, int(other[row]), rel_names[keys[int(rel[row])]],
                                    "tail" if item_head[row] else "head")
                    tn = names.node(t_t, t, orig2, "tail" if head_is_node else "head")
                    texts.append(render_template(tmpl[key2], *((nm, tn) if head_is_node
                                                               else (tn, nm))))
                    rels.append(orig2)
                    hops.append(2)
                    budget -= 1
                    two_hop_kept += 1
        truncated += dropped
        items_truncated += int(dropped > 0)
        without_items += int(len(item_rows) == 0)
        ptr.append(len(texts))
    report = {
        "items": n_items,
        "triples_available": int(len(item)),
        "prompts_kept": len(texts),
        "prompts_truncated": int(truncated),
        "items_truncated": int(items_truncated),
        "items_without": int(without_items),
        "inverse_duplicates_dropped": n_inv,
        "two_hop_kept": int(two_hop_kept),
        "relations_without_template": len(without),
    }
    if truncated:
        log.info("knowledge prompts: budget %d per item cut %d prompts on %d items",
                 max_per_item, truncated, items_truncated)
    return KnowledgePrompts(torch.tensor(ptr, dtype=torch.long), texts, rels, hops, report)


# the steps of knowledge_prompts ---------------------------------------------------------------
#: one row per (item, relation, other node): relation index, whether the other node is an item,
#: its id, and whether the item is the triple's head
_ROW_COLUMNS = ("item", "rel", "other_item", "other", "item_head")


def _relation_order(rel_names: Mapping[str, str], tmpl: dict[str, str],
                    templates: Mapping[str, str] | None, relations: Sequence[str] | None,
                    ) -> tuple[list[str], dict[str, str]]:
    """The relation keys with a template, in selection priority (the key order of the given
    templates, then by name), restricted to ``relations``."""
    if relations is not None:
        wanted = set(relations)
        unknown = wanted - set(rel_names) - set(rel_names.values())
        if unknown:
            raise ValueError(f"relations {sorted(unknown)} are not in the graph; known: "
                             f"{sorted(rel_names.values())}")
        tmpl = {k: v for k, v in tmpl.items() if k in wanted or rel_names[k] in wanted}
    given = list((DEFAULT_TEMPLATES if templates is None else templates).keys())
    rank_of: dict[str, int] = {}
    for k in tmpl:
        orig = rel_names[k]
        rank_of[k] = given.index(orig) if orig in given else (given.index(k) if k in given
                                                              else len(given))
    return sorted(tmpl, key=lambda k: (rank_of[k], rel_names[k])), tmpl


def _item_rows(data: HeteroData, rel_id: Mapping[str, int]) -> dict[str, np.ndarray]:
    """Every KG edge at an item with a templated relation as one row (:data:`_ROW_COLUMNS`),
    the original direction remembered."""
    cols: dict[str, list[np.ndarray]] = {c: [] for c in _ROW_COLUMNS}
    for key, _, other_t, it, ot, is_head in _item_edges(data, lambda k: k in rel_id):
        cols["item"].append(it)
        cols["rel"].append(np.full(len(it), rel_id[key]))
        cols["other_item"].append(np.full(len(it), other_t == "item"))
        cols["other"].append(ot)
        cols["item_head"].append(np.full(len(it), is_head))
    dtypes = {"item": np.int64, "rel": np.int64, "other": np.int64, "other_item": bool,
              "item_head": bool}
    return {c: (np.concatenate(cols[c]).astype(dtypes[c]) if cols[c] else np.zeros(0, dtypes[c]))
            for c in _ROW_COLUMNS}


def _drop_inverse_duplicates(rows: dict[str, np.ndarray], keys: Sequence[str],
                             rel_names: Mapping[str, str], inverses: Mapping[str, str],
                             ) -> tuple[dict[str, np.ndarray], int]:
    """Of a triple stated both ways (``film.actor`` / ``actor.film``), keep the relation with
    the better rank for each (item, other node); returns the rows and the number dropped."""
    item, rel, other_item, other = rows["item"], rows["rel"], rows["other_item"], rows["other"]
    if not len(item) or not inverses:
        return rows, 0
    rel_id = {k: r for r, k in enumerate(keys)}
    inv_rel = np.array([rel_id.get(_sanitized(inverses.get(rel_names[k]), rel_names), -1)
                        for k in keys], dtype=np.int64)
    canon = np.where((inv_rel[rel] >= 0) & (inv_rel[rel] < rel), inv_rel[rel], rel)
    ident = np.stack([item, canon, other_item.astype(np.int64), other], 1)
    order = np.lexsort((rel, ident[:, 3], ident[:, 2], ident[:, 1], ident[:, 0]))
    ident_s = ident[order]
    first = np.ones(len(order), bool)
    first[1:] = (ident_s[1:] != ident_s[:-1]).any(1)
    keep = np.zeros(len(item), bool)
    keep[order[first]] = True
    return {c: a[keep] for c, a in rows.items()}, int((~keep).sum())


def _prompt_order(rows: dict[str, np.ndarray]) -> np.ndarray:
    """Row indices grouped by item; within an item round-robin over its relations, and within a
    relation the other nodes by falling degree (popular neighbours first)."""
    item, rel, other_item, other = rows["item"], rows["rel"], rows["other_item"], rows["other"]
    degree = np.zeros(len(item), np.int64)
    if len(item):
        deg_key = np.stack([rel * 2 + other_item, other], 1)
        _, inv, counts = np.unique(deg_key, axis=0, return_inverse=True, return_counts=True)
        degree = counts[inv.reshape(-1)]
    order = np.lexsort((other, other_item, -degree, rel, item))
    item_s, rel_s = item[order], rel[order]
    grp_start = np.ones(len(order), bool)
    grp_start[1:] = (item_s[1:] != item_s[:-1]) | (rel_s[1:] != rel_s[:-1])
    starts = np.flatnonzero(grp_start)
    rank_in = np.arange(len(order)) - np.repeat(starts, np.diff(np.append(starts, len(order))))
    return order[np.lexsort((rel_s, rank_in, item_s))]


def _two_hop_adjacency(data: HeteroData, rel_id: Mapping[str, int],
                       ) -> dict[tuple[str, int], list[tuple[int, str, int, bool]]]:
    """``(node type, id) → [(relation index, other type, other id, node is the head), …]`` over
    the forward KG edges with a templated relation."""
    hop2: dict[tuple[str, int], list[tuple[int, str, int, bool]]] = {}
    for src, r, dst in data.edge_types:
        if r in {"interacts", "rev_interacts"} or r.startswith("rev_") or r not in rel_id:
            continue
        ei = data[src, r, dst].edge_index.numpy()
        for h, t in zip(ei[0].tolist(), ei[1].tolist()):
            hop2.setdefault((src, h), []).append((rel_id[r], dst, t, True))
        for h, t in zip(ei[0].tolist(), ei[1].tolist()):
            hop2.setdefault((dst, t), []).append((rel_id[r], src, h, False))
    return hop2


def _sanitized(original: str | None, relation_names: Mapping[str, str]) -> str | None:
    if original is None:
        return None
    for k, v in relation_names.items():
        if v == original:
            return k
    return None


def render_triples(data: HeteroData, graph, templates: Mapping[str, str] | None = None, *,
                   item_names: Sequence[str] | None = None,
                   entity_names: Mapping[str, str] | None = None,
                   missing_template: str = "fallback") -> list[str]:
    r"""One sentence per triple of a relational view
    (:func:`~kgseqgraph.data.relational_view` over ``("item", "entity")``):
    :math:`\mathrm{template}_r[[X] \mapsto \mathrm{name}(h), [Y] \mapsto \mathrm{name}(t)]`.

    A reverse relation ``rev_<r>`` is rendered with :math:`r`'s template and head and tail
    swapped, so it states the original fact. Items are named by ``item_names`` (e.g. their ID
    text, as KP4SR writes them; default their titles), entities by :class:`EntityNames`
    (``entity_names`` overrides, else ``"<type word> <mid>"``). Templates as in
    :func:`resolve_templates`.
    """
    rel_names: dict[str, str] = dict(getattr(data, "relation_names", {}) or {})
    base = {k[4:] if k.startswith("rev_") else k for k in graph.relation_names}
    rel_names = {k: rel_names.get(k, k) for k in base}
    tmpl, _ = resolve_templates(rel_names, templates, missing_template)
    names = EntityNames(data, entity_names, item_names)
    n_items = graph.node_counts.get("item", 0)
    e0 = graph.node_offsets.get("entity", n_items)

    def name(node: int, relation: str, side: str) -> str:
        return names.item(node) if node < n_items else names.entity(node - e0, relation, side)

    out = []
    for h, r, t in zip(graph.head.tolist(), graph.relation.tolist(), graph.tail.tolist()):
        key = graph.relation_names[r]
        if key.startswith("rev_"):
            key, h, t = key[4:], t, h
        if key not in tmpl:
            out.append("")
            continue
        orig = rel_names[key]
        out.append(render_template(tmpl[key], name(h, orig, "head"), name(t, orig, "tail")))
    return out
