"""The whole-LM adapters of nn/encoders: CausalLM (prefix keys/values through a cache, cached beam
search) and T5LM (masked encoder, cross mask, sequence NLL, constrained beam search), on tiny
random configurations."""
import pytest
import torch

pytest.importorskip("transformers")

from kgseqgraph.data import IGNORE_INDEX  # noqa: E402
from kgseqgraph.nn.decoding import PrefixTrie, beam_search  # noqa: E402
from kgseqgraph.nn.encoders.hf_gpt2 import CausalLM  # noqa: E402
from kgseqgraph.nn.encoders.hf_t5 import T5LM  # noqa: E402


def gpt2(**kw):
    torch.manual_seed(0)
    return CausalLM.from_config(20, hidden_size=16, num_layers=2, num_heads=2,
                                attn_implementation="eager", eos_id=1, pad_id=0, **kw).eval()


def llama():
    torch.manual_seed(0)
    cfg = {"model_type": "llama", "hidden_size": 16, "intermediate_size": 32,
           "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
    return CausalLM.from_config(20, backbone_config=cfg, attn_implementation="eager",
                                eos_id=1).eval()


def prefix_for(lm, B, P=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    shape = (B, lm.num_kv_heads, P, lm.head_dim)
    return [(torch.randn(shape, generator=g), torch.randn(shape, generator=g))
            for _ in range(lm.num_layers)]


@pytest.mark.parametrize("make", [gpt2, llama])
def test_prefix_padding_invariance_and_gradient(make):
    lm = make()
    assert (lm.num_kv_heads, lm.head_dim) == ((2, 8) if make is gpt2 else (2, 4))
    ids = torch.tensor([[0, 0, 5, 6, 7], [3, 4, 5, 6, 7]])       # row 0 left-padded
    mask = ids != 0
    mask[1] = True
    pos = (mask.long().cumsum(1) - 1).clamp(min=0)
    emb = lm.token_embeddings[ids]
    prefix = prefix_for(lm, 2)
    h = lm(emb, mask, pos, prefix)
    alone = lm(emb[:1, 2:], mask[:1, 2:], pos[:1, 2:], [(k[:1], v[:1]) for k, v in prefix])
    torch.testing.assert_close(h[0, 2:], alone[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(h, lm(emb, mask, pos), atol=1e-4)   # the prefix is read
    # a masked-out prefix position is not read
    pmask = torch.tensor([[True, True, False], [True, True, False]])
    two = lm(emb, mask, pos, [(k[:, :, :2], v[:, :, :2]) for k, v in prefix])
    torch.testing.assert_close(lm(emb, mask, pos, prefix, pmask), two, atol=1e-5, rtol=1e-5)
    leaf = [(k.clone().requires_grad_(), v.clone().requires_grad_()) for k, v in prefix]
    lm(emb, mask, pos, leaf).sum().backward()
    assert all(k.grad.abs().sum() > 0 and v.grad.abs().sum() > 0 for k, v in leaf)


@pytest.mark.parametrize("make", [gpt2, llama])
def test_cached_beam_search_equals_recomputing_every_step(make):
    lm = make()
    ids = torch.tensor([[0, 5, 6], [3, 4, 5]])
    mask = ids != 0
    pos = (mask.long().cumsum(1) - 1).clamp(min=0)
    prefix = prefix_for(lm, 2)
    K = 3
    res = lm.beam_search(lm.token_embeddings[ids], mask, pos, prefix, None, K, 4, [1])
    state = {"seq": ids.repeat_interleave(K, 0), "mask": mask.repeat_interleave(K, 0)}
    big = [(k.repeat_interleave(K, 0), v.repeat_interleave(K, 0)) for k, v in prefix]

    def naive(tok, origin):                                       # no cache: the whole text
        if tok is not None:
            state["seq"] = torch.cat([state["seq"][origin], tok[:, None]], 1)
            state["mask"] = torch.cat([state["mask"][origin], torch.ones(len(tok), 1, dtype=bool)],
                                      1)
        p = (state["mask"].long().cumsum(1) - 1).clamp(min=0)
        h = lm(lm.token_embeddings[state["seq"]], state["mask"], p, big)
        return torch.log_softmax(lm.logits(h[:, -1]).float(), -1)

    with torch.no_grad():
        ref = beam_search(naive, 2, K, 4, [1])
    assert torch.equal(res.tokens, ref.tokens)
    torch.testing.assert_close(res.scores, ref.scores, atol=1e-4, rtol=1e-4)


def t5():
    torch.manual_seed(0)
    return T5LM.from_config(12, d_model=16, d_ff=32, num_layers=1, num_decoder_layers=1,
                            num_heads=2, d_kv=8, dropout=0.0, pad_id=0, eos_id=1,
                            attn_implementation="eager").eval()


def test_t5_decode_nll_and_masks():
    model = t5()
    ids = torch.tensor([[5, 6, 7, 8], [5, 9, 0, 0]])
    real = ids != 0
    full = real[:, :, None] & real[:, None, :] | torch.eye(4, dtype=torch.bool)[None]
    enc = model.encode(ids, full)
    torch.testing.assert_close(enc[:, :2], model.encode(ids, real)[:, :2], atol=1e-5, rtol=1e-5)
    labels = torch.tensor([[3, 4, 1], [2, 1, IGNORE_INDEX]])
    dec = model.shift_right(labels)
    assert dec.tolist() == [[0, 3, 4], [0, 2, 1]]
    from transformers.modeling_outputs import BaseModelOutput
    ref = model.model(encoder_outputs=BaseModelOutput(last_hidden_state=enc),
                      attention_mask=real.long(), decoder_input_ids=dec).logits
    torch.testing.assert_close(model.decode(enc, real, dec), ref, atol=1e-5, rtol=1e-5)
    logp = torch.log_softmax(ref, -1)
    want = torch.stack([-(logp[0, 0, 3] + logp[0, 1, 4] + logp[0, 2, 1]) / 3,
                        -(logp[1, 0, 2] + logp[1, 1, 1]) / 2])
    torch.testing.assert_close(model.sequence_nll(enc, real, labels), want)
    # the cross mask: hiding tokens from the decoder changes its output
    root = real.clone()
    root[0, 2:] = False
    assert not torch.allclose(model.decode(enc, root, dec)[0], ref[0], atol=1e-5)
    torch.testing.assert_close(model.decode(enc, root, dec)[1], ref[1], atol=1e-5, rtol=1e-5)


def test_t5_constrained_beam_search():
    model = t5()
    trie = PrefixTrie([[3, 4, 1], [3, 5, 1], [6, 1]], model.vocab_size)
    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    real = torch.ones_like(ids, dtype=torch.bool)
    enc = model.encode(ids, real)
    res = model.beam_search(enc, real, 3, trie.max_length, [1], trie.allowed)
    for b in range(2):
        assert sorted(trie.lookup(s) for s in res.sequences(b)) == [0, 1, 2]
        assert torch.all(res.scores[b, :-1] >= res.scores[b, 1:])
