r"""GRU4Rec: recurrent session/sequence encoder (Hidasi et al., ICLR 2016; Tan et al., 2016)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .base import EncoderConfig, SequenceEncoder, left_align

__all__ = ["GRU4RecConfig", "GRU4RecEncoder"]


@dataclass
class GRU4RecConfig(EncoderConfig):
    r"""Configuration of :class:`GRU4RecEncoder` (defaults: RecBole's GRU4Rec).

    Args:
        hidden_size: width :math:`D` of the item embeddings and of the output.
        rnn_hidden_size: width of the GRU state (``None``: :math:`D`; RecBole uses 128 for
            :math:`D = 64`).
        num_layers: stacked GRU layers.
        dropout: dropout on the input embeddings.
        rnn_dropout: dropout between stacked GRU layers.
    """

    hidden_size: int = 64
    rnn_hidden_size: int | None = None
    num_layers: int = 1
    dropout: float = 0.3
    rnn_dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rnn_hidden_size is None:
            self.rnn_hidden_size = self.hidden_size
        if self.rnn_hidden_size <= 0 or self.num_layers <= 0:
            raise ValueError("rnn_hidden_size and num_layers must be positive, got "
                             f"{self.rnn_hidden_size}, {self.num_layers}")


class GRU4RecEncoder(SequenceEncoder):
    r"""Sequential GRU4Rec as in RecBole: embedding dropout, a GRU, a dense layer back to :math:`D`.

    .. math::
        \mathbf{z}_t &= \sigma(\mathbf{W}_z \tilde{\mathbf{x}}_t + \mathbf{U}_z \mathbf{s}_{t-1}
            + \mathbf{b}_z),\quad
        \mathbf{r}_t = \sigma(\mathbf{W}_r \tilde{\mathbf{x}}_t + \mathbf{U}_r \mathbf{s}_{t-1}
            + \mathbf{b}_r),\\
        \hat{\mathbf{s}}_t &= \tanh(\mathbf{W}_n \tilde{\mathbf{x}}_t
            + \mathbf{r}_t \odot (\mathbf{U}_n \mathbf{s}_{t-1} + \mathbf{b}_{hn}) + \mathbf{b}_{in}),
        \quad \mathbf{s}_t = (1 - \mathbf{z}_t) \odot \hat{\mathbf{s}}_t + \mathbf{z}_t \odot
            \mathbf{s}_{t-1},\\
        \mathbf{h}_t &= \mathbf{W}_o \mathbf{s}_t + \mathbf{b}_o,

    with :math:`\tilde{\mathbf{x}}_t = \mathrm{Dropout}(\mathbf{x}_t)` and :math:`t` running over
    the real items of the row only: the real items are moved to the front of the row (stable
    gather), the GRU runs over the longest row of the batch, and the outputs are scattered back
    to the input layout. Padding (left, right or in between) therefore never reaches the state
    that produces a real output, and the output at position :math:`t` depends on real items at
    positions :math:`\le t` only.

    Args:
        config: a :class:`GRU4RecConfig` (or a dict of its fields); keyword arguments override.
    """

    config_class = GRU4RecConfig
    is_causal = True

    def __init__(self, config: GRU4RecConfig | dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        cfg = self.config
        self.dropout = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(cfg.hidden_size, cfg.rnn_hidden_size, num_layers=cfg.num_layers,
                          batch_first=True, dropout=cfg.rnn_dropout if cfg.num_layers > 1 else 0.0)
        self.dense = nn.Linear(cfg.rnn_hidden_size, cfg.hidden_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GRU weights Xavier-uniform (as RecBole), GRU biases 0, dense layer PyTorch default."""
        for name, param in self.gru.named_parameters():
            if name.startswith("weight"):
                nn.init.xavier_uniform_(param)
            else:
                nn.init.zeros_(param)
        self.dense.reset_parameters()

    def _encode(self, x: Tensor, mask: Tensor) -> Tensor:
        perm = left_align(mask)
        mask = mask.gather(1, perm)
        if torch.compiler.is_compiling() or torch.jit.is_tracing():
            # graph capture (torch.export, ONNX, tracing) cannot depend on the data: run over
            # every column; the extra steps read trailing padding after a row's real items, so
            # no real output changes
            steps = mask.size(1)
        else:
            steps = int(mask.sum(dim=1).max())  # longest row: the GRU never runs past it
        if steps == 0:
            return x.new_zeros(x.shape) + 0.0 * x
        perm = perm[:, :steps]
        x = x.gather(1, perm.unsqueeze(-1).expand(-1, -1, x.size(-1)))
        x = self.dropout(x).masked_fill(~mask[:, :steps].unsqueeze(-1), 0.0)
        h, _ = self.gru(x)
        h = self.dense(h)
        out = h.new_zeros(h.size(0), mask.size(1), h.size(-1))
        return out.scatter(1, perm.unsqueeze(-1).expand_as(h), h)

    def _repr_args(self) -> str:
        c = self.config
        return (f"{c.hidden_size}, rnn_hidden_size={c.rnn_hidden_size}, "
                f"num_layers={c.num_layers}")
