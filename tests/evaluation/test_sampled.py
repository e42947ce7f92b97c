"""Sampled negatives (validity, determinism, distribution) and the sampled evaluator."""
from __future__ import annotations

import math

import pytest
import torch

from kgseqgraph.evaluation import (
    Evaluator,
    evaluate_sampled,
    sample_negatives,
    sampled_protocol,
)


def _histories(num_users, num_items, max_len, seed):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, max_len + 1, (num_users,), generator=g)
    rows = [torch.randint(0, num_items, (int(n),), generator=g) for n in lengths]
    targets = torch.randint(0, num_items, (num_users,), generator=g)
    return rows, targets


def _assert_valid(neg, rows, targets, num_items, n, weights=None):
    assert neg.shape == (len(rows), n) and neg.dtype == torch.long
    assert int(neg.min()) >= 0 and int(neg.max()) < num_items
    for u, r in enumerate(rows):
        drawn = set(neg[u].tolist())
        assert len(drawn) == n, "negatives repeat within a user"
        assert int(targets[u]) not in drawn, "target drawn as a negative"
        assert not drawn & set(r.tolist()), "history item drawn as a negative"
        if weights is not None:
            assert all(weights[j] > 0 for j in drawn), "zero-weight item drawn"


def _force(mode, monkeypatch):
    import kgseqgraph.evaluation.sampled as sampled

    if mode == "dense":
        monkeypatch.setattr(sampled, "_MIN_SURVIVAL", 2.0)
    elif mode == "rejection-many-rounds":
        monkeypatch.setattr(sampled, "_ROUND_SLACK", 0.2)
        monkeypatch.setattr(sampled, "_ROUND_EXTRA", 0)


@pytest.fixture(params=["auto", "dense", "rejection-many-rounds"])
def sampler(request, monkeypatch):
    """Run a test with the automatic choice, with every user on the dense sampler, or with the
    rejection sampler's rounds so short that most users need several extensions."""
    _force(request.param, monkeypatch)
    return request.param


@pytest.mark.parametrize("strategy", ["uniform", "popularity"])
@pytest.mark.parametrize("num_items,max_len,n", [(2000, 30, 100), (60, 45, 10), (120, 60, 50)])
def test_never_samples_history_or_target(strategy, num_items, max_len, n, sampler):
    rows, targets = _histories(300, num_items, max_len, seed=num_items)
    pop = None
    if strategy == "popularity":
        pop = torch.arange(num_items, dtype=torch.float64) % 7  # some items weigh 0
        keep = [u for u in range(300)
                if int((pop > 0).sum()) - len(set(rows[u].tolist()) | {int(targets[u])}) >= n]
        rows, targets = [rows[u] for u in keep], targets[keep]
    neg = sample_negatives(num_items, targets, rows, n=n, strategy=strategy, popularity=pop, seed=3)
    _assert_valid(neg, rows, targets, num_items, n, None if pop is None else pop.tolist())


def test_history_forms_and_exactly_enough_candidates():
    # 10 items, history 6 distinct + target → exactly 3 candidates, drawn in some order
    rows = [torch.tensor([0, 1, 2, 3, 4, 5, 5])]
    targets = torch.tensor([9])
    neg = sample_negatives(10, targets, rows, n=3, seed=0)
    assert sorted(neg[0].tolist()) == [6, 7, 8]
    ptr = torch.tensor([0, 7])
    assert torch.equal(sample_negatives(10, targets, (ptr, rows[0]), n=3, seed=0), neg)
    mask = torch.zeros(1, 10, dtype=torch.bool)
    mask[0, rows[0]] = True
    assert torch.equal(sample_negatives(10, targets, mask, n=3, seed=0), neg)


def test_too_few_candidates_raises():
    with pytest.raises(ValueError, match="fewer than n = 4"):
        sample_negatives(10, torch.tensor([9]), [torch.tensor([0, 1, 2, 3, 4, 5])], n=4)
    pop = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="positive popularity"):
        sample_negatives(5, torch.tensor([2]), None, n=3, strategy="popularity", popularity=pop)
    with pytest.raises(ValueError, match="popularity"):
        sample_negatives(5, torch.tensor([2]), n=1, strategy="popularity")
    with pytest.raises(ValueError, match="strategy"):
        sample_negatives(5, torch.tensor([2]), n=1, strategy="hard")
    with pytest.raises(ValueError, match="targets"):
        sample_negatives(5, torch.tensor([5]), n=1)
    with pytest.raises(ValueError, match="non-negative"):
        sample_negatives(5, torch.tensor([1]), n=1, strategy="popularity",
                         popularity=torch.tensor([1.0, -1, 1, 1, 1]))


def test_deterministic_by_seed():
    rows, targets = _histories(200, 500, 40, seed=1)
    pop = torch.rand(500, generator=torch.Generator().manual_seed(0))
    for strategy, p in (("uniform", None), ("popularity", pop)):
        a = sample_negatives(500, targets, rows, n=50, strategy=strategy, popularity=p, seed=7)
        b = sample_negatives(500, targets, rows, n=50, strategy=strategy, popularity=p, seed=7)
        c = sample_negatives(500, targets, rows, n=50, strategy=strategy, popularity=p, seed=8)
        assert torch.equal(a, b) and not torch.equal(a, c)


def _binomial_ok(count, trials, p, z=5.0):
    return abs(count - trials * p) <= z * math.sqrt(trials * p * (1 - p)) + 1


@pytest.mark.parametrize("history_len,mode", [
    (0, "auto"),  # rejection sampler
    (12, "auto"),  # dense sampler (the history holds most of the weight)
    (0, "dense"),
    (0, "rejection-many-rounds"),
])
def test_popularity_first_draw_follows_distribution(history_len, mode, monkeypatch):
    _force(mode, monkeypatch)
    # each user's first draw is proportional to the weight among its allowed items
    num_items, users = 20, 8000
    w = torch.tensor([float(1 + (j % 5) ** 2) for j in range(num_items)], dtype=torch.float64)
    hist = torch.arange(1, 1 + history_len)
    rows = (torch.arange(users + 1) * history_len, hist.repeat(users))  # CSR
    targets = torch.zeros(users, dtype=torch.long)
    neg = sample_negatives(num_items, targets, rows, n=3, strategy="popularity", popularity=w,
                           seed=11)
    allowed = [j for j in range(num_items) if j != 0 and j not in hist.tolist()]
    probs = w[allowed] / w[allowed].sum()
    first = torch.bincount(neg[:, 0], minlength=num_items)
    assert int(first[[0] + hist.tolist()].sum()) == 0
    for j, p in zip(allowed, probs.tolist()):
        assert _binomial_ok(int(first[j]), users, p), (j, int(first[j]), users * p)
    # heavier items are drawn more often than lighter ones overall
    assert int(torch.bincount(neg.view(-1), minlength=num_items)[allowed].argmax()) in (
        [i for i, j in enumerate(allowed) if w[j] == w[allowed].max()])


def test_uniform_inclusion_is_uniform(sampler):
    num_items, users, n = 30, 6000, 5
    rows = (torch.arange(users + 1) * 2, torch.tensor([3, 4]).repeat(users))  # CSR
    targets = torch.full((users,), 7)
    neg = sample_negatives(num_items, targets, rows, n=n, seed=2)
    counts = torch.bincount(neg.view(-1), minlength=num_items)
    allowed = [j for j in range(num_items) if j not in (3, 4, 7)]
    p = n / len(allowed)  # each allowed item is in a user's sample with probability n / |allowed|
    assert int(counts[[3, 4, 7]].sum()) == 0
    for j in allowed:
        assert _binomial_ok(int(counts[j]), users, p), (j, int(counts[j]))


# ----------------------------------------------------------------------------- evaluation
def test_evaluate_sampled_hand_example_and_labels():
    # user 0: target 1 scores 0.5; negatives 0 (0.9), 2 (0.5 tie), 3 (0.1) → ranks 2 … 3
    scores = torch.tensor([[0.9, 0.5, 0.5, 0.1], [0.0, 0.0, 0.0, 1.0]])
    targets = torch.tensor([1, 3])
    negatives = torch.tensor([[0, 2, 3], [0, 1, 2]])
    m = evaluate_sampled(scores, targets, negatives, ks=(1, 2))
    assert set(m) == {f"sampled-3/{k}" for k in
                      ("HR@1", "HR@2", "NDCG@1", "NDCG@2", "MAP@1", "MAP@2", "MRR@1", "MRR@2",
                       "MRR")}
    assert m["sampled-3/HR@1"] == 0.5 and m["sampled-3/HR@2"] == 0.5  # user 0 at rank 3
    assert m["sampled-3/MRR"] == pytest.approx((1 / 3 + 1) / 2)
    e = evaluate_sampled(scores, targets, negatives, ks=(2,), ties="expected")
    assert e["sampled-3/HR@2"] == pytest.approx((0.5 + 1) / 2)
    assert not any(k.startswith(("HR", "NDCG", "MRR", "MAP")) for k in m)


def test_evaluate_sampled_input_forms_agree():
    g = torch.Generator().manual_seed(5)
    scores = torch.randint(0, 4, (50, 80), generator=g).float()
    targets = torch.randint(0, 80, (50,), generator=g)
    neg = sample_negatives(80, targets, None, n=20, seed=1)
    ref, per = evaluate_sampled(scores, targets, neg, return_per_user=True)
    assert ref == evaluate_sampled(lambda s, e: scores[s:e], targets, neg, chunk_size=7)
    cand = torch.cat([targets.view(-1, 1), neg], 1)
    cand_scores = scores.gather(1, cand)
    assert ref == evaluate_sampled(cand_scores, targets, neg, score_candidates=True)
    assert ref == evaluate_sampled(lambda s, e, c: scores[s:e].gather(1, c), targets, neg,
                                   score_candidates=True, chunk_size=6)
    # brute-force ranks among the 21 candidates, pessimistic
    for u in range(50):
        st = scores[u, targets[u]]
        rank = 1 + int((scores[u, neg[u]] >= st).sum())
        assert per["sampled-20/rank"][u].item() == rank


def test_constant_scorer_sampled():
    targets = torch.arange(40)
    neg = sample_negatives(500, targets, None, n=100, seed=0)
    const = torch.zeros(40, 500)
    assert evaluate_sampled(const, targets, neg, ks=(10,))["sampled-100/HR@10"] == 0.0
    e = evaluate_sampled(const, targets, neg, ks=(10,), ties="expected")
    assert e["sampled-100/HR@10"] == pytest.approx(10 / 101, abs=1e-15)


def test_evaluate_sampled_rejects_bad_negatives_and_labels():
    scores = torch.rand(2, 10)
    targets = torch.tensor([1, 2])
    with pytest.raises(ValueError, match="equal their user's target"):
        evaluate_sampled(scores, targets, torch.tensor([[1, 3], [4, 5]]))
    with pytest.raises(ValueError, match="repeat"):
        evaluate_sampled(scores, targets, torch.tensor([[3, 3], [4, 5]]))
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        evaluate_sampled(scores, targets, torch.tensor([[3, 10], [4, 5]]))
    with pytest.raises(ValueError, match="start with 'sampled'"):
        evaluate_sampled(scores, targets, torch.tensor([[3, 4], [4, 5]]), protocol="full")
    with pytest.raises(ValueError, match="1 \\+ n"):
        evaluate_sampled(torch.rand(2, 4), targets, torch.tensor([[3, 4], [4, 5]]),
                         score_candidates=True)


def test_sampled_evaluator_protocol_and_model():
    from kgseqgraph.data import Sequences

    seqs = Sequences.from_lists([[1, 2, 3], [4], [5, 6]], num_items=50)
    targets = torch.tensor([0, 7, 8])

    class Model(torch.nn.Module):
        num_items = 50

        def score(self, sequences):
            out = torch.zeros(len(sequences), 50)
            row = torch.repeat_interleave(torch.arange(len(sequences)), sequences.lengths)
            out[row, sequences.items] = 5.0  # history scored highest: must not matter
            out[torch.arange(len(sequences)), targets[sequences.users]] = 1.0
            return out

    model = Model()
    ev = Evaluator(ks=(1,), sampled_negatives=10, seed=4)
    assert ev.sampled_protocol == "sampled-10" == sampled_protocol(10)
    m = ev.evaluate(model, seqs, targets)
    sampled = {k: v for k, v in m.items() if k.startswith("sampled")}
    assert sampled == {"sampled-10/HR@1": 1.0, "sampled-10/NDCG@1": 1.0, "sampled-10/MAP@1": 1.0,
                       "sampled-10/MRR@1": 1.0, "sampled-10/MRR": 1.0}
    assert m["HR@1"] == 1.0  # full ranking too: the history is excluded
    negatives = ev.negatives("valid", 50, seqs, targets)
    assert torch.equal(negatives, ev.negatives("valid", 50, seqs, targets))  # drawn once
    assert not torch.equal(negatives, ev.negatives("test", 50, seqs, targets))
    pop = Evaluator(ks=(1,), sampled_negatives=10, sampled_strategy="popularity")
    assert pop.sampled_protocol == "sampled-pop-10"
    assert set(pop.evaluate(model, seqs, targets, popularity=torch.ones(50))) >= {
        "sampled-pop-10/HR@1"}
    with pytest.raises(ValueError, match="popularity"):
        Evaluator(sampled_negatives=10, sampled_strategy="popularity").evaluate(model, seqs,
                                                                                targets)


@pytest.mark.parametrize("shard", [None, (4, 19)])
def test_sampled_metrics_come_from_the_full_ranking_pass(shard):
    """One model pass serves both protocols: ``score`` runs once per chunk of users (not twice),
    and the sampled metrics equal :func:`evaluate_sampled` on the same score matrix; with a
    shard (one process's block of users) too."""
    from kgseqgraph.data import Sequences
    from kgseqgraph.evaluation import evaluate_full_ranking

    g = torch.Generator().manual_seed(3)
    rows, targets = _histories(23, 40, 6, seed=5)
    seqs = Sequences.from_lists([r.tolist() for r in rows], num_items=40)
    table = torch.randn(23, 40, generator=g).round(decimals=1)  # ties included

    class Model(torch.nn.Module):
        num_items = 40
        calls = 0

        def score(self, sequences):
            Model.calls += 1
            return table[sequences.users]

    ev = Evaluator(ks=(1, 5), sampled_negatives=8, chunk_size=5, seed=2)
    counts = ev.counts(Model(), seqs, targets, shard=shard)
    lo, hi = shard or (0, 23)
    assert Model.calls == -(-(hi - lo) // 5)  # one full-ranking pass, no second one
    m = ev.metrics(counts)
    negatives = ev.negatives("valid", 40, seqs, targets)
    ref = evaluate_sampled(table[lo:hi], targets[lo:hi], negatives[lo:hi], ks=(1, 5))
    assert {k: v for k, v in m.items() if k.startswith("sampled")} == pytest.approx(ref)
    full = evaluate_full_ranking(lambda a, b: table[lo:hi][a:b], targets[lo:hi],
                                 (seqs.ptr[lo:hi + 1] - seqs.ptr[lo], seqs.items[
                                     seqs.ptr[lo]:seqs.ptr[hi]]), ks=(1, 5))
    assert {k: v for k, v in m.items() if not k.startswith("sampled")} == pytest.approx(full)
