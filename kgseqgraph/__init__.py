"""kgseqgraph: knowledge-graph-enhanced sequential recommendation on PyTorch Geometric.

The subpackages, bottom layer first (a module imports its own layer or lower, never higher; a test
enforces it): :mod:`~kgseqgraph.utils`; :mod:`~kgseqgraph.data` and
:mod:`~kgseqgraph.evaluation`; :mod:`~kgseqgraph.datasets`; :mod:`~kgseqgraph.nn`;
:mod:`~kgseqgraph.prompts` and :mod:`~kgseqgraph.features`; :mod:`~kgseqgraph.models`;
:mod:`~kgseqgraph.training`; :mod:`~kgseqgraph.export` and :mod:`~kgseqgraph.cli`.

``import kgseqgraph`` exposes every subpackage as an attribute (``kgseqgraph.nn.KGEnricher``),
each imported on first access. That is the one lazy import of the package, for a measured
reason: a serving process loads an exported scorer with :mod:`kgseqgraph.export` alone, without
PyTorch Geometric installed (``tests/test_export.py``), so the package itself must not import it.
"""
from __future__ import annotations

import importlib
import logging
from typing import Any

from .utils.provenance import __version__

logging.getLogger("kgseqgraph").addHandler(logging.NullHandler())

SUBPACKAGES = ("utils", "data", "evaluation", "datasets", "nn", "prompts", "features", "models",
               "training", "export", "cli")

__all__ = ["__version__", *SUBPACKAGES]


def __getattr__(name: str) -> Any:
    if name in SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(SUBPACKAGES))
