r"""BPR matrix factorisation (Rendle et al., UAI 2009), the model KGAT and KATRec pre-train their
user and item embeddings with.

A user–item pair is scored by a dot product, :math:`\hat{y}_{ui} = \mathbf{p}_u^\top\mathbf{q}_i`,
and trained with the pairwise BPR loss over a positive item :math:`i` and a sampled negative
:math:`j` (KGAT's ``BPRMF.py``: L2 on the three embeddings of the batch),

.. math::
    \mathcal{L}_{\mathrm{BPR}} = \frac{1}{|\mathcal{B}|}\sum_{(u, i, j) \in \mathcal{B}}
    -\ln\sigma(\hat{y}_{ui} - \hat{y}_{uj})
    + \frac{\lambda}{2|\mathcal{B}|}\sum_{(u, i, j) \in \mathcal{B}}
    \big(\|\mathbf{p}_u\|^2 + \|\mathbf{q}_i\|^2 + \|\mathbf{q}_j\|^2\big).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BPRMF", "sample_bpr_negatives"]


class BPRMF(nn.Module):
    r"""User and item embeddings :math:`\mathbf{P} \in \mathbb{R}^{U \times d}`,
    :math:`\mathbf{Q} \in \mathbb{R}^{N \times d}` scored by dot products (Xavier-initialised,
    as KGAT's BPRMF).

    Args:
        num_users: :math:`U`.
        num_items: :math:`N`.
        dim: :math:`d`.
        reg_weight: :math:`\lambda` of :meth:`loss`.
    """

    def __init__(self, num_users: int, num_items: int, dim: int = 64,
                 reg_weight: float = 1e-5) -> None:
        super().__init__()
        if num_users < 1 or num_items < 1 or dim < 1:
            raise ValueError(f"num_users, num_items and dim must be positive, got {num_users}, "
                             f"{num_items}, {dim}")
        self.user = nn.Embedding(num_users, dim)
        self.item = nn.Embedding(num_items, dim)
        self.reg_weight = float(reg_weight)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.user.weight)
        nn.init.xavier_uniform_(self.item.weight)

    def forward(self, user: Tensor, item: Tensor) -> Tensor:
        """:math:`\\hat{y}_{ui}` for pairs ``(user[b], item[b])``."""
        return (self.user(user) * self.item(item)).sum(-1)

    def loss(self, user: Tensor, pos_item: Tensor, neg_item: Tensor) -> Tensor:
        """The BPR loss of the module docstring, averaged over the batch."""
        p, qi, qj = self.user(user), self.item(pos_item), self.item(neg_item)
        loss = F.softplus(-((p * qi).sum(-1) - (p * qj).sum(-1))).mean()
        if self.reg_weight > 0:
            reg = (p.pow(2).sum(-1) + qi.pow(2).sum(-1) + qj.pow(2).sum(-1)).mean() / 2
            loss = loss + self.reg_weight * reg
        return loss

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(users={self.user.num_embeddings}, "
                f"items={self.item.num_embeddings}, dim={self.user.embedding_dim})")


def sample_bpr_negatives(user: Tensor, num_items: int, seen_keys: Tensor,
                         generator: torch.Generator | None = None, max_tries: int = 20) -> Tensor:
    r"""One negative item per user, uniform over the items the user has not interacted with.

    Args:
        user: ``[B]`` user ids.
        num_items: catalogue size :math:`N`.
        seen_keys: sorted ``int64`` keys :math:`uN + i` of the known (training) interactions.
        generator: random generator.
        max_tries: redraw rounds; the few draws still colliding after them are kept (a user who
            has seen nearly every item).
    """
    neg = torch.randint(num_items, user.shape, generator=generator)
    for _ in range(max_tries):
        key = user * num_items + neg
        pos = torch.searchsorted(seen_keys, key).clamp_(max=max(seen_keys.numel() - 1, 0))
        bad = seen_keys[pos] == key if seen_keys.numel() else torch.zeros_like(key, dtype=torch.bool)
        n_bad = int(bad.sum())
        if n_bad == 0:
            break
        neg[bad] = torch.randint(num_items, (n_bad,), generator=generator)
    return neg
