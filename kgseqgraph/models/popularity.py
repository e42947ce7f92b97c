"""The most-popular baseline: every user gets the catalogue ranked by training popularity."""
from __future__ import annotations

import dataclasses
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

    def add_items(self, data, *, generator=None) -> Popularity:
        """New items (a graph with items appended, or the new catalogue size) get count 0: the
        baseline has nothing to rank them by (with pessimistic ties they rank last)."""
        m = self._new_item_count(data)
        self.counts = torch.cat([self.counts, self.counts.new_zeros(m)])
        self.config = dataclasses.replace(self.config, num_items=self.num_items + m)
        return self

    def score(self, sequences: Sequences) -> Tensor:
        return self.counts.unsqueeze(0).expand(len(sequences), -1)
