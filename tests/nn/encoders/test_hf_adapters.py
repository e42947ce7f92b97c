"""Hugging Face adapters: tiny random backbones, no network."""
from __future__ import annotations

import pytest
import torch
from torch import nn

tf = pytest.importorskip("transformers")

from kgseqgraph.nn.encoders import HFGPT2Encoder, HFT5Encoder, build_encoder  # noqa: E402


def t5_config() -> "tf.T5Config":
    return tf.T5Config(d_model=32, d_ff=64, num_layers=2, num_heads=2, d_kv=16, vocab_size=10)


def gpt2_config() -> "tf.GPT2Config":
    return tf.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=32, vocab_size=10,
                         bos_token_id=0, eos_token_id=0)


def llama_config() -> "tf.LlamaConfig":
    return tf.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, vocab_size=10,
                          max_position_embeddings=64, bos_token_id=0, eos_token_id=0,
                          pad_token_id=0)


def _left_padded(n_list, L, D, seed=0):
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randn(n, D, generator=g) for n in n_list]
    x = torch.randn(len(seqs), L, D, generator=g)  # junk at padding positions
    mask = torch.zeros(len(seqs), L, dtype=torch.bool)
    for b, s in enumerate(seqs):
        x[b, L - s.size(0):], mask[b, L - s.size(0):] = s, True
    return seqs, x, mask


@pytest.mark.parametrize("D", [32, 16])
def test_t5_adapter_is_the_backbone_plus_projections(D: int) -> None:
    torch.manual_seed(0)
    enc = HFT5Encoder(hidden_size=D, backbone_config=t5_config()).eval()
    assert isinstance(enc.backbone, tf.T5EncoderModel) and not enc.is_causal
    if D == 32:
        assert isinstance(enc.proj_in, nn.Identity) and isinstance(enc.proj_out, nn.Identity)
    else:
        assert enc.proj_in.weight.shape == (32, D) and enc.proj_out.weight.shape == (D, 32)
    seqs, x, mask = _left_padded([5, 2, 1], 7, D)
    out = enc(x, mask)
    for b, s in enumerate(seqs):  # reference: the raw backbone on the unpadded row
        want = enc.proj_out(enc.backbone(inputs_embeds=enc.proj_in(s)[None]).last_hidden_state)[0]
        torch.testing.assert_close(out[b][mask[b]], want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("make_config,model_cls", [(gpt2_config, "GPT2Model"),
                                                   (llama_config, "LlamaModel")])
@pytest.mark.parametrize("D", [32, 16])
def test_causal_adapter_positions_under_left_padding(make_config, model_cls: str, D: int) -> None:
    torch.manual_seed(0)
    enc = HFGPT2Encoder(hidden_size=D, backbone_config=make_config()).eval()
    assert type(enc.backbone).__name__ == model_cls and enc.is_causal
    assert isinstance(enc.proj_in, nn.Identity if D == 32 else nn.Linear)
    seqs, x, mask = _left_padded([6, 3, 1], 9, D, seed=1)
    out = enc(x, mask)
    for b, s in enumerate(seqs):
        # reference: the backbone on the unpadded row with its default positions 0..n-1
        want = enc.proj_out(enc.backbone(inputs_embeds=enc.proj_in(s)[None]).last_hidden_state)[0]
        torch.testing.assert_close(out[b][mask[b]], want, atol=1e-5, rtol=1e-5)
    # a naive call (mask, no position_ids) on the left-padded batch gives other GPT-2 outputs:
    # positions are what the adapter has to get right
    if model_cls == "GPT2Model":
        naive = enc.proj_out(enc.backbone(inputs_embeds=enc.proj_in(x),
                                          attention_mask=mask.long()).last_hidden_state)
        assert (naive[0][mask[0]] - out[0][mask[0]]).abs().amax() > 1e-3


def test_projection_is_used_and_gradients_reach_inputs() -> None:
    torch.manual_seed(0)
    for enc in (HFT5Encoder(hidden_size=16, backbone_config=t5_config()),
                HFGPT2Encoder(hidden_size=16, backbone_config=gpt2_config())):
        enc.eval()
        x = torch.randn(2, 4, 16, requires_grad=True)
        mask = torch.tensor([[0, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
        out = enc(x, mask)
        assert out.shape == (2, 4, 16)
        out.pow(2).sum().backward()
        assert x.grad[mask].abs().sum(-1).gt(0).all()
        assert enc.proj_in.weight.grad.abs().sum() > 0 and enc.proj_out.weight.grad.abs().sum() > 0
        block_param = next(p for n, p in enc.backbone.named_parameters() if "0" in n)
        assert block_param.grad is not None and block_param.grad.abs().sum() > 0
        before = out.detach().clone()
        with torch.no_grad():
            enc.proj_in.weight.mul_(2.0)
        assert (enc(x, mask) - before).abs().amax() > 1e-4


@pytest.mark.parametrize("cls,make_config,auto", [(HFT5Encoder, t5_config, "T5EncoderModel"),
                                                  (HFGPT2Encoder, gpt2_config, "AutoModel"),
                                                  (HFGPT2Encoder, llama_config, "AutoModel")])
def test_from_pretrained_local_roundtrip(tmp_path, cls, make_config, auto: str) -> None:
    torch.manual_seed(0)
    enc = cls(hidden_size=32, backbone_config=make_config()).eval()
    enc.backbone.save_pretrained(tmp_path / "tiny")
    loaded = cls.from_pretrained(tmp_path / "tiny", local_files_only=True).eval()
    assert loaded.hidden_size == 32 and isinstance(loaded.proj_in, nn.Identity)
    assert loaded.config.pretrained_name_or_path == str(tmp_path / "tiny")
    assert type(loaded.backbone) is type(enc.backbone)
    x = torch.randn(3, 6, 32)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 1]],
                        dtype=torch.bool)
    torch.testing.assert_close(loaded(x, mask), enc(x, mask), atol=0, rtol=0)
    # with a different item width: projections around the same pretrained weights
    proj = cls.from_pretrained(tmp_path / "tiny", hidden_size=8, freeze_backbone=True)
    assert proj.proj_in.weight.shape == (32, 8)
    assert not any(p.requires_grad for p in proj.backbone.parameters())
    assert all(p.requires_grad for p in proj.proj_in.parameters())
    # reset keeps pretrained backbone weights, redraws the projections
    w_in = proj.proj_in.weight.detach().clone()
    proj.reset_parameters()
    assert not torch.equal(w_in, proj.proj_in.weight)
    for (n, a), b in zip(proj.backbone.state_dict().items(), enc.backbone.state_dict().values()):
        assert torch.equal(a, b), n


def test_adapter_rebuilds_from_saved_config_without_weights() -> None:
    torch.manual_seed(0)
    enc = HFGPT2Encoder(hidden_size=16, backbone_config=llama_config())
    cfg = enc.config.to_dict()
    assert cfg["backbone_config"]["model_type"] == "llama"
    clone = build_encoder("hf_gpt2", cfg)
    assert type(clone.backbone).__name__ == "LlamaModel"
    assert clone.state_dict().keys() == enc.state_dict().keys()


def test_defaults_and_errors() -> None:
    torch.manual_seed(0)
    gpt = HFGPT2Encoder(hidden_size=24)  # small default GPT-2 of width D
    assert gpt.backbone.config.model_type == "gpt2" and gpt.backbone_size == 24
    t5 = HFT5Encoder(hidden_size=24)
    assert t5.backbone.config.d_model == 24 and isinstance(t5.proj_in, nn.Identity)
    with pytest.raises(ValueError, match="decoder-only"):
        HFGPT2Encoder(hidden_size=16, backbone_config=t5_config())
    with pytest.raises(ValueError, match="max_len|real items"):
        gpt(torch.randn(1, 513, 24), torch.ones(1, 513, dtype=torch.bool))
    with pytest.raises(TypeError, match="backbone_config"):
        HFT5Encoder(hidden_size=8, backbone_config=3)


def test_backbone_in_bfloat16_keeps_float32_interface() -> None:
    torch.manual_seed(0)
    backbone = tf.GPT2Model(gpt2_config()).to(torch.bfloat16)
    enc = HFGPT2Encoder(hidden_size=16, backbone=backbone).eval()
    x = torch.randn(2, 5, 16)
    out = enc(x, torch.ones(2, 5, dtype=torch.bool))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
