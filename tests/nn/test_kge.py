import math

import pandas as pd
import pytest
import torch

from kgseqgraph.data import build_collaborative_kg, relational_view
from kgseqgraph.data.triples import TripleIndex, kg_triples
from kgseqgraph.nn.kge import TransE, TransR, relation_matmul, sample_negative_tails


def _tiny_transr(reg=0.1):
    """3 nodes, 1 relation, d_e = d_r = 2, weights set by hand."""
    m = TransR(3, 1, embedding_dim=2, relation_dim=2, reg_weight=reg)
    with torch.no_grad():
        m.node_emb.weight.copy_(torch.tensor([[1.0, 2.0], [0.0, 1.0], [2.0, 0.0]]))
        m.rel_emb.weight.copy_(torch.tensor([[0.5, -1.0]]))
        m.rel_proj.copy_(torch.tensor([[[1.0, 0.0], [1.0, 1.0]]]))  # e @ W
    return m


def test_transr_score_by_hand():
    m = _tiny_transr()
    # W e_0 = [1 + 2, 2] = [3, 2]; W e_1 = [1, 1]; f = ||[3, 2] + [.5, -1] - [1, 1]||^2 = 2.5^2
    f = m(torch.tensor([0]), torch.tensor([0]), torch.tensor([1]))
    assert f.tolist() == pytest.approx([6.25])
    # TransE on the same embeddings: ||[1, 2] + [.5, -1] - [0, 1]||^2 = 1.5^2
    e = TransE(3, 1, embedding_dim=2)
    with torch.no_grad():
        e.node_emb.weight.copy_(m.node_emb.weight)
        e.rel_emb.weight.copy_(m.rel_emb.weight)
    assert e(torch.tensor([0]), torch.tensor([0]), torch.tensor([1])).tolist() == pytest.approx([2.25])


def test_transr_loss_by_hand():
    m = _tiny_transr(reg=0.1)
    loss = m.loss(torch.tensor([0]), torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))
    # negative: W e_2 = [2, 0]; f' = ||[3.5, 1] - [2, 0]||^2 = 3.25
    bpr = math.log1p(math.exp(6.25 - 3.25))  # -ln sigma(f' - f)
    reg = 0.1 * 0.5 * (13 + 1.25 + 2 + 4)  # ||We_h||^2 + ||e_r||^2 + ||We_t||^2 + ||We_t'||^2
    assert float(loss.detach()) == pytest.approx(bpr + reg, rel=1e-6)


def test_relation_matmul_matches_bmm():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 4, generator=g, requires_grad=True)
    w = torch.randn(3, 4, 5, generator=g, requires_grad=True)
    idx = torch.tensor([0, 6, 2, 2, 5, 1])
    rel = torch.tensor([2, 0, 2, 1, 0, 2])
    out = relation_matmul(x, rel, w, index=idx)
    ref = torch.bmm(x[idx].unsqueeze(1), w[rel]).squeeze(1)
    torch.testing.assert_close(out, ref)
    gx, gw = torch.autograd.grad(out.pow(2).sum(), [x, w])
    rx, rw = torch.autograd.grad(ref.pow(2).sum(), [x, w])
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gw, rw)
    with pytest.raises(ValueError, match="d_in"):
        relation_matmul(x, rel, torch.randn(3, 5, 5), index=idx)


def test_score_all_tails_matches_forward():
    torch.manual_seed(0)
    for m in (TransR(9, 3, 6, 4), TransE(9, 3, 6)):
        h, r = torch.tensor([0, 4, 8, 4]), torch.tensor([2, 0, 2, 1])
        d = m.score_all_tails(h, r)
        ref = torch.stack([m(h.repeat_interleave(9), r.repeat_interleave(9), torch.arange(9).repeat(4))
                           ]).view(4, 9)
        torch.testing.assert_close(d, ref, rtol=1e-4, atol=1e-4)


def test_reset_parameters_and_repr():
    m = TransR(10, 4, 8, 6)
    before = [p.detach().clone() for p in m.parameters()]
    m.reset_parameters()
    assert all(not torch.equal(a, b) for a, b in zip(before, m.parameters()))
    assert m.rel_proj.shape == (4, 8, 6)
    assert repr(m) == ("TransR(num_nodes=10, num_relations=4, embedding_dim=8, relation_dim=6, "
                       "reg_weight=1e-05)")
    with pytest.raises(ValueError, match="num_nodes"):
        TransR(0, 4, 8)


def _graph():
    inter = pd.DataFrame({"user": ["u1", "u1", "u2"], "item": ["a", "b", "c"], "time": [1, 2, 3]})
    triples = pd.DataFrame({"head": ["m.a", "m.b", "m.a", "m.x"],
                            "relation": ["genre", "genre", "sequel", "sub"],
                            "tail": ["m.x", "m.x", "m.b", "m.y"]})
    links = pd.DataFrame({"item": ["a", "b"], "entity": ["m.a", "m.b"]})
    return build_collaborative_kg(inter, triples, links)


def test_from_graph_sizes_the_model():
    m = TransR.from_graph(_graph(), 8)
    assert (m.num_nodes, m.num_relations) == (5, 6)


def test_triple_index_and_filtered_negatives():
    g = torch.Generator().manual_seed(1)
    N, R = 6, 2
    h = torch.randint(N, (20,), generator=g)
    r = torch.randint(R, (20,), generator=g)
    t = torch.randint(N, (20,), generator=g)
    idx = TripleIndex(h, r, t, N, R)
    known = set(zip(h.tolist(), r.tolist(), t.tolist()))
    assert len(idx) == len(known)
    qh, qr, qt = (torch.arange(N).repeat_interleave(R * N), torch.arange(R).repeat_interleave(N).repeat(N),
                  torch.arange(N).repeat(N * R))
    got = idx.contains(qh, qr, qt)
    assert got.tolist() == [(a, b, c) in known for a, b, c in zip(qh.tolist(), qr.tolist(), qt.tolist())]
    q, tails = idx.true_tails(torch.tensor([h[0], h[5]]), torch.tensor([r[0], r[5]]))
    for j, (hh, rr) in enumerate([(int(h[0]), int(r[0])), (int(h[5]), int(r[5]))]):
        assert sorted(tails[q == j].tolist()) == sorted(c for a, b, c in known if (a, b) == (hh, rr))
    # filtered sampling never returns a known triple; the same seed gives the same sample
    neg = sample_negative_tails(h, r, t, N, generator=torch.Generator().manual_seed(3),
                                filter_index=idx, max_tries=50)
    assert not idx.contains(h, r, neg).any()
    again = sample_negative_tails(h, r, t, N, generator=torch.Generator().manual_seed(3),
                                  filter_index=idx, max_tries=50)
    assert torch.equal(neg, again)
    plain = sample_negative_tails(h, r, t, N, generator=torch.Generator().manual_seed(3))
    assert plain.min() >= 0 and plain.max() < N


def test_sample_triples_by_head_is_uniform_over_heads():
    from kgseqgraph.nn.kge import sample_triples_by_head

    # head 0: 1 triple, head 1: none, head 2: 9 triples, head 3: 2 triples
    ptr = torch.tensor([0, 1, 1, 10, 12])
    idx = sample_triples_by_head(ptr, 30_000, torch.Generator().manual_seed(0))
    head = torch.searchsorted(ptr, idx, right=True) - 1
    share = torch.bincount(head, minlength=4).double() / idx.numel()
    assert share[1] == 0
    torch.testing.assert_close(share[[0, 2, 3]], torch.full((3,), 1 / 3, dtype=torch.float64),
                               atol=0.01, rtol=0)
    # within head 2 every one of its 9 triples is drawn, uniformly
    within = torch.bincount(idx[head == 2] - 1, minlength=9).double()
    assert (within > 0).all() and float(within.max() / within.min()) < 1.3
    with pytest.raises(ValueError, match="no triples"):
        sample_triples_by_head(torch.zeros(3, dtype=torch.long), 4)
