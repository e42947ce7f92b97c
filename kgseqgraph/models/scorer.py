r"""The frozen scoring path of an ID-based sequential recommender, as a pure tensor module.

:class:`SequenceScorer` maps a padded batch of item ids to full-catalogue scores,

.. math::
    \hat{\mathbf{Y}} = \mathrm{Encoder}\big(\mathbf{T}[s], \mathbf{M}\big)_{\mathrm{last}}\,
    \mathbf{T}_{0:N}^\top \in \mathbb{R}^{B \times N},

(for a model with a :class:`~kgseqgraph.models.sequential.PredictionHead`, the encoder output is
first transformed by the head and its per-item output bias is added to the scores), with the item
table :math:`\mathbf{T} \in \mathbb{R}^{(N + 2) \times D}` (and, for models with a separate
output table such as KATRec, that table in place of :math:`\mathbf{T}_{0:N}`) held as a buffer: computed
once, in eval mode, by :meth:`~kgseqgraph.models.sequential.SequentialModel.frozen_item_table`.
For a graph model (KATRec) that table already holds the result of the KG propagation and of the
fusion gate, so the scorer has no graph, no PyTorch Geometric and no ``HeteroData`` in it, and it
exports with :mod:`torch.export`, ONNX or TorchScript (:mod:`kgseqgraph.export`).

It is built by :meth:`~kgseqgraph.models.sequential.SequentialModel.scorer` from the model's own
encoder module, and scores exactly as the model's :meth:`score` does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.encoders.base import encode_at, last_positions

__all__ = ["SequenceScorer"]


class SequenceScorer(nn.Module):
    r"""Padded item ids ``[B, L]`` → scores ``[B, N]`` with a frozen item table.

    Input convention (the library's, :func:`~kgseqgraph.data.batching.pad_sequences`): item ids
    ``0 … N-1``, oldest first, **left-padded** with the padding id ``N`` so the most recent item
    sits in the last column. Encoders only read the padding mask, so right padding gives the same
    scores as long as a row fits in the window. Rows longer than :attr:`window` columns are cut
    to their last :attr:`window` columns (the most recent items under left padding), as the
    model's own :meth:`score` keeps the most recent items. A row of padding only scores as an
    empty history does in :meth:`score`.

    For cloze-trained models (BERT4Rec, KATRec) the ``[mask]`` token (id ``N + 1``) is appended
    inside the module and its output scores the next item; callers pass the history only, at
    most :attr:`window` ``= max_len - 1`` items. Next-item models (SASRec, GRU4Rec) read the
    output at the most recent real item; :attr:`window` ``= max_len``.

    With ``exclude_history=True`` the items in the input window score :math:`-\infty` (the
    full-ranking protocol's "never recommend what the user has seen"); items older than the
    window are not known to the scorer and are the caller's to mask.

    Args:
        encoder: the model's sequence encoder (put in eval mode; no gradients).
        item_table: ``[N + 2, D]`` item table (rows ``N``, ``N + 1``: padding and ``[mask]``).
        num_items: catalogue size :math:`N`.
        window: most history items one row may hold.
        append_mask_token: append ``[mask]`` and read its output (cloze models).
        exclude_history: score the input's items :math:`-\infty`.
        head: the model's :class:`~kgseqgraph.models.sequential.PredictionHead`, if it has one
            (transform of the encoder output + per-item output bias).
        output_table: ``[N, D']`` table the encoder output is scored against when the model's
            output table is not its input table (KATRec's output fusion); ``None``: the first
            ``N`` rows of ``item_table``.
    """

    def __init__(self, encoder: nn.Module, item_table: Tensor, num_items: int, window: int,
                 append_mask_token: bool, exclude_history: bool = False,
                 head: nn.Module | None = None, output_table: Tensor | None = None) -> None:
        super().__init__()
        if item_table.dim() != 2 or item_table.size(0) != num_items + 2:
            raise ValueError(f"item_table must be [num_items + 2, D] = [{num_items + 2}, D], got "
                             f"{tuple(item_table.shape)}")
        if window < 1:
            raise ValueError(f"window must be positive, got {window}")
        self.encoder = encoder.eval()
        self.encoder.requires_grad_(False)
        self.head = head.eval().requires_grad_(False) if head is not None else None
        self.register_buffer("item_table", item_table.detach().clone())
        if output_table is not None and (output_table.dim() != 2
                                         or output_table.size(0) != num_items):
            raise ValueError(f"output_table must be [num_items, D'] = [{num_items}, D'], got "
                             f"{tuple(output_table.shape)}")
        self.register_buffer("output_table", None if output_table is None
                             else output_table.detach().clone())
        self.num_items = int(num_items)
        self.window = int(window)
        self.append_mask_token = bool(append_mask_token)
        self.exclude_history = bool(exclude_history)
        self.eval()

    @property
    def padding_id(self) -> int:
        """The id that marks padding in the input (``N``)."""
        return self.num_items

    @property
    def mask_id(self) -> int:
        """The ``[mask]`` id (``N + 1``), appended internally by cloze models."""
        return self.num_items + 1

    def train(self, mode: bool = True) -> SequenceScorer:
        """Always stays in eval mode (dropout off): a scorer is for inference only."""
        return super().train(False)

    def forward(self, items: Tensor) -> Tensor:
        """Scores of every catalogue item as the next item of each row.

        Args:
            items: ``LongTensor[B, L]`` of item ids, left-padded with :attr:`padding_id`.

        Returns:
            ``Tensor[B, N]`` (``-inf`` at the input's items when ``exclude_history``).
        """
        if items.size(1) > self.window:  # statically false in an export capped at the window
            items = items[:, -self.window:]
        mask = items != self.padding_id
        if self.append_mask_token:
            b = items.size(0)
            inputs = torch.cat([items, items.new_full((b, 1), self.mask_id)], dim=1)
            mask = torch.cat([mask, mask.new_ones((b, 1))], dim=1)
        else:
            inputs = items
        # the most recent real item (the appended [mask] for cloze models); only that
        # position's output is computed in full
        rep = encode_at(self.encoder, F.embedding(inputs, self.item_table), mask,
                        last_positions(mask))
        if self.head is not None:
            rep = self.head(rep)
        out = self.item_table[: self.num_items] if self.output_table is None else self.output_table
        scores = rep @ out.t()
        if self.head is not None:
            scores = scores + self.head.output_bias
        if self.exclude_history:
            # two spare columns take the padding / [mask] ids; dropped after the scatter
            spare = scores.new_zeros(scores.size(0), 2)
            scores = torch.cat([scores, spare], dim=1).scatter(1, items, float("-inf"))
            scores = scores[:, : self.num_items]
        return scores

    def extra_repr(self) -> str:
        return (f"num_items={self.num_items}, dim={self.item_table.size(1)}, "
                f"window={self.window}, append_mask_token={self.append_mask_token}, "
                f"exclude_history={self.exclude_history}")
