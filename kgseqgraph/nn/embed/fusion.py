r"""Fusion of two item representations (ID embeddings :math:`\mathbf{V}` and graph-enriched or
text embeddings :math:`\mathbf{E}`) into the width the sequence encoder reads."""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["GateFusion", "ConcatFusion", "SumFusion", "build_fusion"]


class ConcatFusion(nn.Module):
    r"""Concatenation followed by a linear map (KATRec's "concat instead of gate" ablation):

    .. math::
        \mathbf{f}_i = (\mathbf{v}_i \,\Vert\, \mathbf{e}_i)\,\mathbf{W} + \mathbf{b},
        \qquad \mathbf{W} \in \mathbb{R}^{(d_v + d_e) \times d}.

    Args:
        id_dim: :math:`d_v`.
        other_dim: :math:`d_e`.
        out_dim: :math:`d` (default :math:`d_v`).
    """

    def __init__(self, id_dim: int, other_dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        self.id_dim, self.other_dim = id_dim, other_dim
        self.out_dim = out_dim or id_dim
        self.lin = nn.Linear(id_dim + other_dim, self.out_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.lin.weight)
        nn.init.zeros_(self.lin.bias)

    def forward(self, v: Tensor, e: Tensor) -> Tensor:
        return self.lin(torch.cat([v, e], dim=-1))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id_dim} + {self.other_dim} -> {self.out_dim})"


class GateFusion(ConcatFusion):
    r"""KATRec's fusion layer: a fully connected layer with a sigmoid over the concatenation,

    .. math::
        \mathbf{f}_i = \sigma\big((\mathbf{v}_i \,\Vert\, \mathbf{e}_i)\,\mathbf{W} + \mathbf{b}\big).

    Arguments as :class:`ConcatFusion`.
    """

    def forward(self, v: Tensor, e: Tensor) -> Tensor:
        return torch.sigmoid(super().forward(v, e))


class SumFusion(nn.Module):
    r""":math:`\mathbf{f}_i = \mathbf{v}_i + \mathbf{e}_i \mathbf{W}` (projection of :math:`\mathbf{E}`
    to the ID width, then a sum)."""

    def __init__(self, id_dim: int, other_dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        if out_dim not in (None, id_dim):
            raise ValueError("SumFusion keeps the ID width: out_dim must equal id_dim")
        self.id_dim, self.other_dim, self.out_dim = id_dim, other_dim, id_dim
        self.proj = nn.Linear(other_dim, id_dim, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.proj.weight)

    def forward(self, v: Tensor, e: Tensor) -> Tensor:
        return v + self.proj(e)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id_dim} + {self.other_dim} -> {self.out_dim})"


_FUSIONS = {"gate": GateFusion, "concat": ConcatFusion, "sum": SumFusion}


def build_fusion(kind: str, id_dim: int, other_dim: int, out_dim: int | None = None) -> nn.Module:
    """``"gate"`` (KATRec), ``"concat"`` or ``"sum"``."""
    if kind not in _FUSIONS:
        raise ValueError(f"fusion must be one of {sorted(_FUSIONS)}, got {kind!r}")
    return _FUSIONS[kind](id_dim, other_dim, out_dim)
