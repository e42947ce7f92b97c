r"""Adapter running a Hugging Face T5 encoder (``transformers.T5EncoderModel``) on item embeddings.

``transformers`` is imported inside the functions that need it, so this module imports without it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .base import HFBackboneEncoder, HFEncoderConfig, left_align

__all__ = ["HFT5EncoderConfig", "HFT5Encoder"]


def _require_transformers() -> Any:
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - exercised in a subprocess test
        raise ImportError("HFT5Encoder needs the Hugging Face `transformers` package "
                          "(pip install 'kgseqgraph[hf]')") from err
    return transformers


@dataclass
class HFT5EncoderConfig(HFEncoderConfig):
    r"""Configuration of :class:`HFT5Encoder` (fields: :class:`HFEncoderConfig`).

    With ``backbone_config=None`` the backbone is a small T5 encoder of width :math:`D`:
    ``d_model=D, d_ff=4D, num_layers=2, num_heads=2, d_kv=D/2`` and a 2-row token table.
    """


class HFT5Encoder(HFBackboneEncoder):
    r"""Bidirectional T5 encoder over item embeddings.

    .. math::
        \mathbf{H} = \mathbf{W}_{\mathrm{out}}\,\mathrm{T5Enc}\big(\mathbf{W}_{\mathrm{in}}
            \mathbf{X},\ \mathbf{M}\big)

    Item embeddings go in as ``inputs_embeds`` with ``attention_mask = M``. T5 has no absolute
    positions — its attention bias depends on the distance between positions only. The real
    items of each row are moved to its front first (stable gather,
    :func:`~kgseqgraph.nn.encoders.left_align`) and the outputs scattered back, so distances are
    counted over real items and the output at a real position is unchanged by any padding (left,
    right or between items). A row without real items is given an all-ones attention mask (its
    outputs are zeroed) so no softmax row is empty.

    Build from a ``transformers.T5Config`` (or dict) — ``HFT5Encoder(hidden_size=64,
    backbone_config=T5Config(...))`` — or wrap pretrained weights with
    ``HFT5Encoder.from_pretrained("t5-small", hidden_size=64)`` (encoder weights of a full T5
    checkpoint are picked up by ``T5EncoderModel.from_pretrained``).
    """

    config_class = HFT5EncoderConfig
    is_causal = False

    @classmethod
    def _build_backbone(cls, config: HFEncoderConfig) -> nn.Module:
        tf = _require_transformers()
        if config.backbone_config is None:
            D = config.hidden_size
            bc = tf.T5Config(d_model=D, d_ff=4 * D, num_layers=2, num_heads=2,
                             d_kv=max(D // 2, 1), vocab_size=2)
        else:
            bc = tf.T5Config.from_dict(dict(config.backbone_config))
        kwargs = {}
        if config.attn_implementation is not None:
            kwargs["attn_implementation"] = config.attn_implementation
        return tf.T5EncoderModel._from_config(bc, **kwargs)

    @classmethod
    def _load_backbone(cls, name_or_path: str, attn_implementation: str | None,
                       **hf_kwargs: Any) -> nn.Module:
        tf = _require_transformers()
        if attn_implementation is not None:
            hf_kwargs["attn_implementation"] = attn_implementation
        return tf.T5EncoderModel.from_pretrained(name_or_path, **hf_kwargs)

    def _run(self, h: Tensor, mask: Tensor) -> Tensor:
        perm = left_align(mask)
        h = h.gather(1, perm.unsqueeze(-1).expand_as(h))
        mask = mask.gather(1, perm)
        attn = mask | ~mask.any(dim=1, keepdim=True)
        out = self.backbone(inputs_embeds=h, attention_mask=attn.long(),
                            return_dict=True).last_hidden_state
        return torch.zeros_like(out).scatter(1, perm.unsqueeze(-1).expand_as(out), out)
