"""``output_positions``: the one-position-per-row path equals the full encoder's output there."""
from __future__ import annotations

import pytest
import torch

from kgseqgraph.nn.encoders import (BERT4RecConfig, BERT4RecEncoder, GRU4RecEncoder, SASRecConfig,
                                    SASRecEncoder, TransformerLayer)
from kgseqgraph.nn.encoders.base import encode_at, last_positions

D = 16

ENCODERS = {
    "sasrec": lambda: SASRecEncoder(hidden_size=D, num_layers=2, max_len=12),
    "sasrec_scaled_last_origin": lambda: SASRecEncoder(hidden_size=D, num_layers=3, max_len=12,
                                                       scale_input=True, position_origin="last",
                                                       activation="gelu", inner_size=40),
    "sasrec_recbole_postln": lambda: SASRecEncoder(SASRecConfig.recbole(hidden_size=D, max_len=12)),
    "sasrec_one_layer": lambda: SASRecEncoder(hidden_size=D, num_layers=1, max_len=12),
    "sasrec_no_layer": lambda: SASRecEncoder(hidden_size=D, num_layers=0, max_len=12),
    "bert4rec": lambda: BERT4RecEncoder(hidden_size=D, num_layers=2, max_len=12),
    "bert4rec_preln": lambda: BERT4RecEncoder(BERT4RecConfig(hidden_size=D, num_layers=2,
                                                             max_len=12, norm_first=True,
                                                             activation="relu",
                                                             layer_norm_eps=1e-8)),
    "bert4rec_one_layer": lambda: BERT4RecEncoder(hidden_size=D, num_layers=1, max_len=12,
                                                  num_heads=4),
    "bert4rec_no_layer": lambda: BERT4RecEncoder(hidden_size=D, num_layers=0, max_len=12),
    "gru4rec": lambda: GRU4RecEncoder(hidden_size=D),
}


def _batch(length: int, padding: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    B = 7
    x = torch.randn(B, length, D, generator=g)
    lengths = torch.randint(1, length + 1, (B,), generator=g)
    lengths[0], lengths[1] = 1, length  # single item, full row
    cols = torch.arange(length)
    if padding == "left":
        mask = cols >= (length - lengths).unsqueeze(1)
    elif padding == "right":
        mask = cols < lengths.unsqueeze(1)
    else:  # holes anywhere
        mask = torch.rand(B, length, generator=g) > 0.4
        mask[1] = True
    mask[2] = False  # a row of padding only
    return x, mask


@pytest.mark.parametrize("name", sorted(ENCODERS))
@pytest.mark.parametrize("padding", ["left", "right", "anywhere"])
@pytest.mark.parametrize("length", [1, 5, 12])
def test_output_positions_match_full_output(name: str, padding: str, length: int) -> None:
    torch.manual_seed(0)
    enc = ENCODERS[name]().eval()
    x, mask = _batch(length, padding, seed=length)
    full = enc(x, mask)
    rows = torch.arange(x.size(0))
    g = torch.Generator().manual_seed(1)
    for positions in (last_positions(mask), torch.full((x.size(0),), length - 1),
                      torch.randint(0, length, (x.size(0),), generator=g)):
        fast = enc(x, mask, output_positions=positions)
        assert fast.shape == (x.size(0), D)
        torch.testing.assert_close(fast, full[rows, positions], atol=1e-5, rtol=0)
        torch.testing.assert_close(encode_at(enc, x, mask, positions), fast)
    # padding positions give exactly zero, an empty-history row is zero, no NaN
    fast = enc(x, mask, output_positions=last_positions(mask))
    assert torch.all(fast[2] == 0) and not fast.isnan().any()


@pytest.mark.parametrize("name", ["sasrec", "bert4rec", "sasrec_recbole_postln"])
def test_output_positions_gradients_match(name: str) -> None:
    torch.manual_seed(0)
    enc = ENCODERS[name]().eval()
    x, mask = _batch(9, "left", seed=3)
    pos = last_positions(mask)
    x1 = x.clone().requires_grad_()
    x2 = x.clone().requires_grad_()
    enc(x1, mask)[torch.arange(x.size(0)), pos].sum().backward()
    enc(x2, mask, output_positions=pos).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-5, rtol=0)


def test_output_positions_empty_window_and_bad_argument() -> None:
    enc = ENCODERS["sasrec"]().eval()
    out = enc(torch.randn(3, 0, D), torch.zeros(3, 0, dtype=torch.bool),
              output_positions=torch.zeros(3, dtype=torch.long))
    assert out.shape == (3, D) and torch.all(out == 0)
    x, mask = _batch(5, "left", seed=0)
    with pytest.raises(ValueError, match="output_positions"):
        enc(x, mask, output_positions=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="output_positions"):
        enc(x, mask, output_positions=torch.zeros(x.size(0)))


@pytest.mark.parametrize("norm_first", [True, False])
def test_transformer_layer_query_index(norm_first: bool) -> None:
    torch.manual_seed(0)
    layer = TransformerLayer(D, 2, 24, norm_first=norm_first, activation="gelu").eval()
    x = torch.randn(4, 6, D)
    keys = torch.rand(4, 6) > 0.3
    keys[:, 0] = True
    attn_mask = keys[:, None, None, :]
    idx = torch.tensor([0, 5, 2, 3])
    full = layer(x, attn_mask=attn_mask)
    one = layer(x, attn_mask=attn_mask, query_index=idx)
    torch.testing.assert_close(one.squeeze(1), full[torch.arange(4), idx], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="query_index"):
        layer(x, is_causal=True, query_index=idx)
