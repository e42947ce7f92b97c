r"""Segment softmax / fused attention-aggregation ops for KG attention layers.

Public API:

* :func:`segment_softmax` — :math:`\alpha_e = \mathrm{softmax}_{e \in s}(\pi_e)` per segment.
* :func:`segment_softmax_aggregate` — :math:`\mathrm{out}_s = \sum_{e \in s} \alpha_e x_e`, fused.
* :func:`segment_weighted_sum` — :math:`\mathrm{out}_s = \sum_{e \in s} \alpha_e x_{src_e}` for
  given weights, gather-free.
* :func:`available_backends` — which of ``torch / triton / pyg / scatter`` run here.
* :func:`relation_scores` — KGAT's relation-space attention logits
  :math:`(\mathbf{W}_r\mathbf{x}_t)^\top\tanh(\mathbf{W}_r\mathbf{x}_h + \mathbf{e}_r)` with a
  memory-lean custom backward (:mod:`.relation_attention`).

Triton is imported lazily (only when the Triton backend runs), so CPU-only installs work without it.
"""
from __future__ import annotations

from .dispatch import BACKENDS, available_backends, triton_available, triton_interpret_mode
from .relation_attention import PairIndex, pair_index, relation_groups, relation_scores
from .segment_softmax import (
    index_to_ptr,
    ptr_to_index,
    segment_softmax,
    segment_softmax_aggregate,
    segment_weighted_sum,
)

__all__ = [
    "PairIndex",
    "pair_index",
    "relation_groups",
    "relation_scores",
    "BACKENDS",
    "available_backends",
    "index_to_ptr",
    "ptr_to_index",
    "segment_softmax",
    "segment_softmax_aggregate",
    "segment_weighted_sum",
    "triton_available",
    "triton_interpret_mode",
]
