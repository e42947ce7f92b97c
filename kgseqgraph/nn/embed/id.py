r"""Plain ID embeddings: one learned row per item, plus the padding and ``[mask]`` rows every
sequential model's item table ends with."""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["IDEmbedder"]


class IDEmbedder(nn.Module):
    r"""Plain ID embeddings: a table :math:`\mathbf{V} \in \mathbb{R}^{(N+2) \times D}` (items, then
    padding, then ``[mask]``); the padding row is kept at zero."""

    def __init__(self, num_items: int, dim: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.num_items, self.dim, self.init_std = num_items, dim, init_std
        self.weight = nn.Parameter(torch.empty(num_items + 2, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=self.init_std)
        with torch.no_grad():
            self.weight[self.num_items].zero_()

    @torch.no_grad()
    def add_items(self, count: int, init: str = "normal",
                  generator: torch.Generator | None = None) -> None:
        r"""Append ``count`` item rows before the padding and ``[mask]`` rows (which keep their
        values): ``init="normal"`` draws them as at initialisation (:math:`\mathcal{N}(0,
        \mathrm{init\_std}^2)`, from ``generator``): untrained rows that carry no information;
        ``"zeros"``: zero rows, for tables fused with content (the content alone then scores the
        new item)."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        if init not in {"normal", "zeros"}:
            raise ValueError(f"init must be 'normal' or 'zeros', got {init!r}")
        w = self.weight
        new = torch.zeros(count, self.dim, dtype=w.dtype)
        if init == "normal":
            new.normal_(0.0, self.init_std, generator=generator)
        n = self.num_items
        self.weight = nn.Parameter(torch.cat([w[:n], new.to(w.device), w[n:]]))
        self.num_items = n + count

    def forward(self) -> Tensor:
        pad = torch.zeros(1, self.dim, device=self.weight.device, dtype=self.weight.dtype)
        return torch.cat([self.weight[: self.num_items], pad, self.weight[self.num_items + 1:]])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.num_items} + 2, {self.dim})"
