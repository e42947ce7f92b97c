r"""Attention masks of KP4SR's knowledge tree, as tensor operations (Zhai et al., *Knowledge
Prompt-tuning for Sequential Recommendation*, 2023; authors' code ``zhaijianyang/KP4SR``,
``src/pretrain_data.py``, ``get_input`` and ``collate_fn``).

A knowledge tree is laid out as one token sequence. Every token :math:`t` records the node that
owns it, :math:`n(t)`, that node's parent :math:`\pi(t)` (:math:`-1` for the root) and whether it
is part of the root text, :math:`\rho(t)` (the root and the history-item nodes, whose tokens are
the root tokens that spell the item). The authors' visible matrix lets each token of node
:math:`n` see the tokens of :math:`n`'s parent, of every child of that parent (its siblings and
itself) and of its own children; a root token (no parent) sees the root. Tokens shared by the
root and an item node get the union. As one formula over query :math:`q` and key :math:`k`:

.. math::
    M_{qk} = \big(\rho(q) \wedge \rho(k)\big)
      \vee [n(k) = \pi(q)]
      \vee \big([\pi(k) = \pi(q)] \wedge \pi(q) \ge 0\big)
      \vee [\pi(k) = n(q)],

restricted to real keys. So the personalised prompt sees itself only; an item's tokens also see
its 1-hop knowledge prompts; a 1-hop prompt sees its item's tokens, its sibling prompts and its
2-hop children; a 2-hop prompt sees its parent prompt and its siblings — knowledge never reaches
another item's sub-tree. (:func:`tree_attention_mask`; padding queries see only themselves so no
softmax row is empty.)

Cross mask (``--cross_mask`` in the authors' code): the decoder cross-attends to the root text
only, :math:`\rho(k)`, instead of every real encoder token (:func:`cross_attention_mask`).
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["tree_attention_mask", "cross_attention_mask", "additive_attention_mask"]


def tree_attention_mask(node: Tensor, parent: Tensor, in_root: Tensor,
                        real: Tensor | None = None) -> Tensor:
    r"""The authors' tree mask :math:`\mathbf{M}` (module docstring).

    Args:
        node: ``[B, T]`` node id of each token (any integers, unique per node within a row).
        parent: ``[B, T]`` node id of the token's node's parent, ``-1`` for the root's tokens.
        in_root: ``[B, T]`` bool, the token is part of the root text.
        real: ``[B, T]`` bool, real (non-padding) tokens; default all.

    Returns:
        Boolean ``[B, T, T]``: ``True`` where query row :math:`q` may attend to key :math:`k`.
    """
    if not (node.shape == parent.shape == in_root.shape) or node.dim() != 2:
        raise ValueError(f"node, parent and in_root must be [B, T] alike, got {tuple(node.shape)}, "
                         f"{tuple(parent.shape)}, {tuple(in_root.shape)}")
    real = torch.ones_like(in_root, dtype=torch.bool) if real is None else real.bool()
    in_root = in_root.bool() & real
    nq, nk = node[:, :, None], node[:, None, :]
    pq, pk = parent[:, :, None], parent[:, None, :]
    mask = in_root[:, :, None] & in_root[:, None, :]
    mask |= nk == pq
    mask |= (pk == pq) & (pq >= 0)
    mask |= pk == nq
    mask &= real[:, None, :] & real[:, :, None]
    eye = torch.eye(node.size(1), dtype=torch.bool, device=node.device)[None]
    return mask | (eye & ~real[:, :, None])


def cross_attention_mask(in_root: Tensor, real: Tensor, root_only: bool = True) -> Tensor:
    """``[B, T]`` encoder tokens the decoder may read: the root text (``root_only``, the
    authors' cross mask) or every real token."""
    return (in_root.bool() & real.bool()) if root_only else real.bool()


def additive_attention_mask(mask: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    r"""A boolean ``[B, T, T]`` mask as the additive ``[B, 1, T, T]`` bias Hugging Face attention
    layers add to their scores (0 where visible, :math:`\min(\text{dtype})` elsewhere); a 4-D mask
    passes through ``transformers`` 5.x T5 unchanged."""
    if mask.dim() != 3 or mask.dtype != torch.bool:
        raise ValueError(f"expected a boolean [B, T, T] mask, got {mask.dtype} "
                         f"{tuple(mask.shape)}")
    out = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return out.masked_fill_(~mask, torch.finfo(dtype).min)[:, None]
