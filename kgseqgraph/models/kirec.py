r"""KIRec: SASRec whose item embeddings fuse ID embeddings with fixed, LLM-derived knowledge.

Every item :math:`i` carries fixed feature vectors from the graph — the sentence embedding of
its LLM-extracted attributes ``data['item'].x_attr`` and optionally the embedding of its text
``data['item'].x_text`` (:mod:`kgseqgraph.features`). They are concatenated,
:math:`\mathbf{x}_i = \mathbf{x}^{\text{attr}}_i \Vert \mathbf{x}^{\text{text}}_i \in
\mathbb{R}^{F}`, reduced to the encoder width :math:`D` (fixed PCA, or a learned projection),

.. math::
    \mathbf{e}_i = \begin{cases}
        c\,\mathrm{PCA}_D(\mathbf{X})_i & \text{``reduction="pca"`` (a buffer, not trained)} \\
        c\,\mathbf{x}_i \mathbf{W}_r + \mathbf{b}_r & \text{``reduction="linear"``}
    \end{cases}

(:math:`c` rescales the fixed features to a global standard deviation of ``feature_scale``,
by default the ``init_std`` of the ID embeddings)

and fused with the ID embedding :math:`\mathbf{v}_i` by
:func:`~kgseqgraph.nn.embed.fusion.build_fusion` (``sum``: :math:`\mathbf{v}_i +
\mathbf{e}_i\mathbf{W}`, ``gate``: :math:`\sigma((\mathbf{v}_i \Vert \mathbf{e}_i)\mathbf{W} +
\mathbf{b})`, ``concat``: :math:`(\mathbf{v}_i \Vert \mathbf{e}_i)\mathbf{W} + \mathbf{b}`).
The fused table embeds the input sequence of a SASRec encoder and scores the catalogue
(next-item softmax cross-entropy), exactly as :class:`~kgseqgraph.models.sequential.SASRec`.

The reduced features are stored with the weights (``save_pretrained``), so a reloaded model
scores identically; ``from_pretrained`` still needs ``data=`` with features of the same shape.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..nn.embed.knowledge_fused import KnowledgeFusedEmbedder
from .base import catalogue_size, register_model
from .sequential import SequentialConfig, SequentialModel

__all__ = ["KIRecConfig", "KnowledgeFusedEmbedder", "KIRec"]  # the embedder: nn.embed


@dataclass
class KIRecConfig(SequentialConfig):
    """Configuration of :class:`KIRec` (adds to :class:`SequentialConfig`).

    Args:
        features: names of fixed item feature tensors of ``data['item']`` to use, concatenated
            (default ``["x_attr"]``; add ``"x_text"`` for the text embedding too).
        feature_dim: :math:`F`, filled from ``data`` at construction (checked on reload).
        reduction: ``"pca"`` (fixed, :func:`~kgseqgraph.features.reduction.pca_reduce`) or
            ``"linear"`` (learned :class:`~kgseqgraph.features.reduction.LinearProjection`).
        fusion: ``"sum"``, ``"gate"`` or ``"concat"``.
        feature_dropout: dropout on the reduced features while training.
        feature_scale: global standard deviation the fixed features are rescaled to (``None``:
            ``init_std``, the scale of the ID embeddings, so neither source dominates the fused
            table and the initial logits stay small).
        seed: seeds the randomised PCA for very large feature matrices.
    """

    encoder: str = "sasrec"
    objective: str = "next"
    features: list[str] = field(default_factory=lambda: ["x_attr"])
    feature_dim: int | None = None
    reduction: str = "pca"
    fusion: str = "sum"
    feature_dropout: float = 0.0
    feature_scale: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.features = [str(f) for f in self.features]
        if not self.features:
            raise ValueError("features must name at least one tensor of data['item']")
        if self.reduction not in {"pca", "linear"}:
            raise ValueError(f"reduction must be 'pca' or 'linear', got {self.reduction!r}")
        if self.fusion not in {"sum", "gate", "concat"}:
            raise ValueError(f"fusion must be 'sum', 'gate' or 'concat', got {self.fusion!r}")
        if self.feature_scale is not None and not self.feature_scale > 0:
            raise ValueError(f"feature_scale must be > 0, got {self.feature_scale}")
        if not 0.0 <= self.feature_dropout < 1.0:
            raise ValueError(f"feature_dropout must lie in [0, 1), got {self.feature_dropout}")


def item_features(data: Any, names: list[str], num_items: int) -> Tensor:
    """Concatenate the float tensors ``data['item'].<name>`` (each ``[N, F_k]``) along features."""
    if data is None:
        raise ValueError("KIRec needs the graph: pass data=<HeteroData> with "
                         f"data['item'].{names[0]} (see kgseqgraph.features)")
    store = data["item"]
    parts = []
    for name in names:
        x = getattr(store, name, None)
        if not isinstance(x, Tensor):
            raise ValueError(f"data['item'].{name} is missing; attach it first "
                             "(kgseqgraph.features.attach_attributes / attach_text_embeddings)")
        if x.dim() != 2 or x.size(0) != num_items:
            raise ValueError(f"data['item'].{name} must be [num_items={num_items}, F], got "
                             f"{tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError(f"data['item'].{name} holds NaN or inf")
        parts.append(x.float())
    return torch.cat(parts, dim=1)


@register_model("kirec")
class KIRec(SequentialModel):
    """KIRec-SASRec: SASRec over ID embeddings fused with fixed LLM-attribute (and text) features.

    Example:
        >>> from kgseqgraph.features import attach_attributes
        >>> attach_attributes(data, cache_dir="cache")  # doctest: +SKIP
        >>> model = KIRec.from_dataset(data, hidden_size=64, fusion="sum")  # doctest: +SKIP
    """

    config_class = KIRecConfig
    needs_graph = True
    preset_defaults = {"encoder": "sasrec", "objective": "next"}

    def __init__(self, config: KIRecConfig, data: Any = None) -> None:
        if config.objective != "next":
            raise ValueError("KIRec trains with the next-item objective (objective='next')")
        # the model's own copy: feature_dim is filled from the data, the caller's config stays
        super().__init__(dataclasses.replace(config), data)

    def build_item_embedder(self, config: KIRecConfig, data: Any) -> nn.Module:
        x = item_features(data, config.features, config.num_items)
        if config.feature_dim is None:
            config.feature_dim = int(x.size(1))
        elif int(config.feature_dim) != x.size(1):
            raise ValueError(f"the model was built with {config.feature_dim} feature columns "
                             f"({config.features}) but data has {x.size(1)}")
        return KnowledgeFusedEmbedder(x, config.hidden_size, config.reduction, config.fusion,
                                      config.init_std, config.feature_dropout,
                                      config.feature_scale, config.seed)

    def extend_item_embedder(self, data: Any, count: int,
                             generator: torch.Generator | None, **options: Any) -> None:
        """The new items' features (``data['item'].<features>`` rows ``N …``), reduced as the
        trained items' were; their ID rows are zero, so the text/attributes alone score them."""
        if not hasattr(data, "node_types"):
            raise ValueError("KIRec scores new items from their features: pass the graph with "
                             "the new items (and their features) appended")
        if options:
            raise TypeError(f"unexpected add_items options {sorted(options)} for KIRec")
        x = item_features(data, self.config.features, self.num_items + count)
        self.item_embedder.add_items(x[self.num_items:])

    @classmethod
    def from_dataset(cls, data: Any, **kwargs: Any) -> KIRec:
        """Build for ``data`` (catalogue size and features taken from it)."""
        return cls(KIRecConfig(num_items=catalogue_size(data), **kwargs), data=data)
