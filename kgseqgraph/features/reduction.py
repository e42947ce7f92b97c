"""The reduction of item features to the encoder width lives with the layers
(:mod:`kgseqgraph.nn.embed.reduction`); re-exported here, next to the features it reduces."""
from ..nn.embed.reduction import LinearProjection, pca_reduce

__all__ = ["pca_reduce", "LinearProjection"]
