r"""Prediction heads: what turns a sequence encoder's output into scores over the catalogue."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PredictionHead", "CosineHead"]


class PredictionHead(nn.Module):
    r"""BERT4Rec's output layer: :math:`\mathbf{h}' = \mathrm{LN}(\mathrm{GELU}(\mathbf{h}
    \mathbf{W}^P + \mathbf{b}^P))` and a per-item output bias :math:`\mathbf{b}^O`, so the
    logits over the catalogue are :math:`\mathbf{h}'\mathbf{T}^\top + \mathbf{b}^O`.

    :meth:`augment` folds the bias into one matrix product, :math:`[\mathbf{h}', 1]\,
    [\mathbf{T}, \mathbf{b}^O]^\top`, so the blocked full-catalogue loss and the exported
    scorer need nothing else. Initialised as RecBole: :math:`\mathbf{W}^P \sim
    \mathcal{N}(0, \sigma^2)`, biases 0, layer norm identity.
    """

    def __init__(self, dim: int, num_items: int, init_std: float = 0.02,
                 eps: float = 1e-12) -> None:
        super().__init__()
        self.transform = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.output_bias = nn.Parameter(torch.zeros(num_items))
        self.init_std = init_std
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.transform.weight, std=self.init_std)
        nn.init.zeros_(self.transform.bias)
        self.norm.reset_parameters()
        nn.init.zeros_(self.output_bias)

    @torch.no_grad()
    def add_items(self, count: int) -> None:
        """Append ``count`` output biases of 0 — the value every bias starts from, and close to
        the mean of the trained ones (the softmax gradient of a bias sums to zero over the
        catalogue): no popularity information for items never trained on."""
        b = self.output_bias
        self.output_bias = nn.Parameter(torch.cat([b, b.new_zeros(count)]))

    def forward(self, hidden: Tensor) -> Tensor:
        r""":math:`\mathbf{h}'` for encoder outputs ``[..., D]``."""
        return self.norm(F.gelu(self.transform(hidden)))

    @staticmethod
    def augment(hidden: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
        """``([h, 1], [T, b])``: their product is ``h @ T.t() + b``."""
        ones = hidden.new_ones(hidden.shape[:-1] + (1,))
        return torch.cat([hidden, ones], -1), torch.cat([weight, bias.unsqueeze(1)], 1)


class CosineHead(nn.Module):
    r"""Scaled cosine scores between projected user states and projected item representations,
    :math:`s_{b,i} = \cos(\mathbf{W}_u \mathbf{h}_b + \mathbf{b}_u,\ \mathbf{W}_t \mathbf{t}_i +
    \mathbf{b}_t) / \tau` (LANCER's labelled ``scorer="cosine"`` option)."""

    def __init__(self, dim: int, temperature: float = 0.05) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.user, self.item, self.temperature = nn.Linear(dim, dim), nn.Linear(dim, dim), temperature

    def forward(self, users: Tensor, items: Tensor) -> Tensor:
        """``[B, D]`` × ``[N, D]`` → ``[B, N]``."""
        u = F.normalize(self.user(users), dim=-1)
        return u @ F.normalize(self.item(items), dim=-1).t() / self.temperature
