"""explain: attention paths from a history to a recommended item, scored by the model's own
attention (pinned on hand-built graphs whose attention is set), and the deletion machinery."""
import pandas as pd
import pytest
import torch

from kgseqgraph.data import Sequences, build_collaborative_kg, leave_one_out
from kgseqgraph.datasets import Synthetic
from kgseqgraph.models import build_model
from kgseqgraph.models.explain import (AttentionGraph, attention_paths, edge_attention, explain,
                                       fact_edges, plot_explanation, scores_without_edges)

A, B, C = 0, 1, 2  # items; entities g1 = node 3, d1 = node 4 (item-entity view)


def _graph(edges, num_nodes=6, relation_names=("r0", "r1", "r2", "r3")):
    """An AttentionGraph from (head, relation, tail, alpha) rows."""
    edges = sorted(edges, key=lambda e: e[0])
    head, rel, tail = (torch.tensor([e[i] for e in edges]) for i in range(3))
    alpha = torch.tensor([e[3] for e in edges], dtype=torch.float64)
    ptr = torch.zeros(num_nodes + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(torch.bincount(head, minlength=num_nodes), 0)
    return AttentionGraph(head, rel, tail, alpha, ptr, num_nodes, {"item": 0},
                          {"item": num_nodes}, list(relation_names))


def test_paths_follow_message_direction_and_multiply_attention():
    # nodes 0..5; target 2, history {0}; messages flow tail -> head
    g = _graph([(2, 0, 3, 0.6), (2, 0, 4, 0.4), (3, 1, 0, 0.5), (3, 1, 1, 0.5), (4, 1, 0, 1.0),
                (2, 2, 0, 0.1), (1, 3, 0, 0.7),
                (0, 0, 2, 0.9), (0, 0, 5, 0.1)])  # 2 -> 0: the other direction, never used
    paths = attention_paths(g, [0], 2, max_length=3, k=10)
    got = [(nodes, round(score, 12)) for nodes, _, score in paths]
    assert got == [([0, 4, 2], 0.4), ([0, 3, 2], 0.3), ([0, 1, 3, 2], 0.21), ([0, 2], 0.1)]
    nodes, edges, _ = paths[2]
    for m, e in enumerate(edges):  # edge m goes from nodes[m] (tail) to nodes[m + 1] (head)
        assert (int(g.tail[e]), int(g.head[e])) == (nodes[m], nodes[m + 1])
    # at most max_length edges, at most k paths, ties: shorter, then by nodes
    assert [p[0] for p in attention_paths(g, [0], 2, max_length=2, k=10)] == \
        [[0, 4, 2], [0, 3, 2], [0, 2]]
    assert len(attention_paths(g, [0], 2, max_length=3, k=2)) == 2
    both = attention_paths(g, [0, 1], 2, max_length=2, k=3)
    assert [(p[0], round(p[2], 12)) for p in both] == [([0, 4, 2], 0.4), ([0, 3, 2], 0.3),
                                                      ([1, 3, 2], 0.3)]
    # no path into the history's direction: from 2 to 0 only edge (0, 0, 2) exists
    assert [p[0] for p in attention_paths(g, [2], 0, max_length=1)] == [[2, 0]]
    # only through nodes 3 and 1: 0 -> 4 -> 2 and 0 -> 2 pass nothing else, 0 -> 1 -> 3 -> 2
    through = torch.tensor([False, True, False, True, False, False])
    assert [p[0] for p in attention_paths(g, [0], 2, max_length=3, through=through)] == \
        [[0, 3, 2], [0, 1, 3, 2], [0, 2]]


def test_parallel_edges_make_one_path_with_their_summed_weight():
    g = _graph([(2, 0, 1, 0.25), (2, 0, 1, 0.25), (2, 1, 1, 0.5), (1, 0, 0, 1.0)])
    paths = attention_paths(g, [0], 2, max_length=2, k=10)
    assert [(p[0], [int(g.relation[e]) for e in p[1]], p[2]) for p in paths] == [
        ([0, 1, 2], [0, 0], 0.5), ([0, 1, 2], [0, 1], 0.5)]
    # the fact of a path's edge: its parallel copy too (no reverse relation in this graph)
    first = int(((g.head == 2) & (g.relation == 0)).nonzero()[0])
    assert fact_edges(g, [first]).tolist() == ((g.head == 2) & (g.relation == 0)).nonzero() \
        .view(-1).tolist()


def _tiny(with_users=False):
    """Items A, B, C; entities g1 (genre), d1 (director): A and C share both, B only g1."""
    inter = pd.DataFrame({"user": ["u1", "u1", "u1", "u2", "u2", "u2"],
                          "item": ["A", "B", "C", "C", "B", "A"], "time": [1, 2, 3, 1, 2, 3]})
    triples = pd.DataFrame({"head": ["A", "C", "B", "A", "C"],
                            "relation": ["genre", "genre", "genre", "director", "director"],
                            "tail": ["g1", "g1", "g1", "d1", "d1"]})
    links = pd.DataFrame({"item": ["A", "B", "C"], "entity": ["A", "B", "C"]})
    data = build_collaborative_kg(inter, triples, links, items=["A", "B", "C"])
    data["item"].title = ["Alpha", "Beta", "Gamma"]
    return data


def _model(data, **options):
    torch.manual_seed(0)
    kw = dict(kg_dim=4, kg_hidden=[4, 4], node_types=["item", "entity"],
              pretrain_bprmf_epochs=0, max_len=5, encoder_kwargs={"num_layers": 1,
                                                                  "num_heads": 1})
    kw.update(options)
    return build_model("kg-sasrec", data, **kw).eval()


def test_explain_scores_paths_with_the_models_attention():
    data = _tiny()
    model = _model(data)
    with torch.no_grad():  # pi = 0 for every triple: alpha = 1 / (triples of the head)
        model.item_embedder.kge.rel_proj.zero_()
    df = explain(model, [A], item=C, data=data, k=5)
    # A -> d1 -> C: alpha(d1, rev_director, A) = 1/2 (d1 heads 2 triples) x alpha(C, director,
    # d1) = 1/2 (C heads 2); A -> g1 -> C: 1/3 (g1 heads 3) x 1/2
    assert df["names"].tolist() == [["Alpha", "entity d1", "Gamma"],
                                    ["Alpha", "entity g1", "Gamma"]]
    assert df["score"].tolist() == pytest.approx([1 / 4, 1 / 6])
    assert df["alphas"].tolist() == [pytest.approx([1 / 2, 1 / 2]),
                                     pytest.approx([1 / 3, 1 / 2])]
    assert df["relations"].tolist() == [["rev_director", "director"], ["rev_genre", "genre"]]
    assert df["path"][0] == "Alpha —[director]→ entity d1 ←[director]— Gamma"
    assert df["history_raw_id"].tolist() == ["A", "A"] and df["length"].tolist() == [2, 2]
    assert df.attrs["item"] == C and df.attrs["item_raw_id"] == "C"
    with torch.no_grad():
        assert df.attrs["item_score"] == pytest.approx(float(model.score(
            Sequences.from_lists([[A]], 3))[0, C]))
    # a longer history adds its own paths: B -> g1 -> C
    df2 = explain(model, [A, B], item=C, data=data, k=5)
    assert sorted(map(tuple, df2["names"])) == sorted(
        [("Alpha", "entity d1", "Gamma"), ("Alpha", "entity g1", "Gamma"),
         ("Beta", "entity g1", "Gamma")])
    # one layer: no path of length 2
    assert len(explain(model, [A], item=C, data=data, max_length=1)) == 0


def test_paths_start_only_at_the_items_the_model_reads():
    """A history longer than the serving window: the older items cannot change the score, so no
    path starts there (A, outside a window of two items; B and C read)."""
    data = _tiny()
    model = _model(data, max_len=2)  # SASRec-style next-item model: serving window 2
    assert model.serving_window == 2
    with torch.no_grad():
        model.item_embedder.kge.rel_proj.zero_()
        assert torch.equal(model.score(Sequences.from_lists([[A, B, C]], 3)),
                           model.score(Sequences.from_lists([[B, C]], 3)))
    df = explain(model, [A, B, C], item=C, data=data, k=5)
    assert set(df["history_raw_id"]) == {"B"} and df.attrs["window"] == [B, C]
    assert df.attrs["history"] == [A, B, C]


@pytest.mark.parametrize("name,options", [("kg-gru4rec", {}), ("katrec", {}),
                                          ("katrec", {"wiring": "gated", "hidden_size": 8})])
def test_every_model_on_the_kg_item_embedder_is_explained_by_its_attention(name, options):
    """The same attention (TransR projections zero: alpha = 1/(triples of the head)) under
    another encoder or wiring: the same paths and scores."""
    data = _tiny()
    torch.manual_seed(0)
    kw = dict(kg_dim=4, kg_hidden=[4, 4], node_types=["item", "entity"],
              pretrain_bprmf_epochs=0, max_len=5)
    if name == "katrec":
        kw["encoder_kwargs"] = {"num_layers": 1, "num_heads": 1}
    model = build_model(name, data, **kw, **options).eval()
    with torch.no_grad():
        model.item_embedder.kge.rel_proj.zero_()
    df = explain(model, [A], item=C, data=data)
    assert df["score"].tolist() == pytest.approx([1 / 4, 1 / 6])


def test_explain_without_attention_uses_the_fixed_weights():
    data = _tiny()
    model = _model(data, use_attention=False)  # KGAT's: 1 / (triples of the head with r)
    df = explain(model, [A], item=C, data=data)
    assert df["score"].tolist() == pytest.approx([1 / 2 * 1, 1 / 3 * 1])


def test_paths_through_users_use_the_training_interactions_only():
    data = _tiny()
    model = _model(data, node_types=["item", "entity", "user"])
    df = explain(model, [A], item=C, data=data, k=20)
    through_users = df[df["node_types"].map(lambda t: "user" in t)]
    assert len(through_users) > 0
    knowledge = explain(model, [A], item=C, data=data, k=20, through=["entity"])
    assert len(knowledge) == 2 and all(set(t[1:-1]) == {"entity"} for t in knowledge["node_types"])
    assert all(n[1].startswith("user") for n in through_users["names"])
    # over a split's training graph the held-out interactions are not paths
    split = leave_one_out(data)
    model = _model(split.train_graph, node_types=["item", "entity", "user"])
    df = explain(model, [A], item=C, data=split.train_graph, k=20)
    train_pairs = set(zip(*split.train_graph["user", "interacts", "item"].edge_index.tolist()))
    for names, types, raw in zip(df["names"], df["node_types"], df["raw_ids"]):
        for m, t in enumerate(types):
            if t == "user":
                u = split.train_graph["user"].raw_id.index(raw[m])
                for neighbour in (raw[m - 1], raw[m + 1]):
                    i = ["A", "B", "C"].index(neighbour)
                    assert (u, i) in train_pairs


def test_edge_attention_is_the_alpha_of_the_forward_pass():
    data = Synthetic(num_users=30, num_items=20, num_entities=6, num_relations=2, seq_len=6)[0]
    model = build_model("katrec", leave_one_out(data).train_graph, kg_dim=8, kg_hidden=[8, 8, 8],
                        pretrain_bprmf_epochs=0).eval()
    seen = []

    def hook(module, args, kwargs, output):
        if kwargs.get("attention_weights") is not None:
            seen.append(kwargs["attention_weights"])
        elif isinstance(output, tuple):
            seen.append(output[1][1])

    handles = [conv.register_forward_hook(hook, with_kwargs=True)
               for conv in model.item_embedder.enricher.convs]
    try:
        with torch.no_grad():
            model.item_embedder()
    finally:
        for h in handles:
            h.remove()
    alpha = edge_attention(model).alpha
    assert len(seen) == 3
    for a in seen:
        assert torch.equal(a, alpha)
    # a probability distribution over every head's triples
    g = edge_attention(model)
    sums = torch.zeros(g.num_nodes, dtype=alpha.dtype).index_add_(0, g.head, alpha)
    has = torch.bincount(g.head, minlength=g.num_nodes) > 0
    assert torch.allclose(sums[has], torch.ones_like(sums[has]), atol=1e-5)
    with pytest.raises(ValueError, match="reuse_attention"):
        edge_attention(build_model("katrec", leave_one_out(data).train_graph, kg_dim=8,
                                   kg_hidden=[8], pretrain_bprmf_epochs=0,
                                   reuse_attention=False))
    with pytest.raises(TypeError, match="KG item embedder"):
        explain(build_model("sasrec", data, hidden_size=8), [0, 1])


def test_removing_edges_is_the_graph_without_them():
    data = _tiny()
    model = _model(data)
    g = edge_attention(model)
    # the fact (C, director, d1): both its edges
    fwd = int(((g.head == C) & (g.relation == g.relation_names.index("director"))).nonzero())
    edges = fact_edges(g, [fwd])
    assert sorted((int(g.head[e]), g.relation_names[int(g.relation[e])], int(g.tail[e]))
                  for e in edges) == [(C, "director", 4), (4, "rev_director", C)]
    removed = scores_without_edges(model, [[A], [B]], edges)
    # the same weights over a graph that never had the fact
    inter = pd.DataFrame({"user": ["u1", "u1", "u1", "u2", "u2", "u2"],
                          "item": ["A", "B", "C", "C", "B", "A"], "time": [1, 2, 3, 1, 2, 3]})
    triples = pd.DataFrame({"head": ["A", "C", "B", "A"],
                            "relation": ["genre", "genre", "genre", "director"],
                            "tail": ["g1", "g1", "g1", "d1"]})
    links = pd.DataFrame({"item": ["A", "B", "C"], "entity": ["A", "B", "C"]})
    other = _model(build_collaborative_kg(inter, triples, links, items=["A", "B", "C"]))
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        expected = other.score(Sequences.from_lists([[A], [B]], 3))
    assert torch.allclose(removed, expected, atol=1e-6)
    # and nothing removed: the model's own scores; the model is left as it was
    with torch.no_grad():
        own = model.score(Sequences.from_lists([[A], [B]], 3))
    assert torch.allclose(scores_without_edges(model, [[A], [B]]), own, atol=1e-6)
    assert model.item_embedder.enricher.edge_index.size(1) == g.head.numel()


def test_plot_writes_a_png(tmp_path):
    data = _tiny()
    model = _model(data)
    df = explain(model, [A, B], item=C, data=data)
    out = tmp_path / "paths.png"
    plot_explanation(df, out)
    assert out.stat().st_size > 5000 and out.read_bytes()[:4] == b"\x89PNG"
