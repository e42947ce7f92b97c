"""kgseqgraph: knowledge-graph-enhanced sequential recommendation on PyTorch Geometric.

The subpackages, bottom layer first (a module imports its own layer or lower, never higher; a test
enforces it): :mod:`~kgseqgraph.utils`; :mod:`~kgseqgraph.data` and
:mod:`~kgseqgraph.evaluation`; :mod:`~kgseqgraph.datasets`; :mod:`~kgseqgraph.nn`;
:mod:`~kgseqgraph.prompts` and :mod:`~kgseqgraph.features`; :mod:`~kgseqgraph.models`;
:mod:`~kgseqgraph.training`; :mod:`~kgseqgraph.export` and :mod:`~kgseqgraph.cli`.
"""
from __future__ import annotations

import logging

from . import utils
from . import data
from . import evaluation
from . import datasets
from . import nn
from . import prompts
from . import features
from . import models
from . import training
from .utils.provenance import __version__

logging.getLogger("kgseqgraph").addHandler(logging.NullHandler())

__all__ = ["__version__", "utils", "data", "evaluation", "datasets", "nn", "prompts", "features",
           "models", "training"]
