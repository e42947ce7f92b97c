"""Recommenders as thin compositions of layers; all share :class:`SequentialRecommender`."""
from .base import MODEL_REGISTRY, SequentialRecommender, register_model
from .factory import build_model
from .katrec import KATRec, KATRecConfig
from .popularity import Popularity, PopularityConfig
from .sequential import BERT4Rec, GRU4Rec, IDEmbedder, SASRec, SequentialConfig, SequentialModel

__all__ = [
    "MODEL_REGISTRY",
    "SequentialRecommender",
    "register_model",
    "build_model",
    "KATRec",
    "KATRecConfig",
    "Popularity",
    "PopularityConfig",
    "SequentialConfig",
    "SequentialModel",
    "SASRec",
    "BERT4Rec",
    "GRU4Rec",
    "IDEmbedder",
]
