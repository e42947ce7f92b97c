r"""Sampled-negative evaluation: rank each target among ``n`` sampled negatives.

This protocol is *not* comparable with full ranking (Krichene & Rendle, 2020, "On Sampled Metrics
for Item Recommendation"): metrics are inflated and can even reorder models. Every key it returns
is therefore prefixed with its protocol, ``"sampled-100/HR@10"`` (uniform negatives) or
``"sampled-pop-100/HR@10"`` (popularity negatives), while full-ranking keys stay plain
(``"HR@10"``), so the two can never be mistaken for each other.

Negatives (:func:`sample_negatives`). For user :math:`u` with history :math:`S_u` and target
:math:`y_u`, the candidates are :math:`C_u = \{0..N-1\} \setminus (S_u \cup \{y_u\})`; ``n``
distinct items are drawn from :math:`C_u` without replacement, each successive draw with
probability proportional to :math:`w_j` among the items not drawn yet (:math:`w_j = 1` for
``"uniform"``, :math:`w_j = \mathrm{popularity}_j` for ``"popularity"``). Items of weight 0 are
never drawn; too few candidates raise :class:`ValueError`.

Two exact samplers produce that distribution and the cheaper one is chosen per user:

* rejection: i.i.d. draws from :math:`w` over all items, dropping forbidden items and repeats and
  keeping the first ``n`` survivors (extending the stream until ``n`` survive) — used when every
  draw survives with probability at least 1/4, i.e.
  :math:`(W - w(S_u \cup \{y_u\}) - w(\text{n heaviest items})) / W \ge 1/4`, :math:`O(n)` a user;
* dense: :func:`torch.multinomial` without replacement over the masked ``[users, N]`` weights
  (users with long histories or small catalogues).

Everything is drawn from one ``torch.Generator`` seeded with ``seed`` in a fixed order, so the
negatives are a deterministic function of the inputs and the seed (on any machine for CPU torch).

Ranking. With candidate scores :math:`s_{u,y_u}` and :math:`s_{u,j}`, :math:`j \in` negatives,
the rank counts are :math:`g_u = |\{j : s_{u,j} > s_{u,y_u}\}|` and
:math:`t_u = |\{j : s_{u,j} = s_{u,y_u}\}|`, and the metrics and tie rules are those of
:mod:`kgseqgraph.evaluation.metrics` over the :math:`n + 1` candidates.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch import Tensor

from ..utils.progress import progress_enabled
from .full_ranking import _check_chunk, resolve_chunk_size
from .metrics import (
    DEFAULT_KS,
    ExcludeLike,
    Exclusion,
    RankCounts,
    TieRule,
    _check_ks,
    _check_ties,
    _mean,
    _unique_sorted,
    metrics_from_counts,
    rank_counts,
    ranks_from_counts,
)

__all__ = ["STRATEGIES", "sample_negatives", "evaluate_sampled", "sampled_counts",
           "sampled_protocol"]

log = logging.getLogger("kgseqgraph")

STRATEGIES: tuple[str, ...] = ("uniform", "popularity")
Strategy = Literal["uniform", "popularity"]

_MIN_SURVIVAL = 0.25  # rejection sampling only where a draw survives with probability >= 1/4
_CHUNK_ELEMENTS = 1 << 20  # elements of a [users, draws] or [users, N] block
_ROUND_SLACK, _ROUND_EXTRA = 1.25, 8  # draws a round: ceil(slack * n / survival) + extra


def sampled_protocol(n: int, strategy: Strategy = "uniform") -> str:
    """The label of a sampled protocol: ``"sampled-100"`` (uniform) or ``"sampled-pop-100"``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    return f"sampled-{n}" if strategy == "uniform" else f"sampled-pop-{n}"


def _check_targets(targets: Tensor, num_items: int | None) -> Tensor:
    targets = torch.as_tensor(targets)
    if targets.dtype.is_floating_point or targets.dtype == torch.bool or targets.dim() != 1:
        raise ValueError(f"targets must be a 1-D integer tensor [B], got dtype {targets.dtype} "
                         f"shape {tuple(targets.shape)}")
    if targets.numel() == 0:
        raise ValueError("no users (targets is empty)")
    hi = num_items if num_items is not None else None
    if int(targets.min()) < 0 or (hi is not None and int(targets.max()) >= hi):
        raise ValueError(f"targets must lie in [0, {hi}); got [{int(targets.min())}, "
                         f"{int(targets.max())}]")
    return targets.long().cpu()


def _weights(num_items: int, strategy: str, popularity: Tensor | None) -> Tensor:
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy == "uniform":
        if popularity is not None:
            raise ValueError("popularity is only used with strategy='popularity'")
        return torch.ones(num_items, dtype=torch.float64)
    if popularity is None:
        raise ValueError("strategy='popularity' needs `popularity` (a [N] tensor of item counts "
                         "or weights)")
    w = torch.as_tensor(popularity).detach().to("cpu", torch.float64).reshape(-1)
    if w.numel() != num_items:
        raise ValueError(f"popularity has {w.numel()} entries, expected num_items = {num_items}")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or float(w.sum()) <= 0:
        raise ValueError("popularity must be finite, non-negative and not all zero")
    return w


def sample_negatives(num_items: int, targets: Tensor, history: ExcludeLike = None, n: int = 100,
                     strategy: Strategy = "uniform", popularity: Tensor | None = None,
                     seed: int = 0) -> Tensor:
    """Draw ``n`` distinct negatives per user, never from the user's history or the target.

    Args:
        num_items: catalogue size ``N``.
        targets: ``[B]`` target items.
        history: per-user items that must not be drawn (CSR pair, list of tensors, object with
            ``.ptr/.items`` such as :class:`~kgseqgraph.data.Sequences`, or bool mask ``[B, N]``).
        n: negatives per user.
        strategy: ``"uniform"`` or ``"popularity"`` (draws proportional to ``popularity``).
        popularity: ``[N]`` non-negative weights (e.g. training interaction counts) for
            ``strategy="popularity"``.
        seed: seed of the generator; same inputs and seed give the same negatives.

    Returns:
        ``[B, n]`` int64 on the CPU; row ``u`` holds distinct items, in draw order.

    Raises:
        ValueError: when a user has fewer than ``n`` candidates (of positive weight).
    """
    if isinstance(num_items, bool) or int(num_items) != num_items or num_items < 1:
        raise ValueError(f"num_items must be a positive integer, got {num_items!r}")
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    num_items, n = int(num_items), int(n)
    targets = _check_targets(targets, num_items)
    w = _weights(num_items, strategy, popularity)
    b = targets.numel()

    # forbidden (user, item) keys: history and target, deduplicated and sorted
    ex = Exclusion.from_any(history, b, num_items)
    rows = torch.arange(b)
    keys = rows * num_items + targets
    if ex is not None:
        hr, hi = ex.pairs(torch.device("cpu"))
        keys = torch.cat([keys, hr * num_items + hi])
    fkeys = _unique_sorted(keys)
    f_row, f_item = fkeys // num_items, fkeys % num_items

    positive = w > 0
    allowed = int(positive.sum()) - torch.bincount(f_row, weights=positive[f_item].double(),
                                                   minlength=b).long()
    short = (allowed < n).nonzero().view(-1)
    if short.numel():
        u = int(short[0])
        raise ValueError(f"{short.numel()} user(s) have fewer than n = {n} candidate negatives "
                         f"(user {u}: {int(allowed[u])} items outside its history and target"
                         f"{' with positive popularity' if strategy == 'popularity' else ''}); "
                         "lower n or use full ranking")

    total = float(w.sum())
    heavy = float(torch.topk(w, min(n, num_items)).values.sum())
    f_mass = torch.zeros(b, dtype=torch.float64).index_add_(0, f_row, w[f_item])
    survival = (total - f_mass - heavy) / total
    use_rejection = survival >= _MIN_SURVIVAL

    gen = torch.Generator().manual_seed(int(seed))
    out = torch.empty(b, n, dtype=torch.long)
    rej_rows = use_rejection.nonzero().view(-1)
    dense_rows = (~use_rejection).nonzero().view(-1)
    if rej_rows.numel():
        _rejection(out, rej_rows, survival, fkeys, w, strategy, n, num_items, gen)
    if dense_rows.numel():
        _dense(out, dense_rows, f_row, f_item, w, n, num_items, gen)
    log.debug("sampled %d x %d negatives (%s): %d users by rejection, %d dense", b, n, strategy,
              rej_rows.numel(), dense_rows.numel())
    return out


def _draw(rows: int, cols: int, w: Tensor, strategy: str, num_items: int,
          gen: torch.Generator) -> Tensor:
    if strategy == "uniform":
        return torch.randint(0, num_items, (rows, cols), generator=gen)
    return torch.multinomial(w, rows * cols, replacement=True, generator=gen).view(rows, cols)


def _rejection(out: Tensor, rows: Tensor, survival: Tensor, fkeys: Tensor, w: Tensor,
               strategy: str, n: int, num_items: int, gen: torch.Generator) -> None:
    """First ``n`` surviving i.i.d. draws per user (drops forbidden items and repeats)."""
    p = float(survival[rows].min())
    draws = math.ceil(_ROUND_SLACK * n / p) + _ROUND_EXTRA  # usually one round is enough
    step = max(1, _CHUNK_ELEMENTS // draws)
    for s in range(0, rows.numel(), step):
        pend = rows[s:s + step]
        cand = _draw(pend.numel(), draws, w, strategy, num_items, gen)
        while pend.numel():
            key = pend.view(-1, 1) * num_items + cand
            pos = torch.searchsorted(fkeys, key).clamp_(max=fkeys.numel() - 1)
            forbidden = fkeys[pos] == key
            srt, perm = torch.sort(cand, dim=1, stable=True)  # stable: first draw kept
            dup_sorted = torch.zeros_like(forbidden)
            dup_sorted[:, 1:] = srt[:, 1:] == srt[:, :-1]
            dup = torch.empty_like(forbidden).scatter_(1, perm, dup_sorted)
            valid = ~forbidden & ~dup
            csum = valid.cumsum(1)
            ok = csum[:, -1] >= n
            if bool(ok.any()):
                take = valid[ok] & (csum[ok] <= n)
                out[pend[ok]] = cand[ok][take].view(-1, n)
            pend, cand = pend[~ok], cand[~ok]
            if pend.numel():  # extend the same streams: still exact successive sampling
                cand = torch.cat([cand, _draw(pend.numel(), draws, w, strategy, num_items, gen)],
                                 dim=1)


def _dense(out: Tensor, rows: Tensor, f_row: Tensor, f_item: Tensor, w: Tensor, n: int,
           num_items: int, gen: torch.Generator) -> None:
    """``torch.multinomial`` without replacement over masked weights, a block of users at a time."""
    local = torch.full((out.size(0),), -1, dtype=torch.long)
    step = max(1, _CHUNK_ELEMENTS // num_items)
    for s in range(0, rows.numel(), step):
        block = rows[s:s + step]
        local[block] = torch.arange(block.numel())
        pos = local[f_row]
        sel = pos >= 0
        wts = w.repeat(block.numel())  # flat [users * N], masked by flat index
        wts[pos[sel] * num_items + f_item[sel]] = 0.0
        wts = wts.view(block.numel(), num_items)
        out[block] = torch.multinomial(wts, n, replacement=False, generator=gen)
        local[block] = -1


# ----------------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------------
def _check_negatives(negatives: Tensor, targets: Tensor, num_items: int | None) -> Tensor:
    negatives = torch.as_tensor(negatives)
    if negatives.dtype.is_floating_point or negatives.dtype == torch.bool or negatives.dim() != 2:
        raise ValueError("negatives must be an integer tensor [B, n], got dtype "
                         f"{negatives.dtype} shape {tuple(negatives.shape)}")
    if negatives.size(0) != targets.numel() or negatives.size(1) < 1:
        raise ValueError(f"negatives must have shape [B = {targets.numel()}, n >= 1], got "
                         f"{tuple(negatives.shape)}")
    negatives = negatives.long().cpu()
    if int(negatives.min()) < 0 or (num_items is not None and int(negatives.max()) >= num_items):
        raise ValueError(f"negatives must lie in [0, {num_items}); got "
                         f"[{int(negatives.min())}, {int(negatives.max())}]")
    if bool((negatives == targets.view(-1, 1)).any()):
        raise ValueError("some negatives equal their user's target; sample them with "
                         "sample_negatives(), which never draws the target")
    srt = negatives.sort(dim=1).values
    if bool((srt[:, 1:] == srt[:, :-1]).any()):
        raise ValueError("negatives repeat an item within a user; sample them without "
                         "replacement (sample_negatives())")
    return negatives


def sampled_counts(scores: Tensor | Callable[..., Tensor], targets: Tensor, negatives: Tensor,
                   chunk_size: int | None = None, score_candidates: bool = False,
                   progress: bool = False, desc: str | None = None,
                   num_items: int | None = None) -> RankCounts:
    """Rank counts of each target among its negatives (what :func:`evaluate_sampled` turns into
    metrics); the arguments are those of :func:`evaluate_sampled` (``desc``: the progress bar's
    label). Integer counters, so the counts of blocks of users concatenate exactly.

    Returns:
        :class:`~kgseqgraph.evaluation.metrics.RankCounts` on the CPU, over the ``1 + n``
        candidates of each user.
    """
    n_items = scores.size(1) if isinstance(scores, Tensor) and not score_candidates else None
    # full-catalogue score blocks follow the same memory budget as full ranking
    chunk_size = resolve_chunk_size(chunk_size, None if score_candidates
                                    else (n_items if n_items is not None else num_items))
    targets = _check_targets(targets, n_items)
    negatives = _check_negatives(negatives, targets, n_items)
    b, n = negatives.shape
    candidates = torch.cat([targets.view(-1, 1), negatives], dim=1)  # the target is column 0

    def block(start: int, end: int) -> Tensor:
        if isinstance(scores, Tensor):
            part = scores[start:end]
        elif score_candidates:
            part = scores(start, end, candidates[start:end])
        else:
            part = scores(start, end)
        if not isinstance(part, Tensor) or part.dim() != 2 or part.size(0) != end - start:
            raise ValueError(f"scores for users {start}…{end - 1} must be a [{end - start}, "
                             f"{'1 + n' if score_candidates else 'N'}] tensor, got "
                             f"{tuple(getattr(part, 'shape', ()))}")
        if score_candidates:
            if part.size(1) != n + 1:
                raise ValueError(f"candidate scores must have 1 + n = {n + 1} columns, got "
                                 f"{part.size(1)}")
            return part.detach()
        if int(candidates[start:end].max()) >= part.size(1):
            raise ValueError(f"candidate ids reach {int(candidates[start:end].max())} but the "
                             f"scores have only {part.size(1)} item columns")
        return part.detach().gather(1, candidates[start:end].to(part.device))

    bar = None
    if not isinstance(scores, Tensor) and progress_enabled(progress):
        from tqdm.auto import tqdm

        bar = tqdm(total=b, unit="user", desc=desc or sampled_protocol(n), leave=False)
    parts: list[RankCounts] = []
    try:
        for start in range(0, b, chunk_size):
            end = min(start + chunk_size, b)
            cand_scores = block(start, end)
            zero = torch.zeros(end - start, dtype=torch.long, device=cand_scores.device)
            c = rank_counts(cand_scores, zero)
            parts.append(RankCounts(c.greater.cpu(), c.ties.cpu()))
            if bar is not None:
                bar.update(end - start)
    finally:
        if bar is not None:
            bar.close()
    return RankCounts.cat(parts)


def evaluate_sampled(scores: Tensor | Callable[..., Tensor], targets: Tensor, negatives: Tensor,
                     ks: Iterable[int] = DEFAULT_KS, ties: TieRule = "pessimistic",
                     chunk_size: int | None = None, protocol: str | None = None,
                     score_candidates: bool = False, progress: bool = False,
                     return_per_user: bool = False, num_items: int | None = None,
                     ) -> dict[str, float] | tuple[dict[str, float], dict[str, Tensor]]:
    """Rank each target among its sampled negatives; keys are ``"<protocol>/<metric>"``.

    Args:
        scores: one of
            * a ``[B, N]`` score matrix of all items;
            * ``score_fn(start, end) -> [end - start, N]`` (the full-ranking contract);
            * with ``score_candidates=True``: ``[B, 1 + n]`` candidate scores, or
              ``score_fn(start, end, candidates) -> [end - start, 1 + n]`` where
              ``candidates = [target, *negatives]`` per user (for models that score a candidate
              list only, e.g. LLM re-rankers).
        targets: ``[B]`` target items.
        negatives: ``[B, n]`` distinct negatives per user, none equal to the target (from
            :func:`sample_negatives`).
        ks: cut-offs (``k > n`` gives 1 for HR).
        ties: tie rule, as in :mod:`kgseqgraph.evaluation.metrics`.
        chunk_size: users scored at a time when ``scores`` is a function; ``None``: as many as
            keep a ``[chunk, N]`` score block within the full-ranking memory budget
            (:func:`~kgseqgraph.evaluation.full_ranking.resolve_chunk_size`; 1,024 when the
            catalogue size is unknown or the function scores candidates only).
        protocol: key prefix; default ``"sampled-<n>"``. Must start with ``"sampled"``; pass
            :func:`sampled_protocol` ``(n, "popularity")`` for popularity negatives.
        score_candidates: ``scores`` holds / returns candidate scores (see above).
        progress: tqdm bar when ``scores`` is a function (terminal only, not in CI).
        return_per_user: also return per-user values (same prefixed keys, plus
            ``"<protocol>/rank"``).
        num_items: catalogue size ``N`` for a ``score_fn`` (sizes the default chunk).

    Returns:
        ``{"sampled-100/HR@10": …, "sampled-100/NDCG@10": …, …, "sampled-100/MRR": …}``.
    """
    ks = _check_ks(ks)
    _check_ties(ties)
    if protocol is not None and not str(protocol).startswith("sampled"):
        raise ValueError(f"protocol must start with 'sampled' (got {protocol!r}) so sampled "
                         "metrics are never mistaken for full-ranking ones")
    counts = sampled_counts(scores, targets, negatives, chunk_size, score_candidates, progress,
                            desc=protocol, num_items=num_items)
    n = int(torch.as_tensor(negatives).size(1))
    protocol = sampled_protocol(n) if protocol is None else str(protocol)
    per_user = {f"{protocol}/{k}": v for k, v in metrics_from_counts(counts, ks, ties).items()}
    means = _mean(per_user)
    if return_per_user:
        per_user[f"{protocol}/rank"] = ranks_from_counts(counts, ties)
        return means, per_user
    return means
