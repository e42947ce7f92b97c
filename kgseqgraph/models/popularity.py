"""The most-popular baseline: every user gets the catalogue ranked by training popularity."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..data.sequences import Sequences
from .base import SequentialRecommender, register_model

__all__ = ["PopularityConfig", "Popularity"]


@dataclass
class PopularityConfig:
    num_items: int
    max_len: int = 50


@register_model("pop")
class Popularity(SequentialRecommender):
    r"""Scores :math:`\hat{y}_{u,i} = \#\{\text{training interactions with } i\}`, the same for all
    users. Fit with :meth:`fit` (no gradient training)."""

    config_class = PopularityConfig

    def __init__(self, config: PopularityConfig, data=None) -> None:
        super().__init__(config)
        self.register_buffer("counts", torch.zeros(config.num_items))

    def fit(self, train: Sequences) -> Popularity:
        self.counts.copy_(torch.bincount(train.items, minlength=self.num_items).to(self.counts))
        return self

    def score(self, sequences: Sequences) -> Tensor:
        return self.counts.unsqueeze(0).expand(len(sequences), -1)
