r"""Filtered link prediction for the KGE models of :mod:`kgseqgraph.nn.kge`: a leak-free triple
split, a small seeded training loop, filtered ranks, MRR / Hits@k, and the exact figures of a
random scorer for comparison.

Protocol. For each held-out triple :math:`(h, r, t)` every node is a candidate tail; the other
known tails of :math:`(h, r)` (from train, valid and test) are removed (*filtered* setting of
Bordes et al., 2013) and

.. math::
    \mathrm{rank} = 1 + |\{t' : f(h, r, t') < f(h, r, t)\}|
    + |\{t' \ne t : f(h, r, t') = f(h, r, t)\}| \quad (\text{pessimistic ties}),

    \mathrm{MRR} = \frac{1}{|T|}\sum \frac{1}{\mathrm{rank}}, \qquad
    \mathrm{Hits@}k = \frac{1}{|T|}\sum [\mathrm{rank} \le k].

A scorer that ranks uniformly at random among :math:`n` remaining candidates has
:math:`\mathbb{E}[1/\mathrm{rank}] = H_n / n` and :math:`P(\mathrm{rank}\le k) = \min(k, n)/n`;
:func:`random_baseline` averages these over the test triples.

The split (:func:`split_triples`) assigns whole *node pairs* to train/valid/test: every triple
between the same two nodes — the fact, its ``rev_`` copy, and inverse relations already present in
the source KG (Freebase's ``film.film.genre`` / ``film.film_genre.films_in_this_genre``) — lands
in the same part, so a held-out fact cannot leak through its reverse.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from .kge import KGEModel, TripleIndex, Triples, kg_triples, sample_negative_tails

__all__ = [
    "KGSplit",
    "split_triples",
    "KGETrainConfig",
    "train_kge",
    "LinkPredictionResult",
    "filtered_ranks",
    "rank_metrics",
    "random_baseline",
    "run_link_prediction",
]

log = logging.getLogger("kgseqgraph")


@dataclass
class KGSplit:
    """Indices into a :class:`~kgseqgraph.nn.kge.Triples` for train / valid / test."""

    train: Tensor
    valid: Tensor
    test: Tensor

    def sizes(self) -> dict[str, int]:
        return {"train": int(self.train.numel()), "valid": int(self.valid.numel()),
                "test": int(self.test.numel())}


def split_triples(triples: Triples, ratios: tuple[float, float, float] = (0.9, 0.05, 0.05),
                  seed: int = 0, group_node_pairs: bool = True) -> KGSplit:
    r"""Seeded train/valid/test split of KG triples.

    Args:
        triples: the triples (with reverse relations, as :func:`~kgseqgraph.nn.kge.kg_triples`
            returns them).
        ratios: fractions for train, valid and test (must sum to 1).
        seed: seed of the permutation.
        group_node_pairs: split unordered node pairs :math:`\{h, t\}` rather than single triples,
            so both directions of a fact (and inverse relations) stay in the same part.
    """
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise ValueError(f"ratios must be three non-negative fractions summing to 1, got {ratios}")
    h, t = triples.head, triples.tail
    if group_node_pairs:
        lo, hi = torch.minimum(h, t), torch.maximum(h, t)
        _, group = torch.unique(lo * triples.num_nodes + hi, return_inverse=True)
    else:
        group = torch.arange(h.numel())
    n_groups = int(group.max()) + 1 if group.numel() else 0
    gen = torch.Generator().manual_seed(seed)
    part_of_rank = torch.empty(n_groups, dtype=torch.long)
    perm = torch.randperm(n_groups, generator=gen)
    n_train = int(round(ratios[0] * n_groups))
    n_valid = int(round(ratios[1] * n_groups))
    part_of_rank[perm[:n_train]] = 0
    part_of_rank[perm[n_train:n_train + n_valid]] = 1
    part_of_rank[perm[n_train + n_valid:]] = 2
    part = part_of_rank[group]
    return KGSplit(*(torch.nonzero(part == p).view(-1) for p in range(3)))


@dataclass
class KGETrainConfig:
    """Settings of :func:`train_kge`."""

    epochs: int = 5
    batch_size: int = 1024
    lr: float = 5e-3
    filtered_negatives: bool = True
    seed: int = 0
    max_steps: int | None = None  # stop early after this many optimiser steps (tests, smoke runs)


def train_kge(model: KGEModel, triples: Triples, config: KGETrainConfig | None = None,
              index: Tensor | None = None, filter_index: TripleIndex | None = None,
              on_epoch_end: Callable[[int, float], bool | None] | None = None) -> list[float]:
    """Train ``model`` on ``triples[index]`` with Adam and KGAT's pairwise loss.

    Args:
        model: a :class:`~kgseqgraph.nn.kge.KGEModel`.
        triples: all triples.
        config: training settings.
        index: the training triples (default: all).
        filter_index: known triples that negatives must avoid (default: the training triples,
            when ``config.filtered_negatives``).
        on_epoch_end: called as ``on_epoch_end(epoch, mean_loss)`` after every epoch (epochs
            count from 1); returning ``True`` stops training (early stopping).

    Returns:
        The mean loss of every epoch.
    """
    cfg = config or KGETrainConfig()
    idx = torch.arange(triples.head.numel()) if index is None else index
    h, r, t = triples.head[idx], triples.relation[idx], triples.tail[idx]
    if h.numel() == 0:
        raise ValueError("no training triples")
    if cfg.filtered_negatives and filter_index is None:
        filter_index = TripleIndex(h, r, t, triples.num_nodes, triples.num_relations)
    if not cfg.filtered_negatives:
        filter_index = None
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    model.train()
    history, step = [], 0
    for epoch in range(cfg.epochs):
        perm = torch.randperm(h.numel(), generator=gen)
        total, n = 0.0, 0
        t0 = time.perf_counter()
        for b in perm.split(cfg.batch_size):
            neg = sample_negative_tails(h[b], r[b], t[b], triples.num_nodes, generator=gen,
                                        filter_index=filter_index)
            loss = model.loss(h[b], r[b], t[b], neg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * b.numel()
            n += b.numel()
            step += 1
            if cfg.max_steps is not None and step >= cfg.max_steps:
                break
        history.append(total / max(n, 1))
        log.info("kge epoch %d: loss %.4f (%.1fs)", epoch + 1, history[-1], time.perf_counter() - t0)
        if cfg.max_steps is not None and step >= cfg.max_steps:
            break
        if on_epoch_end is not None and on_epoch_end(epoch + 1, history[-1]):
            break
        model.train()  # the callback may have evaluated the model
    return history


@torch.no_grad()
def filtered_ranks(model: KGEModel, head: Tensor, relation: Tensor, tail: Tensor,
                   filter_index: TripleIndex, batch_size: int = 512,
                   ties: str = "pessimistic") -> tuple[Tensor, Tensor]:
    """Filtered rank of each true tail among all nodes (see the module docstring).

    Args:
        model: scores candidates with ``score_all_tails`` (lower = better).
        head, relation, tail: the test triples.
        filter_index: every known triple (train + valid + test); their tails other than the
            target are removed from the candidates.
        batch_size: test triples scored at once (memory ∝ ``batch_size × num_nodes``).
        ties: ``"pessimistic"`` (ties rank ahead of the target) or ``"expected"`` (half of them).

    Returns:
        ``(rank, num_candidates)``, both ``[T]``; ``num_candidates`` counts the target and the
        unfiltered nodes (what a random scorer would rank among).
    """
    if ties not in {"pessimistic", "expected"}:
        raise ValueError(f"ties must be 'pessimistic' or 'expected', got {ties!r}")
    was_training = model.training
    model.eval()
    ranks, cands = [], []
    for s in range(0, head.numel(), batch_size):
        h, r, t = head[s:s + batch_size], relation[s:s + batch_size], tail[s:s + batch_size]
        d = model.score_all_tails(h, r)
        target = d.gather(1, t.view(-1, 1))
        q, known = filter_index.true_tails(h, r)
        d[q, known] = float("inf")
        d.scatter_(1, t.view(-1, 1), target)  # the target itself stays a candidate
        n_filtered = torch.bincount(q, minlength=h.numel())
        # The target is itself a known triple when it is in filter_index; count it back.
        is_known = filter_index.contains(h, r, t).long()
        better = (d < target).sum(1)
        tied = (d == target).sum(1) - 1
        rank = 1 + better + (tied if ties == "pessimistic" else tied / 2)
        ranks.append(rank.double())
        cands.append(model.num_nodes - n_filtered + is_known)
    model.train(was_training)
    return torch.cat(ranks), torch.cat(cands)


def rank_metrics(rank: Tensor, ks: tuple[int, ...] = (1, 3, 10)) -> dict[str, float]:
    """MRR and Hits@k of a rank vector."""
    rank = rank.double()
    out = {"mrr": float((1.0 / rank).mean())}
    for k in ks:
        out[f"hits@{k}"] = float((rank <= k).double().mean())
    out["mean_rank"] = float(rank.mean())
    return out


def random_baseline(num_candidates: Tensor, ks: tuple[int, ...] = (1, 3, 10)) -> dict[str, float]:
    r"""Expected MRR / Hits@k / mean rank of a uniformly random scorer, computed exactly:
    :math:`\mathbb{E}[1/\mathrm{rank}] = H_n/n`, :math:`P(\mathrm{rank} \le k) = \min(k,n)/n`,
    :math:`\mathbb{E}[\mathrm{rank}] = (n+1)/2`, averaged over the test triples."""
    n = num_candidates.double()
    if (n < 1).any():
        raise ValueError("every test triple needs at least one candidate")
    nmax = int(n.max())
    harmonic = torch.cumsum(1.0 / torch.arange(1, nmax + 1, dtype=torch.float64), 0)
    out = {"mrr": float((harmonic[num_candidates.long() - 1] / n).mean())}
    for k in ks:
        out[f"hits@{k}"] = float((n.clamp(max=k) / n).mean())
    out["mean_rank"] = float(((n + 1) / 2).mean())
    return out


@dataclass
class LinkPredictionResult:
    """What :func:`run_link_prediction` measured."""

    model: str
    split: dict[str, int]
    config: dict
    loss_history: list[float]
    valid: dict[str, float]
    test: dict[str, float]
    random_test: dict[str, float]
    train_seconds: float
    eval_seconds: float
    extra: dict = field(default_factory=dict)


def run_link_prediction(model: KGEModel, graph: object, config: KGETrainConfig | None = None, *,
                        ratios: tuple[float, float, float] = (0.9, 0.05, 0.05),
                        split_seed: int = 0, node_types=("item", "entity"),
                        ks: tuple[int, ...] = (1, 3, 10), select_on_valid: bool = True,
                        patience: int | None = 2) -> LinkPredictionResult:
    """Split ``graph``'s triples, train ``model`` on the train part, and report filtered MRR /
    Hits@k on valid and test next to the random scorer's expected figures (test is seen once).

    Args:
        model: an untrained :class:`~kgseqgraph.nn.kge.KGEModel` sized for ``graph``.
        graph: anything :func:`~kgseqgraph.nn.kge.kg_triples` accepts.
        config: training settings.
        ratios: train/valid/test fractions of node pairs.
        split_seed: seed of the split.
        node_types: node types of a ``HeteroData`` graph.
        ks: cut-offs for Hits@k.
        select_on_valid: evaluate on valid after every epoch and keep the parameters of the best
            epoch (valid MRR); test is evaluated once, at the end, on the selected model.
        patience: stop after this many epochs without a better valid MRR (``None``: never).
    """
    cfg = config or KGETrainConfig()
    tr = kg_triples(graph, node_types=node_types)
    if model.num_nodes != tr.num_nodes or model.num_relations != tr.num_relations:
        raise ValueError(f"model is sized for {model.num_nodes} nodes / {model.num_relations} "
                         f"relations, the graph has {tr.num_nodes} / {tr.num_relations}")
    split = split_triples(tr, ratios, seed=split_seed)
    everything = TripleIndex(tr.head, tr.relation, tr.tail, tr.num_nodes, tr.num_relations)

    def ranks(idx: Tensor) -> tuple[Tensor, Tensor]:
        return filtered_ranks(model, tr.head[idx], tr.relation[idx], tr.tail[idx], everything)

    def evaluate(idx: Tensor) -> tuple[dict[str, float], Tensor]:
        rank, n = ranks(idx)
        return rank_metrics(rank, ks), n

    best = {"mrr": -1.0, "epoch": 0, "state": None, "bad": 0}
    curve: list[dict[str, float]] = []
    eval_time = [0.0]

    def select(epoch: int, loss: float) -> bool:
        t = time.perf_counter()
        met, _ = evaluate(split.valid)
        eval_time[0] += time.perf_counter() - t
        curve.append({"epoch": epoch, "loss": loss, **met})
        log.info("kge epoch %d: valid mrr %.4f hits@10 %.4f", epoch, met["mrr"],
                 met.get("hits@10", float("nan")))
        if met["mrr"] > best["mrr"]:
            best.update(mrr=met["mrr"], epoch=epoch, bad=0,
                        state={k: v.detach().clone() for k, v in model.state_dict().items()})
            return False
        best["bad"] += 1
        return patience is not None and best["bad"] >= patience

    t0 = time.perf_counter()
    history = train_kge(model, tr, cfg, index=split.train,
                        on_epoch_end=select if select_on_valid else None)
    t1 = time.perf_counter()
    if select_on_valid and best["state"] is not None:
        model.load_state_dict(best["state"])
    valid, _ = evaluate(split.valid)
    test_rank, n = ranks(split.test)
    test = rank_metrics(test_rank, ks)
    t2 = time.perf_counter()
    seen = torch.zeros(tr.num_nodes, dtype=torch.bool)
    seen[tr.head[split.train]] = True
    seen[tr.tail[split.train]] = True
    unseen = ~(seen[tr.head[split.test]] & seen[tr.tail[split.test]])
    trained = ~unseen
    return LinkPredictionResult(
        model=repr(model), split=split.sizes(), config=asdict(cfg), loss_history=history,
        valid=valid, test=test, random_test=random_baseline(n, ks),
        train_seconds=t1 - t0 - eval_time[0], eval_seconds=t2 - t1 + eval_time[0],
        extra={"selected_epoch": best["epoch"] if select_on_valid else len(history),
               "valid_curve": curve,
               # test triples touching a node that no training triple mentions (its embedding
               # never trained): no model can rank these better than chance
               "test_with_untrained_node": float(unseen.double().mean()),
               "test_trained_nodes_only": rank_metrics(test_rank[trained], ks) if trained.any()
               else {},
               "random_test_trained_nodes_only": random_baseline(n[trained], ks)
               if trained.any() else {}})
