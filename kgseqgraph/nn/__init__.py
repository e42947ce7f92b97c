"""Neural building blocks: KG embeddings and BPR-MF, KG convolutions, segment ops, sequence
encoders, item embedders, prediction heads, and the layers of the text recommenders (prefix
keys/values, tree attention masks, constrained beam search) — the layers models are composed of."""
from __future__ import annotations

from . import conv, embed, encoders, ops
from .conv import KGAttentionConv
from .embed import (GatedKGItemEmbedder, IDEmbedder, ItemTables, KGEnricher, KGItemEmbedder,
                    KnowledgeFusedEmbedder)
from .encoders import (BERT4RecEncoder, GRU4RecEncoder, SASRecEncoder, SequenceEncoder,
                       build_encoder)
from .decoding import PrefixTrie, beam_search, map_to_items, max_pooled_embeddings, ranked_list_scores
from .heads import CosineHead, PredictionHead
from .kge import KGEModel, TransE, TransR, TripleIndex, kg_triples, sample_negative_tails
from .losses import catalogue_cross_entropy
from .masks import additive_attention_mask, cross_attention_mask, tree_attention_mask
from .mf import BPRMF
from .prefix import NeighborEmbedding, PrefixKeyValues, ReasoningPromptAttention
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
    "CosineHead",
    "PrefixKeyValues",
    "ReasoningPromptAttention",
    "NeighborEmbedding",
    "tree_attention_mask",
    "cross_attention_mask",
    "additive_attention_mask",
    "PrefixTrie",
    "beam_search",
    "ranked_list_scores",
    "max_pooled_embeddings",
    "map_to_items",
]
