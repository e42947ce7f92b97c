r"""Softmax cross-entropy over the whole item catalogue, in bounded memory.

Sequential recommenders (SASRec, BERT4Rec, KATRec…) score every target position against all
:math:`N` items: with :math:`M` target positions in a batch (up to ``batch_size * max_len``) and
item table :math:`\mathbf{W} \in \mathbb{R}^{N \times D}`,

.. math::
    \mathcal{L} = \frac{1}{M} \sum_{m} \Big( \log \sum_{j < N} e^{\mathbf{h}_m^\top \mathbf{w}_j}
    - \mathbf{h}_m^\top \mathbf{w}_{y_m} \Big).

Materialising the logits costs :math:`M N` floats, and autograd keeps them, their softmax and their
gradient alive together: at 256 windows x 50 positions and 100,000 items that is 5 GB of logits
and ~15 GB for one step. :func:`catalogue_cross_entropy` computes the same loss over blocks of
rows whose logits fit in ``max_logit_bytes``; the backward pass recomputes each block's logits
(one more ``[rows, D] x [D, N]`` product) instead of storing them, so memory stays
:math:`O(\text{rows} \cdot N)` whatever :math:`M` (a block's logits and one temporary of their
size, ``max_logit_bytes`` together). When all the logits fit in the budget it is
*exactly* ``F.cross_entropy(hidden @ weight.t(), targets)`` (same kernels, same result bit for
bit); above it the value agrees to float rounding.

On the CPU the blocks are also a speed-up: a block whose logits stay in the core's cache
(``cpu_block_bytes``, 4 MiB by default) runs the log-sum-exp and the softmax gradient without a
trip through main memory, which more than pays for the recomputed product. So CPU tensors are
processed in such blocks even when all the logits would fit ``max_logit_bytes``
(``benchmarks/bench_catalogue_ce.py`` measures a SASRec training step on Yelp against the
one-pass path in the same run). GPUs keep the one-pass path up to ``max_logit_bytes``.

Label smoothing (Szegedy et al., 2016; ``F.cross_entropy``'s ``label_smoothing``) mixes the
one-hot target with the uniform distribution over the :math:`N` items, weight :math:`\varepsilon`:

.. math::
    \mathcal{L}_\varepsilon = \frac{1}{M} \sum_m \Big( \log \sum_j e^{z_{mj}}
    - (1 - \varepsilon)\, z_{m y_m} - \frac{\varepsilon}{N} \sum_j z_{mj} \Big)
    = \mathcal{L} + \frac{\varepsilon}{M} \sum_m \big( z_{m y_m}
    - \mathbf{h}_m^\top \bar{\mathbf{w}} \big),

with :math:`z_{mj} = \mathbf{h}_m^\top \mathbf{w}_j` and :math:`\bar{\mathbf{w}}` the mean
item vector: the smoothing term needs no logits, so the blocked path adds it outside the blocks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["catalogue_cross_entropy", "DEFAULT_MAX_LOGIT_BYTES", "DEFAULT_CPU_BLOCK_BYTES"]

#: Default budget for the logits of one block of rows (256 MiB).
DEFAULT_MAX_LOGIT_BYTES = 256 * 2**20

#: Default budget of one block's logits (and their temporary) for tensors on the CPU: about a
#: core's share of a server CPU's cache, so each block's softmax runs from cache.
DEFAULT_CPU_BLOCK_BYTES = 4 * 2**20


def _block_rows(num_items: int, itemsize: int, max_logit_bytes: int) -> int:
    # a block's logits plus one temporary of their size (logsumexp's exponentials) fit the budget
    return max(1, int(max_logit_bytes) // max(1, 2 * num_items * itemsize))


class _BlockedCatalogueCE(torch.autograd.Function):
    """Sum over rows of ``logsumexp(h @ W.T) - (h @ W.T)[y]``, in blocks of ``rows`` rows."""

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, targets: Tensor,  # type: ignore[override]
                rows: int) -> Tensor:
        m = hidden.size(0)
        acc = torch.promote_types(hidden.dtype, torch.float32)
        lse = torch.empty(m, dtype=acc, device=hidden.device)
        total = torch.zeros((), dtype=acc, device=hidden.device)
        for start in range(0, m, rows):
            end = min(start + rows, m)
            logits = (hidden[start:end] @ weight.t()).to(acc)
            lse[start:end] = torch.logsumexp(logits, dim=1)
            picked = logits.gather(1, targets[start:end].view(-1, 1)).view(-1)
            total += (lse[start:end] - picked).sum()
            del logits
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.rows = rows
        return total

    @staticmethod
    def backward(ctx, grad_total: Tensor):  # type: ignore[override]
        hidden, weight, targets, lse = ctx.saved_tensors
        rows = ctx.rows
        m = hidden.size(0)
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros_like(weight) if need_w else None
        for start in range(0, m, rows):
            end = min(start + rows, m)
            h = hidden[start:end]
            logits = (h @ weight.t()).to(lse.dtype)
            # d/dlogits of (lse - logit_y) = softmax - onehot(y), scaled by the incoming grad
            g = torch.exp_(logits.sub_(lse[start:end].view(-1, 1)))
            g[torch.arange(end - start, device=g.device), targets[start:end]] -= 1
            g = g.mul_(grad_total.to(g.dtype)).to(hidden.dtype)
            if need_h:
                grad_h[start:end] = g @ weight
            if need_w:
                grad_w.addmm_(g.t(), h)
            del logits, g
        return grad_h, grad_w, None, None


def catalogue_cross_entropy(hidden: Tensor, weight: Tensor, targets: Tensor,
                            reduction: str = "mean",
                            max_logit_bytes: int | None = DEFAULT_MAX_LOGIT_BYTES,
                            label_smoothing: float = 0.0,
                            cpu_block_bytes: int | None = DEFAULT_CPU_BLOCK_BYTES) -> Tensor:
    r"""``F.cross_entropy(hidden @ weight.t(), targets, reduction=reduction,
    label_smoothing=label_smoothing)`` without holding the ``[M, N]`` logits when they exceed
    ``max_logit_bytes`` (see the module docstring).

    Args:
        hidden: ``[M, D]`` representations of the target positions.
        weight: ``[N, D]`` item table (row ``j`` scores item ``j``).
        targets: ``[M]`` item ids in ``[0, N)`` (no ignore index: select the rows first).
        reduction: ``"mean"`` or ``"sum"``.
        max_logit_bytes: budget for the logits of one block of rows; ``None`` never blocks
            (plain ``F.cross_entropy``, on any device).
        label_smoothing: :math:`\varepsilon \in [0, 1)`, the weight of the uniform target.
        cpu_block_bytes: for CPU tensors, the smaller budget that sizes the blocks for speed
            (see the module docstring); ``None`` blocks only above ``max_logit_bytes``.

    Returns:
        The scalar loss; gradients flow to ``hidden`` and ``weight``.
    """
    if reduction not in {"mean", "sum"}:
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing!r}")
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.size(1) != weight.size(1):
        raise ValueError(f"need hidden [M, D] and weight [N, D], got {tuple(hidden.shape)} and "
                         f"{tuple(weight.shape)}")
    m, n = hidden.size(0), weight.size(0)
    itemsize = torch.promote_types(hidden.dtype, torch.float32).itemsize
    budget = max_logit_bytes
    if budget is not None and cpu_block_bytes is not None and hidden.device.type == "cpu":
        budget = min(budget, cpu_block_bytes)
    if budget is None or m * n * itemsize <= budget or m == 0:
        return F.cross_entropy(hidden @ weight.t(), targets, reduction=reduction,
                               label_smoothing=label_smoothing)
    rows = _block_rows(n, itemsize, budget)
    total = _BlockedCatalogueCE.apply(hidden, weight, targets.long(), rows)
    if label_smoothing:  # eps * sum_m (z_my - h_m . mean item), accumulated like the blocks
        acc = total.dtype
        picked = (hidden * weight[targets]).sum(-1, dtype=acc)
        total = total + label_smoothing * (picked - hidden.to(acc) @ weight.to(acc).mean(0)).sum()
    total = total.to(hidden.dtype)
    return total / m if reduction == "mean" else total
