import pandas as pd
import pytest
import torch

from kgseqgraph.data import build_collaborative_kg, relational_view
from kgseqgraph.data.triples import kg_triples, split_triples


def _graph():
    inter = pd.DataFrame({"user": ["u1", "u1", "u2"], "item": ["a", "b", "c"], "time": [1, 2, 3]})
    triples = pd.DataFrame({"head": ["m.a", "m.b", "m.a", "m.x"],
                            "relation": ["genre", "genre", "sequel", "sub"],
                            "tail": ["m.x", "m.x", "m.b", "m.y"]})
    links = pd.DataFrame({"item": ["a", "b"], "entity": ["m.a", "m.b"]})
    return build_collaborative_kg(inter, triples, links)


def test_kg_triples_from_every_form():
    data = _graph()
    view = relational_view(data)
    a = kg_triples(data)
    b = kg_triples(view)
    c = kg_triples((view.edge_index, view.relation), num_nodes=view.num_nodes,
                   num_relations=view.num_relations)
    for t in (b, c):
        assert torch.equal(a.head, t.head) and torch.equal(a.tail, t.tail)
        assert torch.equal(a.relation, t.relation)
        assert (a.num_nodes, a.num_relations) == (t.num_nodes, t.num_relations)
    assert (a.num_nodes, a.num_relations, a.head.numel()) == (5, 6, 8)
    # the (item a -> genre -> entity m.x) fact: head a = node 0, tail m.x = node 3
    g = view.relation_names.index("genre")
    assert {(int(h), int(t)) for h, r, t in zip(a.head, a.relation, a.tail) if r == g} == {(0, 3), (1, 3)}
    with pytest.raises(TypeError):
        kg_triples("not a graph")


def test_split_keeps_node_pairs_together():
    data = _graph()
    tr = kg_triples(data)
    sp = split_triples(tr, (0.5, 0.25, 0.25), seed=0)
    parts = [sp.train, sp.valid, sp.test]
    assert sorted(torch.cat(parts).tolist()) == list(range(tr.head.numel()))
    pair_part = {}
    for p, idx in enumerate(parts):
        for e in idx.tolist():
            key = frozenset((int(tr.head[e]), int(tr.tail[e])))
            assert pair_part.setdefault(key, p) == p  # a fact and its reverse share a part
    assert len(pair_part) == 4
    assert torch.equal(split_triples(tr, (0.5, 0.25, 0.25), seed=0).test, sp.test)
    with pytest.raises(ValueError, match="sum"):
        split_triples(tr, (0.5, 0.5, 0.5))
