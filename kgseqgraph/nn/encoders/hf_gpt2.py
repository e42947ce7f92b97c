r"""Adapter running a Hugging Face decoder-only (causal) transformer on item embeddings.

GPT-2 (``transformers.GPT2Model``) by default; any causal LM's base model loads through
``transformers.AutoModel`` (e.g. Llama-architecture SmolLM2). ``transformers`` is imported inside
the functions that need it, so this module imports without it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .base import HFBackboneEncoder, HFEncoderConfig, check_max_len, left_align, positions_from_mask

__all__ = ["HFGPT2EncoderConfig", "HFGPT2Encoder"]


def _require_transformers() -> Any:
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - exercised in a subprocess test
        raise ImportError("HFGPT2Encoder needs the Hugging Face `transformers` package "
                          "(pip install 'kgseqgraph[hf]')") from err
    return transformers


def _check_decoder_only(config: Any) -> None:
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(f"HFGPT2Encoder needs a decoder-only (causal) model, got the "
                         f"encoder-decoder model type {getattr(config, 'model_type', '?')!r}")


@dataclass
class HFGPT2EncoderConfig(HFEncoderConfig):
    r"""Configuration of :class:`HFGPT2Encoder` (fields: :class:`HFEncoderConfig`).

    ``backbone_config`` is any Hugging Face config dict with a ``model_type`` (``"gpt2"`` assumed
    when it has none). With ``None`` the backbone is a small GPT-2 of width :math:`D`:
    ``n_embd=D, n_layer=2, n_head=2, n_positions=512`` and a 1-row token table.
    """


class HFGPT2Encoder(HFBackboneEncoder):
    r"""Causal decoder-only transformer (GPT-2 by default) over item embeddings.

    .. math::
        \mathbf{H} = \mathbf{W}_{\mathrm{out}}\,\mathrm{Decoder}\big(\mathbf{W}_{\mathrm{in}}
            \mathbf{X},\ \mathbf{M},\ \pi\big)

    Position handling: the real items of each row are first moved to its front (stable gather,
    :func:`~kgseqgraph.nn.encoders.left_align`), ``position_ids`` :math:`\pi` count real items
    from 0 (:func:`~kgseqgraph.nn.encoders.positions_from_mask`) and ``attention_mask`` marks
    them; outputs are scattered back to the input layout. So learned absolute positions (GPT-2)
    and rotary ones (Llama) see the same positions whatever the padding, every query has at
    least one key (no NaN from empty softmax rows under any attention implementation), and the
    output at real position :math:`t` depends on real items at positions :math:`\le t` only.

    Build from a config — ``HFGPT2Encoder(hidden_size=64, backbone_config=GPT2Config(...))``,
    or a ``LlamaConfig`` etc. — or wrap pretrained weights with
    ``HFGPT2Encoder.from_pretrained("HuggingFaceTB/SmolLM2-135M", hidden_size=64)``
    (``AutoModel.from_pretrained``: the base model without the LM head).
    """

    config_class = HFGPT2EncoderConfig
    is_causal = True

    @classmethod
    def _build_backbone(cls, config: HFEncoderConfig) -> nn.Module:
        tf = _require_transformers()
        if config.backbone_config is None:
            D = config.hidden_size
            bc = tf.GPT2Config(n_embd=D, n_layer=2, n_head=2, n_positions=512, vocab_size=1,
                               bos_token_id=0, eos_token_id=0)
        else:
            d = dict(config.backbone_config)
            bc = tf.AutoConfig.for_model(d.pop("model_type", "gpt2"), **d)
        _check_decoder_only(bc)
        kwargs = {}
        if config.attn_implementation is not None:
            kwargs["attn_implementation"] = config.attn_implementation
        return tf.AutoModel.from_config(bc, **kwargs)

    @classmethod
    def _load_backbone(cls, name_or_path: str, attn_implementation: str | None,
                       **hf_kwargs: Any) -> nn.Module:
        tf = _require_transformers()
        if attn_implementation is not None:
            hf_kwargs["attn_implementation"] = attn_implementation
        model = tf.AutoModel.from_pretrained(name_or_path, **hf_kwargs)
        _check_decoder_only(model.config)
        return model

    def _run(self, h: Tensor, mask: Tensor) -> Tensor:
        # learned absolute positions have a hard limit; rotary ones do not
        n_pos = getattr(self.backbone.config, "n_positions", None)
        if n_pos is not None:
            check_max_len(mask, int(n_pos), type(self).__name__)
        perm = left_align(mask)
        index = perm.unsqueeze(-1).expand_as(h)
        h = h.gather(1, index)
        mask = mask.gather(1, perm)
        attn = mask | ~mask.any(dim=1, keepdim=True)
        out = self.backbone(inputs_embeds=h, attention_mask=attn.long(),
                            position_ids=positions_from_mask(mask), use_cache=False,
                            return_dict=True).last_hidden_state
        return torch.zeros_like(out).scatter(1, perm.unsqueeze(-1).expand_as(out), out)
