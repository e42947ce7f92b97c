"""The relation-space attention logits op and its custom autograd (nn/ops/relation_attention.py)."""
import torch

from kgseqgraph.nn.ops import pair_index, relation_groups, relation_scores
import kgseqgraph.nn.ops.relation_attention as relation_scores_module


def test_gather_dot_gradcheck_across_chunks(monkeypatch):
    monkeypatch.setattr(relation_scores_module, "_DOT_CHUNK", 4)  # 11 edges -> 3 chunks
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    # pair indices of 11 edges (relation 0 everywhere, so pair u is node u)
    ia, ib = torch.randint(5, (11,), generator=g), torch.randint(4, (11,), generator=g)
    ia[:5], ib[:4] = torch.arange(5), torch.arange(4)  # every row is used
    pa = pair_index(ia, torch.zeros(11, dtype=torch.long), 5, 1)
    pb = pair_index(ib, torch.zeros(11, dtype=torch.long), 4, 1)
    assert torch.equal(pa.inverse, ia) and torch.equal(pb.inverse, ib)
    out = relation_scores_module._GatherDot.apply(a, b, pa, pb)
    torch.testing.assert_close(out, (a[ia] * b[ib]).sum(-1))
    assert torch.autograd.gradcheck(lambda a, b: relation_scores_module._GatherDot.apply(a, b, pa, pb),
                                    (a, b))


def _typed_edges(seed=0, n=7, e=30, r=3):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(n, (e,), generator=g), torch.randint(n, (e,), generator=g),
            torch.randint(r, (e,), generator=g))


def test_relation_scores_by_hand_and_recompute_agree():
    tail, head, etype = _typed_edges()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 4, generator=g, dtype=torch.float64, requires_grad=True)
    rel_emb = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    rel_proj = torch.randn(3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    tails, heads = pair_index(tail, etype, 7, 3), pair_index(head, etype, 7, 3)
    by_hand = torch.stack([(x[t] @ rel_proj[r]) @ torch.tanh(x[h] @ rel_proj[r] + rel_emb[r])
                           for t, h, r in zip(tail.tolist(), head.tolist(), etype.tolist())])
    out = relation_scores(x, rel_emb, rel_proj, etype, tails, heads)
    torch.testing.assert_close(out, by_hand)
    order, offsets = relation_groups(etype, 3)
    again = relation_scores(x, rel_emb, rel_proj, etype, tails, heads, recompute=True,
                            by_relation=order, relation_offsets=offsets)
    torch.testing.assert_close(again, by_hand)
    for recompute in (False, True):
        assert torch.autograd.gradcheck(
            lambda x, e, w: relation_scores(x, e, w, etype, tails, heads, recompute=recompute),
            (x, rel_emb, rel_proj))
