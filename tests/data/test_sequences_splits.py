import pandas as pd
import pytest
import torch

from kgseqgraph.data import (IGNORE_INDEX, Sequences, append_mask_token, build_collaborative_kg,
                             cloze_mask, leave_one_out, mask_id, pad_sequences, shifted_targets,
                             training_windows, user_sequences)
from kgseqgraph.data.describe import describe, format_description
from kgseqgraph.testing import require_data


def _graph():
    inter = pd.DataFrame({
        "user": ["a"] * 5 + ["b"] * 2 + ["c"] * 3,
        "item": [1, 2, 3, 4, 5, 1, 2, 3, 1, 2],
        "time": [5, 1, 3, 3, 9, 1, 2, 7, 7, 7],
    })
    return build_collaborative_kg(inter, items=[1, 2, 3, 4, 5])


def test_user_sequences_stable_on_equal_time():
    seqs = user_sequences(_graph())
    # user a: times 5,1,3,3,9 → items 2(t1), 3(t3), 4(t3, later row), 1(t5), 5(t9)
    assert seqs[0].tolist() == [1, 2, 3, 0, 4]
    # user c: all time 7 → input order 3, 1, 2
    assert seqs[2].tolist() == [2, 0, 1]


def test_leave_one_out_views_and_report():
    split = leave_one_out(_graph())
    assert split.report["users_evaluated"] == 2 and split.report["users_short"] == 1
    assert split.train.to_list()[0].tolist() == [1, 2, 3]
    assert split.train.to_list()[1].tolist() == [0, 1]  # short user b: training only
    assert split.valid_targets.tolist() == [0, 0]
    assert split.test_targets.tolist() == [4, 1]
    assert split.test_inputs[0].tolist() == [1, 2, 3, 0]
    dropped = leave_one_out(_graph(), short_users="drop")
    assert len(dropped.train) == 2 and dropped.train.users.tolist() == [0, 2]
    with pytest.raises(ValueError):
        leave_one_out(_graph(), min_length=2)


@pytest.mark.realdata
def test_leave_one_out_on_ml100k():
    root = require_data("ml-100k/ml-100k.inter")
    inter = pd.read_csv(root, sep="\t", header=0, names=["user", "item", "rating", "time"])
    data = build_collaborative_kg(inter)
    split = leave_one_out(data)
    seqs = user_sequences(data)
    assert split.report["users_evaluated"] == 943
    t = data["user", "interacts", "item"].time
    ei = data["user", "interacts", "item"].edge_index
    for u in range(0, 943, 7):
        sel = ei[0] == u
        user_times, user_items = t[sel], ei[1][sel]
        last_time = user_times.max()
        # the test item is the user's last by time (the last row among those at the max time)
        assert int(split.test_targets[u]) in user_items[user_times == last_time].tolist()
        assert int(split.test_targets[u]) == int(seqs[u][-1])
        # no test item in that user's train input (ML-100K has no repeated items per user)
        assert int(split.test_targets[u]) not in split.train[u].tolist()
        assert int(split.valid_targets[u]) not in split.train[u].tolist()
        assert split.train[u].numel() + 2 == seqs[u].numel()


def test_padding_truncation_and_targets():
    s = Sequences.from_lists([[1, 2, 3, 4, 5], [3], []], num_items=10)
    left = pad_sequences(s, 3, 10)
    assert left.items.tolist() == [[3, 4, 5], [10, 10, 3], [10, 10, 10]]
    assert left.mask.sum(1).tolist() == [3, 1, 0]
    right = pad_sequences(s, 3, 10, side="right")
    assert right.items.tolist() == [[3, 4, 5], [3, 10, 10], [10, 10, 10]]
    inp, tgt = shifted_targets(left)
    assert inp.items.tolist() == [[3, 4], [10, 10], [10, 10]]
    assert tgt.tolist() == [[4, 5], [IGNORE_INDEX] * 2, [IGNORE_INDEX] * 2]


def test_training_windows_cover_every_target_once():
    s = Sequences.from_lists([list(range(23)), [4, 5], [7]], num_items=30)
    w = training_windows(s, max_len=5)
    batch = pad_sequences(w, 6, 30)
    _, tgt = shifted_targets(batch)
    targets = sorted(tgt[tgt != IGNORE_INDEX].tolist())
    assert targets == sorted(list(range(1, 23)) + [5])
    assert w.lengths.max() <= 6


def test_cloze_mask_and_mask_token():
    s = Sequences.from_lists([[1, 2, 3, 4], [5], []], num_items=10)
    batch = pad_sequences(s, 4, 10)
    g = torch.Generator().manual_seed(0)
    masked, tgt = cloze_mask(batch, 10, mask_prob=0.01, generator=g)
    # at least one masked item per non-empty row, none in padding
    assert ((masked.items == mask_id(10)).sum(1) >= torch.tensor([1, 1, 0])).all()
    assert not (masked.items[~batch.mask] == mask_id(10)).any()
    assert torch.equal(tgt[masked.items == mask_id(10)], batch.items[masked.items == mask_id(10)])
    assert (tgt[masked.items != mask_id(10)] == IGNORE_INDEX).all()
    inf = append_mask_token(s, 3, 10)
    assert inf.items.tolist() == [[3, 4, 11], [10, 5, 11], [10, 10, 11]]


def test_describe():
    summary = describe(_graph())
    assert summary["nodes"]["user"] == 3 and summary["interactions"] == 10
    assert summary["sequence_length"]["users_under_3"] == 1
    assert abs(summary["density"] - 10 / 15) < 1e-9
    assert "interactions: 10" in format_description(summary)


# ------------------------------------------------------------------ the training graph
def _planted():
    """Each user u interacts with a shared item s_u, then two more shared items, then its own
    item t_u that nobody else has (its test target) and that has no KG edge: in the full
    collaborative KG t_u is reachable from the history only through the held-out u -> t_u edge."""
    rows = []
    for u in range(4):
        for k, item in enumerate([f"s{u % 2}", f"s{2 + u % 2}", "v", f"t{u}"]):
            rows.append((f"u{u}", item, k))
    inter = pd.DataFrame(rows, columns=["user", "item", "time"])
    triples = pd.DataFrame({"head": ["s0", "s1", "s2", "s3", "v"], "relation": ["r"] * 5,
                            "tail": ["e0", "e0", "e1", "e1", "e1"]})
    links = pd.DataFrame({"item": ["s0", "s1", "s2", "s3", "v"],
                          "entity": ["s0", "s1", "s2", "s3", "v"]})
    return build_collaborative_kg(inter, triples, links)


def test_train_graph_holds_only_training_interactions():
    data = _graph()
    split = leave_one_out(data)
    g = split.train_graph
    ei = g["user", "interacts", "item"].edge_index
    # a: 2,3,4 of [2,3,4,1,5] (1 and 5 held out); b is short (kept whole); c: 3 of [3,1,2]
    assert sorted(zip(ei[0].tolist(), ei[1].tolist())) == [(0, 1), (0, 2), (0, 3), (1, 0),
                                                           (1, 1), (2, 2)]
    assert torch.equal(g["item", "rev_interacts", "user"].edge_index, ei.flip(0))
    assert g["user", "interacts", "item"].time.tolist() == [1, 3, 3, 1, 2, 7]
    assert split.report["held_out_interactions"] == 4
    # nodes and everything else are shared, not copied
    assert g["item"].num_nodes == data["item"].num_nodes and g["item"].raw_id is data["item"].raw_id
    assert data["user", "interacts", "item"].edge_index.size(1) == 10  # the full graph is intact
    dropped = leave_one_out(data, short_users="drop").train_graph
    assert 1 not in dropped["user", "interacts", "item"].edge_index[0].tolist()
    with pytest.raises(ValueError, match="no training graph"):
        leave_one_out(user_sequences(data)).train_graph


def test_propagation_over_the_train_graph_cannot_reach_held_out_targets():
    from kgseqgraph.nn.embed import KGEnricher

    data = _planted()
    split = leave_one_out(data)
    torch.manual_seed(0)
    items = data["item"].raw_id
    for graph, leaks in ((data, True), (split.train_graph, False)):
        enricher = KGEnricher(graph, in_channels=4, hidden_channels=(4, 4),
                              node_types=("item", "entity", "user"), use_attention=False,
                              dropout=0.0)
        x0 = enricher.node_emb.weight
        out = enricher.node_embeddings()
        for u in range(4):
            history = items.index(f"s{u % 2}")  # u's first item: item -> user -> item, 2 hops
            target = items.index(f"t{u}")
            grad, = torch.autograd.grad(out[history].sum(), x0, retain_graph=True)
            reaches = bool(grad[target].abs().sum() > 0)
            assert reaches == leaks, (graph is data, u)


@pytest.mark.realdata
def test_train_graph_edge_counts_on_ml100k():
    root = require_data("ml-100k/ml-100k.inter", "ml-100k/ml-100k.kg", "ml-100k/ml-100k.link")
    from kgseqgraph.data import kg_edge_types
    from kgseqgraph.datasets.registry import load_dataset

    data = load_dataset("ml-100k", root.parent)
    split = leave_one_out(data)
    g = split.train_graph
    assert data["user", "interacts", "item"].edge_index.size(1) == 100_000
    assert g["user", "interacts", "item"].edge_index.size(1) == 100_000 - 2 * 943 == 98_114
    assert g["item", "rev_interacts", "user"].edge_index.size(1) == 98_114
    assert g["user", "interacts", "item"].rating.numel() == 98_114
    assert split.report["train_interactions"] == 98_114
    for et in kg_edge_types(data):
        assert g[et].edge_index is data[et].edge_index
    # no held-out (user, target) pair is an edge of the training graph
    ei = g["user", "interacts", "item"].edge_index
    keys = set((ei[0] * data["item"].num_nodes + ei[1]).tolist())
    n = data["item"].num_nodes
    for inputs, targets in ((split.valid_inputs, split.valid_targets),
                            (split.test_inputs, split.test_targets)):
        held = (inputs.users * n + targets).tolist()
        assert not keys.intersection(held)
