"""Knowledge-graph convolutions (``torch_geometric`` ``MessagePassing`` layers)."""
from .kg_attention import AGGREGATORS, CONV_BACKENDS, EdgePlan, KGAttentionConv

__all__ = ["KGAttentionConv", "EdgePlan", "AGGREGATORS", "CONV_BACKENDS"]
