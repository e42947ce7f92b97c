"""The SequenceEncoder contract, checked for every encoder (see kgseqgraph/nn/encoders/base.py)."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from kgseqgraph.nn.encoders import (ENCODERS, SASRecEncoder, SequenceEncoder, build_encoder,
                                    register_encoder)

ATOL = 1e-5


def _pad(seqs: list[torch.Tensor], L: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad [n_i, D] sequences into [B, L, D] with junk (not zeros) at padding positions."""
    D = seqs[0].size(-1)
    x = torch.full((len(seqs), L, D), 7.0)
    mask = torch.zeros(len(seqs), L, dtype=torch.bool)
    for b, s in enumerate(seqs):
        n = s.size(0)
        sl = slice(L - n, L) if side == "left" else slice(0, n)
        x[b, sl], mask[b, sl] = s, True
    return x, mask


def _real(out: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    return [out[b][mask[b]] for b in range(out.size(0))]


def test_padding_invariance(encoder: SequenceEncoder) -> None:
    torch.manual_seed(1)
    D = encoder.hidden_size
    seqs = [torch.randn(n, D) for n in (5, 1, 3, 7)]
    alone = [encoder(s[None], torch.ones(1, s.size(0), dtype=torch.bool))[0] for s in seqs]
    for side, L in (("left", 7), ("left", 12), ("right", 9)):
        x, mask = _pad(seqs, L, side)
        out = encoder(x, mask)
        for got, want in zip(_real(out, mask), alone, strict=True):
            torch.testing.assert_close(got, want, atol=ATOL, rtol=1e-5)
        assert torch.all(out[~mask] == 0), "padding outputs must be exactly zero"
    # padding between items (holes) is ignored as well
    x, mask = _pad(seqs, 12, "right")
    hole = torch.tensor([0, 2, 4, 5, 7, 9, 10])
    x2 = torch.full((4, 14, D), -3.0)
    mask2 = torch.zeros(4, 14, dtype=torch.bool)
    x2[:, hole], mask2[:, hole] = x[:, :7], mask[:, :7]
    out2 = encoder(x2, mask2)
    for got, want in zip(_real(out2, mask2), alone, strict=True):
        torch.testing.assert_close(got, want, atol=ATOL, rtol=1e-5)


def test_padding_gets_no_gradient_and_inputs_do(encoder: SequenceEncoder) -> None:
    torch.manual_seed(2)
    D = encoder.hidden_size
    x, mask = _pad([torch.randn(n, D) for n in (4, 2)], 6, "left")
    x.requires_grad_(True)
    encoder.train()
    out = encoder(x, mask)
    (out * torch.randn_like(out)).sum().backward()
    assert torch.all(x.grad[~mask] == 0)
    assert torch.all(x.grad[mask].abs().sum(-1) > 0)
    assert all(p.grad is not None for p in encoder.parameters()
               if p.requires_grad and p is not _token_table(encoder))


def _token_table(encoder: SequenceEncoder) -> torch.Tensor | None:
    backbone = getattr(encoder, "backbone", None)
    return None if backbone is None else backbone.get_input_embeddings().weight


@pytest.mark.parametrize("train", [False, True])
def test_no_nan_all_padding_and_single_items(encoder: SequenceEncoder, train: bool) -> None:
    torch.manual_seed(3)
    D = encoder.hidden_size
    encoder.train(train)
    x = torch.randn(4, 5, D, requires_grad=True)
    mask = torch.tensor([[0, 0, 0, 0, 0],      # padding only
                         [0, 0, 0, 0, 1],      # one item, left padded
                         [1, 0, 0, 0, 0],      # one item, right padded
                         [0, 1, 1, 0, 1]], dtype=torch.bool)
    out = encoder(x, mask)
    assert torch.isfinite(out).all()
    assert torch.all(out[0] == 0)
    assert out[1, 4].abs().sum() > 0 and out[2, 0].abs().sum() > 0
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)
    # a whole batch of padding, and a batch of single-item rows
    assert torch.all(encoder(x.detach(), torch.zeros(4, 5, dtype=torch.bool)) == 0)
    one = encoder(x.detach()[:, :1], torch.ones(4, 1, dtype=torch.bool))
    assert one.shape == (4, 1, D) and torch.isfinite(one).all()


def test_causality(causal_encoder: SequenceEncoder) -> None:
    torch.manual_seed(4)
    enc = causal_encoder
    assert enc.is_causal
    D = enc.hidden_size
    x = torch.randn(2, 8, D)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[0, :3] = False  # left padding in row 0
    base = enc(x, mask)
    for t in range(3, 7):
        x2 = x.clone()
        x2[:, t + 1] += torch.randn(2, D)
        out = enc(x2, mask)
        torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1], atol=1e-6, rtol=0)
        assert (out[:, t + 1] - base[:, t + 1]).abs().amax() > 1e-4


def test_bidirectional_sees_the_future(encoder_builder) -> None:
    for name in ("bert4rec", "hf_t5_proj"):
        try:
            enc = encoder_builder(name, 0)
        except pytest.skip.Exception:
            continue
        assert not enc.is_causal
        x = torch.randn(1, 6, enc.hidden_size)
        mask = torch.ones(1, 6, dtype=torch.bool)
        x2 = x.clone()
        x2[:, 5] += torch.randn(enc.hidden_size)
        assert (enc(x2, mask)[:, 0] - enc(x, mask)[:, 0]).abs().amax() > 1e-4


def test_reset_parameters_changes_weights(encoder: SequenceEncoder) -> None:
    skip = _token_table(encoder)
    before = {n: p.detach().clone() for n, p in encoder.named_parameters() if p is not skip}
    torch.manual_seed(123)
    encoder.reset_parameters()
    changed = [n for n, p in encoder.named_parameters()
               if p is not skip and not torch.equal(before[n], p)]
    # every weight matrix is redrawn (biases / norms may legitimately reset to the same constants)
    matrices = [n for n, p in before.items() if p.dim() >= 2]
    assert matrices and set(matrices) <= set(changed)


def test_config_roundtrip_rebuilds_the_same_encoder(encoder: SequenceEncoder) -> None:
    cfg = encoder.config.to_dict()
    clone = type(encoder)(cfg).eval()
    clone.load_state_dict(encoder.state_dict())
    x = torch.randn(2, 4, encoder.hidden_size)
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    torch.testing.assert_close(clone(x, mask), encoder(x, mask), atol=0, rtol=0)
    assert repr(encoder).startswith(type(encoder).__name__ + "(")


def test_mask_forms_and_validation() -> None:
    torch.manual_seed(5)
    enc = SASRecEncoder(hidden_size=8, num_layers=1, max_len=10).eval()
    x = torch.randn(2, 4, 8)
    full = enc(x, torch.ones(2, 4, dtype=torch.bool))
    torch.testing.assert_close(enc(x), full, atol=0, rtol=0)            # None: no padding
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    torch.testing.assert_close(enc(x, mask), enc(x, mask.bool()), atol=0, rtol=0)  # 0/1 ints
    with pytest.raises(ValueError, match="hidden_size=8"):
        enc(torch.randn(2, 4, 9), mask)
    with pytest.raises(ValueError, match="mask must have shape"):
        enc(x, torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        enc(x, torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"\[B, L, D\]"):
        enc(torch.randn(4, 8), None)
    with pytest.raises(ValueError, match="max_len=10"):
        enc(torch.randn(1, 11, 8), torch.ones(1, 11, dtype=torch.bool))
    # a window longer than max_len is fine while the real items fit
    long_mask = torch.zeros(1, 30, dtype=torch.bool)
    long_mask[0, -4:] = True
    xl = torch.randn(1, 30, 8)
    torch.testing.assert_close(enc(xl, long_mask)[0, -4:], enc(xl[:, -4:])[0], atol=1e-6, rtol=0)
    assert enc(torch.randn(3, 0, 8), torch.zeros(3, 0, dtype=torch.bool)).shape == (3, 0, 8)


def test_registry() -> None:
    enc = build_encoder("SASRec", hidden_size=8, num_layers=1)
    assert isinstance(enc, SASRecEncoder) and enc.config.num_layers == 1
    assert build_encoder("gru4rec", {"hidden_size": 8}).hidden_size == 8
    with pytest.raises(ValueError, match="unknown encoder"):
        build_encoder("transformer-xl")
    with pytest.raises(TypeError):
        register_encoder("bad", int)

    class Mine(SASRecEncoder):
        pass

    try:
        register_encoder("mine", Mine)
        assert type(build_encoder("mine", hidden_size=8)) is Mine
    finally:
        ENCODERS.pop("mine")
    with pytest.raises(TypeError, match="SASRecConfig"):
        SASRecEncoder(42)


def test_package_imports_without_transformers() -> None:
    code = (
        "import sys\n"
        "sys.modules['transformers'] = None\n"  # makes `import transformers` fail
        "import kgseqgraph.nn.encoders as E\n"
        "import torch\n"
        "E.build_encoder('sasrec', hidden_size=8)(torch.randn(1, 3, 8))\n"
        "try:\n"
        "    E.HFT5Encoder(hidden_size=8)\n"
        "except ImportError as e:\n"
        "    assert 'transformers' in str(e), e\n"
        "    print('OK')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "OK"
