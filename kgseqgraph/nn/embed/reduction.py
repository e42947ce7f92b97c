r"""Dimensionality reduction of fixed item features to the encoder width.

Two ways from :math:`\mathbf{X} \in \mathbb{R}^{N \times F}` to :math:`\mathbb{R}^{N \times D}`:

* :func:`pca_reduce` — fixed PCA. With the column means :math:`\boldsymbol\mu` and the SVD
  :math:`\mathbf{X} - \mathbf{1}\boldsymbol\mu^\top = \mathbf{U}\boldsymbol\Sigma\mathbf{V}^\top`,

  .. math::
      \mathbf{Z} = (\mathbf{X} - \mathbf{1}\boldsymbol\mu^\top)\,\mathbf{V}_{:, :D}
      \;/\; s, \qquad s = \operatorname{std}\big((\mathbf{X} - \mathbf{1}\boldsymbol\mu^\top)
      \mathbf{V}_{:, :D}\big)

  (the global scale :math:`s` makes the entries unit-variance; ``whiten=True`` divides each
  component by its own standard deviation instead). Exact SVD for moderate sizes,
  ``torch.pca_lowrank`` with a seeded generator beyond ``exact_limit`` columns × rows.
  The sign of each component is fixed (largest-magnitude loading positive), so the result is
  deterministic.
* :class:`LinearProjection` — a learned map :math:`\mathbf{Z} = \mathbf{X}\mathbf{W} + \mathbf{b}`
  trained with the recommender (features themselves stay fixed).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["pca_reduce", "pca_basis", "LinearProjection"]


def pca_reduce(x: Tensor, dim: int, whiten: bool = False, seed: int = 0,
               exact_limit: int = 50_000_000) -> Tensor:
    """Project ``x [N, F]`` onto its top-``dim`` principal components (see module docstring).

    Args:
        x: features (any float dtype; computed in float64, returned in ``x.dtype``).
        dim: output width :math:`D` (``dim <= min(N, F)``).
        whiten: scale every component to unit variance (else one global scale).
        seed: seeds ``torch.pca_lowrank`` when the matrix is too large for an exact SVD.
        exact_limit: largest ``N * F`` handled with the exact SVD.

    Raises:
        ValueError: ``x`` is not 2-D, or ``dim`` is out of range.
    """
    mean, v, scale = pca_basis(x, dim, whiten, seed, exact_limit)
    return ((x.double() - mean) @ v / scale).to(x.dtype)


def pca_basis(x: Tensor, dim: int, whiten: bool = False, seed: int = 0,
              exact_limit: int = 50_000_000) -> tuple[Tensor, Tensor, Tensor]:
    """``(mean [1, F], components [F, D], scale)`` of :func:`pca_reduce` (float64), so that
    ``(x - mean) @ components / scale`` is its output — and new rows (items added after the
    reduction was fitted) are projected the same way. ``scale`` is a scalar tensor, or ``[D]``
    with ``whiten``."""
    if x.dim() != 2:
        raise ValueError(f"pca_reduce expects a 2-D feature matrix, got shape {tuple(x.shape)}")
    n, f = x.shape
    if not 1 <= dim <= min(n, f):
        raise ValueError(f"dim must lie in [1, min(N, F)] = [1, {min(n, f)}], got {dim}")
    mean = x.double().mean(dim=0, keepdim=True)
    xc = x.double() - mean
    if n * f <= exact_limit:
        _, _, vh = torch.linalg.svd(xc, full_matrices=False)
        v = vh[:dim].t()
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            _, _, v = torch.pca_lowrank(xc, q=min(dim + 10, n, f), center=False, niter=4)
        v = v[:, :dim]
    # deterministic signs: the largest-|loading| entry of every component is positive
    idx = v.abs().argmax(dim=0)
    sign = torch.where(v[idx, torch.arange(dim)] < 0, -1.0, 1.0).to(v.dtype)
    v = v * sign
    z = xc @ v
    scale = (z.std(dim=0) if whiten else z.std()).clamp_min(1e-12)
    return mean, v, scale


class LinearProjection(nn.Module):
    r"""Learned projection of fixed features:
    :math:`\mathbf{Z} = \mathbf{X}\mathbf{W} + \mathbf{b}`,
    :math:`\mathbf{W} \in \mathbb{R}^{F \times D}` (Xavier-uniform init, zero bias).

    Args:
        in_dim: :math:`F`.
        out_dim: :math:`D`.
        bias: learn :math:`\mathbf{b}`.
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True) -> None:
        super().__init__()
        if in_dim <= 0 or out_dim <= 0:
            raise ValueError(f"in_dim and out_dim must be positive, got {in_dim}, {out_dim}")
        self.in_dim, self.out_dim = in_dim, out_dim
        self.lin = nn.Linear(in_dim, out_dim, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.lin.weight)
        if self.lin.bias is not None:
            nn.init.zeros_(self.lin.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.lin(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_dim} -> {self.out_dim})"
