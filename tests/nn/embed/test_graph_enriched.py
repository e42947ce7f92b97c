import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from kgseqgraph.data import build_collaborative_kg, relational_view
from kgseqgraph.nn import KGEnricher, TransR


def _graph():
    inter = pd.DataFrame({"user": ["u1", "u1", "u2", "u2"], "item": ["a", "b", "c", "a"],
                          "time": [1, 2, 3, 4]})
    triples = pd.DataFrame({"head": ["m.a", "m.b", "m.a", "m.x", "m.c"],
                            "relation": ["genre", "genre", "sequel", "sub", "genre"],
                            "tail": ["m.x", "m.x", "m.b", "m.y", "m.y"]})
    links = pd.DataFrame({"item": ["a", "b", "c"], "entity": ["m.a", "m.b", "m.c"]})
    return build_collaborative_kg(inter, triples, links)


def test_shapes_and_types():
    torch.manual_seed(0)
    data = _graph()
    enr = KGEnricher(data, in_channels=8, hidden_channels=(6, 4, 4))
    assert enr.out_channels == 8 + 6 + 4 + 4 and enr.num_items == 3
    z = enr()
    assert z.shape == (3, 22)
    parts = enr.embeddings_by_type()
    assert set(parts) == {"item", "entity"} and parts["entity"].shape == (2, 22)
    # first block is e^0 itself, the layer blocks are unit vectors
    torch.testing.assert_close(z[:, :8], enr.node_emb.weight[:3])
    for lo, hi in ((8, 14), (14, 18), (18, 22)):
        torch.testing.assert_close(z[:, lo:hi].norm(dim=-1), torch.ones(3))
    assert "layers=8 -> 6 -> 4 -> 4" in repr(enr)


def test_matches_a_manual_stack_of_convs():
    """KGAT's scheme: layer l + 1 reads layer l's un-normalised output; only the concatenated
    copies are normalised. ``propagate_normalized=True`` feeds the normalised ones forward."""
    torch.manual_seed(0)
    data = _graph()
    view = relational_view(data)
    for propagate_normalized in (False, True):
        enr = KGEnricher(data, in_channels=8, hidden_channels=(6, 4), dropout=0.0,
                         propagate_normalized=propagate_normalized)
        x = enr.node_emb.weight
        outs = [x]
        for conv in enr.convs:
            h = conv(x, view.edge_index, view.relation)
            outs.append(F.normalize(h, dim=-1))
            x = outs[-1] if propagate_normalized else h
        torch.testing.assert_close(enr.node_embeddings(), torch.cat(outs, -1))


def test_no_attention_weights_are_kgats_per_relation_means():
    torch.manual_seed(0)
    data = _graph()
    view = relational_view(data)
    enr = KGEnricher(data, in_channels=8, hidden_channels=(4,), use_attention=False, dropout=0.0)
    # head m.x (entity 0, node 3) has rev_genre from a and b and one 'sub' edge to m.y:
    # alpha = 1/2, 1/2 for rev_genre and 1 for sub (KGAT's row-normalised adjacency per relation)
    node = 3
    sel = view.head == node
    names = [view.relation_names[r] for r in view.relation[sel].tolist()]
    assert sorted(zip(names, enr.fixed_weights[sel].tolist())) == [
        ("rev_genre", 0.5), ("rev_genre", 0.5), ("sub", 1.0)]
    conv = enr.convs[0]
    x = enr.node_emb.weight
    neigh = torch.zeros_like(x)
    neigh.index_add_(0, view.head, enr.fixed_weights.unsqueeze(1) * x[view.tail])
    torch.testing.assert_close(enr.node_embeddings()[:, 8:],
                               F.normalize(conv.combine(x, neigh), dim=-1))
    mean = KGEnricher(data, in_channels=8, hidden_channels=(4,), use_attention=False,
                      uniform_weights="node", dropout=0.0)
    assert mean.fixed_weights is None  # 1/|N_h| from the conv itself
    with pytest.raises(ValueError, match="uniform_weights"):
        KGEnricher(data, use_attention=False, uniform_weights="edge")


def test_external_item_embeddings_and_users():
    torch.manual_seed(0)
    data = _graph()
    enr = KGEnricher(data, in_channels=8, hidden_channels=(4,), node_types=("item", "entity", "user"))
    assert enr.num_relations == 8  # 3 relations + reverses + interacts/rev_interacts
    items = torch.randn(3, 8, requires_grad=True)
    z = enr(items)
    torch.testing.assert_close(z[:, :8], items)
    z.sum().backward()
    assert items.grad.abs().sum() > 0
    assert enr.embeddings_by_type(items)["user"].shape == (2, 12)
    with pytest.raises(ValueError, match="item_embeddings"):
        enr(torch.randn(4, 8))


def test_ablations_and_shared_transr():
    torch.manual_seed(0)
    data = _graph()
    flat = KGEnricher(data, in_channels=8, hidden_channels=(4,), use_attention=False)
    assert all(c.rel_proj is None for c in flat.convs) and flat().shape == (3, 12)
    kge = TransR.from_graph(data, 8)
    enr = KGEnricher(data, in_channels=8, hidden_channels=(6, 4), kge=kge, reuse_attention=True)
    assert enr.node_emb is kge.node_emb
    assert all(c.rel_proj is None for c in enr.convs)  # attention from TransR, reused
    enr().pow(2).sum().backward()
    assert kge.rel_proj.grad.abs().sum() > 0 and kge.node_emb.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="kge is sized"):
        KGEnricher(data, in_channels=16, kge=kge)


def test_reset_parameters():
    enr = KGEnricher(_graph(), in_channels=8, hidden_channels=(4,))
    before = [p.detach().clone() for p in enr.parameters()]
    enr.reset_parameters()
    assert all(not torch.equal(a, b) for a, b in zip(before, enr.parameters()) if a.dim() > 1)


@pytest.mark.realdata
def test_forward_backward_on_ml100k(ml100k_graph):
    torch.manual_seed(0)
    enr = KGEnricher(ml100k_graph)
    assert (enr.num_nodes, enr.num_relations, enr.edge_index.size(1)) == (34712, 48, 183262)
    z = enr()
    assert z.shape == (1682, 128) and torch.isfinite(z).all()
    z.pow(2).sum().backward()
    assert enr.node_emb.weight.grad.abs().sum() > 0
    for conv in enr.convs:
        assert conv.rel_proj.grad.abs().sum() > 0
