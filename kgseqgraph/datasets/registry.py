"""Datasets by name, for the command line, the examples and your own scripts::

    from kgseqgraph.datasets import load_dataset
    data = load_dataset("ml-100k", "~/data/ml-100k")

``root`` may be a dataset folder in the loaders' layout (``root/raw`` + ``root/processed``) or a
folder that holds the raw files themselves (as ``$KGSEQGRAPH_DATA/ml-100k`` does); the second is
only read, its processed cache lives under ``$KGSEQGRAPH_CACHE`` (default
``~/.cache/kgseqgraph``). See :class:`~kgseqgraph.datasets.KGDataset`.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch_geometric.data import HeteroData

from .base import cache_home

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
    "lastfm": (_s3rec("LastFM"), "s3rec"),
    "kgat-amazon-book": (_kgat("amazon-book"), "kgat/amazon-book"),
    "kgat-last-fm": (_kgat("last-fm"), "kgat/last-fm"),
    "kgat-yelp2018": (_kgat("yelp2018"), "kgat/yelp2018"),
}


def dataset_names() -> list[str]:
    """``synthetic`` and the names of :data:`DATASETS`."""
    return ["synthetic", *DATASETS]


def default_root(name: str) -> Path:
    """Where :func:`load_dataset` looks without a ``root``: ``$KGSEQGRAPH_DATA/<sub-folder>``
    when the variable is set, else ``$KGSEQGRAPH_CACHE/<name>`` (files are downloaded there)."""
    env = os.environ.get("KGSEQGRAPH_DATA")
    return Path(env) / DATASETS[name][1] if env else cache_home() / name


def load_dataset(name: str, root: str | os.PathLike | None = None, **kwargs: Any) -> HeteroData:
    """Load a dataset by name and return its graph.

    Args:
        name: ``synthetic`` or one of :data:`DATASETS` (``ml-100k``, ``yelp``, ``beauty``, …).
        root: dataset folder (see the module docstring). Default: :func:`default_root`.
        **kwargs: passed to the loader (for ``synthetic``: its sizes and ``seed``; for the file
            loaders e.g. ``kg=False``, ``verify=False``).

    Returns:
        The graph; ``data.dataset_info`` records ``name``, ``root``, the loader options and the
        raw files' sha256 (what ``results.json`` and a saved model keep).
    """
    if name == "synthetic":
        from .synthetic import Synthetic
        return Synthetic(**kwargs)[0]
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {dataset_names()}")
    factory = DATASETS[name][0]
    root = default_root(name) if root is None else Path(root).expanduser()
    data = factory(root, **kwargs)[0]
    data.dataset_info = {**(getattr(data, "dataset_info", None) or {}), "name": name}
    return data
