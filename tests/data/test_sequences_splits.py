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
