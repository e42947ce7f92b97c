"""Streamed full ranking: equal to the one-shot evaluation, chunk bookkeeping, model wrapper."""
from __future__ import annotations

import pytest
import torch

from kgseqgraph.data import Sequences
from kgseqgraph.evaluation import (
    Evaluator,
    DEFAULT_MAX_SCORE_BYTES,
    budgeted_chunk_size,
    evaluate_full_ranking,
    evaluate_scores,
    full_ranking_counts,
    rank_counts,
    resolve_chunk_size,
)

KS = (1, 5, 10, 20)


def _case(num_users=257, num_items=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 8, (num_users, num_items), generator=g).float()
    scores[::5] = torch.rand(scores[::5].shape, generator=g)  # some rows without ties
    targets = torch.randint(0, num_items, (num_users,), generator=g)
    lengths = torch.randint(0, 12, (num_users,), generator=g)
    ptr = torch.zeros(num_users + 1, dtype=torch.long)
    ptr[1:] = lengths.cumsum(0)
    idx = torch.randint(0, num_items, (int(ptr[-1]),), generator=g)
    return scores, targets, (ptr, idx)


@pytest.mark.parametrize("ties", ["pessimistic", "expected", "optimistic"])
@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000])
def test_chunked_equals_unchunked_exactly(ties, chunk_size):
    scores, targets, csr = _case()
    ref_means, ref_per = evaluate_scores(scores, targets, ks=KS, exclude=csr, ties=ties,
                                         return_per_user=True)
    means, per = evaluate_full_ranking(lambda s, e: scores[s:e], targets, exclude=csr, ks=KS,
                                       ties=ties, chunk_size=chunk_size, return_per_user=True)
    assert means == ref_means  # bit-for-bit, not approx
    assert per.keys() == ref_per.keys()
    for k in per:
        assert torch.equal(per[k], ref_per[k]), k


def test_exclusion_forms_sliced_per_chunk():
    scores, targets, (ptr, idx) = _case(num_users=40, seed=1)
    rows = [idx[ptr[u]:ptr[u + 1]] for u in range(40)]
    mask = torch.zeros(scores.shape, dtype=torch.bool)
    for u, r in enumerate(rows):
        mask[u, r] = True
    ref = evaluate_scores(scores, targets, ks=KS, exclude=rows)
    for form in ((ptr, idx), rows, mask, Sequences(ptr, idx, torch.arange(40), 60)):
        got = evaluate_full_ranking(lambda s, e: scores[s:e], targets, exclude=form, ks=KS,
                                    chunk_size=9)
        assert got == ref
    # exclusion really matters here
    assert evaluate_full_ranking(lambda s, e: scores[s:e], targets, ks=KS, chunk_size=9) != ref


def test_score_fn_called_on_contiguous_chunks():
    scores, targets, _ = _case(num_users=23)
    calls = []

    def score_fn(start, end):
        calls.append((start, end))
        return scores[start:end]

    counts = full_ranking_counts(score_fn, targets, chunk_size=10)
    assert calls == [(0, 10), (10, 20), (20, 23)]
    ref = rank_counts(scores, targets)
    assert torch.equal(counts.greater, ref.greater) and torch.equal(counts.ties, ref.ties)


def test_bad_score_fn_raises():
    scores, targets, _ = _case(num_users=20)
    with pytest.raises(ValueError, match="must return"):
        evaluate_full_ranking(lambda s, e: scores[s:e + 1], targets, chunk_size=8)
    with pytest.raises(ValueError, match="item columns"):
        evaluate_full_ranking(lambda s, e: scores[s:e, : 60 - s % 2], targets, chunk_size=7)
    with pytest.raises(ValueError, match="expected 61"):
        evaluate_full_ranking(lambda s, e: scores[s:e], targets, num_items=61)
    with pytest.raises(ValueError, match="chunk_size"):
        evaluate_full_ranking(lambda s, e: scores[s:e], targets, chunk_size=0)
    with pytest.raises(ValueError, match="no users"):
        evaluate_full_ranking(lambda s, e: scores[s:e], targets[:0])
    nan = scores.clone()
    nan[15, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        evaluate_full_ranking(lambda s, e: nan[s:e], targets, chunk_size=8)


class _HistoryLover(torch.nn.Module):
    """Scores the items of each input sequence highest, the next item second."""

    def __init__(self, num_items: int, nxt: torch.Tensor):
        super().__init__()
        self.num_items = num_items
        self.nxt = nxt
        self.seen_training = []

    def score(self, sequences: Sequences) -> torch.Tensor:
        self.seen_training.append(self.training)
        out = torch.zeros(len(sequences), self.num_items)
        row = torch.repeat_interleave(torch.arange(len(sequences)), sequences.lengths)
        out[row, sequences.items] = 2.0
        out[torch.arange(len(sequences)), self.nxt[sequences.users]] = 1.0
        return out


def test_evaluator_with_model_excludes_history():
    seqs = Sequences.from_lists([[1, 2], [3], [4, 5, 6], [7, 8]], num_items=10)
    targets = torch.tensor([0, 9, 0, 9])
    model = _HistoryLover(10, targets)
    model.train()
    ev = Evaluator(ks=(1, 3), chunk_size=3)
    m = ev.evaluate(model, seqs, targets)
    assert m["HR@1"] == 1.0 and m["MRR"] == 1.0
    assert model.training and model.seen_training == [False, False]  # eval inside, restored
    keep = Evaluator(ks=(1, 3), exclude_history=False)
    m2 = keep.evaluate(model, seqs, targets)
    assert m2["HR@1"] == 0.0
    # users' history lengths are 2, 1, 3, 2 → target ranks 3, 2, 4, 3
    assert m2["HR@3"] == 0.75 and m2["MRR"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 4 + 1 / 3) / 4)
    # a target seen before stays in the ranking (repeat consumption): it scores 2, the other
    # history items are excluded, so it ranks first
    m3 = ev.evaluate(model, seqs, torch.tensor([1, 3, 4, 7]))
    assert m3["HR@1"] == 1.0
    with pytest.raises(ValueError, match="targets"):
        ev.evaluate(model, seqs, targets[:3])


def test_budgeted_chunk_size():
    mib = 2**20
    assert DEFAULT_MAX_SCORE_BYTES == 256 * mib
    # budget // (N * 4 bytes * overhead 2), capped at 1024 users, at least 1
    assert budgeted_chunk_size(100_000) == 256 * mib // (100_000 * 8) == 335
    assert budgeted_chunk_size(1_000_000) == 33
    assert budgeted_chunk_size(1_000) == 1024  # the cap
    assert budgeted_chunk_size(1_000, max_chunk_size=None) == 256 * mib // 8_000
    assert budgeted_chunk_size(10**9) == 1  # never 0
    assert budgeted_chunk_size(60, max_score_bytes=60 * 8 * 7) == 7
    assert budgeted_chunk_size(60, max_score_bytes=60 * 8 * 7, bytes_per_score=8) == 3
    assert budgeted_chunk_size(60, max_score_bytes=60 * 8 * 7, overhead=1) == 14
    assert resolve_chunk_size(5, 10**6) == 5  # an explicit chunk wins
    assert resolve_chunk_size(None, 100_000) == 335
    assert resolve_chunk_size(None, None) == 1024
    for bad in ({"num_items": 0}, {"num_items": 10, "max_score_bytes": 0},
                {"num_items": 10, "max_chunk_size": 0}):
        with pytest.raises(ValueError):
            budgeted_chunk_size(**bad)


@pytest.mark.parametrize("ties", ["pessimistic", "expected"])
def test_budget_never_changes_the_result(ties):
    scores, targets, csr = _case()  # 257 users x 60 items
    ref_means, ref_per = evaluate_scores(scores, targets, ks=KS, exclude=csr, ties=ties,
                                         return_per_user=True)
    for budget, chunk in ((1, 1), (60 * 8 * 7, 7), (60 * 8 * 100, 100), (10**9, 1024)):
        assert budgeted_chunk_size(60, budget) == chunk
        calls = []

        def score_fn(s, e):
            calls.append(e - s)
            return scores[s:e]

        means, per = evaluate_full_ranking(score_fn, targets, exclude=csr, ks=KS, ties=ties,
                                           return_per_user=True, num_items=60,
                                           max_score_bytes=budget)
        assert max(calls) == min(chunk, 257) and sum(calls) == 257
        assert means == ref_means  # bit for bit
        for k in per:
            assert torch.equal(per[k], ref_per[k]), k


def test_budget_without_num_items_probes_one_user_first():
    scores, targets, _ = _case(num_users=23)
    calls = []

    def score_fn(start, end):
        calls.append((start, end))
        return scores[start:end]

    counts = full_ranking_counts(score_fn, targets, max_score_bytes=60 * 8 * 10)
    assert calls == [(0, 1), (1, 11), (11, 21), (21, 23)]  # N learnt from user 0, then 10 a chunk
    ref = rank_counts(scores, targets)
    assert torch.equal(counts.greater, ref.greater) and torch.equal(counts.ties, ref.ties)


def test_evaluator_and_train_config_default_to_the_budget():
    from kgseqgraph.training import TrainConfig

    ev = Evaluator()
    assert ev.chunk_size is None and ev.max_score_bytes == DEFAULT_MAX_SCORE_BYTES
    with pytest.raises(ValueError):
        Evaluator(max_score_bytes=0)
    assert TrainConfig().eval_chunk_size is None
    assert TrainConfig(eval_chunk_size=64).eval_chunk_size == 64
    with pytest.raises(ValueError):
        TrainConfig(eval_chunk_size=0)
