r"""The one evaluator: every model, every driver (trainer, command line, examples, benchmarks).

:class:`Evaluator` ranks each user's target with the library's protocol and turns the integer rank
counts into metrics:

* **full ranking** (the default, plain keys such as ``"NDCG@10"``): the target against the whole
  catalogue, the user's own input items excluded unless ``exclude_history=False``, ties counted
  against the model (``ties="pessimistic"``), users streamed in memory-budgeted chunks
  (:func:`~kgseqgraph.evaluation.full_ranking.full_ranking_counts`);
* **sampled** (only when ``sampled_negatives`` is set, keys labelled ``"sampled-100/…"``): the
  target against ``n`` negatives drawn once per stage from a fixed seed, never from the user's
  history or target (:func:`~kgseqgraph.evaluation.sampled.sample_negatives`), the same negatives
  at every validation.

A model is anything with ``score(sequences) -> [B, num_items]`` (a
:class:`~kgseqgraph.models.base.SequentialRecommender`). With several processes each rank scores a
block of users (``shard=(start, end)``) and a ``gather`` hook concatenates the blocks' integer
counters, so every rank computes exactly the single-process metrics
(:class:`~kgseqgraph.training.Trainer` passes its process group's gather).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from .full_ranking import DEFAULT_MAX_SCORE_BYTES, full_ranking_counts, resolve_chunk_size
from .metrics import (DEFAULT_KS, RankCounts, TieRule, _check_ks, _check_ties,
                      metrics_from_counts, ranks_from_counts)
from .sampled import STRATEGIES, sample_negatives, sampled_counts, sampled_protocol

__all__ = ["Evaluator", "GatherFn", "metric_means", "sequence_slice"]

GatherFn = Callable[[RankCounts, int, int, int], RankCounts]
"""``gather(counts_of_block, start, end, total) -> counts of all total users`` (distributed)."""

_STAGE_SEED_OFFSET = {"valid": 0, "test": 1}


def metric_means(counts: RankCounts, ks: Iterable[int], ties: TieRule) -> dict[str, float]:
    """The metrics of every user from their rank counts, averaged over users."""
    return {k: float(v.mean()) for k, v in metrics_from_counts(counts, ks, ties).items()}


def sequence_slice(seqs: Any, start: int, end: int) -> Any:
    """Sequences ``start … end - 1`` of a :class:`~kgseqgraph.data.Sequences` (a contiguous CSR
    slice, no gather)."""
    lo, hi = int(seqs.ptr[start]), int(seqs.ptr[end])
    times = seqs.times[lo:hi] if seqs.times is not None else None
    return type(seqs)(seqs.ptr[start:end + 1] - lo, seqs.items[lo:hi], seqs.users[start:end],
                      seqs.num_items, times)


class Evaluator:
    """Full-ranking (and, as a labelled option, sampled) evaluation of a model.

    Args:
        ks: cut-offs of HR/NDCG/MAP/MRR.
        ties: ``"pessimistic"`` (default: a tie counts against the model, so a constant scorer
            scores ≈ 0), ``"expected"`` or ``"optimistic"``.
        exclude_history: remove each user's input items from its ranking (the target is never
            removed). ``False`` keeps them (RecBole's full-sort protocol).
        sampled_negatives: also report the sampled protocol against this many negatives
            (``None``: full ranking only).
        sampled_strategy: ``"uniform"`` or ``"popularity"`` negatives.
        chunk_size: users scored at a time (``None``: sized from ``max_score_bytes``).
        progress: tqdm bars (terminal only, never in CI).
        seed: seeds the negatives: stage ``s`` uses ``2 * seed + (0 if s == "valid" else 1)``.
        max_score_bytes: memory budget of one chunk's ``[users, N]`` scores.
    """

    def __init__(self, ks: Iterable[int] = DEFAULT_KS, ties: TieRule = "pessimistic",
                 exclude_history: bool = True, sampled_negatives: int | None = None,
                 sampled_strategy: str = "uniform", chunk_size: int | None = None,
                 progress: bool = False, seed: int = 0,
                 max_score_bytes: int = DEFAULT_MAX_SCORE_BYTES) -> None:
        self.ks = _check_ks(ks)
        self.ties = _check_ties(ties)
        self.exclude_history = bool(exclude_history)
        if sampled_negatives is not None and int(sampled_negatives) < 1:
            raise ValueError(f"sampled_negatives must be positive, got {sampled_negatives}")
        if sampled_strategy not in STRATEGIES:
            raise ValueError(f"sampled_strategy must be one of {STRATEGIES}, got "
                             f"{sampled_strategy!r}")
        self.sampled_negatives = None if sampled_negatives is None else int(sampled_negatives)
        self.sampled_strategy = sampled_strategy
        self.chunk_size = chunk_size
        resolve_chunk_size(chunk_size, 1, max_score_bytes)  # validates both
        self.max_score_bytes = int(max_score_bytes)
        self.progress = bool(progress)
        self.seed = int(seed)
        self._negatives: dict[Any, Tensor] = {}

    @property
    def sampled_protocol(self) -> str | None:
        """``"sampled-100"`` / ``"sampled-pop-100"`` (``None`` without sampled metrics)."""
        if self.sampled_negatives is None:
            return None
        return sampled_protocol(self.sampled_negatives, self.sampled_strategy)

    # ------------------------------------------------------------------ pieces
    def negatives(self, stage: str, num_items: int, inputs: Any, targets: Tensor,
                  popularity: Tensor | None = None) -> Tensor:
        """The ``[B, n]`` negatives of a stage's users: drawn once (seeded from the stage) and
        reused at every later call with the same stage."""
        if self.sampled_negatives is None:
            raise ValueError("this evaluator reports no sampled metrics (sampled_negatives=None)")
        key = (stage, int(targets.numel()), int(num_items))
        if key not in self._negatives:
            if self.sampled_strategy == "popularity" and popularity is None:
                raise ValueError("popularity negatives need the items' popularity (e.g. their "
                                 "training counts)")
            seed = self.seed * 2 + _STAGE_SEED_OFFSET.get(stage, 2)
            self._negatives[key] = sample_negatives(
                num_items, targets, (inputs.ptr, inputs.items), self.sampled_negatives,
                self.sampled_strategy, popularity if self.sampled_strategy == "popularity"
                else None, seed)
        return self._negatives[key]

    def counts(self, model: Any, inputs: Any, targets: Tensor, *,
               shard: tuple[int, int] | None = None, gather: GatherFn | None = None,
               stage: str = "valid", popularity: Tensor | None = None,
               ) -> dict[str, RankCounts]:
        """The rank counts of every user: ``{"full": …}`` and, with sampled metrics,
        ``{<protocol>: …}``. ``shard`` is this process's block of users; ``gather`` joins the
        blocks of all processes."""
        targets = torch.as_tensor(targets)
        total = targets.numel()
        if len(inputs) != total:
            raise ValueError(f"{stage}: {len(inputs)} input sequences for {total} targets")
        start, end = (0, total) if shard is None else shard
        mine = sequence_slice(inputs, start, end)
        num_items = getattr(model, "num_items", None)
        exclude = (mine.ptr, mine.items) if self.exclude_history else None

        # with sampled metrics, one pass: each chunk of full-catalogue scores also yields the
        # scores of that chunk's [target, negatives] candidates (before: a second model pass)
        candidates: Tensor | None = None
        negatives: Tensor | None = None
        candidate_scores: list[Tensor] = []
        if self.sampled_negatives is not None:
            if num_items is None:
                raise ValueError("sampled metrics need the model's num_items")
            negatives = self.negatives(stage, num_items, inputs, targets, popularity)
            candidates = torch.cat([targets[start:end].view(-1, 1), negatives[start:end]], 1)

        def score_fn(lo: int, hi: int) -> Tensor:
            scores = model.score(sequence_slice(mine, lo, hi))
            if candidates is not None and hi > lo and isinstance(scores, Tensor) \
                    and scores.dim() == 2 and scores.size(0) == hi - lo:
                if int(candidates[lo:hi].max()) >= scores.size(1):
                    raise ValueError(f"candidate ids reach {int(candidates[lo:hi].max())} but "
                                     f"the scores have only {scores.size(1)} item columns")
                candidate_scores.append(
                    scores.detach().gather(1, candidates[lo:hi].to(scores.device)))
            return scores

        def joined(compute: Callable[[], RankCounts]) -> RankCounts:
            empty = torch.zeros(0, dtype=torch.long)
            block = compute() if end > start else RankCounts(empty, empty)
            return block if gather is None else gather(block, start, end, total)

        was_training = getattr(model, "training", False)
        if hasattr(model, "eval"):
            model.eval()
        try:
            with torch.no_grad():
                out = {"full": joined(lambda: full_ranking_counts(
                    score_fn, targets[start:end], exclude, self.chunk_size, self.progress,
                    num_items=num_items, max_score_bytes=self.max_score_bytes))}
                if negatives is not None:
                    # [users, 1 + n] candidate scores, gathered chunk by chunk above
                    out[self.sampled_protocol] = joined(lambda: sampled_counts(
                        torch.cat(candidate_scores), targets[start:end], negatives[start:end],
                        score_candidates=True))
        finally:
            if was_training and hasattr(model, "train"):
                model.train(True)
        return out

    def metrics(self, counts: dict[str, RankCounts]) -> dict[str, float]:
        """Mean metrics from :meth:`counts` (sampled keys prefixed with their protocol)."""
        out: dict[str, float] = {}
        for name, c in counts.items():
            prefix = "" if name == "full" else f"{name}/"
            out.update({prefix + k: v for k, v in metric_means(c, self.ks, self.ties).items()})
        return out

    def per_user(self, counts: dict[str, RankCounts]) -> dict[str, Tensor]:
        """Per-user metrics and ranks from :meth:`counts` (same keys, plus ``"rank"``)."""
        out: dict[str, Tensor] = {}
        for name, c in counts.items():
            prefix = "" if name == "full" else f"{name}/"
            values = metrics_from_counts(c, self.ks, self.ties)
            values["rank"] = ranks_from_counts(c, self.ties)
            out.update({prefix + k: v for k, v in values.items()})
        return out

    # ------------------------------------------------------------------ one call
    def evaluate(self, model: Any, inputs: Any, targets: Tensor, *, stage: str = "valid",
                 popularity: Tensor | None = None, shard: tuple[int, int] | None = None,
                 gather: GatherFn | None = None, return_per_user: bool = False,
                 ) -> dict[str, float] | tuple[dict[str, float], dict[str, Tensor]]:
        """Metrics of ``model`` on users ``inputs`` with next items ``targets``.

        Args:
            model: anything with ``score(sequences) -> [B, N]``; put in eval mode for the call.
            inputs: the users' input sequences (:class:`~kgseqgraph.data.Sequences`).
            targets: ``[B]`` next items.
            stage: names the users (``"valid"``, ``"test"``): seeds and caches the negatives.
            popularity: ``[N]`` item weights for popularity negatives.
            shard, gather: this process's users and the hook joining all processes' counts.
            return_per_user: also return the per-user values (:meth:`per_user`).
        """
        counts = self.counts(model, inputs, targets, shard=shard, gather=gather, stage=stage,
                             popularity=popularity)
        means = self.metrics(counts)
        return (means, self.per_user(counts)) if return_per_user else means

    def evaluate_split(self, model: Any, split: Any, stage: str = "test",
                       return_per_user: bool = False,
                       ) -> dict[str, float] | tuple[dict[str, float], dict[str, Tensor]]:
        """:meth:`evaluate` on a stage of a :class:`~kgseqgraph.data.LeaveOneOutSplit`
        (popularity negatives weighted by the training counts)."""
        popularity = None
        if self.sampled_strategy == "popularity":
            popularity = torch.bincount(split.train.items, minlength=split.num_items).double()
        return self.evaluate(model, split.inputs(stage), split.targets(stage), stage=stage,
                             popularity=popularity, return_per_user=return_per_user)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(ks={self.ks}, ties={self.ties!r}, "
                f"exclude_history={self.exclude_history}, "
                f"sampled={self.sampled_protocol}, seed={self.seed})")
