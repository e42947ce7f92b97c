"""Evaluation: tie-safe ranking metrics and the one :class:`Evaluator` every driver uses — full
ranking over the catalogue (the default protocol, plain keys such as ``"HR@10"``) plus, as a
labelled option, sampled negatives (``"sampled-100/HR@10"``). See ``docs/evaluation.md``."""
from __future__ import annotations

from .evaluator import Evaluator, metric_means, sequence_slice
from .full_ranking import (
    DEFAULT_MAX_SCORE_BYTES,
    ScoreFn,
    budgeted_chunk_size,
    evaluate_full_ranking,
    full_ranking_counts,
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
    evaluate_sampled,
    sample_negatives,
    sampled_counts,
    sampled_protocol,
)

__all__ = [
    "Evaluator",
    "metric_means",
    "sequence_slice",
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
    "budgeted_chunk_size",
    "resolve_chunk_size",
    "DEFAULT_MAX_SCORE_BYTES",
    "sample_negatives",
    "sampled_protocol",
    "evaluate_sampled",
    "sampled_counts",
]
