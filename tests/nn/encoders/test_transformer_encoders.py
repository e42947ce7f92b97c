"""SASRec and BERT4Rec against independent references built from nn.TransformerEncoderLayer."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kgseqgraph.nn.encoders import BERT4RecEncoder, SASRecConfig, SASRecEncoder, TransformerLayer


def _reference_layer(layer: TransformerLayer) -> nn.TransformerEncoderLayer:
    ref = nn.TransformerEncoderLayer(layer.hidden_size, layer.num_heads, layer.inner_size,
                                     dropout=0.0, activation=layer.activation,
                                     layer_norm_eps=layer.norm1.eps, batch_first=True,
                                     norm_first=layer.norm_first)
    sd = {"self_attn.in_proj_weight": layer.qkv.weight, "self_attn.in_proj_bias": layer.qkv.bias,
          "self_attn.out_proj.weight": layer.out.weight, "self_attn.out_proj.bias": layer.out.bias,
          "linear1.weight": layer.ffn1.weight, "linear1.bias": layer.ffn1.bias,
          "linear2.weight": layer.ffn2.weight, "linear2.bias": layer.ffn2.bias,
          "norm1.weight": layer.norm1.weight, "norm1.bias": layer.norm1.bias,
          "norm2.weight": layer.norm2.weight, "norm2.bias": layer.norm2.bias}
    ref.load_state_dict({k: v.detach() for k, v in sd.items()})
    return ref.eval()


@pytest.mark.parametrize("norm_first,activation", [(True, "relu"), (False, "gelu")])
def test_transformer_layer_matches_torch(norm_first: bool, activation: str) -> None:
    torch.manual_seed(0)
    layer = TransformerLayer(12, 3, 20, 0.0, 0.0, activation, norm_first, 1e-6)
    layer.reset_parameters(std=0.3)  # large weights: non-trivial attention patterns
    with torch.no_grad():
        layer.norm1.weight.uniform_(0.5, 1.5)
        layer.norm2.bias.uniform_(-0.5, 0.5)
    layer.eval()
    ref = _reference_layer(layer)
    x = torch.randn(3, 6, 12)
    # causal
    causal = torch.triu(torch.full((6, 6), float("-inf")), diagonal=1)
    torch.testing.assert_close(layer(x, is_causal=True), ref(x, src_mask=causal, is_causal=True),
                               atol=1e-5, rtol=1e-5)
    # key padding (right padding): compare real positions
    keep = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]],
                        dtype=torch.bool)
    got = layer(x, attn_mask=keep[:, None, None, :])
    want = ref(x, src_key_padding_mask=~keep)
    torch.testing.assert_close(got[keep], want[keep], atol=1e-5, rtol=1e-5)


def _perturb(enc: nn.Module) -> None:
    """Move layer norms away from 1/0 so that the reference check sees them."""
    with torch.no_grad():
        for m in enc.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)


def _sasrec_reference(enc: SASRecEncoder, x: torch.Tensor) -> torch.Tensor:
    """Unpadded [1, n, D]: embedding, causal torch layers, final norm — written from the paper."""
    cfg = enc.config
    n = x.size(1)
    pos = torch.arange(n) if cfg.position_origin == "first" else torch.arange(n - 1, -1, -1)
    h = x * (math.sqrt(cfg.hidden_size) if cfg.scale_input else 1.0)
    h = h + enc.position_embedding.weight[pos]
    if not cfg.norm_first:
        h = F.layer_norm(h, (cfg.hidden_size,), enc.input_norm.weight, enc.input_norm.bias,
                         cfg.layer_norm_eps)
    causal = torch.triu(torch.full((n, n), float("-inf")), diagonal=1)
    for layer in enc.layers:
        h = _reference_layer(layer)(h, src_mask=causal, is_causal=True)
    if cfg.norm_first:
        h = F.layer_norm(h, (cfg.hidden_size,), enc.final_norm.weight, enc.final_norm.bias,
                         cfg.layer_norm_eps)
    return h


@pytest.mark.parametrize("cfg", [
    SASRecConfig(hidden_size=12, num_heads=3, num_layers=2, max_len=10),
    SASRecConfig.recbole(hidden_size=12, num_heads=3, inner_size=24, max_len=10),
    SASRecConfig(hidden_size=12, num_heads=2, num_layers=1, max_len=10, position_origin="last",
                 scale_input=True, activation="gelu"),
], ids=["paper", "recbole", "last-scaled"])
def test_sasrec_matches_reference(cfg: SASRecConfig) -> None:
    torch.manual_seed(0)
    enc = SASRecEncoder(cfg, initializer_range=0.2)
    _perturb(enc)
    enc.eval()
    lengths = (6, 2, 4)
    seqs = [torch.randn(1, n, 12) for n in lengths]
    x = torch.zeros(3, 8, 12)
    mask = torch.zeros(3, 8, dtype=torch.bool)
    for b, s in enumerate(seqs):  # left padding, as the data pipeline produces
        x[b, 8 - s.size(1):], mask[b, 8 - s.size(1):] = s[0], True
    out = enc(x, mask)
    for b, s in enumerate(seqs):
        torch.testing.assert_close(out[b][mask[b]], _sasrec_reference(enc, s)[0], atol=1e-5,
                                   rtol=1e-5)


def test_sasrec_dropout_is_active_only_in_training() -> None:
    torch.manual_seed(0)
    enc = SASRecEncoder(hidden_size=8, hidden_dropout=0.5, attn_dropout=0.5, max_len=6)
    x, mask = torch.randn(2, 6, 8), torch.ones(2, 6, dtype=torch.bool)
    enc.train()
    a, b = enc(x, mask), enc(x, mask)
    assert not torch.allclose(a, b)  # two training passes draw two dropout masks
    enc.eval()
    out = enc(x, mask)
    # in eval mode dropout is the identity: the output equals the dropout-free reference path,
    # computed one sequence at a time, and does not depend on the RNG state
    for row in range(2):
        torch.testing.assert_close(out[row], _sasrec_reference(enc, x[row:row + 1])[0],
                                   atol=1e-5, rtol=1e-5)
    torch.manual_seed(123)
    torch.testing.assert_close(enc(x, mask), out, atol=0, rtol=0)


def test_bert4rec_matches_reference() -> None:
    torch.manual_seed(0)
    enc = BERT4RecEncoder(hidden_size=12, num_heads=3, num_layers=2, max_len=10,
                          initializer_range=0.2)
    _perturb(enc)
    enc.eval()
    x = torch.randn(3, 7, 12)
    keep = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0]],
                        dtype=torch.bool)
    # reference: post-LN torch encoder with key padding, positions 0.. from the row start
    h = x + enc.position_embedding.weight[:7]
    h = F.layer_norm(h, (12,), enc.input_norm.weight, enc.input_norm.bias, 1e-12)
    for layer in enc.layers:
        ref = _reference_layer(layer)
        assert ref.activation_relu_or_gelu == 2  # GELU, post-LN: BERT
        h = ref(h, src_key_padding_mask=~keep)
    out = enc(x, keep)
    torch.testing.assert_close(out[keep], h[keep], atol=1e-5, rtol=1e-5)
    # the same rows left-padded give the same outputs at real positions
    xl = torch.zeros(3, 9, 12)
    ml = torch.zeros(3, 9, dtype=torch.bool)
    for b in range(3):
        n = int(keep[b].sum())
        xl[b, 9 - n:], ml[b, 9 - n:] = x[b, :n], True
    torch.testing.assert_close(enc(xl, ml)[ml], out[keep], atol=1e-5, rtol=1e-5)


def test_bert4rec_never_asks_for_an_empty_softmax_row() -> None:
    """Some attention kernels return NaN for a query with no allowed key (older torch, some
    CUDA paths): the mask handed to the layers must allow every query at least one key."""
    enc = BERT4RecEncoder(hidden_size=8, num_layers=1, max_len=6).eval()
    seen = []

    def hook(module, args, kwargs):
        seen.append(kwargs["attn_mask"])

    enc.layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    mask = torch.tensor([[0, 0, 0, 0], [0, 0, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    enc(torch.randn(3, 4, 8), mask)
    (attn_mask,) = seen
    assert attn_mask.expand(3, 1, 4, 4).any(dim=-1).all()
    assert torch.equal(attn_mask[1:, 0, 0], mask[1:])  # real rows: exactly the real keys
