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

from ...utils.optional import require
from .base import HFBackboneEncoder, HFEncoderConfig, check_max_len, left_align, positions_from_mask

__all__ = ["HFGPT2EncoderConfig", "HFGPT2Encoder", "CausalLM"]


def _require_transformers() -> Any:
    return require("transformers", "HFGPT2Encoder / CausalLM")


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


class CausalLM(nn.Module):
    r"""A Hugging Face causal language model (GPT-2, Llama/SmolLM2, …) as LANCER uses it:
    hidden states and next-token log-probabilities with **prefix keys/values** (a fresh
    ``transformers.DynamicCache`` holding the prefix, so gradients reach it), explicit positions,
    and beam search (:func:`~kgseqgraph.nn.decoding.beam_search`) with the prompt's keys/values
    computed once and reordered per step.

    Build from sizes or a config dict (:meth:`from_config`, random initialisation) or load weights
    (:meth:`from_pretrained`, e.g. a GGUF file with ``gguf_file=``). Prefix keys are used as
    stored, so learned absolute positions (GPT-2), rotary ones (Llama: cached keys are never
    rotated again) and grouped-query attention all work; ``num_kv_heads`` and ``head_dim`` give
    the prefix shape.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        _check_decoder_only(model.config)
        self.model = model
        cfg = model.config.get_text_config()
        self.hidden_size = int(cfg.hidden_size)
        self.num_layers = int(cfg.num_hidden_layers)
        heads = int(cfg.num_attention_heads)
        self.num_kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
        self.head_dim = int(getattr(cfg, "head_dim", None) or self.hidden_size // heads)
        self.max_positions = getattr(cfg, "n_positions", None) or getattr(
            cfg, "max_position_embeddings", None)
        import inspect

        params = inspect.signature(model.base_model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    @classmethod
    def from_config(cls, vocab_size: int, hidden_size: int = 64, num_layers: int = 2,
                    num_heads: int = 2, backbone_config: dict[str, Any] | None = None,
                    attn_implementation: str | None = None, eos_id: int | None = None,
                    pad_id: int | None = None, max_positions: int = 1024) -> CausalLM:
        """A randomly initialised LM: GPT-2 of the given sizes, or ``backbone_config`` (a dict
        with ``model_type``, GPT-2 assumed); ``vocab_size`` and the special ids are set."""
        tf = _require_transformers()
        d = dict(backbone_config or {"model_type": "gpt2", "n_embd": hidden_size,
                                     "n_layer": num_layers, "n_head": num_heads,
                                     "n_positions": max_positions})
        d.update(vocab_size=vocab_size, eos_token_id=eos_id, bos_token_id=eos_id,
                 pad_token_id=pad_id if pad_id is not None else eos_id)
        bc = tf.AutoConfig.for_model(d.pop("model_type", "gpt2"), **d)
        kw = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
        return cls(tf.AutoModelForCausalLM.from_config(bc, **kw))

    @classmethod
    def from_pretrained(cls, name_or_path: str, gguf_file: str | None = None,
                        attn_implementation: str | None = None, **hf_kwargs: Any) -> CausalLM:
        """Load ``AutoModelForCausalLM.from_pretrained(name_or_path, gguf_file=…)``."""
        tf = _require_transformers()
        if gguf_file:
            hf_kwargs["gguf_file"] = gguf_file
        if attn_implementation is not None:
            hf_kwargs["attn_implementation"] = attn_implementation
        return cls(tf.AutoModelForCausalLM.from_pretrained(name_or_path, **hf_kwargs))

    @property
    def token_embeddings(self) -> Tensor:
        """The input embedding table ``[V, D]``."""
        return self.model.get_input_embeddings().weight

    def prefix_cache(self, prefix: list[tuple[Tensor, Tensor]] | None) -> Any:
        """A fresh ``DynamicCache`` holding ``[(K_l, V_l)]`` (each ``[B, H_kv, P, d_h]``), cast to
        the LM's dtype (a bf16/fp16 checkpoint under float32 prompt layers; the cast keeps the
        gradient to the prompt)."""
        from transformers import DynamicCache

        if prefix is None:
            return DynamicCache()
        if len(prefix) != self.num_layers:
            raise ValueError(f"prefix has {len(prefix)} layers, the LM {self.num_layers}")
        dtype = self.token_embeddings.dtype
        return DynamicCache(ddp_cache_data=[(k.to(dtype), v.to(dtype)) for k, v in prefix])

    def run(self, embeds: Tensor, attention_mask: Tensor, positions: Tensor,
            cache: Any = None, use_cache: bool = False) -> Tensor:
        """Last hidden states ``[B, S, D]`` of ``embeds`` after what ``cache`` holds;
        ``attention_mask`` ``[B, cache length + S]`` marks visible keys, ``positions`` ``[B, S]``
        the position ids."""
        if self.max_positions is not None and positions.numel() \
                and int(positions.max()) >= int(self.max_positions):
            raise ValueError(f"position {int(positions.max())} exceeds the backbone's "
                             f"{self.max_positions} positions: shorten the prompt")
        kw = {self._cache_kw: cache} if cache is not None else {}
        dtype = self.token_embeddings.dtype
        out = self.model.base_model(inputs_embeds=embeds.to(dtype),
                                    attention_mask=attention_mask.long(), position_ids=positions,
                                    use_cache=use_cache, return_dict=True, **kw)
        return out.last_hidden_state

    def forward(self, embeds: Tensor, mask: Tensor, positions: Tensor,
                prefix: list[tuple[Tensor, Tensor]] | None = None,
                prefix_mask: Tensor | None = None) -> Tensor:
        """Hidden states ``[B, S, D]`` of ``embeds`` (``mask`` ``[B, S]``) reading ``prefix``
        (visible where ``prefix_mask`` ``[B, P]``, default everywhere)."""
        if prefix is None:
            return self.run(embeds, mask, positions)
        if prefix_mask is None:
            prefix_mask = mask.new_ones(mask.size(0), prefix[0][0].size(2))
        return self.run(embeds, torch.cat([prefix_mask.to(mask.dtype), mask], 1), positions,
                        cache=self.prefix_cache(prefix))

    def logits(self, hidden: Tensor) -> Tensor:
        return self.model.get_output_embeddings()(hidden)

    @torch.no_grad()
    def beam_search(self, embeds: Tensor, mask: Tensor, positions: Tensor,
                    prefix: list[tuple[Tensor, Tensor]] | None, prefix_mask: Tensor | None,
                    num_beams: int, max_new_tokens: int, stop_ids: list[int],
                    num_return: int | None = None, length_penalty: float = 1.0) -> Any:
        """Beam search after left-padded prompts ``embeds [B, S, D]`` (``mask``, ``positions``)
        reading ``prefix``: the prompt is encoded once, its cache repeated for the
        ``num_beams`` beams and reordered at each step (:class:`~kgseqgraph.nn.decoding.
        BeamResult`)."""
        from ..decoding import beam_search

        B, K = embeds.size(0), num_beams
        cache = self.prefix_cache(prefix)
        if prefix is not None and prefix_mask is None:
            prefix_mask = mask.new_ones(B, prefix[0][0].size(2))
        full = torch.cat([prefix_mask.to(mask.dtype), mask], 1) if prefix is not None else mask
        hidden = self.run(embeds, full, positions, cache=cache, use_cache=True)
        first = torch.log_softmax(self.logits(hidden[:, -1]).float(), -1)
        cache.batch_repeat_interleave(K)
        state = {"mask": full.repeat_interleave(K, 0).long(),
                 "pos": positions[:, -1].repeat_interleave(K, 0)}
        table = self.token_embeddings

        def step(tok: Tensor | None, origin: Tensor | None) -> Tensor:
            if tok is None:
                return first.repeat_interleave(K, 0)
            origin, tok = origin.to(table.device), tok.to(table.device)
            cache.reorder_cache(origin)
            m = state["mask"][origin]
            state["mask"] = torch.cat([m, torch.ones_like(m[:, :1])], 1)
            state["pos"] = state["pos"][origin] + 1
            h = self.run(table[tok].unsqueeze(1), state["mask"], state["pos"].unsqueeze(1),
                         cache=cache, use_cache=True)
            return torch.log_softmax(self.logits(h[:, -1]).float(), -1)

        return beam_search(step, B, K, max_new_tokens, stop_ids, num_return=num_return,
                           length_penalty=length_penalty)
