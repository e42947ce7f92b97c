"""Knowledge-graph convolutions (``torch_geometric`` ``MessagePassing`` layers)."""
from .kg_attention import AGGREGATORS, CONV_BACKENDS, KGAttentionConv

__all__ = ["KGAttentionConv", "AGGREGATORS", "CONV_BACKENDS"]
