"""Recommenders as thin compositions of layers; all share :class:`SequentialRecommender`."""
from .base import MODEL_REGISTRY, PretrainStage, SequentialRecommender, register_model
from .factory import build_model
from .katrec import KATRec, KATRecConfig, KGGRU4Rec, KGSASRec
from .kirec import KIRec, KIRecConfig
from .kp4sr import KP4SR, KP4SRConfig
from .lancer import LANCER, LANCERConfig
from .popularity import Popularity, PopularityConfig
from .scorer import SequenceScorer
from .sequential import (BERT4Rec, GRU4Rec, IDEmbedder, PredictionHead, SASRec, SequentialConfig,
                         SequentialModel)

__all__ = [
    "MODEL_REGISTRY",
    "SequentialRecommender",
    "register_model",
    "build_model",
    "KATRec",
    "KATRecConfig",
    "KGSASRec",
    "KGGRU4Rec",
    "PretrainStage",
    "KIRec",
    "KIRecConfig",
    "KP4SR",
    "KP4SRConfig",
    "LANCER",
    "LANCERConfig",
    "Popularity",
    "PopularityConfig",
    "SequenceScorer",
    "SequentialConfig",
    "SequentialModel",
    "SASRec",
    "BERT4Rec",
    "GRU4Rec",
    "IDEmbedder",
    "PredictionHead",
]
