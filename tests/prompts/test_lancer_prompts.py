"""LANCER prompt modules: the knowledge prefix (shapes, the cache mechanism against a plain
forward pass, gradients) and the reasoning-prompt attention (normalisation, padding, a
hand-computed reference)."""
from __future__ import annotations

import math

import pytest
import torch

from kgseqgraph.prompts.lancer import (KnowledgePrompt, ReasoningPrompt, extend_attention_mask,
                                       prefix_cache)

transformers = pytest.importorskip("transformers")



def tiny_gpt2(seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64, vocab_size=50,
                                  attn_implementation="eager")
    return transformers.GPT2Model(cfg).eval()


def test_prefix_shapes_per_layer():
    kp = KnowledgePrompt(num_layers=3, num_kv_heads=2, head_dim=8, num_tokens=5, token_dim=12,
                         hidden_dim=7)
    assert kp.prefix().shape == (3, 2, 2, 5, 8)
    kv = kp.keys_values(batch_size=4)
    assert len(kv) == 3
    for k, v in kv:
        assert k.shape == v.shape == (4, 2, 5, 8)
    cache = kp.as_cache(4)
    assert cache.get_seq_length() == 5
    # keys of layer l are the MLP output reshaped: check one coordinate by hand
    flat = kp.mlp(kp.tokens)  # [P, L*2*H*d]
    l, kv_i, h, p, j = 2, 1, 1, 3, 5
    idx = ((l * 2 + kv_i) * 2 + h) * 8 + j
    assert torch.allclose(kp.prefix()[l, kv_i, h, p, j], flat[p, idx])


def test_prefix_rejects_bad_sizes():
    with pytest.raises(ValueError, match="num_tokens"):
        KnowledgePrompt(2, 2, 8, num_tokens=0)
    kp = KnowledgePrompt(2, 2, 8, num_tokens=4, token_dim=6)
    with pytest.raises(ValueError, match="embeddings"):
        kp.init_tokens_(torch.zeros(3, 6))


def test_extend_attention_mask():
    m = torch.tensor([[1, 1, 0], [1, 0, 0]])
    out = extend_attention_mask(m, 2)
    assert out.tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]]
    assert extend_attention_mask(m, 0) is m
    with pytest.raises(ValueError):
        extend_attention_mask(torch.ones(3), 1)


def test_prefix_cache_matches_full_forward():
    """Keys/values of P real tokens fed back through ``prefix_cache`` reproduce the outputs of
    one plain forward pass over all P + T tokens (the reference), padding included."""
    model = tiny_gpt2()
    ids = torch.randint(0, 50, (2, 7))
    P = 3
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 6] = 0  # right padding in the second row
    full = model(input_ids=ids, attention_mask=mask).last_hidden_state
    cache = transformers.DynamicCache()
    model(input_ids=ids[:, :P], cache=cache, use_cache=True)
    kv = [(layer.keys, layer.values) for layer in cache.layers]
    pos = torch.arange(P, 7).unsqueeze(0).expand(2, -1)
    rest = model(input_ids=ids[:, P:], cache=prefix_cache(kv),
                 attention_mask=extend_attention_mask(mask[:, P:], P),
                 position_ids=pos).last_hidden_state
    assert torch.allclose(rest[0], full[0, P:], atol=1e-5)
    assert torch.allclose(rest[1, :3], full[1, P:6], atol=1e-5)


def test_knowledge_prompt_changes_output_and_gets_gradients():
    model = tiny_gpt2()
    kp = KnowledgePrompt(num_layers=2, num_kv_heads=2, head_dim=16, num_tokens=4, token_dim=32,
                         hidden_dim=16)
    ids = torch.randint(0, 50, (3, 5))
    mask = torch.ones(3, 5, dtype=torch.long)
    plain = model(input_ids=ids, attention_mask=mask).last_hidden_state
    out = model(input_ids=ids, cache=kp.as_cache(3),
                attention_mask=extend_attention_mask(mask, 4)).last_hidden_state
    assert out.shape == plain.shape
    assert not torch.allclose(out, plain, atol=1e-4)
    out.pow(2).sum().backward()
    assert kp.tokens.grad is not None and kp.tokens.grad.abs().sum() > 0
    for p in kp.mlp.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    # a fresh cache per call: the prompt is not consumed by the first pass
    again = model(input_ids=ids, cache=kp.as_cache(3),
                  attention_mask=extend_attention_mask(mask, 4)).last_hidden_state
    assert torch.allclose(again, out.detach(), atol=1e-6)


def test_knowledge_prompt_on_llama_with_grouped_query_attention():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=40,
                                   max_position_embeddings=64, attn_implementation="eager")
    model = transformers.LlamaModel(cfg).eval()
    kp = KnowledgePrompt(num_layers=2, num_kv_heads=2, head_dim=8, num_tokens=3, token_dim=32)
    assert kp.prefix().shape == (2, 2, 2, 3, 8)
    ids = torch.randint(0, 40, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.long)
    plain = model(input_ids=ids, attention_mask=mask).last_hidden_state
    out = model(input_ids=ids, cache=kp.as_cache(2), attention_mask=extend_attention_mask(mask, 3),
                position_ids=torch.arange(6).unsqueeze(0).expand(2, -1)).last_hidden_state
    assert not torch.allclose(out, plain, atol=1e-4)
    out.sum().backward()
    assert kp.tokens.grad.abs().sum() > 0


# ------------------------------------------------------------------------- reasoning prompt
def test_reasoning_weights_sum_to_one_and_respect_padding():
    torch.manual_seed(0)
    rp = ReasoningPrompt(query_dim=6, knowledge_dim=5, out_dim=4, num_heads=2)
    hist = torch.randn(2, 4, 6)
    mask = torch.tensor([[False, True, True, True], [False, False, False, True]])
    bank = torch.randn(7, 5)
    prompts, w = rp(hist, mask, bank)
    assert prompts.shape == (2, 4, 4) and w.shape == (2, 2, 4, 7)
    sums = w.sum(-1)  # [B, H, T]
    expected = mask.float().unsqueeze(1).expand_as(sums)
    assert torch.allclose(sums, expected, atol=1e-6)
    assert (prompts[~mask] == 0).all()
    # padded history content never reaches real positions
    hist2 = hist.clone()
    hist2[~mask] = 100.0
    prompts2, w2 = rp(hist2, mask, bank)
    assert torch.allclose(prompts2, prompts) and torch.allclose(w2, w)


def test_reasoning_per_item_knowledge_mask():
    torch.manual_seed(1)
    rp = ReasoningPrompt(query_dim=4, knowledge_dim=4, out_dim=4)
    hist = torch.randn(1, 2, 4)
    mask = torch.tensor([[True, True]])
    know = torch.randn(1, 2, 3, 4)
    kmask = torch.tensor([[[True, False, True], [True, True, False]]])
    _, w = rp(hist, mask, know, kmask)
    assert torch.allclose(w.sum(-1), torch.ones(1, 1, 2))
    assert w[0, 0, 0, 1] == 0 and w[0, 0, 1, 2] == 0
    # the masked entry's content is irrelevant
    know2 = know.clone()
    know2[0, 0, 1] = 50.0
    p1, _ = rp(hist, mask, know, kmask)
    p2, _ = rp(hist, mask, know2, kmask)
    assert torch.allclose(p1, p2)
    with pytest.raises(ValueError, match="no usable knowledge"):
        rp(hist, mask, know, torch.zeros(1, 2, 3, dtype=torch.bool))


def test_reasoning_matches_hand_computation():
    """Single head, shared bank: weights and prompt against an explicit softmax reference."""
    torch.manual_seed(2)
    rp = ReasoningPrompt(query_dim=3, knowledge_dim=2, out_dim=2, attn_dim=2)
    hist = torch.randn(1, 1, 3)
    bank = torch.randn(3, 2)
    with torch.no_grad():
        prompts, w = rp(hist, torch.ones(1, 1, dtype=torch.bool), bank)
        q = hist[0, 0] @ rp.q.weight.t()
        k = bank @ rp.k.weight.t()
        v = bank @ rp.v.weight.t()
        logits = [float(q @ k[j]) / math.sqrt(2) for j in range(3)]
        z = sum(math.exp(x) for x in logits)
        ref_w = torch.tensor([math.exp(x) / z for x in logits])
        ctx = (ref_w.unsqueeze(1) * v).sum(0)
        ref = rp.out(torch.cat([hist[0, 0], ctx]))
    assert torch.allclose(w[0, 0, 0], ref_w, atol=1e-6)
    assert torch.allclose(prompts[0, 0], ref, atol=1e-6)


def test_reasoning_bad_shapes():
    rp = ReasoningPrompt(4, 4, 4)
    with pytest.raises(ValueError, match="history"):
        rp(torch.randn(2, 4), torch.ones(2, dtype=torch.bool), torch.randn(3, 4))
    with pytest.raises(ValueError, match="knowledge"):
        rp(torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.bool), torch.randn(2, 2, 3, 4))
