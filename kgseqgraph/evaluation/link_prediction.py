r"""Filtered link prediction metrics for knowledge-graph embeddings.

For each held-out triple :math:`(h, r, t)` every node is a candidate tail; the other known tails
of :math:`(h, r)` (from train, valid and test) are removed (the *filtered* setting of Bordes et
al., 2013). A KGE model gives distances (lower = more plausible), so with :math:`g` the candidates
strictly closer than the target and :math:`u` the other candidates at the same distance, the
target's rank counts are :math:`(g, u)` and the metrics and tie rules are the library's
(:func:`~kgseqgraph.evaluation.metrics.metrics_from_counts`): pessimistic ties give
:math:`\mathrm{rank} = 1 + g + u`,

.. math::
    \mathrm{MRR} = \frac{1}{|T|}\sum \frac{1}{\mathrm{rank}}, \qquad
    \mathrm{Hits@}k = \frac{1}{|T|}\sum [\mathrm{rank} \le k].

A scorer that ranks uniformly at random among :math:`n` remaining candidates has
:math:`\mathbb{E}[1/\mathrm{rank}] = H_n / n` and :math:`P(\mathrm{rank}\le k) = \min(k, n)/n`;
:func:`random_baseline` averages these over the test triples.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .metrics import RankCounts, TieRule, _check_ties, metrics_from_counts, ranks_from_counts

__all__ = ["filtered_rank_counts", "link_prediction_metrics", "random_baseline"]


@torch.no_grad()
def filtered_rank_counts(model: Any, head: Tensor, relation: Tensor, tail: Tensor,
                         filter_index: Any, batch_size: int = 512) -> tuple[RankCounts, Tensor]:
    """Filtered rank counts of each true tail among all nodes (see the module docstring).

    Args:
        model: a KGE model with ``score_all_tails(head, relation) -> [B, num_nodes]`` distances
            (lower = better) and ``num_nodes`` (:class:`~kgseqgraph.nn.kge.KGEModel`).
        head, relation, tail: the test triples.
        filter_index: every known triple (train + valid + test),
            a :class:`~kgseqgraph.data.triples.TripleIndex`; their tails other than the target are
            removed from the candidates.
        batch_size: test triples scored at once (memory ∝ ``batch_size × num_nodes``).

    Returns:
        ``(counts, num_candidates)``: :class:`~kgseqgraph.evaluation.metrics.RankCounts` and,
        per triple, the target plus the unfiltered nodes (what a random scorer ranks among).
    """
    was_training = model.training
    model.eval()
    greater, ties, cands = [], [], []
    try:
        for s in range(0, head.numel(), batch_size):
            h, r, t = head[s:s + batch_size], relation[s:s + batch_size], tail[s:s + batch_size]
            d = model.score_all_tails(h, r)
            target = d.gather(1, t.view(-1, 1))
            q, known = filter_index.true_tails(h, r)
            d[q, known] = float("inf")
            d.scatter_(1, t.view(-1, 1), target)  # the target itself stays a candidate
            n_filtered = torch.bincount(q, minlength=h.numel())
            is_known = filter_index.contains(h, r, t).long()  # the target, when known, counted back
            greater.append((d < target).sum(1).long().cpu())
            ties.append(((d == target).sum(1) - 1).long().cpu())
            cands.append((model.num_nodes - n_filtered + is_known).cpu())
    finally:
        model.train(was_training)
    return RankCounts(torch.cat(greater), torch.cat(ties)), torch.cat(cands)


def link_prediction_metrics(counts: RankCounts, ks: tuple[int, ...] = (1, 3, 10),
                            ties: TieRule = "pessimistic") -> dict[str, float]:
    """``mrr``, ``hits@k`` and ``mean_rank`` from filtered rank counts, by the library's metric
    code (``hits@k`` is ``HR@k``)."""
    _check_ties(ties)
    per = metrics_from_counts(counts, tuple(ks), ties)
    out = {"mrr": float(per["MRR"].mean())}
    for k in ks:
        out[f"hits@{k}"] = float(per[f"HR@{k}"].mean())
    out["mean_rank"] = float(ranks_from_counts(counts, ties).mean())
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
