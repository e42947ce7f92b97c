"""random_cut (the text models' training pairs) and the KG samplers of data.views, on hand-built
inputs."""
import torch
from torch_geometric.data import HeteroData

from kgseqgraph.data import Sequences, random_cut, relational_view
from kgseqgraph.data.views import sample_neighbors, sample_relation_tails


def test_random_cut_last_and_bounds():
    seqs = Sequences.from_lists([[5, 6, 7, 8], [1, 2], [3, 4, 9, 0, 2, 1]], 10)
    hist, tgt = random_cut(seqs)
    assert hist.to_list()[0].tolist() == [5, 6, 7] and tgt.tolist() == [8, 2, 1]
    g = torch.Generator().manual_seed(0)
    seen = {0: set(), 2: set()}
    for _ in range(200):
        hist, tgt = random_cut(seqs, g, min_history=2)
        for row in (0, 2):
            cut = int(hist.lengths[row])
            seen[row].add(cut)
            assert tgt[row] == seqs[row][cut]          # the target follows the history
            assert hist[row].tolist() == seqs[row][:cut].tolist()
        assert int(hist.lengths[1]) == 1               # length 2: min(2, L-1) = 1
    assert seen == {0: {2, 3}, 2: {2, 3, 4, 5}}        # uniform over [min(h, L-1), L-1]
    assert torch.equal(random_cut(seqs, torch.Generator().manual_seed(3))[1],
                       random_cut(seqs, torch.Generator().manual_seed(3))[1])


def _graph() -> HeteroData:
    d = HeteroData()
    d["item"].num_nodes = 2
    d["entity"].num_nodes = 4
    # item 0: genre -> e0, e1 ; actor -> e2 ; item 1: genre -> e1
    d["item", "genre", "entity"].edge_index = torch.tensor([[0, 0, 1], [0, 1, 1]])
    d["item", "actor", "entity"].edge_index = torch.tensor([[0], [2]])
    d["entity", "films", "item"].edge_index = torch.tensor([[1, 1, 3], [0, 1, 1]])
    return d


def test_sample_relation_tails_first_and_random():
    view = relational_view(_graph(), ("item", "entity"), include_reverse=False)
    rel = {n: i for i, n in enumerate(view.relation_names)}
    # evaluation: the first k relations in relation-id order, the first tail of each
    out = sample_relation_tails(view, torch.tensor([0, 1, 3]), 2)
    got = [[(view.relation_names[int(view.relation[e])], int(view.tail[e])) if e >= 0 else None
            for e in row] for row in out]
    genre_first = rel["genre"] < rel["actor"]
    first = [("genre", 2), ("actor", 4)] if genre_first else [("actor", 4), ("genre", 2)]
    assert got == [first, [("genre", 3), None], [("films", 0), None]]  # entity e = node 2 + e
    # training: a random subset of relations, one uniform tail each
    g = torch.Generator().manual_seed(0)
    tails = set()
    for _ in range(100):
        row = sample_relation_tails(view, torch.tensor([0]), 1, g)[0]
        tails.add((view.relation_names[int(view.relation[row[0]])], int(view.tail[row[0]])))
    assert tails == {("genre", 2), ("genre", 3), ("actor", 4)}


def test_sample_neighbors():
    view = relational_view(_graph(), ("item", "entity"))
    out = sample_neighbors(view, torch.tensor([0, 1]), 5)
    assert (out[0] >= 0).sum() == 3 and (out[1] >= 0).sum() == 1   # item 1: genre only
    assert set(view.tail[out[0][out[0] >= 0]].tolist()) == {2, 3, 4}
    g = torch.Generator().manual_seed(1)
    draws = {tuple(sorted(view.tail[sample_neighbors(view, torch.tensor([0]), 2, g)[0]].tolist()))
             for _ in range(60)}
    assert draws == {(2, 3), (2, 4), (3, 4)}                     # without replacement
