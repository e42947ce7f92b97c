"""Neural building blocks: KG embeddings, KG convolutions, segment ops, sequence encoders, item
embedders, and the layers of the text recommenders (prefix keys/values, tree attention masks,
constrained beam search).

The KG layers (:class:`TransE`, :class:`TransR`, :class:`KGAttentionConv`, :class:`KGEnricher`)
are imported eagerly. The subpackages ``ops``, ``encoders`` and ``embed``'s other members load on
first attribute access (``kgseqgraph.nn.SASRecEncoder``), so importing ``kgseqgraph.nn`` never
pulls in optional dependencies and a problem in one subpackage does not break the others.
"""
from __future__ import annotations

import importlib
from typing import Any

from .conv import KGAttentionConv
from .embed.graph_enriched import KGEnricher
from .kge import KGEModel, TransE, TransR, TripleIndex, kg_triples, sample_negative_tails

_SUBPACKAGES = ("ops", "encoders", "embed", "conv")
_LAZY = {
    "segment_softmax": ".ops",
    "segment_softmax_aggregate": ".ops",
    "SequenceEncoder": ".encoders",
    "SASRecEncoder": ".encoders",
    "BERT4RecEncoder": ".encoders",
    "GRU4RecEncoder": ".encoders",
    "build_encoder": ".encoders",
    "catalogue_cross_entropy": ".losses",
    "CosineHead": ".heads",
    "PrefixKeyValues": ".prefix",
    "ReasoningPromptAttention": ".prefix",
    "NeighborEmbedding": ".prefix",
    "tree_attention_mask": ".masks",
    "cross_attention_mask": ".masks",
    "additive_attention_mask": ".masks",
    "PrefixTrie": ".decoding",
    "beam_search": ".decoding",
    "ranked_list_scores": ".decoding",
    "max_pooled_embeddings": ".decoding",
    "map_to_items": ".decoding",
}

__all__ = [
    "KGEModel",
    "TransE",
    "TransR",
    "TripleIndex",
    "kg_triples",
    "sample_negative_tails",
    "KGAttentionConv",
    "KGEnricher",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
