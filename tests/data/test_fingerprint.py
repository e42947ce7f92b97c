"""The graph fingerprint that ties a saved graph model to the graph it was trained on."""
import torch
from torch_geometric.data import HeteroData

from kgseqgraph.data import compare_fingerprints, graph_fingerprint
from kgseqgraph.datasets import Synthetic


def _graph(seed: int = 0) -> HeteroData:
    return Synthetic(num_users=30, num_items=20, num_entities=8, num_relations=2, seq_len=5,
                     seed=seed)[0]


def test_same_graph_same_fingerprint_and_counts():
    a, b = graph_fingerprint(_graph()), graph_fingerprint(_graph())
    assert a == b and compare_fingerprints(a, b) is None
    assert a["num_nodes"] == {"item": 20, "entity": 8}  # the KG's node types by default
    assert sum(a["num_edges"].values()) > 0 and len(a["sha256"]) == 64
    everything = graph_fingerprint(_graph(), node_types=None)
    assert everything["num_nodes"]["user"] == 30 and everything["sha256"] != a["sha256"]


def test_any_edge_or_order_change_is_detected():
    g = _graph()
    ref = graph_fingerprint(g)
    et = next(t for t in g.edge_types
              if "user" not in (t[0], t[2]) and g[t].edge_index.size(1) > 1)
    moved = g.clone()
    ei = moved[et].edge_index.clone()
    ei[1, 0] = (ei[1, 0] + 1) % int(g[et[2]].num_nodes)  # one edge points elsewhere
    moved[et].edge_index = ei
    msg = compare_fingerprints(ref, graph_fingerprint(moved))
    assert msg == "same node and edge counts, but different edges or node order"
    swapped = g.clone()
    swapped[et].edge_index = g[et].edge_index.flip(1)  # same edges, other order
    assert compare_fingerprints(ref, graph_fingerprint(swapped)) is not None


def test_count_differences_are_named_and_interactions_are_left_out():
    more_users = Synthetic(num_users=31, num_items=20, num_entities=8, num_relations=2, seq_len=5,
                           seed=0)[0]
    g = _graph()
    kg_only = graph_fingerprint(g)
    # KG untouched, more interactions: the same KG fingerprint, a different whole-graph one
    same_kg = compare_fingerprints(kg_only, graph_fingerprint(more_users))
    whole = compare_fingerprints(graph_fingerprint(g, None), graph_fingerprint(more_users, None))
    kg_edges = [t for t in g.edge_types if "user" not in (t[0], t[2])]
    if all(torch.equal(g[t].edge_index, more_users[t].edge_index) for t in kg_edges):
        assert same_kg is None
    assert "nodes of 'user': 30 expected, 31 given" in whole
    more_items = Synthetic(num_users=30, num_items=21, num_entities=8, num_relations=2, seq_len=5,
                           seed=0)[0]
    assert "nodes of 'item': 20 expected, 21 given" in compare_fingerprints(
        kg_only, graph_fingerprint(more_items))


def test_not_a_graph_gives_none():
    assert graph_fingerprint(torch.zeros(3)) is None
