r"""Adapter running a Hugging Face T5 encoder (``transformers.T5EncoderModel``) on item embeddings.

``transformers`` is imported inside the functions that need it, so this module imports without it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ...utils.optional import require
from .base import HFBackboneEncoder, HFEncoderConfig, left_align

__all__ = ["HFT5EncoderConfig", "HFT5Encoder", "T5LM"]


def _require_transformers() -> Any:
    return require("transformers", "HFT5Encoder / T5LM")


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


class T5LM(nn.Module):
    r"""A Hugging Face T5 encoder–decoder as KP4SR uses it: the encoder under a ``[B, T, T]``
    attention mask (the knowledge-tree mask, given as a 4-D additive bias,
    :func:`~kgseqgraph.nn.masks.additive_attention_mask`), the decoder cross-attending to the
    encoder tokens a ``[B, T]`` cross mask allows, the sequence NLL of targets, and beam search
    (:func:`~kgseqgraph.nn.decoding.beam_search`, optionally constrained).

    Build from sizes (:meth:`from_config`, random initialisation) or load a checkpoint
    (:meth:`from_pretrained`; the token table is resized to the tokenizer).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.start_id = int(model.config.decoder_start_token_id or 0)

    @classmethod
    def from_config(cls, vocab_size: int, d_model: int = 64, d_ff: int = 256, num_layers: int = 2,
                    num_decoder_layers: int = 1, num_heads: int = 4, d_kv: int = 16,
                    dropout: float = 0.1, pad_id: int = 0, eos_id: int = 1,
                    attn_implementation: str | None = None) -> T5LM:
        tf = _require_transformers()
        bc = tf.T5Config(vocab_size=vocab_size, d_model=d_model, d_ff=d_ff, num_layers=num_layers,
                         num_decoder_layers=num_decoder_layers, num_heads=num_heads, d_kv=d_kv,
                         dropout_rate=dropout, pad_token_id=pad_id, eos_token_id=eos_id,
                         decoder_start_token_id=pad_id)
        kw = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
        return cls(tf.T5ForConditionalGeneration._from_config(bc, **kw))

    @classmethod
    def from_pretrained(cls, name_or_path: str, vocab_size: int | None = None,
                        **hf_kwargs: Any) -> T5LM:
        tf = _require_transformers()
        model = tf.T5ForConditionalGeneration.from_pretrained(name_or_path, **hf_kwargs)
        if vocab_size is not None and model.config.vocab_size < vocab_size:
            model.resize_token_embeddings(vocab_size)
        return cls(model)

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_input_embeddings().weight.size(0))

    def encode(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Encoder states ``[B, T, D]`` under a boolean ``[B, T, T]`` mask (or a ``[B, T]``
        padding mask)."""
        from ..masks import additive_attention_mask

        dtype = self.model.get_input_embeddings().weight.dtype
        mask = (additive_attention_mask(attention_mask, dtype) if attention_mask.dim() == 3
                else attention_mask.long())
        return self.model.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state

    def decode(self, enc: Tensor, cross_mask: Tensor, decoder_input_ids: Tensor,
               last_only: bool = False) -> Tensor:
        """Decoder logits ``[B, L, V]`` (``[B, V]`` of the last position with ``last_only``)
        reading the encoder tokens where ``cross_mask``."""
        m = self.model
        h = m.decoder(input_ids=decoder_input_ids, encoder_hidden_states=enc,
                      encoder_attention_mask=cross_mask.long()).last_hidden_state
        if last_only:
            h = h[:, -1]
        if getattr(m.config, "scale_decoder_outputs", m.config.tie_word_embeddings):
            h = h * (m.config.d_model ** -0.5)
        return m.lm_head(h)

    def shift_right(self, labels: Tensor) -> Tensor:
        """Decoder inputs of ``labels`` (:data:`~kgseqgraph.data.IGNORE_INDEX` = padding): the
        start token, then the labels."""
        start = labels.new_full((labels.size(0), 1), self.start_id)
        return torch.cat([start, labels[:, :-1].clamp(min=0)], 1)

    def sequence_nll(self, enc: Tensor, cross_mask: Tensor, labels: Tensor) -> Tensor:
        r"""``[B]``: :math:`-\frac{1}{|y|}\sum_t \log p(y_t \mid y_{<t}, \text{enc})` of each
        target row (:data:`~kgseqgraph.data.IGNORE_INDEX` marks padding)."""
        from ...data.batching import IGNORE_INDEX

        logits = self.decode(enc, cross_mask, self.shift_right(labels)).float()
        valid = labels != IGNORE_INDEX
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0),
                                                reduction="none") * valid
        return nll.sum(1) / valid.sum(1).clamp(min=1)

    @torch.no_grad()
    def beam_search(self, enc: Tensor, cross_mask: Tensor, num_beams: int, max_steps: int,
                    stop_ids: list[int], allowed: Any = None, num_return: int | None = None,
                    length_penalty: float = 1.0) -> Any:
        """Beam search of decoder sequences (the decoder is re-run on each hypothesis's tokens:
        targets are a few tokens long)."""
        from ..decoding import beam_search

        B, K = enc.size(0), num_beams
        enc_k, cm_k = enc.repeat_interleave(K, 0), cross_mask.repeat_interleave(K, 0)
        state = {"dec": torch.full((B * K, 1), self.start_id, dtype=torch.long,
                                   device=enc.device)}

        def step(tok: Tensor | None, origin: Tensor | None) -> Tensor:
            if tok is not None:
                dec = state["dec"][origin.to(enc.device)]
                state["dec"] = torch.cat([dec, tok.to(enc.device).view(-1, 1)], 1)
            logits = self.decode(enc_k, cm_k, state["dec"], last_only=True)
            return torch.log_softmax(logits.float(), -1)

        return beam_search(step, B, K, max_steps, stop_ids, allowed=allowed,
                           num_return=num_return, length_penalty=length_penalty)
