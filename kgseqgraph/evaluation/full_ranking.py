r"""Full-ranking evaluation streamed over chunks of users.

Every user's target is ranked against the whole catalogue (minus the user's excluded items, see
:mod:`kgseqgraph.evaluation.metrics`). Scores are requested ``chunk_size`` users at a time from
``score_fn(start, end) -> [end - start, N]``; each chunk is reduced at once to two int64 counters
per user (:class:`~kgseqgraph.evaluation.metrics.RankCounts`: items above the target, items tied
with it), and the metrics are computed from the concatenated counters at the end. Hence

* peak memory is the chunk's scores (:math:`\mathrm{chunk} \cdot N \cdot \mathrm{itemsize}`
  bytes, plus whatever ``score_fn`` allocates to produce them) plus a fixed comparison buffer of
  at most :math:`2^{20}` elements plus 16 bytes a user;
* by default (``chunk_size=None``) the chunk is sized from a memory budget,
  :func:`budgeted_chunk_size`: ``max_score_bytes`` (256 MiB) over
  :math:`N \cdot 4 \cdot 2` bytes a user (float32 scores, counted twice for the temporaries of
  the scorer), capped at 1,024 users — 335 users at :math:`N` = 100,000, 33 at 1,000,000, the cap
  up to :math:`N \approx` 32,000. A fixed chunk of 1,024 users would hold 4 GB of scores at
  :math:`N` = 1,000,000;
* the result is bit-for-bit the one of :func:`~kgseqgraph.evaluation.metrics.evaluate_scores` on
  the full ``[B, N]`` matrix, whatever the chunk size (the counters are integers and the final
  means are taken over the same per-user values in the same order).
"""
from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ..utils.progress import progress_enabled
from .metrics import (
    DEFAULT_KS,
    ExcludeLike,
    Exclusion,
    RankCounts,
    TieRule,
    _check_ks,
    _check_ties,
    _mean,
    metrics_from_counts,
    rank_counts,
    ranks_from_counts,
)

__all__ = ["ScoreFn", "evaluate_full_ranking", "full_ranking_counts",
           "budgeted_chunk_size", "resolve_chunk_size",
           "DEFAULT_MAX_SCORE_BYTES", "DEFAULT_MAX_CHUNK_SIZE"]

log = logging.getLogger("kgseqgraph")

ScoreFn = Callable[[int, int], Tensor]
"""``score_fn(start, end) -> Tensor[end - start, N]``: scores of every item for users
``start … end - 1`` (any device, any real dtype)."""


def _check_chunk(chunk_size: int) -> int:
    if isinstance(chunk_size, bool) or int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return int(chunk_size)


#: Default memory budget for one chunk's scores (256 MiB).
DEFAULT_MAX_SCORE_BYTES = 256 * 2**20
#: Most users a budgeted chunk holds (the scorer's own activations grow with the chunk too).
DEFAULT_MAX_CHUNK_SIZE = 1024
_SCORE_OVERHEAD = 2  # the [chunk, N] block is counted twice: scorers make one temporary of it


def budgeted_chunk_size(num_items: int, max_score_bytes: int = DEFAULT_MAX_SCORE_BYTES,
                        bytes_per_score: int = 4, overhead: int = _SCORE_OVERHEAD,
                        max_chunk_size: int | None = DEFAULT_MAX_CHUNK_SIZE) -> int:
    """Users per chunk whose ``[chunk, num_items]`` scores fit in ``max_score_bytes``:
    ``max(1, min(max_chunk_size, max_score_bytes // (num_items * bytes_per_score * overhead)))``.

    Example:
        >>> budgeted_chunk_size(100_000), budgeted_chunk_size(1_000_000), budgeted_chunk_size(500)
        (335, 33, 1024)
    """
    for name, value in (("num_items", num_items), ("max_score_bytes", max_score_bytes),
                        ("bytes_per_score", bytes_per_score), ("overhead", overhead)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    chunk = int(max_score_bytes) // (int(num_items) * int(bytes_per_score) * int(overhead))
    if max_chunk_size is not None:
        chunk = min(chunk, _check_chunk(max_chunk_size))
    return max(1, chunk)


def resolve_chunk_size(chunk_size: int | None, num_items: int | None,
                       max_score_bytes: int = DEFAULT_MAX_SCORE_BYTES) -> int:
    """``chunk_size`` when given (checked), else :func:`budgeted_chunk_size` of ``num_items``
    (``DEFAULT_MAX_CHUNK_SIZE`` when ``num_items`` is unknown)."""
    if chunk_size is not None:
        return _check_chunk(chunk_size)
    if num_items is None:
        return DEFAULT_MAX_CHUNK_SIZE
    return budgeted_chunk_size(num_items, max_score_bytes)


def full_ranking_counts(score_fn: ScoreFn, targets: Tensor, exclude: ExcludeLike = None,
                        chunk_size: int | None = None, progress: bool = False,
                        num_items: int | None = None,
                        max_score_bytes: int = DEFAULT_MAX_SCORE_BYTES) -> RankCounts:
    """Rank counts of every user, streaming ``score_fn`` over chunks of users.

    Args:
        score_fn: ``score_fn(start, end) -> [end - start, N]``.
        targets: ``[B]`` target items.
        exclude: per-user excluded items over *all* ``B`` users (CSR pair, list, object with
            ``.ptr/.items`` or bool mask ``[B, N]``); sliced per chunk.
        chunk_size: users scored at a time; ``None`` sizes the chunks from ``max_score_bytes``
            (:func:`budgeted_chunk_size`; when ``num_items`` is not given, the first user is
            scored alone to learn ``N``).
        progress: draw a tqdm bar (only on a terminal and outside CI).
        num_items: expected ``N`` (checked against every chunk); inferred from the first chunk
            when ``None``.
        max_score_bytes: memory budget of one chunk's scores when ``chunk_size`` is ``None``.

    Returns:
        :class:`~kgseqgraph.evaluation.metrics.RankCounts` on the CPU.
    """
    if chunk_size is not None:
        chunk_size = _check_chunk(chunk_size)
    elif num_items is not None:
        chunk_size = budgeted_chunk_size(num_items, max_score_bytes)
    targets = torch.as_tensor(targets)
    if targets.dim() != 1:
        raise ValueError(f"targets must be 1-D [B], got shape {tuple(targets.shape)}")
    b = targets.numel()
    if b == 0:
        raise ValueError("no users to evaluate (targets is empty)")
    ex_all: Exclusion | None = None
    parts: list[RankCounts] = []
    bar = None
    if progress_enabled(progress):
        from tqdm.auto import tqdm

        bar = tqdm(total=b, unit="user", desc="full ranking", leave=False)
    t0 = time.perf_counter()
    try:
        start = 0
        while start < b:
            # chunk_size is None only until the first chunk (one user) has told N
            end = min(start + (chunk_size or 1), b)
            scores = score_fn(start, end)
            if not isinstance(scores, Tensor) or scores.dim() != 2 or scores.size(0) != end - start:
                raise ValueError(f"score_fn({start}, {end}) must return a [{end - start}, N] "
                                 f"tensor, got {type(scores).__name__} "
                                 f"{tuple(getattr(scores, 'shape', ()))}")
            if num_items is None:
                num_items = scores.size(1)
                if chunk_size is None:
                    chunk_size = budgeted_chunk_size(max(num_items, 1), max_score_bytes)
            elif scores.size(1) != num_items:
                raise ValueError(f"score_fn({start}, {end}) returned {scores.size(1)} item "
                                 f"columns, expected {num_items}")
            if ex_all is None and exclude is not None:
                ex_all = Exclusion.from_any(exclude, b, num_items)
            ex = ex_all.slice(start, end) if ex_all is not None else None
            c = rank_counts(scores.detach(), targets[start:end], ex)
            parts.append(RankCounts(c.greater.cpu(), c.ties.cpu()))
            del scores
            if bar is not None:
                bar.update(end - start)
            start = end
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - t0
    log.debug("full ranking: %d users x %d items in %.2fs (%.0f users/s)", b, num_items,
              elapsed, b / max(elapsed, 1e-12))
    return RankCounts.cat(parts)


def evaluate_full_ranking(score_fn: ScoreFn, targets: Tensor, exclude: ExcludeLike = None,
                          ks: Iterable[int] = DEFAULT_KS, ties: TieRule = "pessimistic",
                          chunk_size: int | None = None, progress: bool = False,
                          return_per_user: bool = False, num_items: int | None = None,
                          max_score_bytes: int = DEFAULT_MAX_SCORE_BYTES,
                          ) -> dict[str, float] | tuple[dict[str, float], dict[str, Tensor]]:
    """Full-ranking metrics of all users, scored ``chunk_size`` users at a time.

    Equal, bit for bit, to :func:`~kgseqgraph.evaluation.metrics.evaluate_scores` on the stacked
    score matrix. Keys are plain (``"HR@10"``, ``"NDCG@10"``, ``"MAP@10"``, ``"MRR@10"``,
    ``"MRR"``): the full-ranking protocol is the default one.

    Args:
        score_fn: ``score_fn(start, end) -> [end - start, N]``.
        targets: ``[B]`` target items.
        exclude: per-user excluded items of all users (see
            :class:`~kgseqgraph.evaluation.metrics.Exclusion`); the target is never excluded.
        ks: cut-offs.
        ties: ``"pessimistic"`` (default), ``"expected"`` or ``"optimistic"``.
        chunk_size: users scored at a time; memory grows as ``chunk_size * N``. ``None``
            (default): as many as fit in ``max_score_bytes`` (:func:`budgeted_chunk_size`).
            The result does not depend on it.
        progress: tqdm bar (only on a terminal and outside CI).
        return_per_user: also return per-user metrics and ``"rank"`` (float64 ``[B]``, CPU).
        num_items: expected number of score columns (checked when given).
        max_score_bytes: memory budget of one chunk's scores (256 MiB by default).
    """
    ks = _check_ks(ks)
    _check_ties(ties)
    counts = full_ranking_counts(score_fn, targets, exclude, chunk_size, progress, num_items,
                                 max_score_bytes)
    per_user = metrics_from_counts(counts, ks, ties)
    means = _mean(per_user)
    if return_per_user:
        per_user["rank"] = ranks_from_counts(counts, ties)
        return means, per_user
    return means
