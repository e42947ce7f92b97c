"""Chronological leave-one-out split.

For a user with time-ordered sequence :math:`s_1, \\dots, s_n` (:math:`n \\ge 3`):

* train: :math:`s_1 \\dots s_{n-2}`;
* valid: input :math:`s_1 \\dots s_{n-2}`, target :math:`s_{n-1}`;
* test: input :math:`s_1 \\dots s_{n-1}`, target :math:`s_n`.

Users with fewer than ``min_length`` interactions (default 3, the fewest that give one training
item, a validation and a test target) are either kept for training only (``short_users="train"``,
all their items are training data and they are not evaluated) or dropped (``"drop"``); either way
they are counted in :attr:`LeaveOneOutSplit.report`.

The evaluation inputs double as the history to exclude from the ranking (the user's own seen
items), see :mod:`kgseqgraph.evaluation`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from .sequences import Sequences, user_sequences

__all__ = ["LeaveOneOutSplit", "leave_one_out"]

log = logging.getLogger("kgseqgraph")


@dataclass
class LeaveOneOutSplit:
    """The three views of a leave-one-out split.

    Attributes:
        train: training sequences (one per kept user, possibly empty for none).
        valid_inputs / valid_targets: validation input sequences and next items.
        test_inputs / test_targets: test input sequences and next items.
        report: counts of users per category.
    """

    train: Sequences
    valid_inputs: Sequences
    valid_targets: Tensor
    test_inputs: Sequences
    test_targets: Tensor
    report: dict[str, int] = field(default_factory=dict)

    @property
    def num_items(self) -> int:
        return self.train.num_items

    def inputs(self, stage: str) -> Sequences:
        return {"valid": self.valid_inputs, "test": self.test_inputs}[_stage(stage)]

    def targets(self, stage: str) -> Tensor:
        return {"valid": self.valid_targets, "test": self.test_targets}[_stage(stage)]


def _stage(stage: str) -> str:
    if stage not in {"valid", "test"}:
        raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")
    return stage


def leave_one_out(data: HeteroData | Sequences, min_length: int = 3,
                  short_users: str = "train") -> LeaveOneOutSplit:
    """Split each user's time-ordered sequence: last item test, second last valid, rest train.

    Args:
        data: the collaborative KG (sequences come from its ``interacts`` edges) or
            :class:`Sequences` directly.
        min_length: users with fewer interactions are not evaluated (must be ≥ 3).
        short_users: ``"train"`` keeps a short user's items for training only; ``"drop"`` removes
            the user from every view.
    """
    if min_length < 3:
        raise ValueError("min_length must be >= 3 (one training item, a valid and a test target)")
    if short_users not in {"train", "drop"}:
        raise ValueError(f"short_users must be 'train' or 'drop', got {short_users!r}")
    seqs = data if isinstance(data, Sequences) else user_sequences(data)
    lengths = seqs.lengths
    evaluated = lengths >= min_length
    short = (~evaluated) & (lengths > 0)
    report = {
        "users": len(seqs),
        "users_evaluated": int(evaluated.sum()),
        "users_short": int(short.sum()),
        "users_without_interactions": int((lengths == 0).sum()),
        "short_users_policy_" + short_users: int(short.sum()),
    }
    if int(short.sum()):
        log.info("leave_one_out: %d users have fewer than %d interactions (%s)", int(short.sum()),
                 min_length, "kept for training only" if short_users == "train" else "dropped")
    keep = (lengths > 0) if short_users == "train" else evaluated
    kept = seqs.select(keep)
    kept_eval = evaluated[keep]
    train_len = torch.where(kept_eval, kept.lengths - 2, kept.lengths)
    train = kept.truncate(train_len)
    ev = seqs.select(evaluated)
    valid_inputs = ev.truncate(ev.lengths - 2)
    test_inputs = ev.truncate(ev.lengths - 1)
    valid_targets = ev.item_at(ev.lengths - 2)
    test_targets = ev.item_at(ev.lengths - 1)
    report["train_interactions"] = train.num_interactions
    return LeaveOneOutSplit(train, valid_inputs, valid_targets, test_inputs, test_targets, report)
