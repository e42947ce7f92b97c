"""Metrics from rank counts: hand-computed cases, tie rules, exclusion, and ir_measures parity."""
from __future__ import annotations

import math

import pytest
import torch

from kgseqgraph.evaluation import (
    Exclusion,
    evaluate_scores,
    rank_counts,
    ranks_from_scores,
)

KS = (1, 3, 5, 10, 20)


def _random_case(num_users: int, num_items: int, levels: int, p_exclude: float, seed: int):
    """Integer-valued scores (many ties), random exclusion lists that sometimes hold the target."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, levels, (num_users, num_items), generator=g).double()
    targets = torch.randint(0, num_items, (num_users,), generator=g)
    mask = torch.rand(num_users, num_items, generator=g) < p_exclude
    rows = [m.nonzero().view(-1) for m in mask]
    # duplicates and the target in the list: both must be harmless
    rows = [torch.cat([r, r[:1], targets[u:u + 1]]) if u % 3 == 0 else r
            for u, r in enumerate(rows)]
    return scores, targets, rows


# ----------------------------------------------------------------------------- hand-computed
def test_hand_example_pessimistic():
    # target item 2 scores 2; item 0 beats it, item 3 ties → ranks 2 … 3; pessimistic rank 3
    scores = torch.tensor([[3.0, 1.0, 2.0, 2.0, 0.0]])
    m = evaluate_scores(scores, torch.tensor([2]), ks=(1, 2, 3, 5))
    assert m["HR@2"] == 0.0 and m["HR@3"] == 1.0 and m["HR@5"] == 1.0
    assert m["NDCG@2"] == 0.0
    assert m["NDCG@3"] == pytest.approx(0.5, abs=1e-15)  # 1 / log2(4)
    assert m["MAP@3"] == pytest.approx(1 / 3, abs=1e-15)
    assert m["MRR@2"] == 0.0 and m["MRR"] == pytest.approx(1 / 3, abs=1e-15)


def test_hand_example_expected_and_optimistic():
    scores = torch.tensor([[3.0, 1.0, 2.0, 2.0, 0.0]])
    e = evaluate_scores(scores, torch.tensor([2]), ks=(1, 2, 3), ties="expected")
    assert e["HR@1"] == 0.0 and e["HR@2"] == 0.5 and e["HR@3"] == 1.0
    assert e["NDCG@2"] == pytest.approx(0.5 / math.log2(3), abs=1e-15)
    assert e["NDCG@3"] == pytest.approx((1 / math.log2(3) + 0.5) / 2, abs=1e-15)
    assert e["MRR"] == pytest.approx((1 / 2 + 1 / 3) / 2, abs=1e-15)
    assert e["MAP@2"] == pytest.approx(0.25, abs=1e-15)
    o = evaluate_scores(scores, torch.tensor([2]), ks=(2,), ties="optimistic")
    assert o["HR@2"] == 1.0 and o["MRR"] == pytest.approx(0.5)
    # the expected metric is not the metric at the mean rank 2.5
    assert e["MRR"] != pytest.approx(1 / 2.5)


def test_exclusion_hand_example_and_target_kept():
    scores = torch.tensor([[3.0, 1.0, 2.0, 2.0, 0.0]])
    t = torch.tensor([2])
    assert ranks_from_scores(scores, t, exclude=[torch.tensor([0])]).item() == 2.0
    assert ranks_from_scores(scores, t, exclude=[torch.tensor([3])]).item() == 2.0
    assert ranks_from_scores(scores, t, exclude=[torch.tensor([0, 3])]).item() == 1.0
    # the target in the exclusion list is ignored (repeat consumption)
    assert ranks_from_scores(scores, t, exclude=[torch.tensor([2, 3])]).item() == 2.0
    assert ranks_from_scores(scores, t, exclude=[torch.tensor([2, 2, 3, 3])]).item() == 2.0
    mask = torch.tensor([[False, False, True, True, False]])
    assert ranks_from_scores(scores, t, exclude=mask).item() == 2.0
    c = rank_counts(scores, t, exclude=(torch.tensor([0, 2]), torch.tensor([2, 3])))
    assert c.greater.tolist() == [1] and c.ties.tolist() == [0]


def test_excluded_items_cannot_tie_an_infinite_target():
    # target scores -inf; item 1 also -inf but excluded: no tie must be created by the exclusion
    scores = torch.tensor([[float("-inf"), float("-inf"), 5.0, 1.0]])
    t = torch.tensor([0])
    assert ranks_from_scores(scores, t, exclude=[torch.tensor([1])]).item() == 3.0
    assert ranks_from_scores(scores, t).item() == 4.0  # unexcluded -inf item ties: rank 4
    # excluded items scoring higher never count either
    scores = torch.tensor([[1.0, float("inf"), 9.0, 0.0]])
    assert ranks_from_scores(scores, t, exclude=[torch.tensor([1, 2])]).item() == 1.0


def test_constant_and_perfect_scorers():
    n, b = 200, 64
    targets = torch.randint(0, n, (b,), generator=torch.Generator().manual_seed(0))
    const = torch.zeros(b, n)
    pess = evaluate_scores(const, targets, ks=(10,))
    assert pess["HR@10"] == 0.0 and pess["NDCG@10"] == 0.0 and pess["MRR"] == pytest.approx(1 / n)
    exp = evaluate_scores(const, targets, ks=(10,), ties="expected")
    assert exp["HR@10"] == pytest.approx(10 / n, abs=1e-15)
    harmonic = math.fsum(1 / r for r in range(1, n + 1))
    assert exp["MRR"] == pytest.approx(harmonic / n, rel=1e-12)
    assert exp["MAP@10"] == pytest.approx(math.fsum(1 / r for r in range(1, 11)) / n, rel=1e-12)
    assert exp["NDCG@10"] == pytest.approx(
        math.fsum(1 / math.log2(r + 1) for r in range(1, 11)) / n, rel=1e-12)
    assert evaluate_scores(const, targets, ks=(10,), ties="optimistic")["HR@10"] == 1.0

    perfect = torch.zeros(b, n)
    perfect[torch.arange(b), targets] = 1.0
    for ties in ("pessimistic", "expected", "optimistic"):
        assert set(evaluate_scores(perfect, targets, ks=KS, ties=ties).values()) == {1.0}
    # perfect among the remaining items when the better-scored items are excluded
    better = perfect.clone()
    better[:, 0] = 2.0
    ex = [torch.tensor([0]) for _ in range(b)]
    keep = targets != 0
    m = evaluate_scores(better[keep], targets[keep], ks=KS,
                        exclude=[e for e, k in zip(ex, keep) if k])
    assert set(m.values()) == {1.0}


def test_expected_equals_brute_force_average():
    scores, targets, rows = _random_case(300, 30, 4, 0.2, seed=1)
    _, per = evaluate_scores(scores, targets, ks=KS, exclude=rows, ties="expected",
                             return_per_user=True)
    for u in range(0, 300, 7):
        s, y = scores[u].tolist(), int(targets[u])
        ex = set(rows[u].tolist()) - {y}
        cand = [j for j in range(30) if j not in ex]
        g = sum(s[j] > s[y] for j in cand)
        t = sum(s[j] == s[y] for j in cand) - 1
        ranks = range(g + 1, g + t + 2)  # every position in the tied block equally likely
        for k in KS:
            hr = sum(r <= k for r in ranks) / (t + 1)
            nd = sum(1 / math.log2(r + 1) for r in ranks if r <= k) / (t + 1)
            rr = sum(1 / r for r in ranks if r <= k) / (t + 1)
            assert per[f"HR@{k}"][u].item() == pytest.approx(hr, abs=1e-12)
            assert per[f"NDCG@{k}"][u].item() == pytest.approx(nd, abs=1e-12)
            assert per[f"MAP@{k}"][u].item() == pytest.approx(rr, abs=1e-12)
            assert per[f"MRR@{k}"][u].item() == pytest.approx(rr, abs=1e-12)
        assert per["MRR"][u].item() == pytest.approx(sum(1 / r for r in ranks) / (t + 1), abs=1e-12)
        assert per["rank"][u].item() == g + t / 2 + 1


def test_expected_matches_random_tie_breaking_on_average():
    # Monte Carlo: break ties with random noise; the average converges to the expected rule
    g = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 3, (1, 40), generator=g).double().expand(4000, 40)
    targets = torch.full((4000,), 5)
    noisy = scores + torch.rand(4000, 40, generator=g) * 1e-3
    mc = evaluate_scores(noisy, targets, ks=(5, 10))
    exact = evaluate_scores(scores[:1], targets[:1], ks=(5, 10), ties="expected")
    for key in ("HR@5", "HR@10", "NDCG@10", "MRR"):
        assert mc[key] == pytest.approx(exact[key], abs=0.03)


# ----------------------------------------------------------------------------- ir_measures parity
def _ir_measures_per_user(scores, targets, rows, target_doc: str):
    ir_measures = pytest.importorskip("ir_measures")
    from ir_measures import AP, RR, R, Success, nDCG

    qrels, run = [], []
    for u in range(scores.size(0)):
        y = int(targets[u])
        qrels.append(ir_measures.Qrel(f"q{u}", target_doc, 1))
        ex = set(rows[u].tolist()) - {y}
        for j in range(scores.size(1)):
            if j in ex:
                continue  # excluded items are dropped from the run
            doc = target_doc if j == y else f"d1{j:05d}"
            run.append(ir_measures.ScoredDoc(f"q{u}", doc, float(scores[u, j])))
    measures = [RR] + [m @ k for k in KS for m in (nDCG, R, Success, AP)]
    out: dict[str, dict[int, float]] = {}
    # pytrec_eval (trec_eval) breaks score ties by docno, descending
    for metric in ir_measures.pytrec_eval.iter_calc(measures, qrels, run):
        out.setdefault(str(metric.measure), {})[int(metric.query_id[1:])] = metric.value
    return out


@pytest.mark.parametrize("ties,target_doc", [("pessimistic", "d0000"), ("optimistic", "d2000")])
def test_matches_ir_measures(ties, target_doc):
    # target "d0000" sorts after every "d1xxxxx" tie under descending docno → pessimistic;
    # "d2000" sorts before them → optimistic
    scores, targets, rows = _random_case(1200, 25, 5, 0.25, seed=2)
    _, per = evaluate_scores(scores, targets, ks=KS, exclude=rows, ties=ties,
                             return_per_user=True)
    ref = _ir_measures_per_user(scores, targets, rows, target_doc)
    assert len(ref["RR"]) == 1200
    users = sorted(ref["RR"])
    ties_seen = sum(int(c) for c in (rank_counts(scores, targets, rows).ties > 0))
    assert ties_seen > 900  # the case really is tie-heavy
    for mine, theirs in [("MRR", "RR")] + [
            (f"{a}@{k}", f"{b}@{k}") for k in KS
            for a, b in (("NDCG", "nDCG"), ("HR", "R"), ("HR", "Success"), ("MAP", "AP"))]:
        ref_v = torch.tensor([ref[theirs][u] for u in users], dtype=torch.float64)
        assert torch.allclose(per[mine][users], ref_v, rtol=0, atol=1e-12), (mine, theirs)


# ----------------------------------------------------------------------------- forms and dtypes
def test_exclusion_forms_agree():
    scores, targets, rows = _random_case(50, 30, 3, 0.3, seed=4)
    mask = torch.zeros(50, 30, dtype=torch.bool)
    for u, r in enumerate(rows):
        mask[u, r] = True
    ptr = torch.zeros(51, dtype=torch.long)
    ptr[1:] = torch.tensor([r.numel() for r in rows]).cumsum(0)
    csr = (ptr, torch.cat(rows))

    class Seqs:  # duck-typed kgseqgraph.data.Sequences
        def __init__(self, p, i):
            self.ptr, self.items = p, i

    ref = rank_counts(scores, targets, rows)
    for form in (mask, csr, Seqs(*csr), Exclusion(ptr=csr[0], idx=csr[1])):
        c = rank_counts(scores, targets, form)
        assert torch.equal(c.greater, ref.greater) and torch.equal(c.ties, ref.ties)
    # and against the brute-force definition
    s_t = scores[torch.arange(50), targets].view(-1, 1)
    keep = ~mask
    keep[torch.arange(50), targets] = True
    assert torch.equal(ref.greater, ((scores > s_t) & keep).sum(1))
    assert torch.equal(ref.ties, ((scores == s_t) & keep).sum(1) - 1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64,
                                   torch.int64])
def test_dtypes_give_same_counts(dtype):
    scores, targets, rows = _random_case(100, 40, 6, 0.1, seed=5)
    ref = rank_counts(scores, targets, rows)
    c = rank_counts(scores.to(dtype), targets, rows)
    assert torch.equal(c.greater, ref.greater) and torch.equal(c.ties, ref.ties)


def test_per_user_means_and_keys():
    scores, targets, rows = _random_case(80, 20, 4, 0.1, seed=6)
    means, per = evaluate_scores(scores, targets, ks=(5, 10), exclude=rows, return_per_user=True)
    assert list(means) == ["HR@5", "HR@10", "NDCG@5", "NDCG@10", "MAP@5", "MAP@10", "MRR@5",
                           "MRR@10", "MRR"]
    for k, v in means.items():
        assert v == per[k].mean().item()
    assert torch.equal(per["rank"], ranks_from_scores(scores, targets, rows))
    assert torch.equal(per["HR@10"], (per["rank"] <= 10).double())


# ----------------------------------------------------------------------------- errors
def test_bad_inputs_raise():
    s = torch.rand(3, 5)
    t = torch.tensor([0, 1, 2])
    bad = s.clone()
    bad[1, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        evaluate_scores(bad, t)
    with pytest.raises(ValueError, match="targets must lie"):
        evaluate_scores(s, torch.tensor([0, 1, 5]))
    with pytest.raises(ValueError, match="targets must lie"):
        evaluate_scores(s, torch.tensor([0, -1, 2]))
    with pytest.raises(ValueError, match="shape"):
        evaluate_scores(s, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="integer"):
        evaluate_scores(s, t.float())
    with pytest.raises(ValueError, match="ties"):
        evaluate_scores(s, t, ties="random")
    with pytest.raises(ValueError, match="positive integer"):
        evaluate_scores(s, t, ks=(0,))
    with pytest.raises(ValueError, match="2-D"):
        evaluate_scores(s[0], t[:1])
    with pytest.raises(ValueError, match="no users"):
        evaluate_scores(torch.rand(0, 5), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        evaluate_scores(s, t, exclude=[torch.tensor([5]), torch.tensor([]), torch.tensor([])])
    with pytest.raises(ValueError, match="list has 2"):
        evaluate_scores(s, t, exclude=[torch.tensor([1]), torch.tensor([1])])
    with pytest.raises(ValueError, match="CSR pair"):
        evaluate_scores(s, t, exclude=(torch.tensor([0, 1]),))
    with pytest.raises(ValueError, match="B \\+ 1"):
        evaluate_scores(s, t, exclude=(torch.tensor([0, 1]), torch.tensor([1])))
    with pytest.raises(ValueError, match="shape"):
        evaluate_scores(s, t, exclude=torch.zeros(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool mask"):
        evaluate_scores(s, t, exclude=torch.zeros(3, 5))
