r"""The optimiser and its learning-rate schedule: AdamW with decoupled weight decay on weight
matrices only, linear warm-up, then linear decay to 0 (or constant), see
:class:`~kgseqgraph.training.TrainConfig`."""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["LinearSchedule", "build_optimizer"]


class LinearSchedule:
    r"""Learning-rate multiplier of :class:`torch.optim.lr_scheduler.LambdaLR`: linear warm-up over
    ``warmup`` steps, then linear decay to 0 at step ``total`` (or constant when ``decay`` is
    false). A plain object with primitive attributes, so the scheduler's ``state_dict`` stays
    weights-only-loadable."""

    def __init__(self, total: int, warmup: int = 0, decay: bool = True) -> None:
        if total < 1 or not 0 <= warmup < max(total, 1):
            raise ValueError(f"need total >= 1 and 0 <= warmup < total, got {total}, {warmup}")
        self.total, self.warmup, self.decay = int(total), int(warmup), bool(decay)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if not self.decay:
            return 1.0
        return max(0.0, (self.total - step) / (self.total - self.warmup))


def build_optimizer(model: torch.nn.Module, config: Any, total_steps: int
                    ) -> tuple[torch.optim.Optimizer | None, Any]:
    """AdamW over ``model``'s trainable parameters — weight decay ``config.weight_decay`` on those
    with ``ndim >= 2`` (weight matrices, embedding tables), none on biases and norm scales — and a
    :class:`torch.optim.lr_scheduler.LambdaLR` following :class:`LinearSchedule` over
    ``total_steps`` (warm-up: ``config.warmup_steps``, else ``config.warmup_ratio`` of the steps).
    ``(None, None)`` for a model without trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return None, None
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr)
    total = max(int(total_steps), 1)
    warmup = (int(config.warmup_ratio * total) if config.warmup_steps is None
              else min(int(config.warmup_steps), total - 1))
    schedule = LinearSchedule(total, warmup, decay=config.lr_decay == "linear")
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
