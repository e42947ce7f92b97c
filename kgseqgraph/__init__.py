"""kgseqgraph: knowledge-graph-enhanced sequential recommendation on PyTorch Geometric."""
from __future__ import annotations

import logging

__version__ = "0.1.0"

logging.getLogger("kgseqgraph").addHandler(logging.NullHandler())

__all__ = ["__version__"]
