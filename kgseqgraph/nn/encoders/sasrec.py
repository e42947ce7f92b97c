r"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .base import (EncoderConfig, SequenceEncoder, TransformerLayer, check_max_len,
                   check_transformer_config, gather_positions, left_align, positions_from_mask)

__all__ = ["SASRecConfig", "SASRecEncoder"]


@dataclass
class SASRecConfig(EncoderConfig):
    r"""Configuration of :class:`SASRecEncoder`.

    The defaults follow the paper (pre-LN blocks, ReLU, FFN width :math:`D`, final layer norm);
    :meth:`recbole` gives RecBole's SASRec (post-LN, GELU, FFN width 256, embedding layer norm).

    Args:
        hidden_size: width :math:`D`.
        num_layers: number of self-attention blocks.
        num_heads: attention heads.
        inner_size: width of the point-wise FFN (``None``: :math:`D`, as in the paper).
        max_len: number of positional embeddings (longest sequence of real items).
        hidden_dropout: dropout on the input embeddings and on every block output.
        attn_dropout: dropout on attention probabilities.
        activation: FFN non-linearity (``"relu"``, ``"gelu"``, ``"gelu_tanh"``, ``"silu"``).
        norm_first: pre-LN blocks and a final layer norm (paper) or post-LN blocks after a layer
            norm of the input embeddings (RecBole).
        layer_norm_eps: :math:`\epsilon` of every layer norm.
        scale_input: multiply item embeddings by :math:`\sqrt{D}` before adding positions, as the
            authors' code does.
        position_origin: ``"first"`` (position 0 is the oldest real item) or ``"last"`` (position
            0 is the newest real item) — see :func:`~kgseqgraph.nn.encoders.positions_from_mask`.
        initializer_range: std of the normal initialisation of linear and position weights.
    """

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    inner_size: int | None = None
    max_len: int = 50
    hidden_dropout: float = 0.2
    attn_dropout: float = 0.2
    activation: str = "relu"
    norm_first: bool = True
    layer_norm_eps: float = 1e-8
    scale_input: bool = False
    position_origin: str = "first"
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        super().__post_init__()
        check_transformer_config(self, inner_factor=1)

    @classmethod
    def recbole(cls, **overrides: Any) -> SASRecConfig:
        """RecBole 1.2's SASRec defaults (post-LN, GELU, inner 256, dropout 0.5, eps 1e-12)."""
        base = dict(hidden_size=64, num_layers=2, num_heads=2, inner_size=256, max_len=50,
                    hidden_dropout=0.5, attn_dropout=0.5, activation="gelu", norm_first=False,
                    layer_norm_eps=1e-12)
        return cls(**{**base, **overrides})


class SASRecEncoder(SequenceEncoder):
    r"""Causal self-attention encoder of SASRec (Kang & McAuley, 2018).

    With item embeddings :math:`\mathbf{x}_t` and learned positional embeddings
    :math:`\mathbf{p}_{\pi(t)}` (:math:`\pi(t)` counts real items, see ``position_origin``),

    .. math::
        \mathbf{H}^{(0)} = \mathrm{Dropout}\big(s\,\mathbf{x}_t + \mathbf{p}_{\pi(t)}\big),\qquad
        \mathbf{H}^{(l)} = \mathrm{Block}^{(l)}\big(\mathbf{H}^{(l-1)}\big),\qquad
        \mathbf{H} = \mathrm{LN}\big(\mathbf{H}^{(n)}\big)

    with :math:`s = \sqrt{D}` if ``scale_input`` else 1, and pre-LN
    :class:`~kgseqgraph.nn.encoders.TransformerLayer` blocks whose attention lets position
    :math:`t` see real positions :math:`\le t` only. With ``norm_first=False`` (RecBole) the input
    is :math:`\mathrm{Dropout}(\mathrm{LN}(s\,\mathbf{x}_t + \mathbf{p}_{\pi(t)}))`, the blocks are
    post-LN and there is no final layer norm (the last block already ends in one).

    Padding: each row's real items are first moved to its front (a stable gather, see
    :func:`~kgseqgraph.nn.encoders.left_align`), so a plain causal mask — no per-row mask, no
    fully-masked rows, flash/memory-efficient attention kernels — keeps every real query away
    from padding; outputs are scattered back to the input layout. Positions count real items, so
    the output at a real position is the same under any amount of left or right padding (the
    original code's absolute positions over a left-padded window correspond to
    ``position_origin="last"``, also padding-invariant here).

    Args:
        config: a :class:`SASRecConfig` (or a dict of its fields); keyword arguments override.
    """

    config_class = SASRecConfig
    is_causal = True

    def __init__(self, config: SASRecConfig | dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        cfg = self.config
        self.position_embedding = nn.Embedding(cfg.max_len, cfg.hidden_size)
        self.input_norm = (nn.Identity() if cfg.norm_first
                           else nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps))
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        self.layers = nn.ModuleList(
            TransformerLayer(cfg.hidden_size, cfg.num_heads, cfg.inner_size, cfg.hidden_dropout,
                             cfg.attn_dropout, cfg.activation, cfg.norm_first, cfg.layer_norm_eps)
            for _ in range(cfg.num_layers))
        self.final_norm = (nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps) if cfg.norm_first
                           else nn.Identity())
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.config.initializer_range
        nn.init.normal_(self.position_embedding.weight, 0.0, std)
        for layer in self.layers:
            layer.reset_parameters(std)
        for norm in (self.input_norm, self.final_norm):
            if isinstance(norm, nn.LayerNorm):
                norm.reset_parameters()

    def _aligned_input(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Block input with each row's real items moved to its front, and the gather index."""
        cfg = self.config
        check_max_len(mask, cfg.max_len, type(self).__name__)
        perm = left_align(mask)
        index = perm.unsqueeze(-1).expand_as(x)
        x = x.gather(1, index)
        mask = mask.gather(1, perm)
        if cfg.scale_input:
            x = x * math.sqrt(cfg.hidden_size)
        h = x + self.position_embedding(positions_from_mask(mask, cfg.position_origin))
        h = self.dropout(self.input_norm(h))
        return h.masked_fill(~mask.unsqueeze(-1), 0.0), index

    def _encode(self, x: Tensor, mask: Tensor) -> Tensor:
        h, index = self._aligned_input(x, mask)
        for layer in self.layers:
            h = layer(h, is_causal=True)
        h = self.final_norm(h)
        return torch.zeros_like(h).scatter(1, index, h)

    def _encode_at(self, x: Tensor, mask: Tensor, positions: Tensor) -> Tensor:
        # one query per row in the last block; the earlier blocks run in full
        h, _ = self._aligned_input(x, mask)
        # after left alignment the real item at column p sits at column (#real items <= p) - 1
        slot = (mask.long().cumsum(dim=1).gather(1, positions.unsqueeze(1)) - 1).clamp(min=0)
        slot = slot.squeeze(1)
        if len(self.layers) == 0:
            return self.final_norm(gather_positions(h, slot))
        for layer in self.layers[:-1]:
            h = layer(h, is_causal=True)
        keys = torch.arange(h.size(1), device=h.device) <= slot.unsqueeze(1)  # causal row
        h = self.layers[-1](h, attn_mask=keys[:, None, None, :], query_index=slot)
        return self.final_norm(h.squeeze(1))

    def _repr_args(self) -> str:
        c = self.config
        return (f"{c.hidden_size}, num_layers={c.num_layers}, num_heads={c.num_heads}, "
                f"max_len={c.max_len}, norm_first={c.norm_first}")
