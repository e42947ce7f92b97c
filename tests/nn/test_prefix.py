"""LANCER's prompt layers: Eq. 1–3 (knowledge prefix), Eq. 5 (reasoning prompt) and the KG
neighbour entries, each pinned by hand-built values."""
import math

import pytest
import torch

from kgseqgraph.nn.prefix import (NeighborEmbedding, PrefixKeyValues, ReasoningPromptAttention,
                                  split_prefix)


def _set(lin, weight, bias):
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(weight, dtype=torch.float))
        lin.bias.copy_(torch.tensor(bias, dtype=torch.float))


def test_knowledge_prefix_eq_1_to_3_by_hand():
    p = PrefixKeyValues(num_layers=1, num_kv_heads=1, head_dim=1, length=2, dim=2, dropout=0.0)
    with torch.no_grad():
        p.tokens.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -2.0]]))
    _set(p.mlp1, [[1.0, 0.0], [0.0, 1.0]], [0.0, 0.5])          # Eq. 1
    _set(p.mlp2, [[1.0, 0.0], [0.0, 2.0]], [0.0, 0.5])          # Eq. 2
    t1, t2, t3 = math.tanh(1.0), math.tanh(0.5), math.tanh(-1.5)
    torch.testing.assert_close(p.hidden(), torch.tensor([[t1, t2], [0.0, t3]]))
    (k, v), = p.keys_values(batch_size=3)                       # Eq. 3
    assert k.shape == v.shape == (3, 1, 2, 1)
    torch.testing.assert_close(k[0, 0, :, 0], torch.tensor([t1, 0.0]))
    torch.testing.assert_close(v[0, 0, :, 0], torch.tensor([2 * t2 + 0.5, 2 * t3 + 0.5]))
    torch.testing.assert_close(k[2], k[0])


def test_split_prefix_layout_is_key_value_then_layer_then_head():
    L, H, dh = 2, 3, 2
    flat = torch.arange(2 * L * H * dh, dtype=torch.float).view(1, 1, -1).repeat(1, 4, 1)
    kv = split_prefix(flat, L, H, dh)
    for layer, (k, v) in enumerate(kv):
        assert k.shape == (1, H, 4, dh)
        for h in range(H):
            start = (0 * L + layer) * H * dh + h * dh      # [2, L, H, d_h], keys first
            assert k[0, h, 0].tolist() == [start, start + 1]
            vstart = (1 * L + layer) * H * dh + h * dh
            assert v[0, h, 3].tolist() == [vstart, vstart + 1]
    with pytest.raises(ValueError):
        split_prefix(flat[..., :-1], L, H, dh)


def test_reasoning_prompt_eq_5_by_hand():
    att = ReasoningPromptAttention(dim=2, num_layers=1, num_kv_heads=1, head_dim=1,
                                   activation="sigmoid")
    eye, zero = [[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0]
    for lin in (att.q, att.k, att.v):
        _set(lin, eye, zero)
    _set(att.out, [[2.0, 0.0], [0.0, -1.0]], [0.0, 0.25])
    items = torch.tensor([[[1.0, 0.0], [5.0, 5.0]]])              # second position: padding
    mask = torch.tensor([[True, False]])
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])        # knowledge prompt states
    ctx, w = att.attend(items, mask, z)
    s = torch.tensor([1.0, 0.0, 1.0]) / math.sqrt(2)              # q·k / sqrt(d)
    a = torch.softmax(s, 0)
    torch.testing.assert_close(w[0, 0], a)
    assert w[0, 1].abs().sum() == 0                               # padding: no weights
    torch.testing.assert_close(ctx[0, 0], a @ z)
    (k, v), = att(items, mask, z)                                 # psi = sigmoid(W_r A + b_r)
    A = a @ z
    torch.testing.assert_close(k[0, 0, 0, 0], torch.sigmoid(2 * A[0]))
    torch.testing.assert_close(v[0, 0, 0, 0], torch.sigmoid(-A[1] + 0.25))
    assert k.shape == (1, 1, 2, 1)                                # one prefix position per item
    ident = ReasoningPromptAttention(2, 1, 1, 1, activation="identity")
    for a_, b_ in zip(ident.parameters(), att.parameters()):
        a_.data.copy_(b_.data)
    (k2, _), = ident(items, mask, z)
    torch.testing.assert_close(k2[0, 0, 0, 0], 2 * A[0])          # the authors' code: no sigma


def test_reasoning_prompt_per_item_knowledge_and_mask():
    torch.manual_seed(0)
    att = ReasoningPromptAttention(4, 2, 1, 2)
    items, mask = torch.randn(2, 3, 4), torch.tensor([[True, True, False], [True, False, False]])
    know = torch.randn(2, 3, 5, 4)
    kmask = torch.ones(2, 3, 5, dtype=torch.bool)
    kmask[0, 1, 2:] = False
    _, w = att.attend(items, mask, know, kmask)
    assert w[0, 1, 2:].abs().sum() == 0
    torch.testing.assert_close(w.sum(-1), mask.float())
    # an item's prompt depends on its own knowledge only
    know2 = know.clone()
    know2[0, 0] += 1.0
    (k1, _), _ = att(items, mask, know, kmask)
    (k2, _), _ = att(items, mask, know2, kmask)
    assert not torch.allclose(k1[0, :, 0], k2[0, :, 0]) and torch.equal(k1[0, :, 1], k2[0, :, 1])
    kmask[0, 0] = False
    with pytest.raises(ValueError, match="no usable knowledge"):
        att.attend(items, mask, know, kmask)


def test_neighbor_embedding():
    nodes = torch.tensor([[7, 9, -1], [9, -1, -1]])
    rels = torch.tensor([[0, 2, 5], [1, 0, 0]])
    emb = NeighborEmbedding(nodes, rels, 3)
    assert emb.node_emb.num_embeddings == 2                       # only nodes 7 and 9
    e, ok = emb(torch.tensor([[1, 0]]))
    assert ok.tolist() == [[[True, False, False], [True, True, False]]]
    torch.testing.assert_close(e[0, 0, 0], emb.node_emb.weight[1] + emb.rel_emb.weight[1])
    torch.testing.assert_close(e[0, 1, 1], emb.node_emb.weight[1] + emb.rel_emb.weight[2])
