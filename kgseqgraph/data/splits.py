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

**The training graph.** A split of a collaborative KG also carries
:attr:`LeaveOneOutSplit.train_graph`: the same :class:`~torch_geometric.data.HeteroData` with
only the *training* interactions — the ``interacts`` / ``rev_interacts`` edges of every held-out
target (and of dropped users) removed; node ids, KG edges and node features unchanged. Anything
that propagates over user–item edges (KGAT's collaborative KG, KATRec with ``user`` nodes) must
be built from it: over the full graph a user's test item is a neighbour of that user, so a
two-hop propagation from the user's history reaches the very item it is asked to predict.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from .graph import INTERACTS, REV_INTERACTS, _user_time_order
from .sequences import Sequences, user_sequences

__all__ = ["LeaveOneOutSplit", "leave_one_out", "training_graph"]

log = logging.getLogger("kgseqgraph")


@dataclass
class LeaveOneOutSplit:
    """The three views of a leave-one-out split.

    Attributes:
        train: training sequences (one per kept user, possibly empty for none).
        valid_inputs / valid_targets: validation input sequences and next items.
        test_inputs / test_targets: test input sequences and next items.
        report: counts of users per category.
        graph: the collaborative KG the split was made from (``None`` for a split of
            :class:`Sequences`); for ``describe`` and the like, never for a model.
        train_interactions: ``[E]`` bool mask over ``graph``'s ``interacts`` edges: the training
            interactions (``None`` without a graph).
    """

    train: Sequences
    valid_inputs: Sequences
    valid_targets: Tensor
    test_inputs: Sequences
    test_targets: Tensor
    report: dict[str, int] = field(default_factory=dict)
    graph: HeteroData | None = field(default=None, repr=False)
    train_interactions: Tensor | None = field(default=None, repr=False)
    _train_graph: HeteroData | None = field(default=None, repr=False, compare=False)

    @property
    def train_graph(self) -> HeteroData:
        """The collaborative KG with the training interactions only (see the module docstring):
        what every graph model trained or evaluated on this split must be built from."""
        if self.graph is None or self.train_interactions is None:
            raise ValueError("this split was made from Sequences, not from a graph: it has no "
                             "training graph (split the HeteroData instead)")
        if self._train_graph is None:
            self._train_graph = training_graph(self.graph, self.train_interactions)
        return self._train_graph

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
    graph = None if isinstance(data, Sequences) else data
    seqs = data if graph is None else user_sequences(graph)
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
    train_mask = None
    if graph is not None:
        # training length of every graph user (0 for dropped and interaction-less users)
        train_len = torch.zeros(len(seqs), dtype=torch.long)
        train_len[seqs.users[keep]] = train.lengths
        train_mask = _prefix_edges(graph, train_len)
        report["held_out_interactions"] = int((~train_mask).sum())
    return LeaveOneOutSplit(train, valid_inputs, valid_targets, test_inputs, test_targets, report,
                            graph, train_mask)


def _prefix_edges(data: HeteroData, prefix: Tensor) -> Tensor:
    """``[E]`` bool mask over the ``interacts`` edges: for each user ``u``, the first
    ``prefix[u]`` of its interactions in sequence order (the stable ``(user, time, row)`` order
    of :func:`~kgseqgraph.data.user_sequences`)."""
    store = data[INTERACTS]
    user = store.edge_index[0]
    time = store.time if "time" in store else torch.arange(user.numel())
    order = _user_time_order(user.numpy(), time.numpy())
    order = torch.arange(user.numel()) if order is None else torch.from_numpy(order)
    sorted_user = user[order]
    counts = torch.bincount(sorted_user, minlength=prefix.numel())
    starts = torch.cumsum(counts, 0) - counts
    position = torch.arange(user.numel()) - starts[sorted_user]  # rank within the user
    mask = torch.zeros(user.numel(), dtype=torch.bool)
    mask[order] = position < prefix[sorted_user]
    return mask


def training_graph(data: HeteroData, keep: Tensor) -> HeteroData:
    """A shallow copy of ``data`` whose ``interacts`` and ``rev_interacts`` edges (and their
    per-edge attributes: ``time``, ``rating``, …) are those where ``keep`` is true, in the same
    order. Nodes, KG edges, node features and graph attributes are shared with ``data``, not
    copied.

    Args:
        data: the collaborative KG.
        keep: ``[E]`` bool mask over ``data['user', 'interacts', 'item']``'s edges.
    """
    if INTERACTS not in data.edge_types:
        raise ValueError(f"the graph has no {INTERACTS} edges")
    num_edges = int(data[INTERACTS].edge_index.size(1))
    if keep.dtype != torch.bool or keep.shape != (num_edges,):
        raise ValueError(f"keep must be a bool mask over the {num_edges} interactions, got "
                         f"{keep.dtype} {tuple(keep.shape)}")
    out = copy.copy(data)
    for edge_type in (INTERACTS, REV_INTERACTS):
        if edge_type not in data.edge_types:
            continue
        store, new = data[edge_type], out[edge_type]
        for key, value in store.items():
            if key == "edge_index":
                new.edge_index = value[:, keep]
            elif isinstance(value, Tensor) and value.dim() > 0 and value.size(0) == num_edges:
                new[key] = value[keep]
            elif isinstance(value, (list, tuple)) and len(value) == num_edges:
                new[key] = [v for v, k in zip(value, keep.tolist()) if k]
    return out
