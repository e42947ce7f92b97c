"""model.add_items: new items appended to a trained model, existing items scored exactly as
before, new items scored from what the model reads (KG facts, features, or nothing)."""
import pandas as pd
import pytest
import torch

from kgseqgraph.data import (append_items, cold_item_split, leave_one_out, relational_view)
from kgseqgraph.datasets import Synthetic
from kgseqgraph.models import build_model

SMALL_KG = dict(kg_dim=8, kg_hidden=[8, 8], pretrain_bprmf_epochs=0, kge_batch_size=32,
                encoder_kwargs={"num_layers": 1, "num_heads": 1})


@pytest.fixture(scope="module")
def split():
    data = Synthetic(num_users=60, num_items=40, num_entities=8, num_relations=2, seq_len=8)[0]
    return leave_one_out(data)


def _facts_of(graph, item, new_id):
    """The KG facts of ``item`` (both as head and tail), rewritten for a new item ``new_id``."""
    view = relational_view(graph, ("item", "entity"), include_reverse=False)
    n = int(graph["item"].num_nodes)
    raw, ent = graph["item"].raw_id, graph["entity"].raw_id
    rows = []
    for h, r, t in zip(view.head.tolist(), view.relation.tolist(), view.tail.tolist()):
        if item not in (h, t):
            continue
        ends = []
        for x in (h, t):
            if x == item:
                ends.append((new_id, "item"))
            else:
                ends.append((raw[x], "item") if x < n else (ent[x - n], "entity"))
        rows.append({"head": ends[0][0], "head_type": ends[0][1], "relation":
                     view.relation_names[r], "tail": ends[1][0], "tail_type": ends[1][1]})
    return pd.DataFrame(rows)


def _train_a_little(model, split, steps=3):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        loss = model.loss(model.training_batch(split.train, g))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("name,options", [
    ("sasrec", {"hidden_size": 16, "encoder_kwargs": {"num_layers": 1, "num_heads": 1}}),
    ("katrec", SMALL_KG),
    ("kg-sasrec", SMALL_KG),
    ("katrec", {**SMALL_KG, "connection": False}),
    ("katrec", {**SMALL_KG, "wiring": "gated", "hidden_size": 16}),
    ("kg-sasrec", {**SMALL_KG, "use_attention": False}),
])
def test_existing_items_score_exactly_as_before(split, name, options):
    g = split.train_graph
    model = _train_a_little(build_model(name, g, **options), split)
    before = model.score(split.test_inputs)
    extended = append_items(g, ["new-1", "new-2"], pd.concat(
        [_facts_of(g, 5, "new-1"), _facts_of(g, 7, "new-2")]))
    assert model.add_items(extended, generator=torch.Generator().manual_seed(0)) is model
    assert model.num_items == 42 and model.config.num_items == 42
    after = model.score(split.test_inputs)
    assert after.shape == (len(split.test_inputs), 42)
    assert torch.allclose(after[:, :40], before, atol=1e-6, rtol=0)
    assert torch.isfinite(after).all()
    # the padding / [mask] ids moved with the catalogue: sequences still score
    items, scores = model.recommend([[0, 1, 40]], k=5)
    assert items.shape == (1, 5)


def test_a_new_item_linked_like_an_existing_one_scores_like_it(split):
    """A new item with the same facts as item 5, whose own e^(0) row is the mean of its
    neighbours' (what a new item's row is set to), is item 5's exact replica: same
    attention, same propagation, same output row, same score."""
    g = split.train_graph
    model = _train_a_little(build_model("kg-sasrec", g, **SMALL_KG, node_types=["item",
                                                                             "entity"]), split)
    enricher = model.item_embedder.enricher
    view = relational_view(g, ("item", "entity"))
    neighbours = view.tail[view.head == 5]
    with torch.no_grad():
        w = enricher.node_emb.weight
        w[5] = w[neighbours].mean(0)
    model.train(False)
    before = model.score(split.test_inputs)
    model.add_items(append_items(g, ["copy-of-5"], _facts_of(g, 5, "copy-of-5")))
    after = model.score(split.test_inputs)
    assert torch.allclose(after[:, 40], after[:, 5], atol=1e-5)
    assert torch.allclose(after[:, :40], before, atol=1e-6, rtol=0)
    # and it is a different item from the others
    assert (after[:, :40] - after[:, 40:]).abs().amax(1).min() > 1e-3


def test_new_item_rows_are_uninformative(split):
    g = split.train_graph
    extended = append_items(g, ["n1", "n2", "n3"])
    # an ID model: rows as at initialisation, reproducible from the generator
    sasrec = build_model("sasrec", g, hidden_size=16,
                         encoder_kwargs={"num_layers": 1, "num_heads": 1})
    rows = []
    for _ in range(2):
        m = build_model("sasrec", g, hidden_size=16, encoder_kwargs={"num_layers": 1,
                                                                      "num_heads": 1})
        m.load_state_dict(sasrec.state_dict())
        m.add_items(43, generator=torch.Generator().manual_seed(5))
        rows.append(m.item_embedder.weight[40:43].detach())
    assert torch.equal(rows[0], rows[1]) and 0.005 < float(rows[0].std()) < 0.05
    # KATRec: the prediction head's biases of new items are 0; a new item without facts gets
    # the mean item row
    katrec = build_model("katrec", g, **SMALL_KG)
    with torch.no_grad():
        katrec.head.output_bias.fill_(0.3)
    w0 = katrec.item_embedder.kge.node_emb.weight[:40].detach().mean(0)
    katrec.add_items(extended)
    assert torch.equal(katrec.head.output_bias[40:], torch.zeros(3))
    assert torch.allclose(katrec.item_embedder.kge.node_emb.weight[40:43], w0.expand(3, -1))
    # popularity: count 0
    pop = build_model("pop", g).fit(split.train)
    pop.add_items(extended)
    assert pop.counts[40:].tolist() == [0, 0, 0] and pop.num_items == 43


def test_kirec_projects_new_features_with_the_fitted_reduction(split):
    g = split.train_graph
    x = torch.randn(40, 24, generator=torch.Generator().manual_seed(0))
    g["item"].x_text = x
    try:
        model = build_model("kirec", g, hidden_size=8, features=["x_text"],
                            encoder_kwargs={"num_layers": 1, "num_heads": 1}).eval()
        before = model.score(split.test_inputs)
        extended = append_items(g, ["n1"], features={"x_text": x[5:6]})
        model.add_items(extended)
        emb = model.item_embedder
        assert torch.allclose(emb.features[40], emb.features[5], atol=1e-6)
        assert torch.equal(emb.ids.weight[40], torch.zeros(8))
        assert torch.allclose(model.score(split.test_inputs)[:, :40], before, atol=1e-6, rtol=0)
        with pytest.raises(ValueError, match="NaN"):  # features not attached for new items
            model.add_items(append_items(extended, ["n2"]))
    finally:
        del g["item"].x_text


def test_an_extended_graph_model_is_not_saved(split, tmp_path):
    model = build_model("kg-sasrec", split.train_graph, **SMALL_KG)
    model.add_items(append_items(split.train_graph, ["n1"]))
    with pytest.raises(ValueError, match="extended by add_items"):
        model.save_pretrained(tmp_path / "m")


def test_add_items_refuses_another_graph(split):
    model = build_model("katrec", split.train_graph, **SMALL_KG)
    with pytest.raises(ValueError, match="differ from the model's graph"):
        model.add_items(split.graph)  # the held-out interactions are not the model's graph
    with pytest.raises(ValueError, match="pass the graph"):
        model.add_items(45)


def test_add_items_needs_items_first_in_the_node_order(split):
    """Other node orders propagate fine, but add_items numbers new items after the existing
    ones at node 0: it says so instead of rejecting a valid graph as 'another graph'."""
    model = build_model("katrec", split.train_graph,
                        **{**SMALL_KG, "node_types": ["entity", "item", "user"]})
    with pytest.raises(ValueError, match="'item' first"):
        model.add_items(append_items(split.train_graph, ["n1"]))


def test_cold_split_end_to_end():
    data = Synthetic(num_users=80, num_items=50, num_entities=10, num_relations=3,
                     seq_len=10)[0]
    split = cold_item_split(data, 0.2, seed=0)
    model = build_model("katrec", split.train_graph, **SMALL_KG)
    assert model.num_items == split.num_warm
    _train_a_little(model, split, steps=1)
    model.add_items(split.cold_graph)
    scores = model.score(split.cold_inputs)
    assert scores.shape == (len(split.cold_inputs), int(data["item"].num_nodes))
    assert torch.isfinite(scores).all()


def test_transr_init_fits_the_new_rows_to_their_triples(split):
    g = split.train_graph
    ent = g["entity"].raw_id
    facts = pd.DataFrame([{"head": "N", "relation": "genre", "tail": ent[0], "tail_type": "entity"},
                          {"head": "N", "relation": "creator", "tail": ent[1],
                           "tail_type": "entity"}])
    model = build_model("kg-sasrec", g, **SMALL_KG).eval()
    before = model.score(split.test_inputs)
    model.add_items(append_items(g, ["N"], facts), init="transr")
    assert torch.allclose(model.score(split.test_inputs)[:, :40], before, atol=1e-6, rtol=0)
    kge = model.item_embedder.kge
    w = kge.node_emb.weight.detach().double()
    proj, rel = kge.rel_proj.detach().double(), kge.rel_emb.weight.detach().double()
    names = model.item_embedder.enricher.relation_names
    e0, e1 = 41, 42  # entity rows come after the 41 items (nodes: items, entities, users)
    x = w[40].clone().requires_grad_(True)
    x0 = (w[e0] + w[e1]) / 2
    loss = 0.1 * ((x - x0) ** 2).sum()
    for r_name, t in (("genre", e0), ("creator", e1)):
        r = names.index(r_name)  # (N, r, t)
        loss = loss + ((x @ proj[r] + rel[r] - w[t] @ proj[r]) ** 2).sum()
        rr = names.index("rev_" + r_name)  # (t, rev_r, N)
        loss = loss + ((w[t] @ proj[rr] + rel[rr] - x @ proj[rr]) ** 2).sum()
    loss.backward()
    assert float(x.grad.abs().max()) < 1e-5  # the minimiser (stored in float32)
    with pytest.raises(ValueError, match="init must be"):
        build_model("kg-sasrec", g, **SMALL_KG).add_items(append_items(g, ["N"], facts),
                                                          init="nope")
