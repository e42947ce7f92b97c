"""Synthetic: sizes, determinism, the planted KG signal and the popularity skew."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from kgseqgraph.datasets import Synthetic, SyntheticConfig, make_synthetic

INTERACTS = ("user", "interacts", "item")


def item_entity_matrix(d) -> np.ndarray:
    """Dense item x entity incidence from the graph's item->entity KG edges."""
    a = np.zeros((d["item"].num_nodes, d["entity"].num_nodes), dtype=bool)
    for src, rel, dst in d.edge_types:
        if src == "item" and dst == "entity" and not rel.startswith("rev_"):
            ei = d[src, rel, dst].edge_index.numpy()
            a[ei[0], ei[1]] = True
    return a


def consecutive_pairs(d):
    u, i = d[INTERACTS].edge_index.numpy()
    same = u[1:] == u[:-1]
    return i[:-1][same], i[1:][same]


def test_default_sizes_and_layout():
    ds = Synthetic()
    d = ds[0]
    assert len(ds) == 1 and ds.data is d
    assert d["user"].num_nodes == 1000 and d["item"].num_nodes == 500
    assert d["entity"].num_nodes <= 50 and len(d.relation_names) == 5
    n = d[INTERACTS].num_edges
    lengths = torch.bincount(d[INTERACTS].edge_index[0], minlength=1000)
    assert int(lengths.min()) >= 10 and int(lengths.max()) <= 30
    assert n == int(lengths.sum()) and 15_000 < n < 25_000
    # times strictly increase within each user's (contiguous) sequence
    u, t = d[INTERACTS].edge_index[0], d[INTERACTS].time
    same = u[1:] == u[:-1]
    assert bool((t[1:][same] > t[:-1][same]).all())
    # every item has 1..2 entities; item text names them
    a = item_entity_matrix(d)
    assert a.sum(1).min() >= 1 and a.sum(1).max() <= 2
    assert d["item"].text[0].startswith("item 0: ")
    assert len(d["item"].text[0].split(", ")) == int(a[0].sum())
    # entity -> entity edges exist (each entity links to another one)
    assert any(s == "entity" and t_ == "entity" for s, _, t_ in d.edge_types)


def test_deterministic_by_seed():
    a, b = make_synthetic(num_users=200, num_items=100, seed=7), make_synthetic(
        num_users=200, num_items=100, seed=7)
    c = make_synthetic(num_users=200, num_items=100, seed=8)
    assert a.edge_types == b.edge_types
    for et in a.edge_types:
        assert torch.equal(a[et].edge_index, b[et].edge_index)
    assert torch.equal(a[INTERACTS].time, b[INTERACTS].time)
    assert a["item"].text == b["item"].text and a["entity"].raw_id == b["entity"].raw_id
    assert not torch.equal(a[INTERACTS].edge_index, c[INTERACTS].edge_index)


def test_planted_signal_far_above_random():
    d = make_synthetic(seed=0)
    a = item_entity_matrix(d)
    prev, nxt = consecutive_pairs(d)
    share = (a[prev] & a[nxt]).any(1).mean()
    # baseline: same items, pairing destroyed (keeps the popularity distribution)
    shuffled = np.random.default_rng(0).permutation(nxt)
    base = (a[prev] & a[shuffled]).any(1).mean()
    assert share > 0.55 and base < 0.2 and share > 3 * base
    # no signal when every step is noise
    flat = make_synthetic(seed=0, noise_prob=1.0)
    a2 = item_entity_matrix(flat)
    p2, n2 = consecutive_pairs(flat)
    assert (a2[p2] & a2[n2]).any(1).mean() < 0.2


def test_popularity_skew():
    d = make_synthetic(seed=0)
    counts = np.bincount(d[INTERACTS].edge_index[1].numpy(), minlength=500)
    top = np.sort(counts)[::-1][:50].sum() / counts.sum()
    assert top > 0.3  # the top 10% of items get far more than 10% of the interactions
    uniform = make_synthetic(seed=0, popularity_exponent=0.0, noise_prob=1.0)
    c2 = np.bincount(uniform[INTERACTS].edge_index[1].numpy(), minlength=500)
    assert np.sort(c2)[::-1][:50].sum() / c2.sum() < 0.2


def test_config_validation():
    with pytest.raises(ValueError, match="num_relations"):
        make_synthetic(num_entities=3, num_relations=5)
    with pytest.raises(ValueError, match="switch_prob"):
        make_synthetic(switch_prob=1.5)
    with pytest.raises(ValueError, match="num_users"):
        Synthetic(num_users=0)
    cfg = SyntheticConfig(num_users=30, num_items=20, num_entities=5, num_relations=2, seq_len=4)
    d = make_synthetic(cfg, seed=1)
    assert d["user"].num_nodes == 30 and d.synthetic_config["seed"] == 1
