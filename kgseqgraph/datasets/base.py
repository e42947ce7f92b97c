r"""The dataset base class: raw files under ``root/raw``, one processed graph under
``root/processed``, rebuilt whenever the raw files or the processing change.

PyG's :class:`~torch_geometric.data.InMemoryDataset` is not used: it collates a list of graphs
and loses graph-level attributes of a :class:`~torch_geometric.data.HeteroData` (``relation_names``,
``build_report``). A dataset here holds exactly one graph.

Cache rule. Next to the processed file ``<name>.pt`` a ``<name>.meta.json`` records the class,
its :attr:`~KGDataset.processing_version`, the loader parameters and, for every raw file used, its
size, ``mtime_ns`` and sha256. The processed file is reused only if all of these still match; a
raw file whose mtime changed but whose size and sha256 did not (``touch``, a fresh copy) keeps the
cache. Both files are written atomically (temporary file + :func:`os.replace`) and share a random
key, so a half-finished rewrite is detected and rebuilt rather than trusted.

This module also holds the small line readers the loaders share: they keep 1-based line numbers
so every format error names the file and the line (:class:`~kgseqgraph.data.DataFormatError`).
"""
from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from torch_geometric.data import HeteroData

from ..data.errors import DataFormatError
from ..io import atomic_open
from .download import DownloadError, download_url, extract_zip_member, sha256sum

__all__ = ["KGDataset", "RawFile", "MissingRawFilesError"]

log = logging.getLogger("kgseqgraph")

_META_FORMAT = 1


@dataclass(frozen=True)
class RawFile:
    """One raw file a dataset reads.

    Args:
        name: file name under ``root/raw``.
        url: public address it is downloaded from (``None``: must be placed by hand).
        sha256: expected hex digest (``None``: unknown, not checked).
        source: where the file comes from, for error messages and cards
            (``"owner/repo@commit: path"``).
        optional: the loader works without it (e.g. user features).
        archive_member: ``url`` is a zip archive; this member is extracted as ``name``.
    """

    name: str
    url: str | None = None
    sha256: str | None = None
    source: str = ""
    optional: bool = False
    archive_member: str | None = None


class MissingRawFilesError(FileNotFoundError):
    """Required raw files are neither under ``root/raw`` nor downloadable."""


def _plain(obj: Any) -> Any:
    """Turn numpy scalars/arrays inside containers into Python objects so ``torch.load`` with
    ``weights_only=True`` can read them back."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        out = [_plain(v) for v in obj]
        return out if isinstance(obj, list) else tuple(out)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def _atomic_write_bytes(path: Path, write) -> None:
    with atomic_open(path) as f:
        write(f)


class KGDataset:
    r"""Base class of the dataset loaders: one :class:`~torch_geometric.data.HeteroData` built by
    :func:`~kgseqgraph.data.build_collaborative_kg` from files in ``root/raw``.

    Subclasses define :attr:`raw_files` (or :attr:`raw_file_names`), :meth:`process` (returns the
    graph) and, when loader options change the result, :meth:`params`. Bump
    :attr:`processing_version` whenever :meth:`process` changes its output.

    Args:
        root: dataset folder; raw files live in ``root/raw``, the cache in ``root/processed``.
        force_reload: rebuild the processed file even if it is current.
        download: fetch missing raw files from their public source (``False``: fail at once with
            the list of files to place in ``root/raw``).
        timeout: seconds to wait on each connection/read when downloading.
        progress: tqdm bars for downloads (default: only on a terminal, never under CI).

    Attributes:
        data: the graph (also ``dataset[0]``; ``len(dataset) == 1``).
        from_cache: whether :attr:`data` was read from the processed file (``False``: it was
            just processed).
    """

    processing_version: ClassVar[int] = 1
    #: dataset card under the repository's ``datasets/`` folder, named in error messages.
    card: ClassVar[str] = "datasets/README.md"

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        force_reload: bool = False,
        download: bool = True,
        timeout: float = 30.0,
        progress: bool | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        self.force_reload = force_reload
        self.download_enabled = download
        self.timeout = float(timeout)
        self.progress = progress
        self._download_errors: dict[str, str] = {}
        self.from_cache = False
        self._data = self._load()

    # ------------------------------------------------------------------ to override
    @property
    def raw_files(self) -> list[RawFile]:
        """The raw files, with their source and checksum."""
        if type(self).raw_file_names is KGDataset.raw_file_names:
            raise NotImplementedError(f"{type(self).__name__} must define raw_files or "
                                      f"raw_file_names")
        return [RawFile(n) for n in self.raw_file_names]

    @property
    def raw_file_names(self) -> list[str]:
        """Names of the raw files under ``root/raw`` (defaults to :attr:`raw_files`)."""
        return [f.name for f in self.raw_files]

    @property
    def processed_file_names(self) -> list[str]:
        """The processed file (first entry) under ``root/processed``."""
        return ["data.pt"]

    def params(self) -> dict[str, Any]:
        """Loader options that change :meth:`process`'s output (recorded in the cache key)."""
        return {}

    def process(self) -> HeteroData:  # pragma: no cover - abstract
        """Read the files in :attr:`raw_dir` and return the graph."""
        raise NotImplementedError

    def download(self) -> None:
        """Download every missing raw file that has a URL into :attr:`raw_dir`, checking sha256.

        Failures are collected (not raised) so the caller can name every file still missing.
        """
        self.raw_dir.mkdir(parents=True, exist_ok=True)
        for f in self.raw_files:
            dst = self.raw_dir / f.name
            if dst.exists() or f.url is None:
                continue
            try:
                if f.archive_member is None:
                    download_url(f.url, dst, sha256=f.sha256, timeout=self.timeout,
                                 progress=self.progress)
                else:
                    archive = self.raw_dir / Path(f.url).name
                    download_url(f.url, archive, timeout=self.timeout, progress=self.progress)
                    extract_zip_member(archive, f.archive_member, dst)
                    archive.unlink()
                    if f.sha256 is not None and sha256sum(dst) != f.sha256:
                        dst.unlink()
                        raise DownloadError(f"{f.name} extracted from {f.url} has the wrong sha256")
            except DownloadError as exc:
                self._download_errors[f.name] = str(exc)
                log.warning("%s", exc)

    # ------------------------------------------------------------------ paths
    @property
    def raw_dir(self) -> Path:
        return self.root / "raw"

    @property
    def processed_dir(self) -> Path:
        return self.root / "processed"

    @property
    def raw_paths(self) -> list[Path]:
        return [self.raw_dir / n for n in self.raw_file_names]

    @property
    def processed_paths(self) -> list[Path]:
        return [self.processed_dir / n for n in self.processed_file_names]

    @property
    def meta_path(self) -> Path:
        p = self.processed_paths[0]
        return p.with_name(p.stem + ".meta.json")

    def raw_path(self, name: str) -> Path:
        """Path of raw file ``name``."""
        return self.raw_dir / name

    # ------------------------------------------------------------------ dataset protocol
    @property
    def data(self) -> HeteroData:
        return self._data

    def __len__(self) -> int:
        return 1

    def __getitem__(self, idx: int) -> HeteroData:
        if idx not in (0, -1):
            raise IndexError(f"{type(self).__name__} holds one graph; index {idx} is out of range")
        return self._data

    def __repr__(self) -> str:
        d = self._data
        parts = [f"{t}={d[t].num_nodes}" for t in d.node_types]
        n_inter = d["user", "interacts", "item"].num_edges if ("user", "interacts", "item") in \
            d.edge_types else 0
        return (f"{type(self).__name__}({', '.join(parts)}, interactions={n_inter}, "
                f"relations={len(getattr(d, 'relation_names', {}) or {})})")

    # ------------------------------------------------------------------ raw files
    def _present_raw_files(self) -> list[RawFile]:
        return [f for f in self.raw_files if (self.raw_dir / f.name).exists()]

    def _missing_message(self, missing: Sequence[RawFile]) -> str:
        lines = [f"{type(self).__name__}: {len(missing)} raw file(s) missing from {self.raw_dir}/"
                 + (" and could not be downloaded" if self.download_enabled else
                    " (download=False)") + ":"]
        for f in missing:
            where = f.source or "no public source known"
            alt = f" or the archive {Path(f.url).name}" if f.url and f.archive_member else ""
            item = f"  - {f.name}{alt}  (from {where}"
            if f.url:
                item += f"; {f.url}"
            if f.sha256:
                item += f"; sha256 {f.sha256}"
            item += ")"
            if f.name in self._download_errors:
                item += f"\n      download failed: {self._download_errors[f.name]}"
            lines.append(item)
        lines.append(f"Place these files in {self.raw_dir}/ (see {self.card}) and load again.")
        return "\n".join(lines)

    def _ensure_raw(self) -> None:
        missing = [f for f in self.raw_files if not f.optional and
                   not (self.raw_dir / f.name).exists()]
        if not missing:
            return
        for f in missing:  # an archive placed by hand (e.g. kg_final.txt.zip) is extracted
            archive = self.raw_dir / Path(f.url).name if f.url and f.archive_member else None
            if archive is not None and archive.exists():
                extract_zip_member(archive, f.archive_member, self.raw_dir / f.name)
        missing = [f for f in missing if not (self.raw_dir / f.name).exists()]
        if missing and self.download_enabled:
            self.download()
            missing = [f for f in missing if not (self.raw_dir / f.name).exists()]
        if missing:
            raise MissingRawFilesError(self._missing_message(missing))

    def _fingerprint(self) -> dict[str, dict[str, Any]]:
        out = {}
        for f in self._present_raw_files():
            p = self.raw_dir / f.name
            st = p.stat()
            digest = sha256sum(p)
            if f.sha256 is not None and digest != f.sha256:
                log.warning("%s: sha256 %s differs from the published %s (%s); using it anyway",
                            p, digest, f.sha256, f.source)
            out[f.name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        return out

    # ------------------------------------------------------------------ cache
    def _identity(self) -> dict[str, Any]:
        cls = type(self)
        return {"format": _META_FORMAT, "class": f"{cls.__module__}.{cls.__qualname__}",
                "processing_version": self.processing_version,
                "params": json.loads(json.dumps(self.params(), sort_keys=True, default=str))}

    def _meta_current(self, meta: dict[str, Any]) -> bool:
        ident = self._identity()
        if any(meta.get(k) != v for k, v in ident.items()):
            return False
        recorded = meta.get("raw", {})
        present = {f.name for f in self._present_raw_files()}
        if set(recorded) != present:
            return False
        refreshed = False
        for name, rec in recorded.items():
            st = (self.raw_dir / name).stat()
            if st.st_size != rec.get("size"):
                return False
            if st.st_mtime_ns != rec.get("mtime_ns"):
                if sha256sum(self.raw_dir / name) != rec.get("sha256"):
                    return False
                rec["mtime_ns"] = st.st_mtime_ns  # same content, new mtime: keep the cache
                refreshed = True
        if refreshed:
            self._write_meta(meta)
        return True

    def _write_meta(self, meta: dict[str, Any]) -> None:
        text = json.dumps(meta, indent=1, sort_keys=True).encode()
        _atomic_write_bytes(self.meta_path, lambda f: f.write(text))

    def _load(self) -> HeteroData:
        path = self.processed_paths[0]
        if not self.force_reload and path.exists() and self.meta_path.exists():
            try:
                meta = json.loads(self.meta_path.read_text())
                if self._meta_current(meta):
                    obj = torch.load(path, weights_only=True)
                    if isinstance(obj, dict) and obj.get("key") == meta.get("key"):
                        self.from_cache = True
                        return HeteroData.from_dict(obj["data"])
                    log.info("%s does not match %s; rebuilding", path, self.meta_path)
            except Exception as exc:  # noqa: BLE001 - any unreadable cache is rebuilt
                log.warning("could not read the processed cache %s (%s); rebuilding", path, exc)
        self._ensure_raw()
        fingerprint = self._fingerprint()
        log.info("processing %s from %s", type(self).__name__, self.raw_dir)
        data = self.process()
        return self._save(data, fingerprint)

    def _save(self, data: HeteroData, fingerprint: dict[str, Any]) -> HeteroData:
        key = uuid.uuid4().hex
        plain = _plain(data.to_dict())
        payload = {"key": key, "data": plain}
        path = self.processed_paths[0]
        _atomic_write_bytes(path, lambda f: torch.save(payload, f))
        self._write_meta({**self._identity(), "key": key, "raw": fingerprint})
        # Return what a later cached load will return, so first and later loads are identical.
        return HeteroData.from_dict(plain)


# ---------------------------------------------------------------------- line readers
def read_lines(path: Path, expected: str) -> list[str]:
    """Lines of a UTF-8 text file (``\\n`` or ``\\r\\n``), raising on an empty file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DataFormatError(str(path), f"not UTF-8 text ({exc.reason})", line) from exc
    lines = text.splitlines()
    if not any(ln.strip() for ln in lines):
        raise DataFormatError(str(path), f"file is empty; expected {expected}")
    return lines


def split_rows(
    lines: Sequence[str],
    path: Path,
    *,
    sep: str | None,
    min_fields: int,
    expected: str,
    first_line: int = 1,
    max_fields: int | None = None,
    rsplit_last: bool = False,
) -> tuple[list[list[str]], np.ndarray]:
    """Split non-blank lines into fields, checking the field count.

    Args:
        lines: the lines (``lines[0]`` is line ``first_line`` of the file).
        sep: separator (``None``: runs of whitespace).
        min_fields: fewer fields is a truncated line → :class:`DataFormatError` naming it.
        max_fields: more fields is an error too (``None``: no limit).
        rsplit_last: split only on the last ``sep`` (two fields; the first may contain ``sep``).

    Returns:
        the rows and their 1-based line numbers.
    """
    rows: list[list[str]] = []
    numbers: list[int] = []
    for k, ln in enumerate(lines):
        if not ln.strip():
            continue
        if rsplit_last:
            fields = ln.rsplit(sep, 1)
        else:
            fields = ln.split(sep)
            if sep is not None and fields and fields[-1] == "" and len(fields) > min_fields:
                fields.pop()  # one trailing separator
        if len(fields) < min_fields:
            raise DataFormatError(str(path), f"truncated line: {len(fields)} field(s), expected "
                                             f"{expected}", first_line + k)
        if max_fields is not None and len(fields) > max_fields:
            raise DataFormatError(str(path), f"{len(fields)} fields, expected {expected}",
                                  first_line + k)
        rows.append(fields)
        numbers.append(first_line + k)
    return rows, np.asarray(numbers, dtype=np.int64)


def to_int(tokens: Sequence[str], lines: np.ndarray, path: Path, what: str) -> np.ndarray:
    """Parse ``tokens`` as int64, or raise :class:`DataFormatError` at the first bad line."""
    try:
        return np.array(tokens, dtype=np.int64).reshape(-1)
    except (ValueError, OverflowError):
        pass
    for tok, ln in zip(tokens, lines.tolist()):
        try:
            int(tok)
        except (ValueError, OverflowError):
            raise DataFormatError(str(path), f"{what} must be an integer, got {tok!r}", int(ln)) \
                from None
    raise DataFormatError(str(path), f"{what} must be integers")  # pragma: no cover


def to_float(tokens: Sequence[str], lines: np.ndarray, path: Path, what: str) -> np.ndarray:
    """Parse ``tokens`` as float64, or raise :class:`DataFormatError` naming the line."""
    try:
        out = np.array(tokens, dtype=np.float64).reshape(-1)
        if np.isfinite(out).all():
            return out
    except ValueError:
        pass
    for tok, ln in zip(tokens, lines.tolist()):
        try:
            if not np.isfinite(float(tok)):
                raise ValueError
        except ValueError:
            raise DataFormatError(str(path), f"{what} must be a finite number, got {tok!r}",
                                  int(ln)) from None
    raise DataFormatError(str(path), f"{what} must be numbers")  # pragma: no cover


class Adjacency(NamedTuple):
    """``user item item …`` lines: per line (``line_users``, ``line_numbers``, ``lengths``) and
    per (user, item) pair in file order (``users``, ``items``, ``item_lines``)."""

    line_users: np.ndarray
    line_numbers: np.ndarray
    lengths: np.ndarray
    users: np.ndarray
    items: np.ndarray
    item_lines: np.ndarray


def read_adjacency(path: Path, *, allow_empty_lists: bool, expected: str) -> Adjacency:
    """Read ``user item item ...`` lines (whitespace-separated, no header).

    Args:
        allow_empty_lists: a line holding only a user id is valid (KGAT ``test.txt``); otherwise
            it is a truncated line.
    """
    lines = read_lines(path, expected)
    rows, numbers = split_rows(lines, path, sep=None, min_fields=1 if allow_empty_lists else 2,
                               expected=expected)
    lengths = np.fromiter((len(r) - 1 for r in rows), dtype=np.int64, count=len(rows))
    line_users = to_int([r[0] for r in rows], numbers, path, "user id")
    flat = [tok for r in rows for tok in r[1:]]
    item_lines = np.repeat(numbers, lengths)
    items = to_int(flat, item_lines, path, "item id")
    users = np.repeat(line_users, lengths)
    return Adjacency(line_users, numbers, lengths, users, items, item_lines)


def positions_within(groups_lengths: np.ndarray) -> np.ndarray:
    """``[0, 1, …, n_0-1, 0, 1, …, n_1-1, …]`` for group lengths ``n_k`` (vectorised)."""
    total = int(groups_lengths.sum())
    starts = np.repeat(np.cumsum(groups_lengths) - groups_lengths, groups_lengths)
    return np.arange(total, dtype=np.int64) - starts
