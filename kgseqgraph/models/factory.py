"""Build a registered model by name for a dataset (command line, examples, benchmarks)."""
from __future__ import annotations

import dataclasses
from typing import Any

from torch_geometric.data import HeteroData

from .base import MODEL_REGISTRY, SequentialRecommender

__all__ = ["build_model"]


def build_model(name: str, data: HeteroData, **options: Any) -> SequentialRecommender:
    """``MODEL_REGISTRY[name]`` with its config filled from ``options`` and the catalogue size of
    ``data`` (graph models also receive ``data``). Unknown options raise a ``ValueError`` that lists
    the valid ones."""
    if name not in MODEL_REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODEL_REGISTRY)}")
    cls = MODEL_REGISTRY[name]
    valid = {f.name for f in dataclasses.fields(cls.config_class)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {unknown}; valid: {sorted(valid)}")
    options = {**getattr(cls, "preset_defaults", {}), **options}
    config = cls.config_class(num_items=int(data["item"].num_nodes), **options)
    return cls(config, data=data) if cls.needs_graph else cls(config)
