"""GRU4Rec against a GRU written out from its equations, row by row on the real items."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from kgseqgraph.nn.encoders import GRU4RecEncoder


def _gru_by_hand(x: torch.Tensor, w_ih, w_hh, b_ih, b_hh) -> torch.Tensor:
    """x [n, D_in] -> states [n, H] with PyTorch's gate order (r, z, n)."""
    H = w_hh.size(1)
    s = torch.zeros(H)
    out = []
    for x_t in x:
        gi, gh = w_ih @ x_t + b_ih, w_hh @ s + b_hh
        r = torch.sigmoid(gi[:H] + gh[:H])
        z = torch.sigmoid(gi[H:2 * H] + gh[H:2 * H])
        n = torch.tanh(gi[2 * H:] + r * gh[2 * H:])
        s = (1 - z) * n + z * s
        out.append(s)
    return torch.stack(out)


def test_gru4rec_matches_equations_under_any_padding() -> None:
    torch.manual_seed(0)
    enc = GRU4RecEncoder(hidden_size=6, rnn_hidden_size=5, dropout=0.0)
    with torch.no_grad():
        for p in enc.gru.parameters():  # non-zero biases so that they are checked too
            p.uniform_(-0.8, 0.8)
    enc.eval()
    g = enc.gru
    x = torch.randn(3, 7, 6)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1],     # left padding
                         [1, 1, 1, 0, 0, 0, 0],     # right padding
                         [0, 1, 0, 0, 1, 1, 0]],    # holes
                        dtype=torch.bool)
    out = enc(x, mask)
    for b in range(3):
        states = _gru_by_hand(x[b][mask[b]], g.weight_ih_l0, g.weight_hh_l0, g.bias_ih_l0,
                              g.bias_hh_l0)
        want = states @ enc.dense.weight.T + enc.dense.bias
        torch.testing.assert_close(out[b][mask[b]], want, atol=1e-6, rtol=1e-5)
        assert torch.all(out[b][~mask[b]] == 0)


def test_gru4rec_two_layers_match_unbatched_torch_gru() -> None:
    torch.manual_seed(1)
    enc = GRU4RecEncoder(hidden_size=4, rnn_hidden_size=8, num_layers=2, dropout=0.0).eval()
    x = torch.randn(2, 5, 4)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]], dtype=torch.bool)
    out = enc(x, mask)
    for b in range(2):
        h, _ = enc.gru(x[b][mask[b]])  # unbatched [n, D]
        torch.testing.assert_close(out[b][mask[b]], enc.dense(h), atol=1e-6, rtol=1e-5)


def test_gru4rec_dropout_on_inputs_only_in_training() -> None:
    torch.manual_seed(2)
    enc = GRU4RecEncoder(hidden_size=4, dropout=0.9)
    x, mask = torch.randn(2, 5, 4), torch.ones(2, 5, dtype=torch.bool)
    assert not torch.allclose(enc.train()(x, mask), enc.eval()(x, mask))


def test_gru4rec_config_errors() -> None:
    with pytest.raises(ValueError, match="positive"):
        GRU4RecEncoder(hidden_size=4, num_layers=0)
    assert isinstance(GRU4RecEncoder(hidden_size=4).dense, nn.Linear)
