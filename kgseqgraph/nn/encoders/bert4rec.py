r"""BERT4Rec: bidirectional transformer encoder (Sun et al., CIKM 2019)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from .base import (EncoderConfig, SequenceEncoder, TransformerLayer, check_max_len,
                   check_transformer_config, gather_positions, positions_from_mask)

__all__ = ["BERT4RecConfig", "BERT4RecEncoder"]


@dataclass
class BERT4RecConfig(EncoderConfig):
    r"""Configuration of :class:`BERT4RecEncoder` (defaults: the paper / BERT).

    Args:
        hidden_size: width :math:`D`.
        num_layers: number of transformer blocks.
        num_heads: attention heads.
        inner_size: FFN width (``None``: :math:`4D`, as in the paper).
        max_len: number of positional embeddings (longest sequence of real items, including an
            appended ``[mask]`` token).
        hidden_dropout: dropout on the input embeddings and on every block output.
        attn_dropout: dropout on attention probabilities.
        activation: FFN non-linearity (``"gelu"`` in the paper).
        norm_first: ``False`` (post-LN, the paper) or pre-LN blocks plus a final layer norm.
        layer_norm_eps: :math:`\epsilon` of every layer norm.
        position_origin: ``"first"`` or ``"last"`` — see
            :func:`~kgseqgraph.nn.encoders.positions_from_mask`.
        initializer_range: std of the normal initialisation of linear and position weights.
    """

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    inner_size: int | None = None
    max_len: int = 50
    hidden_dropout: float = 0.1
    attn_dropout: float = 0.1
    activation: str = "gelu"
    norm_first: bool = False
    layer_norm_eps: float = 1e-12
    position_origin: str = "first"
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        super().__post_init__()
        check_transformer_config(self, inner_factor=4)


class BERT4RecEncoder(SequenceEncoder):
    r"""Bidirectional transformer encoder of BERT4Rec (Sun et al., 2019).

    .. math::
        \mathbf{H}^{(0)} = \mathrm{Dropout}\big(\mathrm{LN}(\mathbf{x}_t + \mathbf{p}_{\pi(t)})\big),
        \qquad \mathbf{H}^{(l)} = \mathrm{Block}^{(l)}\big(\mathbf{H}^{(l-1)}\big)

    with post-LN :class:`~kgseqgraph.nn.encoders.TransformerLayer` blocks (GELU) whose attention
    sees every real position of the row (keys at padding positions are masked), and learned
    positions :math:`\pi(t)` counted over real items, so padding never changes the output at a
    real position. The ``[mask]`` token of the cloze objective is an item embedding: it belongs
    to the item embedder, not to the encoder.

    Args:
        config: a :class:`BERT4RecConfig` (or a dict of its fields); keyword arguments override.
    """

    config_class = BERT4RecConfig
    is_causal = False

    def __init__(self, config: BERT4RecConfig | dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        cfg = self.config
        self.position_embedding = nn.Embedding(cfg.max_len, cfg.hidden_size)
        self.input_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
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
        self.input_norm.reset_parameters()
        for layer in self.layers:
            layer.reset_parameters(std)
        if isinstance(self.final_norm, nn.LayerNorm):
            self.final_norm.reset_parameters()

    def _input(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Block input and the attention mask ``[B, 1, 1, L]`` over keys."""
        cfg = self.config
        check_max_len(mask, cfg.max_len, type(self).__name__)
        h = x + self.position_embedding(positions_from_mask(mask, cfg.position_origin))
        h = self.dropout(self.input_norm(h)).masked_fill(~mask.unsqueeze(-1), 0.0)
        # keys: real items only; a row without any real item may attend anywhere (its outputs
        # are zeroed), so no softmax row is empty and nothing becomes NaN.
        keys = mask | ~mask.any(dim=1, keepdim=True)
        return h, keys[:, None, None, :]

    def _encode(self, x: Tensor, mask: Tensor) -> Tensor:
        h, attn_mask = self._input(x, mask)
        for layer in self.layers:
            h = layer(h, attn_mask=attn_mask)
        return self.final_norm(h)

    def _encode_at(self, x: Tensor, mask: Tensor, positions: Tensor) -> Tensor:
        # one query per row in the last block; the earlier blocks run in full
        h, attn_mask = self._input(x, mask)
        if len(self.layers) == 0:
            return self.final_norm(gather_positions(h, positions))
        for layer in self.layers[:-1]:
            h = layer(h, attn_mask=attn_mask)
        h = self.layers[-1](h, attn_mask=attn_mask, query_index=positions)
        return self.final_norm(h.squeeze(1))

    def _repr_args(self) -> str:
        c = self.config
        return (f"{c.hidden_size}, num_layers={c.num_layers}, num_heads={c.num_heads}, "
                f"max_len={c.max_len}")
