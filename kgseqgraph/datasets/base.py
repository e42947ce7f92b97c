r"""The dataset base class: raw files in the dataset folder (``root/raw`` or directly in
``root``), one processed graph cached beside them, rebuilt whenever the raw files or the
processing change, and checked against the dataset card.

PyG's :class:`~torch_geometric.data.InMemoryDataset` is not used: it collates a list of graphs
and loses graph-level attributes of a :class:`~torch_geometric.data.HeteroData` (``relation_names``,
``build_report``). A dataset here holds exactly one graph.

Layouts. ``root/raw/<files>`` with the cache in ``root/processed`` (the loaders' own layout,
where downloads land), or the "flat" layout: the raw files directly in ``root`` (as
``$KGSEQGRAPH_DATA/ml-100k`` holds them). A flat folder is only read: its cache lives under
``$KGSEQGRAPH_CACHE`` (default ``~/.cache/kgseqgraph``) in a folder named after the loader and
the folder's path, and a missing file is downloaded there. ``raw/`` wins when it holds any of the
raw files. Nothing is created in ``root`` until there is something to put there, and a failed
download removes the folders it created.

Cache rule. Next to the processed file ``<name>.pt`` a ``<name>.meta.json`` records the class,
its :attr:`~KGDataset.processing_version`, the loader parameters, the counts the loader found in
each raw file and, for every raw file used, its size, ``mtime_ns`` and sha256. The processed file
is reused only if all of these still match; a raw file whose mtime changed but whose size and
sha256 did not (``touch``, a fresh copy) keeps the cache. Both files are written atomically
(temporary file + :func:`os.replace`) and share a random key, so a half-finished rewrite is
detected and rebuilt rather than trusted.

Integrity rule. A raw file whose sha256 differs from the dataset card's is not the published
file. Its counts (rows, users, items… as the loader read them) are then compared with the card's
statistics (:attr:`RawFile.expected`): any difference raises :class:`DataIntegrityError` naming
the file, what was expected and what was found — a truncated or cut file never loads as a
smaller dataset. ``verify=False`` loads such a copy anyway, with a :class:`ModifiedRawFileWarning`
(through :mod:`warnings`) at every load, cached or not; a modified file whose counts match is
loaded with that warning too.

This module also holds the small line readers the loaders share: they keep 1-based line numbers
so every format error names the file and the line (:class:`~kgseqgraph.data.DataFormatError`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from torch_geometric.data import HeteroData

from ..data.errors import DataFormatError, DataWarning
from ..data.graph import INTERACTS, deferred_report_warnings, warn_build_report
from ..utils.io import atomic_open
from .download import DownloadError, download_url, extract_zip_member, sha256sum

__all__ = ["KGDataset", "RawFile", "MissingRawFilesError", "DataIntegrityError",
           "ModifiedRawFileWarning", "cache_home"]

log = logging.getLogger("kgseqgraph")

_META_FORMAT = 2


def cache_home() -> Path:
    """``$KGSEQGRAPH_CACHE``, or ``~/.cache/kgseqgraph``: where the processed caches of
    read-only (flat) dataset folders and of downloads without a ``root`` live."""
    return Path(os.environ.get("KGSEQGRAPH_CACHE") or Path.home() / ".cache" / "kgseqgraph")


@dataclass(frozen=True)
class RawFile:
    """One raw file a dataset reads.

    Args:
        name: file name (under ``root/raw``, or directly in ``root``).
        url: public address it is downloaded from (``None``: must be placed by hand).
        sha256: expected hex digest (``None``: unknown, not checked).
        source: where the file comes from, for error messages and cards
            (``"owner/repo@commit: path"``).
        optional: the loader works without it (e.g. user features).
        archive_member: ``url`` is a zip archive; this member is extracted as ``name``.
        expected: the dataset card's statistics of this file, as the loader counts them
            (``{"rows": 100000, "users": 943}``); checked when the sha256 differs.
    """

    name: str
    url: str | None = None
    sha256: str | None = None
    source: str = ""
    optional: bool = False
    archive_member: str | None = None
    expected: Mapping[str, int] | None = field(default=None, hash=False)


class MissingRawFilesError(FileNotFoundError):
    """Required raw files are neither in the dataset folder nor downloadable."""


class DataIntegrityError(DataFormatError):
    """A raw file is not the published one (sha256) and its counts differ from the dataset
    card's: it is truncated or modified. ``verify=False`` loads it anyway."""


class ModifiedRawFileWarning(DataWarning):
    """A raw file differs from the published one (sha256) and is used anyway: its counts match
    the card's, or ``verify=False`` was given."""


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


def _fmt(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)


class OneGraph:
    """The dataset protocol of a source that yields one graph (as PyG's in-memory datasets):
    ``dataset[0]`` (or ``dataset.data``) is the :class:`~torch_geometric.data.HeteroData`,
    ``len(dataset) == 1``. Subclasses set ``self._data``."""

    _data: HeteroData

    @property
    def data(self) -> HeteroData:
        return self._data

    def __len__(self) -> int:
        return 1

    def __getitem__(self, idx: int) -> HeteroData:
        if idx not in (0, -1):
            raise IndexError(f"{type(self).__name__} holds one graph; index {idx} is out of range")
        return self._data


class KGDataset(OneGraph):
    r"""Base class of the dataset loaders: one :class:`~torch_geometric.data.HeteroData` built by
    :func:`~kgseqgraph.data.build_collaborative_kg` from the raw files of ``root``.

    Subclasses define :attr:`raw_files` (or :attr:`raw_file_names`), :meth:`process` (returns the
    graph, calling :meth:`record_counts` for the files whose card gives statistics) and, when
    loader options change the result, :meth:`params`. Bump :attr:`processing_version` whenever
    :meth:`process` changes its output.

    Args:
        root: dataset folder: the raw files in ``root/raw`` (cache in ``root/processed``) or
            directly in ``root`` (read-only; cache under :func:`cache_home`). See the module
            docstring.
        force_reload: rebuild the processed file even if it is current.
        download: fetch missing raw files from their public source (``False``: fail at once with
            the list of files to place in the folder).
        timeout: seconds to wait on each connection/read when downloading.
        progress: tqdm bars for downloads (default: only on a terminal, never under CI).
        verify: a raw file that differs from the published one (sha256) must still have the
            card's counts, else :class:`DataIntegrityError`. ``False`` loads a modified copy,
            with a :class:`ModifiedRawFileWarning`.

    Attributes:
        data: the graph (also ``dataset[0]``; ``len(dataset) == 1``). ``data.dataset_info``
            says where it came from (:meth:`dataset_info`).
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
        verify: bool = True,
    ) -> None:
        self.root = Path(root).expanduser()
        self.force_reload = force_reload
        self.download_enabled = download
        self.timeout = float(timeout)
        self.progress = progress
        self.verify = bool(verify)
        self._download_errors: dict[str, str] = {}
        self._counts: dict[str, dict[str, int]] = {}
        self._digests: dict[str, str] = {}
        self.from_cache = False
        self.flat = self._detect_flat()
        self._data = self._load()
        self._data.dataset_info = self.dataset_info()

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
        """Names of the raw files (defaults to :attr:`raw_files`)."""
        return [f.name for f in self.raw_files]

    @property
    def processed_file_names(self) -> list[str]:
        """The processed file (first entry) under :attr:`processed_dir`."""
        return ["data.pt"]

    @property
    def dataset_name(self) -> str:
        """Name of the dataset in :func:`~kgseqgraph.datasets.load_dataset` (default: the class
        name)."""
        return type(self).__name__

    def params(self) -> dict[str, Any]:
        """Loader options that change :meth:`process`'s output (recorded in the cache key)."""
        return {}

    def load_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that make :func:`~kgseqgraph.datasets.load_dataset` (with
        :attr:`dataset_name` and :attr:`root`) rebuild this graph (default: :meth:`params`)."""
        return dict(self.params())

    def process(self) -> HeteroData:  # pragma: no cover - abstract
        """Read the raw files (:meth:`raw_path`) and return the graph."""
        raise NotImplementedError

    def record_counts(self, name: str, **counts: int) -> None:
        """Record what :meth:`process` found in raw file ``name`` (``rows=…``, ``users=…``), to be
        compared with the card's :attr:`RawFile.expected` when the file is not the published
        one."""
        self._counts.setdefault(name, {}).update({k: int(v) for k, v in counts.items()})

    def download(self) -> None:
        """Download every missing raw file that has a URL into :attr:`download_dir`, checking
        sha256.

        Failures are collected (not raised) so the caller can name every file still missing;
        the folders this created are removed again when nothing could be downloaded.
        """
        created = self._missing_parents(self.download_dir)
        self.download_dir.mkdir(parents=True, exist_ok=True)
        try:
            for f in self.raw_files:
                if self.raw_path(f.name).exists() or f.url is None:
                    continue
                dst = self.download_dir / f.name
                try:
                    if f.archive_member is None:
                        download_url(f.url, dst, sha256=f.sha256, timeout=self.timeout,
                                     progress=self.progress)
                    else:
                        archive = self.download_dir / Path(f.url).name
                        download_url(f.url, archive, timeout=self.timeout,
                                     progress=self.progress)
                        extract_zip_member(archive, f.archive_member, dst)
                        archive.unlink()
                        if f.sha256 is not None and sha256sum(dst) != f.sha256:
                            dst.unlink()
                            raise DownloadError(f"{f.name} extracted from {f.url} has the wrong "
                                                f"sha256")
                except DownloadError as exc:
                    self._download_errors[f.name] = str(exc)
                    log.warning("%s", exc)
        finally:
            self._remove_empty(created)

    # ------------------------------------------------------------------ paths
    def _detect_flat(self) -> bool:
        """Flat layout: no raw file under ``root/raw`` but some directly in ``root``."""
        names = self.raw_file_names
        if any((self.root / "raw" / n).exists() for n in names):
            return False
        return any((self.root / n).is_file() for n in names)

    @property
    def raw_dir(self) -> Path:
        """Where the raw files are read: ``root/raw``, or ``root`` itself (flat layout)."""
        return self.root if self.flat else self.root / "raw"

    @property
    def cache_dir(self) -> Path:
        """The dataset's folder under :func:`cache_home` (flat layout only)."""
        key = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:12]
        return cache_home() / f"{type(self).__name__}-{key}"

    @property
    def download_dir(self) -> Path:
        """Where missing raw files are downloaded: :attr:`raw_dir`, or ``cache_dir/raw`` for a
        flat (read-only) folder."""
        return self.cache_dir / "raw" if self.flat else self.raw_dir

    @property
    def processed_dir(self) -> Path:
        return self.cache_dir / "processed" if self.flat else self.root / "processed"

    @property
    def raw_paths(self) -> list[Path]:
        return [self.raw_path(n) for n in self.raw_file_names]

    @property
    def processed_paths(self) -> list[Path]:
        return [self.processed_dir / n for n in self.processed_file_names]

    @property
    def meta_path(self) -> Path:
        p = self.processed_paths[0]
        return p.with_name(p.stem + ".meta.json")

    def raw_path(self, name: str) -> Path:
        """Path of raw file ``name`` (in :attr:`raw_dir`, or downloaded to :attr:`download_dir`)."""
        p = self.raw_dir / name
        if self.flat and not p.exists() and (self.download_dir / name).exists():
            return self.download_dir / name
        return p

    @staticmethod
    def _missing_parents(folder: Path) -> list[Path]:
        """``folder`` and its ancestors that do not exist yet, deepest first."""
        out = []
        p = folder
        while not p.exists() and p != p.parent:
            out.append(p)
            p = p.parent
        return out

    @staticmethod
    def _remove_empty(folders: list[Path]) -> None:
        for p in folders:  # deepest first
            try:
                p.rmdir()
            except OSError:  # not empty (or gone): keep it and its parents
                return

    # ------------------------------------------------------------------ dataset protocol
    def __repr__(self) -> str:
        d = self._data
        parts = [f"{t}={d[t].num_nodes}" for t in d.node_types]
        n_inter = d[INTERACTS].num_edges if INTERACTS in d.edge_types else 0
        return (f"{type(self).__name__}({', '.join(parts)}, interactions={n_inter}, "
                f"relations={len(getattr(d, 'relation_names', {}) or {})})")

    def dataset_info(self) -> dict[str, Any]:
        """Where the graph came from (also ``data.dataset_info``; recorded by the trainer in
        ``results.json`` and beside a saved model): ``name``, ``root`` (absolute), ``loader``,
        ``load_kwargs``, ``card``, ``layout``, ``verified`` and the sha256 of every raw file
        used (``raw_files``)."""
        return {"name": self.dataset_name, "root": str(self.root.resolve()),
                "loader": f"{type(self).__module__}.{type(self).__qualname__}",
                "load_kwargs": json.loads(json.dumps(self.load_kwargs(), default=str)),
                "card": self.card, "layout": "flat" if self.flat else "raw/",
                "verify": self.verify, "raw_files": dict(sorted(self._digests.items()))}

    # ------------------------------------------------------------------ raw files
    def _present_raw_files(self) -> list[RawFile]:
        return [f for f in self.raw_files if self.raw_path(f.name).exists()]

    def _missing_message(self, missing: Sequence[RawFile]) -> str:
        where = f"{self.raw_dir}/" + (f" (or {self.root}/raw/)" if self.flat else "")
        lines = [f"{type(self).__name__}: {len(missing)} raw file(s) missing from {where}"
                 + (" and could not be downloaded" if self.download_enabled else
                    " (download=False)") + ":"]
        for f in missing:
            src = f.source or "no public source known"
            alt = f" or the archive {Path(f.url).name}" if f.url and f.archive_member else ""
            item = f"  - {f.name}{alt}  (from {src}"
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
                   not self.raw_path(f.name).exists()]
        if not missing:
            return
        for f in missing:  # an archive placed by hand (e.g. kg_final.txt.zip) is extracted
            if not (f.url and f.archive_member):
                continue
            archive = self.raw_dir / Path(f.url).name
            if archive.exists():
                dst = self.download_dir / f.name
                created = self._missing_parents(self.download_dir)
                self.download_dir.mkdir(parents=True, exist_ok=True)
                try:
                    extract_zip_member(archive, f.archive_member, dst)
                finally:
                    if not dst.exists():
                        self._remove_empty(created)
        missing = [f for f in missing if not self.raw_path(f.name).exists()]
        if missing and self.download_enabled:
            self.download()
            missing = [f for f in missing if not self.raw_path(f.name).exists()]
        if missing:
            raise MissingRawFilesError(self._missing_message(missing))

    def _fingerprint(self) -> dict[str, dict[str, Any]]:
        out = {}
        for f in self._present_raw_files():
            p = self.raw_path(f.name)
            st = p.stat()
            out[f.name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                           "sha256": sha256sum(p)}
        return out

    def _check_integrity(self, digests: dict[str, str], counts: dict[str, dict[str, int]]) -> None:
        """Compare every raw file that is not the published one with the card (module doc)."""
        problems: list[tuple[RawFile, Path, str]] = []
        for f in self.raw_files:
            digest = digests.get(f.name)
            if digest is None or f.sha256 is None or digest == f.sha256.lower():
                continue
            path = self.raw_path(f.name)
            found = counts.get(f.name, {})
            expected = dict(f.expected or {})
            differ = [k for k, v in expected.items() if k in found and found[k] != v]
            what = f"not the published file (sha256 {digest[:12]}…, {self.card}: {f.sha256[:12]}…)"
            if differ:
                detail = ", ".join(f"{k} expected {_fmt(expected[k])}, found {_fmt(found[k])}"
                                   for k in differ)
                if self.verify:
                    problems.append((f, path, f"{what}, and its counts differ from the card: "
                                              f"{detail}"))
                    continue
                msg = f"{path}: {what}; loading this modified copy (verify=False): {detail}"
            else:
                checked = ", ".join(f"{k} {_fmt(found[k])}" for k in expected if k in found)
                msg = (f"{path}: {what}; its counts match the card "
                       f"({checked or 'nothing to compare'}), so it is used")
            warnings.warn(msg, ModifiedRawFileWarning, stacklevel=4)
        if problems:
            first_file, first_path, first = problems[0]
            lines = [first] + [f"{p}: {m}" for _, p, m in problems[1:]]
            source = (first_file.url or first_file.source) if len(problems) == 1 else \
                f"the sources listed in {self.card}"
            one = len(problems) == 1
            advice = (f"{'the file looks' if one else 'these files look'} truncated or modified: "
                      f"restore {'it' if one else 'them'} from {source}, or pass verify=False "
                      f"(command line: --no-verify) to load {'this copy' if one else 'them'} "
                      f"anyway")
            # one line for one file (a command line prints it as one line)
            raise DataIntegrityError(str(first_path), "\n".join(lines) + "; " + advice)

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
            path = self.raw_path(name)
            st = path.stat()
            if st.st_size != rec.get("size"):
                return False
            if st.st_mtime_ns != rec.get("mtime_ns"):
                if sha256sum(path) != rec.get("sha256"):
                    return False
                rec["mtime_ns"] = st.st_mtime_ns  # same content, new mtime: keep the cache
                refreshed = True
        if refreshed:
            self._write_meta(meta)
        return True

    def _write_meta(self, meta: dict[str, Any]) -> None:
        text = json.dumps(meta, indent=1, sort_keys=True).encode()
        _atomic_write_bytes(self.meta_path, lambda f: f.write(text))

    def _read_cache(self) -> tuple[HeteroData, dict[str, Any]] | None:
        path = self.processed_paths[0]
        if self.force_reload or not (path.exists() and self.meta_path.exists()):
            return None
        try:
            meta = json.loads(self.meta_path.read_text())
            if self._meta_current(meta):
                obj = torch.load(path, weights_only=True)
                if isinstance(obj, dict) and obj.get("key") == meta.get("key"):
                    return HeteroData.from_dict(obj["data"]), meta
                log.info("%s does not match %s; rebuilding", path, self.meta_path)
        except Exception as exc:  # noqa: BLE001 - any unreadable cache is rebuilt
            log.warning("could not read the processed cache %s (%s); rebuilding", path, exc)
        return None

    def _load(self) -> HeteroData:
        cached = self._read_cache()
        if cached is not None:
            data, meta = cached
            self.from_cache = True
            self._digests = {n: r["sha256"] for n, r in meta.get("raw", {}).items()}
            self._check_integrity(self._digests, meta.get("counts", {}))
        else:
            self._ensure_raw()
            fingerprint = self._fingerprint()
            self._digests = {n: r["sha256"] for n, r in fingerprint.items()}
            log.info("processing %s from %s", type(self).__name__, self.raw_dir)
            self._counts = {}
            with deferred_report_warnings():
                data = self.process()
            self._check_integrity(self._digests, self._counts)
            data = self._save(data, fingerprint)
        warn_build_report(dict(getattr(data, "build_report", {}) or {}),
                          f"{type(self).__name__} ({self.raw_dir})", stacklevel=3)
        return data

    def _save(self, data: HeteroData, fingerprint: dict[str, Any]) -> HeteroData:
        key = uuid.uuid4().hex
        plain = _plain(data.to_dict())
        payload = {"key": key, "data": plain}
        path = self.processed_paths[0]
        _atomic_write_bytes(path, lambda f: torch.save(payload, f))
        self._write_meta({**self._identity(), "key": key, "raw": fingerprint,
                          "counts": self._counts})
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


class NamedKGDataset(KGDataset):
    """A loader of one of several named datasets of a source, with or without its KG: the name and
    ``kg`` decide the processed file and the load options (the S3-Rec and KGAT files)."""

    name: str
    kg: bool

    @property
    def processed_file_names(self) -> list[str]:
        return [f"{self.name}.pt" if self.kg else f"{self.name}_nokg.pt"]

    def params(self) -> dict[str, Any]:
        return {"name": self.name, "kg": self.kg}

    def load_kwargs(self) -> dict[str, Any]:
        return {"kg": self.kg}


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
