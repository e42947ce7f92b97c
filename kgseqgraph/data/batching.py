r"""Batching of item sequences with explicit padding, and the training targets of the two
standard objectives.

Conventions (the same everywhere in the library):

* item ids are ``0 … N-1``; the padding id is ``N`` (:func:`padding_id`), the BERT4Rec mask token is
  ``N + 1`` (:func:`mask_id`) — never a real item, so embedding tables have ``N + 2`` rows;
* ``mask`` is ``True`` at real positions;
* targets use ``IGNORE_INDEX = -100`` (PyTorch's cross-entropy default) where there is no target;
* sequences longer than ``max_len`` keep their most recent ``max_len`` items.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .sequences import Sequences, _ranges

__all__ = [
    "IGNORE_INDEX",
    "padding_id",
    "mask_id",
    "pad_sequences",
    "training_windows",
    "shifted_targets",
    "cloze_mask",
    "append_mask_token",
    "SequenceBatch",
    "random_cut",
]

IGNORE_INDEX = -100


def padding_id(num_items: int) -> int:
    """The padding id for a catalogue of ``num_items`` items (``num_items``)."""
    return num_items


def mask_id(num_items: int) -> int:
    """The BERT4Rec ``[mask]`` id for a catalogue of ``num_items`` items (``num_items + 1``)."""
    return num_items + 1


@dataclass
class SequenceBatch:
    """A padded batch: ``items [B, L]`` (padding id where ``~mask``) and ``mask [B, L]``."""

    items: Tensor
    mask: Tensor
    users: Tensor | None = None

    def to(self, device: torch.device | str) -> SequenceBatch:
        return SequenceBatch(self.items.to(device), self.mask.to(device),
                             None if self.users is None else self.users.to(device))


def pad_sequences(seqs: Sequences | list[Tensor], max_len: int, pad_value: int,
                  side: str = "left") -> SequenceBatch:
    """Pad (and truncate to the most recent ``max_len`` items) into ``[B, max_len]``.

    Args:
        seqs: sequences, oldest item first.
        max_len: length of the output.
        pad_value: the padding id (:func:`padding_id`).
        side: ``"left"`` puts the most recent item in the last column (what causal encoders
            read their prediction from); ``"right"`` starts every row at column 0.
    """
    if side not in {"left", "right"}:
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    if max_len <= 0:
        raise ValueError("max_len must be positive")
    if isinstance(seqs, Sequences):
        ptr, flat, users = seqs.ptr, seqs.items, seqs.users
        lengths = seqs.lengths
    else:
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
        flat = torch.cat(list(seqs)) if len(seqs) else torch.empty(0, dtype=torch.long)
        ptr = torch.zeros(len(seqs) + 1, dtype=torch.long)
        ptr[1:] = torch.cumsum(lengths, 0)
        users = None
    b = lengths.numel()
    keep = lengths.clamp(max=max_len)
    starts = ptr[1:] - keep  # most recent items
    src = _ranges(starts, keep)
    row = torch.repeat_interleave(torch.arange(b), keep)
    pos_in_row = torch.arange(src.numel()) - torch.repeat_interleave(torch.cumsum(keep, 0) - keep, keep)
    col = pos_in_row + (max_len - keep[row]) if side == "left" else pos_in_row
    out = torch.full((b, max_len), pad_value, dtype=torch.long)
    mask = torch.zeros((b, max_len), dtype=torch.bool)
    out[row, col] = flat[src]
    mask[row, col] = True
    return SequenceBatch(out, mask, users)


def training_windows(seqs: Sequences, max_len: int, min_length: int = 2) -> Sequences:
    """Cut each training sequence into windows of at most ``max_len + 1`` items, from the end,
    overlapping by one item, so every interaction but a user's first is a target exactly once per
    epoch under :func:`shifted_targets` (SASRec-style training on long histories).

    Windows shorter than ``min_length`` are left out (they hold no input/target pair).
    """
    if max_len < 1:
        raise ValueError("max_len must be >= 1")
    lengths = seqs.lengths
    step = max_len  # a window of max_len + 1 items yields max_len (input, target) pairs
    n_pairs = (lengths - 1).clamp(min=0)
    n_windows = torch.div(n_pairs + step - 1, step, rounding_mode="floor")
    owner = torch.repeat_interleave(torch.arange(len(seqs)), n_windows)
    k = torch.arange(owner.numel()) - torch.repeat_interleave(torch.cumsum(n_windows, 0) - n_windows,
                                                              n_windows)
    end = seqs.ptr[1:][owner] - k * step           # exclusive end, counting back from the last item
    start = torch.maximum(end - (max_len + 1), seqs.ptr[:-1][owner])
    win_len = end - start
    ok = win_len >= min_length
    start, win_len, owner = start[ok], win_len[ok], owner[ok]
    # oldest window first within a user
    order = torch.argsort(owner * (seqs.items.numel() + 1) + start, stable=True)
    start, win_len, owner = start[order], win_len[order], owner[order]
    ptr = torch.zeros(win_len.numel() + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(win_len, 0)
    flat = _ranges(start, win_len)
    times = seqs.times[flat] if seqs.times is not None else None
    return Sequences(ptr, seqs.items[flat], seqs.users[owner], seqs.num_items, times)


def shifted_targets(batch: SequenceBatch) -> tuple[SequenceBatch, Tensor]:
    """SASRec / GRU4Rec next-item targets: input ``items[:, :-1]``, target ``items[:, 1:]``.

    Returns the input batch (one column shorter) and ``targets [B, L-1]`` with ``IGNORE_INDEX``
    where the input or the target position is padding.
    """
    inp_items, inp_mask = batch.items[:, :-1], batch.mask[:, :-1]
    tgt = batch.items[:, 1:].clone()
    valid = batch.mask[:, 1:] & inp_mask
    tgt[~valid] = IGNORE_INDEX
    return SequenceBatch(inp_items, inp_mask, batch.users), tgt


def cloze_mask(batch: SequenceBatch, num_items: int, mask_prob: float = 0.2,
               generator: torch.Generator | None = None) -> tuple[SequenceBatch, Tensor]:
    """BERT4Rec cloze task: replace each real item with ``[mask]`` with probability ``mask_prob``
    (at least one per non-empty sequence); targets are the original items at masked positions and
    ``IGNORE_INDEX`` elsewhere."""
    if not 0.0 < mask_prob <= 1.0:
        raise ValueError("mask_prob must lie in (0, 1]")
    rand = torch.rand(batch.items.shape, generator=generator)
    chosen = (rand < mask_prob) & batch.mask
    # guarantee one masked position per non-empty row: the real position with the smallest draw
    has_real = batch.mask.any(1)
    none = has_real & ~chosen.any(1)
    if none.any():
        r = rand.masked_fill(~batch.mask, 2.0)
        first = r.argmin(1)
        rows = none.nonzero().view(-1)
        chosen[rows, first[rows]] = True
    items = batch.items.masked_fill(chosen, mask_id(num_items))
    targets = torch.full_like(batch.items, IGNORE_INDEX)
    targets[chosen] = batch.items[chosen]
    return SequenceBatch(items, batch.mask, batch.users), targets


def append_mask_token(seqs: Sequences, max_len: int, num_items: int) -> SequenceBatch:
    """BERT4Rec inference input: the last ``max_len - 1`` items followed by ``[mask]``
    (left-padded), whose output position predicts the next item."""
    batch = pad_sequences(seqs, max_len - 1, padding_id(num_items), side="left")
    b = batch.items.size(0)
    items = torch.cat([batch.items, torch.full((b, 1), mask_id(num_items), dtype=torch.long)], 1)
    mask = torch.cat([batch.mask, torch.ones((b, 1), dtype=torch.bool)], 1)
    return SequenceBatch(items, mask, batch.users)


def random_cut(seqs: Sequences, generator: torch.Generator | None = None,
               min_history: int = 1) -> tuple[Sequences, Tensor]:
    r"""One (history, next item) pair per training sequence, cut at a random position.

    A sequence :math:`i_1 \dots i_L` is cut at :math:`c`, drawn uniformly from
    :math:`[\min(h, L-1),\ L-1]` (:math:`h` = ``min_history``) with ``generator``; the history is
    :math:`i_1 \dots i_c` and the target :math:`i_{c+1}`. ``generator=None`` always cuts at
    :math:`c = L - 1` (the last item is the target). Over the epochs every position with at least
    ``min_history`` items before it becomes a target (the random-cut training of LANCER and
    KP4SR, whose text models read one history and predict one item per sequence).

    Returns:
        ``(history, targets)``: the histories as :class:`Sequences` (users kept) and ``[B]``
        target items.
    """
    lengths = seqs.lengths
    if (lengths < 2).any():
        raise ValueError("every sequence needs at least 2 items (a history and a target)")
    if min_history < 1:
        raise ValueError(f"min_history must be >= 1, got {min_history}")
    last = lengths - 1
    if generator is None:
        cut = last
    else:
        lo = torch.clamp(last, max=min_history)
        draw = torch.rand(lengths.numel(), generator=generator)
        cut = torch.minimum(lo + (draw * (last - lo + 1)).long(), last)
    return seqs.truncate(cut), seqs.item_at(cut)
