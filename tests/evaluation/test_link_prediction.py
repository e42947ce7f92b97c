import pytest
import torch

from kgseqgraph.data.triples import TripleIndex
from kgseqgraph.evaluation.link_prediction import (filtered_rank_counts, link_prediction_metrics,
                                                   random_baseline)
from kgseqgraph.evaluation.metrics import RankCounts
from kgseqgraph.nn.kge import TransE


def test_filtered_ranks_by_brute_force():
    torch.manual_seed(0)
    m = TransE(6, 1, 2)
    with torch.no_grad():  # distances from e_0 + e_r = [0, 0] are the squared norms below
        m.node_emb.weight.copy_(torch.tensor([[0.0, 0], [1, 0], [2, 0], [1, 0], [3, 0], [0.5, 0]]))
        m.rel_emb.weight.zero_()
    # known tails of (0, r0): 2 and 5; test triple (0, r0, 2): f = 4
    known = TripleIndex(torch.tensor([0, 0]), torch.tensor([0, 0]), torch.tensor([2, 5]), 6, 1)
    counts, n = filtered_rank_counts(m, torch.tensor([0]), torch.tensor([0]), torch.tensor([2]),
                                     known)
    # candidates {0: 0, 1: 1, 2: 4 (target), 3: 1, 4: 9}; 5 is filtered -> 3 strictly better
    assert counts.greater.tolist() == [3] and counts.ties.tolist() == [0] and n.tolist() == [5]
    # ties: target tail 1 (f = 1) ties with node 3 -> pessimistic rank 3, mean rank 2.5
    counts, _ = filtered_rank_counts(m, torch.tensor([0]), torch.tensor([0]), torch.tensor([1]),
                                     known)
    assert (counts.greater.tolist(), counts.ties.tolist()) == ([1], [1])
    assert link_prediction_metrics(counts, ks=(1, 3))["mean_rank"] == 3.0
    expected = link_prediction_metrics(counts, ks=(1, 3), ties="expected")
    assert expected["mean_rank"] == 2.5 and expected["mrr"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    two = RankCounts(torch.tensor([0, 3]), torch.tensor([0, 0]))  # ranks 1 and 4
    met = link_prediction_metrics(two, ks=(1, 3))
    assert met["mrr"] == pytest.approx(0.625) and met["hits@1"] == 0.5 and met["hits@3"] == 0.5


def test_random_baseline_exact():
    out = random_baseline(torch.tensor([1, 4]), ks=(1, 3))
    assert out["mrr"] == pytest.approx((1 + (1 + 1 / 2 + 1 / 3 + 1 / 4) / 4) / 2)
    assert out["hits@1"] == pytest.approx((1 + 1 / 4) / 2)
    assert out["hits@3"] == pytest.approx((1 + 3 / 4) / 2)
    assert out["mean_rank"] == pytest.approx((1 + 2.5) / 2)
