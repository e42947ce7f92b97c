"""The cold-item split and the catalogue operations it is made of (reorder, first items, append)."""
import pandas as pd
import pytest
import torch

from kgseqgraph.data import (INTERACTS, ColdItemSplit, append_items, cold_item_split,
                             first_items, graph_fingerprint, relational_view, reorder_items,
                             user_sequences)
from kgseqgraph.datasets import Synthetic

NODE_TYPES = ("item", "entity", "user")


@pytest.fixture(scope="module")
def data():
    return Synthetic(num_users=80, num_items=50, num_entities=10, num_relations=3, seq_len=10)[0]


def test_reorder_items_remaps_edges_and_attributes(data):
    n = int(data["item"].num_nodes)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    out = reorder_items(data, order)
    assert out["item"].raw_id == [data["item"].raw_id[i] for i in order.tolist()]
    assert out["item"].text == [data["item"].text[i] for i in order.tolist()]
    # the same interactions, item ids renamed; the input graph is untouched
    assert torch.equal(order[out[INTERACTS].edge_index[1]], data[INTERACTS].edge_index[1])
    assert torch.equal(out[INTERACTS].time, data[INTERACTS].time)
    et = ("item", "genre", "entity")
    assert torch.equal(order[out[et].edge_index[0]], data[et].edge_index[0])
    assert data["item"].raw_id[:3] == list(range(3))
    with pytest.raises(ValueError, match="permutation"):
        reorder_items(data, torch.zeros(n, dtype=torch.long))


def test_first_items_drops_edges_of_the_others(data):
    out = first_items(data, 30)
    assert out["item"].num_nodes == 30 and len(out["item"].raw_id) == 30
    for et in out.edge_types:
        ei = out[et].edge_index
        if et[0] == "item":
            assert bool((ei[0] < 30).all())
        if et[2] == "item":
            assert bool((ei[1] < 30).all())
    keep = data[INTERACTS].edge_index[1] < 30
    assert torch.equal(out[INTERACTS].time, data[INTERACTS].time[keep])
    assert int(data["item"].num_nodes) == 50


def test_cold_item_split_holds_items_out_entirely(data):
    split = cold_item_split(data, 0.2, seed=3)
    assert isinstance(split, ColdItemSplit)
    n = int(data["item"].num_nodes)
    interacted = torch.unique(data[INTERACTS].edge_index[1]).numel()
    assert split.num_cold == round(0.2 * interacted) and split.num_warm == n - split.num_cold
    cold = set(split.original_items[split.num_warm:].tolist())
    # the same seed chooses the same items; another seed others
    assert cold == set(cold_item_split(data, 0.2, seed=3).original_items[split.num_warm:].tolist())
    assert cold != set(cold_item_split(data, 0.2, seed=4).original_items[split.num_warm:].tolist())
    # nothing trains on a cold item: not the sequences, not the graph, not a warm target
    assert split.train.num_items == split.num_warm
    assert int(split.train.items.max()) < split.num_warm
    assert int(split.train_graph[INTERACTS].edge_index[1].max()) < split.num_warm
    assert int(split.train_graph["item"].num_nodes) == split.num_warm
    for t in (split.valid_targets, split.test_targets):
        assert int(t.max()) < split.num_warm
    # the cold test: the first cold item of a user, after >= 1 warm item, none cold before
    assert len(split.cold_inputs) == split.cold_targets.numel() > 0
    assert bool((split.cold_targets >= split.num_warm).all())
    assert int(split.cold_inputs.items.max()) < split.num_warm
    assert int(split.cold_inputs.lengths.min()) >= 1
    full = user_sequences(split.full_graph)
    for row in range(len(split.cold_inputs)):
        u = int(split.cold_users[row])
        seq = full[u]
        first = int((seq >= split.num_warm).nonzero()[0])
        assert torch.equal(split.cold_inputs[row], seq[:first])
        assert int(split.cold_targets[row]) == int(seq[first])
    # raw ids follow the items
    raw = data["item"].raw_id
    assert split.full_graph["item"].raw_id == [raw[i] for i in split.original_items.tolist()]
    assert split.report["cold_test_users"] == len(split.cold_inputs)


def test_cold_graph_extends_the_training_graph(data):
    split = cold_item_split(data, 0.2, seed=3)
    g = split.cold_graph
    assert int(g["item"].num_nodes) == int(data["item"].num_nodes)
    # only the training interactions (none with a cold item), every item's KG facts
    assert torch.equal(g[INTERACTS].edge_index, split.train_graph[INTERACTS].edge_index)
    kg = [et for et in g.edge_types if "interacts" not in et[1]]
    assert sum(g[et].edge_index.size(1) for et in kg) == \
        sum(data[et].edge_index.size(1) for et in kg)
    # its first num_warm items are exactly the model's training graph
    assert graph_fingerprint(first_items(g, split.num_warm), NODE_TYPES) == \
        graph_fingerprint(split.train_graph, NODE_TYPES)
    # same relation numbering in both views (the model's relations are the cold graph's)
    assert relational_view(g, NODE_TYPES).relation_names == \
        relational_view(split.train_graph, NODE_TYPES).relation_names


def test_cold_item_split_arguments(data):
    with pytest.raises(ValueError, match="fraction"):
        cold_item_split(data, 0.0)
    with pytest.raises(ValueError, match="min_history"):
        cold_item_split(data, 0.1, min_history=0)


def test_append_items(data):
    triples = pd.DataFrame({"head": ["new-a", "new-b"], "relation": ["genre", "creator"],
                            "tail": [data["entity"].raw_id[0], 3],
                            "tail_type": ["entity", "item"]})
    out = append_items(data, ["new-a", "new-b"], triples, text=["A film", "B film"])
    n = int(data["item"].num_nodes)
    assert int(out["item"].num_nodes) == n + 2
    assert out["item"].raw_id[-2:] == ["new-a", "new-b"] and out["item"].text[-1] == "B film"
    ei = out["item", "genre", "entity"].edge_index
    assert ei[:, -1].tolist() == [n, 0]
    assert out["entity", "rev_genre", "item"].edge_index[:, -1].tolist() == [0, n]
    assert out["item", "creator", "item"].edge_index.tolist() == [[n + 1], [3]]
    assert out["item", "rev_creator", "item"].edge_index.tolist() == [[3], [n + 1]]
    assert int(data["item"].num_nodes) == n  # untouched
    assert torch.equal(out[INTERACTS].edge_index, data[INTERACTS].edge_index)
    with pytest.raises(ValueError, match="already items"):
        append_items(data, [data["item"].raw_id[0]])
    with pytest.raises(ValueError, match="both an item and an entity"):
        append_items(data, ["x"], pd.DataFrame({"head": ["x"], "relation": ["genre"],
                                                "tail": [data["entity"].raw_id[0]]}))
    with pytest.raises(ValueError, match="unknown relation"):
        append_items(data, ["x"], pd.DataFrame({"head": ["x"], "relation": ["nope"],
                                                "tail": [3], "tail_type": ["item"]}))
    with pytest.raises(ValueError, match="no new item"):
        append_items(data, ["x"], pd.DataFrame({"head": [1], "relation": ["genre"], "tail": [3],
                                                "head_type": ["item"], "tail_type": ["item"]}))
