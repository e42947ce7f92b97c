"""Beam search (exact against enumeration when the beam holds every hypothesis), the prefix trie,
item mapping (LANCER Eq. 8–9), and ranked lists as scores: the Evaluator's HR@k/NDCG@k on them
equal the metrics of the list itself."""
import itertools
import math

import pytest
import torch

from kgseqgraph.data import Sequences
from kgseqgraph.evaluation import Evaluator
from kgseqgraph.nn.decoding import (PrefixTrie, beam_search, map_to_items, max_pooled_embeddings,
                                    ranked_list_scores)

V, STOP = 3, 0
TRANS = torch.log_softmax(torch.tensor([[0.3, 1.0, -0.5], [0.2, -1.0, 0.9], [1.5, 0.1, -0.2],
                                        [0.0, 0.7, 0.4]]), -1)   # row 3: the start state


def markov_step(batch, K, record=None):
    state = {"last": torch.full((batch * K,), 3)}

    def step(tok, origin):
        if tok is not None:
            state["last"] = tok.clone()
            if record is not None:
                record.append(origin.clone())
        return TRANS[state["last"]]
    return step


def enumerate_hypotheses(max_steps, length_penalty):
    out = []
    for n in range(1, max_steps + 1):
        for seq in itertools.product(range(V), repeat=n):
            if STOP in seq[:-1] or (n < max_steps and seq[-1] != STOP):
                continue
            prev, s = 3, 0.0
            for t in seq:
                s += float(TRANS[prev, t])
                prev = t
            out.append((s / n ** length_penalty, list(seq)))
    return sorted(out, key=lambda x: -x[0])


def test_beam_search_is_exact_when_the_beam_holds_everything():
    res = beam_search(markov_step(2, 12), 2, 12, 3, [STOP], num_return=6, length_penalty=0.0)
    expected = enumerate_hypotheses(3, 0.0)[:6]
    for b in range(2):
        assert res.sequences(b) == [seq for _, seq in expected]
        torch.testing.assert_close(res.scores[b], torch.tensor([s for s, _ in expected]))


def test_small_beam_keeps_the_best_running_hypotheses():
    origins = []
    res = beam_search(markov_step(1, 2, origins), 1, 2, 2, [STOP])
    # step 1 from the start state: best tokens 1 (0.7) then 2 (0.4) then stop (0.0)
    assert len(origins) == 1 and origins[0].tolist() == [0, 0]
    best = [seq for _, seq in enumerate_hypotheses(2, 1.0)]
    assert res.sequences(0)[0] == best[0]


def test_constrained_beam_search_only_generates_valid_sequences():
    seqs = [[1, 2, 0], [1, 0], [2, 2, 0]]
    trie = PrefixTrie(seqs, V)
    assert trie.allowed(torch.tensor([[1], [2]])).tolist() == [[True, False, True],
                                                                [False, False, True]]
    assert trie.allowed(torch.zeros(1, 0, dtype=torch.long)).tolist() == [[False, True, True]]
    assert trie.lookup([2, 2, 0]) == 2 and trie.lookup([2, 0]) == -1 and trie.max_length == 3
    res = beam_search(markov_step(1, 4), 1, 4, trie.max_length, [STOP], allowed=trie.allowed)
    got = [trie.lookup(s) for s in res.sequences(0)]
    assert sorted(got) == [0, 1, 2]                    # every valid item, nothing else
    with pytest.raises(ValueError):
        PrefixTrie([[5]], V)


def test_ranked_list_scores_first_occurrence_and_missing():
    s = ranked_list_scores(torch.tensor([[3, 1, 3, -1], [-1, -1, -1, -1]]), 5)
    assert s[0].tolist() == [float("-inf"), 3.0, float("-inf"), 4.0, float("-inf")]
    assert torch.isinf(s[1]).all()


class _ListModel:
    num_items = 60

    def __init__(self, lists):
        self.lists = lists

    def score(self, seqs):
        return ranked_list_scores(self.lists[seqs.users], self.num_items)


def _list_metrics(lst, target, k, drop=()):
    seen, ranked = set(), []
    for i in lst:
        if i >= 0 and i not in seen and i not in drop:
            seen.add(i)
            ranked.append(i)
    if target in ranked[:k]:
        r = ranked.index(target) + 1
        return 1.0, 1.0 / math.log2(r + 1)
    return 0.0, 0.0


@pytest.mark.parametrize("exclude", [False, True])
def test_evaluator_metrics_on_beam_scores_equal_the_list_metrics(exclude):
    g = torch.Generator().manual_seed(0)
    B = 40
    lists = torch.randint(-1, 14, (B, 10), generator=g)        # duplicates and gaps included
    targets = torch.randint(0, 14, (B,), generator=g)
    hist = [torch.randint(0, 14, (3,), generator=g).tolist() for _ in range(B)]
    inputs = Sequences.from_lists(hist, 60)
    ev = Evaluator(ks=(5, 10), ties="pessimistic", exclude_history=exclude)
    got = ev.evaluate(_ListModel(lists), inputs, targets)
    for k in (5, 10):
        hr, nd = zip(*[_list_metrics(lists[b].tolist(), int(targets[b]), k,
                                     drop=set(hist[b]) - {int(targets[b])} if exclude else ())
                       for b in range(B)])
        assert got[f"HR@{k}"] == pytest.approx(sum(hr) / B)
        assert got[f"NDCG@{k}"] == pytest.approx(sum(nd) / B)
    assert 0 < got["HR@10"] < 1


def test_max_pooling_and_item_mapping_eq_8_9():
    table = torch.tensor([[0.0, 0.0], [1.0, -1.0], [-2.0, 3.0], [0.5, 0.5]])
    ids = torch.tensor([[1, 2, 0], [3, 0, 0], [0, 0, 0]])
    mask = torch.tensor([[True, True, False], [True, False, False], [False, False, False]])
    pooled = max_pooled_embeddings(ids, mask, table)
    assert pooled.tolist() == [[1.0, 3.0], [0.5, 0.5], [0.0, 0.0]]
    items = torch.tensor([[1.0, 3.1], [1.0, 1.0], [-1.0, 0.0]])   # item texts' pooled embeddings
    assert map_to_items(ids, mask, items, table).tolist() == [0, 1, -1]


def test_list_memo_reuses_until_cleared():
    from kgseqgraph.nn.decoding import ListMemo

    memo, calls = ListMemo(), []
    gen = lambda: calls.append(1) or torch.tensor([len(calls)])  # noqa: E731
    a = torch.tensor([1, 2])
    assert memo([a], gen).item() == 1 and memo([a.clone()], gen).item() == 1
    assert memo([torch.tensor([2, 1])], gen).item() == 2
    memo.clear()
    assert memo([a], gen).item() == 3
