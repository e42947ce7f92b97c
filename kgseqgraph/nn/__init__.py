"""Neural building blocks: KG embeddings and BPR-MF, KG convolutions, segment ops, sequence
encoders, item embedders and prediction heads — the layers models are composed of."""
from __future__ import annotations

from . import conv, embed, encoders, ops
from .conv import KGAttentionConv
from .embed import (GatedKGItemEmbedder, IDEmbedder, ItemTables, KGEnricher, KGItemEmbedder,
                    KnowledgeFusedEmbedder)
from .encoders import (BERT4RecEncoder, GRU4RecEncoder, SASRecEncoder, SequenceEncoder,
                       build_encoder)
from .heads import PredictionHead
from .kge import KGEModel, TransE, TransR, TripleIndex, kg_triples, sample_negative_tails
from .losses import catalogue_cross_entropy
from .mf import BPRMF
from .ops import segment_softmax, segment_softmax_aggregate, segment_weighted_sum

__all__ = [
    "conv",
    "embed",
    "encoders",
    "ops",
    "KGEModel",
    "TransE",
    "TransR",
    "TripleIndex",
    "kg_triples",
    "sample_negative_tails",
    "BPRMF",
    "KGAttentionConv",
    "KGEnricher",
    "IDEmbedder",
    "KGItemEmbedder",
    "GatedKGItemEmbedder",
    "KnowledgeFusedEmbedder",
    "ItemTables",
    "PredictionHead",
    "segment_softmax",
    "segment_softmax_aggregate",
    "segment_weighted_sum",
    "SequenceEncoder",
    "SASRecEncoder",
    "BERT4RecEncoder",
    "GRU4RecEncoder",
    "build_encoder",
    "catalogue_cross_entropy",
]
