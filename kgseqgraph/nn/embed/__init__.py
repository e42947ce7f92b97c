"""Item embedders: graph-enriched (a stack of KG convolutions), fusion, and friends.

Sibling modules written independently (e.g. ``fusion``) are imported lazily on first attribute
access, so a broken or missing one cannot stop :class:`KGEnricher` from importing.
"""
from __future__ import annotations

import importlib
from typing import Any

from .graph_enriched import KGEnricher

_LAZY = {
    "GateFusion": ".fusion",
    "ConcatFusion": ".fusion",
    "SumFusion": ".fusion",
    "build_fusion": ".fusion",
}

__all__ = ["KGEnricher", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
