import pytest
import torch

from kgseqgraph.data.triples import TripleIndex, kg_triples, split_triples
from kgseqgraph.evaluation.link_prediction import (filtered_rank_counts, link_prediction_metrics,
                                                   random_baseline)
from kgseqgraph.nn.kge import TransR
from kgseqgraph.training.kge import KGETrainConfig, train_kge


@pytest.mark.realdata
def test_transr_trains_on_ml100k(ml100k_graph):
    torch.manual_seed(0)
    tr = kg_triples(ml100k_graph)
    assert (tr.num_nodes, tr.num_relations, tr.head.numel()) == (34712, 48, 183262)
    sp = split_triples(tr, seed=0)
    m = TransR(tr.num_nodes, tr.num_relations, 32, 32)
    first = train_kge(m, tr, KGETrainConfig(epochs=1, lr=1e-3, seed=0, max_steps=10),
                      index=sp.train)
    train_kge(m, tr, KGETrainConfig(epochs=1, lr=1e-3, seed=1, max_steps=150), index=sp.train)
    last = train_kge(m, tr, KGETrainConfig(epochs=1, lr=1e-3, seed=2, max_steps=10),
                     index=sp.train)
    assert last[0] < 0.5 * first[0]  # the pairwise loss falls (starts near ln 2)
    everything = TripleIndex(tr.head, tr.relation, tr.tail, tr.num_nodes, tr.num_relations)
    test = sp.test[:1000]
    counts, n = filtered_rank_counts(m, tr.head[test], tr.relation[test], tr.tail[test],
                                     everything)
    assert link_prediction_metrics(counts)["mrr"] > 10 * random_baseline(n)["mrr"]
