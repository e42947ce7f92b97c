"""Evaluation: tie-safe ranking metrics, the streamed full-ranking evaluator (the default
protocol, plain keys such as ``"HR@10"``) and the sampled-negative evaluator (keys labelled with
their protocol, ``"sampled-100/HR@10"``). See ``docs/evaluation.md``."""
from __future__ import annotations

from .full_ranking import (
    DEFAULT_MAX_SCORE_BYTES,
    FullRankingEvaluator,
    ScoreFn,
    budgeted_chunk_size,
    evaluate_full_ranking,
    full_ranking_counts,
    progress_enabled,
    resolve_chunk_size,
)
from .metrics import (
    DEFAULT_KS,
    TIE_RULES,
    Exclusion,
    RankCounts,
    evaluate_scores,
    metrics_from_counts,
    rank_counts,
    ranks_from_counts,
    ranks_from_scores,
)
from .sampled import (
    STRATEGIES,
    SampledEvaluator,
    evaluate_sampled,
    sample_negatives,
    sampled_counts,
    sampled_protocol,
)

__all__ = [
    "DEFAULT_KS",
    "TIE_RULES",
    "STRATEGIES",
    "Exclusion",
    "RankCounts",
    "rank_counts",
    "ranks_from_counts",
    "ranks_from_scores",
    "metrics_from_counts",
    "evaluate_scores",
    "ScoreFn",
    "full_ranking_counts",
    "evaluate_full_ranking",
    "FullRankingEvaluator",
    "progress_enabled",
    "budgeted_chunk_size",
    "resolve_chunk_size",
    "DEFAULT_MAX_SCORE_BYTES",
    "sample_negatives",
    "sampled_protocol",
    "evaluate_sampled",
    "sampled_counts",
    "SampledEvaluator",
]
