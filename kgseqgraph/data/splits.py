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

from .catalogue import first_items, reorder_items
from .graph import INTERACTS, REV_INTERACTS, _user_time_order
from .sequences import Sequences, user_sequences

__all__ = ["LeaveOneOutSplit", "leave_one_out", "training_graph", "ColdItemSplit",
           "cold_item_split"]

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


@dataclass
class ColdItemSplit(LeaveOneOutSplit):
    """A leave-one-out split of the *warm* items, plus test users whose next item is *cold*: an
    item held out entirely (no interaction with it is ever trained on).

    Items are renumbered so that the cold items come last: in :attr:`full_graph` items
    ``0 … num_warm-1`` are the warm ones (in their original order) and ``num_warm … N-1`` the cold
    ones — exactly where :meth:`~kgseqgraph.models.SequentialRecommender.add_items` puts new
    items, so a model trained on the warm catalogue is extended by the cold items after
    training and scores them in the same index space.

    The inherited fields are the warm leave-one-out split (made by :func:`leave_one_out` from
    the warm graph: :attr:`full_graph` without the cold items and every interaction with them):
    :attr:`train`, :attr:`valid_inputs` / :attr:`valid_targets` (model selection, on warm
    targets), :attr:`test_inputs` / :attr:`test_targets` (warm), :attr:`graph` (the warm graph)
    and :attr:`train_graph` (its training interactions only: build and train models on it).

    Attributes:
        full_graph: every item (warm first, then cold) with all interactions and KG facts: the
            input graph reordered; for ``describe``, never for a model.
        original_items: ``[N]`` the input graph's index of each item of :attr:`full_graph`.
        num_warm: number of warm items (the trained catalogue).
        cold_inputs / cold_targets: the cold test: for every user with a cold item preceded by
            at least ``min_history`` warm items, the user's warm items before their **first**
            cold item (so no input is cold) and that cold item (index ``>= num_warm``).
        cold_users: ``[B]`` graph user id of each cold test row.
    """

    full_graph: HeteroData | None = field(default=None, repr=False)
    original_items: Tensor | None = field(default=None, repr=False)
    num_warm: int = 0
    cold_inputs: Sequences | None = field(default=None, repr=False)
    cold_targets: Tensor | None = field(default=None, repr=False)
    cold_users: Tensor | None = field(default=None, repr=False)
    _cold_graph: HeteroData | None = field(default=None, repr=False, compare=False)

    @property
    def num_cold(self) -> int:
        return int(self.full_graph["item"].num_nodes) - self.num_warm

    @property
    def cold_items(self) -> Tensor:
        """Indices (in :attr:`full_graph`) of the cold items: ``num_warm … N-1``."""
        return torch.arange(self.num_warm, self.num_warm + self.num_cold)

    @property
    def cold_graph(self) -> HeteroData:
        """What a trained model is extended with (``model.add_items(split.cold_graph)``):
        :attr:`train_graph` plus the cold items (appended) and their KG facts — every item's
        knowledge, the training interactions only (none with a cold item)."""
        if self._cold_graph is None:
            out = copy.copy(self.full_graph)
            train = self.train_graph
            for edge_type in (INTERACTS, REV_INTERACTS):
                if edge_type in self.full_graph.edge_types:
                    for key, value in train[edge_type].items():
                        out[edge_type][key] = value
            self._cold_graph = out
        return self._cold_graph


def cold_item_split(data: HeteroData, fraction: float = 0.1, seed: int = 0,
                    min_history: int = 1, min_length: int = 3,
                    short_users: str = "train") -> ColdItemSplit:
    """Hold out a seeded ``fraction`` of the items entirely (see :class:`ColdItemSplit`).

    Args:
        data: the collaborative KG.
        fraction: share of the items with at least one interaction to hold out (at least one).
        seed: seeds the choice of cold items.
        min_history: fewest warm items a cold test user must have before their first cold one.
        min_length, short_users: of the warm :func:`leave_one_out`.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    if min_history < 1:
        raise ValueError(f"min_history must be >= 1, got {min_history}")
    n = int(data["item"].num_nodes)
    interacted = torch.unique(data[INTERACTS].edge_index[1])
    num_cold = max(1, int(round(fraction * interacted.numel())))
    if num_cold >= interacted.numel():
        raise ValueError(f"holding out {num_cold} of {interacted.numel()} interacted items "
                         "leaves nothing to train on")
    generator = torch.Generator().manual_seed(int(seed))
    chosen = interacted[torch.randperm(interacted.numel(), generator=generator)[:num_cold]]
    is_cold = torch.zeros(n, dtype=torch.bool)
    is_cold[chosen] = True
    order = torch.cat([(~is_cold).nonzero().view(-1), is_cold.nonzero().view(-1)])
    num_warm = n - num_cold
    full = reorder_items(data, order)
    warm_graph = first_items(full, num_warm)
    warm = leave_one_out(warm_graph, min_length=min_length, short_users=short_users)

    seqs = user_sequences(full)
    rows, inputs = [], []
    for u in range(len(seqs)):
        items = seqs[u]
        cold_pos = (items >= num_warm).nonzero().view(-1)
        if cold_pos.numel() and int(cold_pos[0]) >= min_history:
            p = int(cold_pos[0])
            rows.append((u, int(items[p])))
            inputs.append(items[:p])
    cold_inputs = Sequences.from_lists([x.tolist() for x in inputs], n,
                                       users=torch.tensor([u for u, _ in rows], dtype=torch.long))
    cold_targets = torch.tensor([t for _, t in rows], dtype=torch.long)
    cold_edges = data[INTERACTS].edge_index[1]
    users_with_cold = torch.unique(data[INTERACTS].edge_index[0][is_cold[cold_edges]])
    report = dict(warm.report)
    report.update({
        "items": n, "cold_items": num_cold, "warm_items": num_warm,
        "cold_fraction": fraction, "cold_seed": int(seed),
        "cold_interactions_removed": int(is_cold[cold_edges].sum()),
        "users_with_a_cold_item": int(users_with_cold.numel()),
        "cold_test_users": len(rows),
        "cold_users_without_history": int(users_with_cold.numel()) - len(rows),
    })
    return ColdItemSplit(warm.train, warm.valid_inputs, warm.valid_targets, warm.test_inputs,
                         warm.test_targets, report, warm.graph, warm.train_interactions,
                         full_graph=full, original_items=order, num_warm=num_warm,
                         cold_inputs=cold_inputs, cold_targets=cold_targets,
                         cold_users=cold_inputs.users)
