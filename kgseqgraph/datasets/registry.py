"""Datasets by name, for the command line and the examples.

``root`` may be a dataset folder in the loaders' layout (``root/raw`` + ``root/processed``) or a
folder that holds the raw files themselves (as ``$KGSEQGRAPH_DATA/ml-100k`` does). In the second
case the folder is treated as read-only: the raw files are linked into a cache folder
(``$KGSEQGRAPH_CACHE`` or ``~/.cache/kgseqgraph``) whose ``processed/`` holds the cache.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch_geometric.data import HeteroData

__all__ = ["DATASETS", "load_dataset", "dataset_names"]


def _s3rec(name: str) -> Callable[..., Any]:
    def make(root: Path, **kw: Any):
        from .s3rec import S3Rec
        return S3Rec(root, name, **kw)
    return make


def _kgat(name: str) -> Callable[..., Any]:
    def make(root: Path, **kw: Any):
        from .kgat import KGATDataset
        return KGATDataset(root, name, **kw)
    return make


def _ml100k(root: Path, **kw: Any):
    from .movielens import MovieLens100K
    return MovieLens100K(root, **kw)


#: name → (factory(root, **kwargs), default sub-folder of $KGSEQGRAPH_DATA)
DATASETS: dict[str, tuple[Callable[..., Any], str]] = {
    "ml-100k": (_ml100k, "ml-100k"),
    "yelp": (_s3rec("Yelp"), "s3rec"),
    "beauty": (_s3rec("Beauty"), "s3rec"),
    "sports": (_s3rec("Sports_and_Outdoors"), "s3rec"),
    "toys": (_s3rec("Toys_and_Games"), "s3rec"),
    "kgat-amazon-book": (_kgat("amazon-book"), "kgat/amazon-book"),
    "kgat-last-fm": (_kgat("last-fm"), "kgat/last-fm"),
    "kgat-yelp2018": (_kgat("yelp2018"), "kgat/yelp2018"),
}


def dataset_names() -> list[str]:
    return ["synthetic", *DATASETS]


def _cache_home() -> Path:
    return Path(os.environ.get("KGSEQGRAPH_CACHE", Path.home() / ".cache" / "kgseqgraph"))


def _as_loader_root(name: str, root: Path, raw_names: list[str]) -> Path:
    """A root in the loaders' layout for ``root``, linking raw files found directly in ``root``."""
    if (root / "raw").is_dir() or not any((root / f).exists() for f in raw_names):
        return root
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    cache = _cache_home() / f"{name}-{key}"
    raw = cache / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for f in raw_names:
        src, dst = root / f, raw / f
        if src.exists() and not dst.exists():
            try:
                dst.symlink_to(src.resolve())
            except OSError:  # file systems without symlinks
                import shutil
                shutil.copy2(src, dst)
    return cache


def load_dataset(name: str, root: str | os.PathLike | None = None, **kwargs: Any) -> HeteroData:
    """Load a dataset by name and return its graph.

    Args:
        name: ``synthetic`` or one of :data:`DATASETS` (``ml-100k``, ``yelp``, ``beauty``, …).
        root: dataset folder (see the module docstring). Default:
            ``$KGSEQGRAPH_DATA/<sub-folder>`` when the variable is set, else
            ``~/.cache/kgseqgraph/<name>`` (files are downloaded there).
        **kwargs: passed to the loader (for ``synthetic``: its sizes and ``seed``).
    """
    if name == "synthetic":
        from .synthetic import Synthetic
        return Synthetic(**kwargs)[0]
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {dataset_names()}")
    factory, sub = DATASETS[name]
    if root is None:
        env = os.environ.get("KGSEQGRAPH_DATA")
        root = Path(env) / sub if env else _cache_home() / name
    root = Path(root).expanduser()
    raw_names = _raw_names(name)
    return factory(_as_loader_root(name, root, raw_names), **kwargs)[0]


def _raw_names(name: str) -> list[str]:
    if name == "ml-100k":
        return [f"ml-100k.{ext}" for ext in ("inter", "item", "user", "kg", "link")]
    if name.startswith("kgat-"):
        return ["train.txt", "test.txt", "kg_final.txt", "user_list.txt", "item_list.txt",
                "entity_list.txt", "relation_list.txt"]
    s3 = {"yelp": "Yelp", "beauty": "Beauty", "sports": "Sports_and_Outdoors",
          "toys": "Toys_and_Games"}[name]
    return [f"{s3}.txt", f"{s3}_item2attributes.json"]
