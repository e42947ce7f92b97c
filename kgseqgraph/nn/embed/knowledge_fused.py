r"""KIRec's item table: ID embeddings fused with fixed item features (LLM attributes, text
embeddings) reduced to the encoder width (see :mod:`kgseqgraph.models.kirec` for the equations)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .fusion import build_fusion
from .id import IDEmbedder
from .reduction import LinearProjection, pca_basis

__all__ = ["KnowledgeFusedEmbedder"]


class KnowledgeFusedEmbedder(nn.Module):
    r"""The ``[N + 2, D]`` item table of KIRec: fused rows for items, zero padding, fused ``[mask]``
    row from the ID embedding alone (:math:`\mathbf{e} = \mathbf{0}` there).

    Args:
        features: fixed item features ``[N, F]``.
        dim: :math:`D`.
        reduction: ``"pca"`` or ``"linear"``.
        fusion: ``"sum"``, ``"gate"`` or ``"concat"``.
        init_std: std of the ID embeddings.
        feature_dropout: dropout on :math:`\mathbf{e}` while training.
        feature_scale: global std the fixed features are rescaled to (PCA output, or the raw
            features before a learned projection); default ``init_std``.
        seed: PCA seed (randomised PCA only).
    """

    def __init__(self, features: Tensor, dim: int, reduction: str = "pca", fusion: str = "sum",
                 init_std: float = 0.02, feature_dropout: float = 0.0,
                 feature_scale: float | None = None, seed: int = 0) -> None:
        super().__init__()
        num_items, feat_dim = features.shape
        self.num_items, self.dim, self.reduction = num_items, dim, reduction
        scale = init_std if feature_scale is None else feature_scale
        self.ids = IDEmbedder(num_items, dim, init_std)
        if reduction == "pca":
            if dim > min(num_items, feat_dim):
                raise ValueError(f"PCA to {dim} dimensions needs at least {dim} items and "
                                 f"features, got {tuple(features.shape)}")
            # the fitted reduction (not saved: rebuilt from the same data), for add_items
            self._reduce = (*pca_basis(features, dim, seed=seed), scale)
            self.register_buffer("features", self._apply_reduction(features))
            self.project = None
        elif reduction == "linear":
            x = features.float()
            self._reduce = (None, None, None, scale / x.std().clamp_min(1e-12))
            self.register_buffer("features", self._apply_reduction(x))
            self.project = LinearProjection(feat_dim, dim)
        else:
            raise ValueError(f"reduction must be 'pca' or 'linear', got {reduction!r}")
        self.fusion = build_fusion(fusion, dim, dim)
        self.dropout = nn.Dropout(feature_dropout)

    def _apply_reduction(self, x: Tensor) -> Tensor:
        """The reduction fitted at construction applied to raw features ``x`` (the same
        operations as :func:`~kgseqgraph.nn.embed.reduction.pca_reduce` times the scale)."""
        mean, components, pca_scale, scale = self._reduce
        if components is None:
            return x * scale
        return ((x.double() - mean) @ components / pca_scale).to(x.dtype) * scale

    @torch.no_grad()
    def add_items(self, features: Tensor) -> None:
        """Append items with raw features ``[M, F]``: reduced with the reduction fitted at
        construction (the same PCA basis and scale, or the same rescaling), and **zero** ID
        rows, so a new item is scored from its features alone."""
        components = self._reduce[1]
        in_dim = components.size(0) if components is not None else self.project.in_dim
        if features.dim() != 2 or features.size(1) != in_dim:
            raise ValueError(f"expected new item features [M, {in_dim}], got "
                             f"{tuple(features.shape)}")
        if not torch.isfinite(features).all():
            raise ValueError("the new items' features hold NaN or inf (attach them first)")
        new = self._apply_reduction(features.to(self.features.dtype).cpu())
        self.features = torch.cat([self.features, new.to(self.features.device)])
        self.ids.add_items(features.size(0), init="zeros")
        self.num_items += features.size(0)

    def reduced(self) -> Tensor:
        """:math:`\\mathbf{E} \\in \\mathbb{R}^{N \\times D}`."""
        e = self.features if self.project is None else self.project(self.features)
        return self.dropout(e)

    def forward(self) -> Tensor:
        v = self.ids()  # [N + 2, D], padding row zero
        e = self.reduced()
        e = torch.cat([e, e.new_zeros(2, self.dim)])
        fused = self.fusion(v, e)
        pad = torch.zeros(1, fused.size(1), device=fused.device, dtype=fused.dtype)
        return torch.cat([fused[: self.num_items], pad, fused[self.num_items + 1:]])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.num_items} + 2, {self.dim}, "
                f"features={self.features.size(1) if self.project is None else self.project.in_dim}"
                f", reduction={self.reduction}, fusion={type(self.fusion).__name__})")
