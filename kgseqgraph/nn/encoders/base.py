r"""The :class:`SequenceEncoder` interface and the pieces the encoders share.

Every encoder maps item embeddings :math:`\mathbf{X} \in \mathbb{R}^{B \times L \times D}` and a
padding mask :math:`\mathbf{M} \in \{0, 1\}^{B \times L}` (``True`` at real items) to contextual
states :math:`\mathbf{H} \in \mathbb{R}^{B \times L \times D}` of the same width. Encoders do not
own item embeddings; they own what the papers put between the item table and the prediction
layer (positional embeddings, layer norms, dropout, the sequence model itself).

Contract shared by all encoders (tested for each of them):

* padding may sit on the left, on the right, or anywhere in the row: only the mask is used;
* the output at a real position does not depend on the padding (how much or where);
* the output at a padding position is exactly zero, and nothing is ever NaN — not for a row of
  padding only, nor for a single-item row;
* causal encoders (``is_causal = True``) compute the output at real position :math:`t` from the
  real items at positions :math:`\le t` only.

Positions are counted over real items (see :func:`positions_from_mask`): the first real item of a
row has position 0 whatever padding precedes it, which is what makes left padding invisible to
encoders with absolute positional embeddings.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "EncoderConfig",
    "SequenceEncoder",
    "TransformerLayer",
    "positions_from_mask",
    "left_align",
    "gather_last",
    "last_positions",
    "gather_positions",
    "encode_at",
    "check_position_origin",
    "check_transformer_config",
    "check_max_len",
    "HFEncoderConfig",
    "HFBackboneEncoder",
]


@dataclass
class EncoderConfig:
    """Fields every encoder configuration has.

    Args:
        hidden_size: width :math:`D` of the item embeddings the encoder reads and of its output.
    """

    hidden_size: int = 64

    def __post_init__(self) -> None:
        if not isinstance(self.hidden_size, int) or self.hidden_size <= 0:
            raise ValueError(f"hidden_size must be a positive int, got {self.hidden_size!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy of the configuration."""
        return dataclasses.asdict(self)


def check_transformer_config(config: Any, inner_factor: int) -> None:
    """The checks every transformer encoder config shares (and ``inner_size=None`` filled with
    ``inner_factor`` × ``hidden_size``)."""
    if config.inner_size is None:
        config.inner_size = inner_factor * config.hidden_size
    if config.num_layers < 0 or config.num_heads <= 0 or config.max_len <= 0:
        raise ValueError("num_layers must be >= 0, num_heads and max_len positive, got "
                         f"{config.num_layers}, {config.num_heads}, {config.max_len}")
    if config.hidden_size % config.num_heads != 0:
        raise ValueError(f"hidden_size={config.hidden_size} is not divisible by "
                         f"num_heads={config.num_heads}")
    check_position_origin(config.position_origin)


def check_position_origin(origin: str) -> None:
    if origin not in {"first", "last"}:
        raise ValueError(f"position_origin must be 'first' or 'last', got {origin!r}")


def positions_from_mask(mask: Tensor, origin: str = "first") -> Tensor:
    r"""Position index of every real item, counted over real items only.

    With ``origin="first"`` the :math:`k`-th real item of a row (oldest first,
    :math:`k = 0, 1, \dots`) gets position :math:`k`:

    .. math::
        p_{b,t} = \sum_{s \le t} M_{b,s} - 1,

    with ``origin="last"`` the most recent real item gets position 0 and older items count up
    (:math:`p_{b,t} = \sum_{s > t} M_{b,s}`), which is what SASRec's original left-padded window
    with absolute positions amounts to (the newest item always meets the same embedding).
    Either way the positions of real items do not depend on padding. Padding positions get 0.

    Args:
        mask: ``BoolTensor[B, L]``, ``True`` at real items.
        origin: ``"first"`` or ``"last"``.

    Returns:
        ``LongTensor[B, L]``.
    """
    check_position_origin(origin)
    m = mask.long()
    csum = m.cumsum(dim=1)
    if origin == "first":
        pos = csum - 1
    else:
        pos = csum[:, -1:] - csum
    return pos.masked_fill(~mask, 0)


def left_align(mask: Tensor) -> Tensor:
    r"""Permutation that moves the real items of each row to its front, keeping their order.

    ``perm = left_align(mask)`` satisfies ``mask.gather(1, perm)`` being ``True`` on a prefix of
    every row (right padding), with real items in their original order (a stable sort of
    :math:`\lnot M`). Scatter back with ``torch.zeros_like(y).scatter(1, perm, y)``.

    Under graph capture (:mod:`torch.export`, ONNX export, ``torch.compile``, tracing) the same
    permutation is computed without a sort (:func:`_left_align_without_sort`): ONNX has no
    stable sort. Eager code keeps the stable sort, the faster of the two on CPU.

    Args:
        mask: ``BoolTensor[B, L]``.

    Returns:
        ``LongTensor[B, L]``.
    """
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return _left_align_without_sort(mask)
    return torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)


def _left_align_without_sort(mask: Tensor) -> Tensor:
    r""":func:`left_align` by one scatter: the real item at column :math:`t` goes to slot
    :math:`c_{b,t} - 1` with :math:`c_{b,t} = \sum_{s \le t} M_{b,s}`, the padding at column
    :math:`t` to slot :math:`n_b + (t + 1 - c_{b,t}) - 1` (:math:`n_b` real items in the row), and
    the permutation is that map inverted."""
    length = mask.size(1)
    before = mask.long().cumsum(dim=1)
    upto = torch.arange(1, length + 1, device=mask.device)
    slot = torch.where(mask, before - 1, before[:, -1:] + upto - before - 1)
    return torch.empty_like(slot).scatter_(1, slot, (upto - 1).expand_as(slot))


def last_positions(mask: Tensor) -> Tensor:
    r"""Column of the most recent real item of each row, :math:`t_b = \max\{t : M_{b,t}\}`
    (0 for a row without real items).

    Args:
        mask: ``BoolTensor[B, L]``.

    Returns:
        ``LongTensor[B]``.
    """
    if mask.size(1) == 0:
        return torch.zeros(mask.size(0), dtype=torch.long, device=mask.device)
    idx = torch.arange(mask.size(1), device=mask.device).expand_as(mask)
    return torch.where(mask, idx, -1).amax(dim=1).clamp(min=0)


def gather_positions(hidden: Tensor, positions: Tensor) -> Tensor:
    """``hidden[b, positions[b]]`` for every row: ``Tensor[B, L, D]``, ``LongTensor[B]`` →
    ``Tensor[B, D]``."""
    index = positions.view(-1, 1, 1).expand(-1, 1, hidden.size(-1))
    return hidden.gather(1, index).squeeze(1)


def gather_last(hidden: Tensor, mask: Tensor) -> Tensor:
    r"""Output at the most recent real position of each row (zeros for rows without one).

    The usual sequence representation of a causal encoder:
    :math:`\mathbf{h}_b = \mathbf{H}_{b, t_b}` with :math:`t_b = \max\{t : M_{b,t}\}`.

    Args:
        hidden: ``Tensor[B, L, D]``.
        mask: ``BoolTensor[B, L]``.

    Returns:
        ``Tensor[B, D]``.
    """
    if hidden.dim() != 3 or mask.shape != hidden.shape[:2]:
        raise ValueError(f"expected hidden [B, L, D] and mask [B, L], got {tuple(hidden.shape)} "
                         f"and {tuple(mask.shape)}")
    if mask.size(1) == 0:
        return hidden.new_zeros(hidden.size(0), hidden.size(-1))
    out = gather_positions(hidden, last_positions(mask))
    return torch.where(mask.any(dim=1, keepdim=True), out, 0.0)


def encode_at(encoder: nn.Module, item_embeddings: Tensor, mask: Tensor,
              positions: Tensor) -> Tensor:
    """Output of ``encoder`` at one position per row, ``Tensor[B, D]``.

    A :class:`SequenceEncoder` is asked for those positions only (``output_positions``: the
    transformer encoders then skip the last block's work at every other position); any other
    module encodes the whole window and the positions are gathered.
    """
    if isinstance(encoder, SequenceEncoder):
        return encoder(item_embeddings, mask, output_positions=positions)
    return gather_positions(encoder(item_embeddings, mask), positions)


class SequenceEncoder(nn.Module):
    r"""Base class of sequence encoders: :math:`(\mathbf{X}, \mathbf{M}) \mapsto \mathbf{H}`.

    Subclasses set :attr:`config_class` and :attr:`is_causal`, build their layers in
    ``__init__`` (after ``super().__init__(config, **kwargs)``) and implement :meth:`_encode`.

    An encoder is built from a configuration dataclass, a ``dict`` of its fields, or keyword
    arguments (which override the fields of ``config`` when both are given)::

        SASRecEncoder(hidden_size=64, num_layers=2)
        SASRecEncoder(SASRecConfig(hidden_size=64), num_layers=3)

    :meth:`forward` checks the inputs, calls :meth:`_encode`, and zeroes padding positions.
    """

    config_class: ClassVar[type[EncoderConfig]] = EncoderConfig
    is_causal: ClassVar[bool] = False

    def __init__(self, config: EncoderConfig | dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__()
        self.config = self._make_config(config, kwargs)

    @classmethod
    def _make_config(cls, config: Any, kwargs: dict[str, Any]) -> EncoderConfig:
        if config is None:
            return cls.config_class(**kwargs)
        if isinstance(config, dict):
            return cls.config_class(**{**config, **kwargs})
        if isinstance(config, cls.config_class):
            return dataclasses.replace(config, **kwargs) if kwargs else config
        raise TypeError(f"{cls.__name__} expects a {cls.config_class.__name__}, a dict or keyword "
                        f"arguments, got {type(config).__name__}")

    @property
    def hidden_size(self) -> int:
        """Width :math:`D` of inputs and outputs."""
        return self.config.hidden_size

    def reset_parameters(self) -> None:
        """Re-initialise all learnable parameters."""
        raise NotImplementedError

    def _encode(self, x: Tensor, mask: Tensor) -> Tensor:
        raise NotImplementedError

    def _encode_at(self, x: Tensor, mask: Tensor, positions: Tensor) -> Tensor:
        """Output ``[B, D]`` at ``positions[b]`` of each row (padding not yet zeroed).

        The default encodes the whole window and gathers; encoders that can save work when only
        one position per row is read (the transformer encoders) override it.
        """
        return gather_positions(self._encode(x, mask), positions)

    def check_inputs(self, item_embeddings: Tensor, mask: Tensor | None) -> Tensor:
        """Validate shapes and return the mask as a ``BoolTensor[B, L]``."""
        x = item_embeddings
        if not isinstance(x, Tensor) or x.dim() != 3:
            raise ValueError(f"{type(self).__name__}: item_embeddings must be a [B, L, D] tensor, "
                             f"got shape {tuple(getattr(x, 'shape', ()))}")
        if x.size(-1) != self.hidden_size:
            raise ValueError(f"{type(self).__name__}: item_embeddings have width {x.size(-1)}, "
                             f"expected hidden_size={self.hidden_size}")
        if not x.is_floating_point():
            raise ValueError(f"{type(self).__name__}: item_embeddings must be floating point, "
                             f"got {x.dtype}")
        if mask is None:
            return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if mask.shape != x.shape[:2]:
            raise ValueError(f"{type(self).__name__}: mask must have shape [B, L] = "
                             f"{tuple(x.shape[:2])}, got {tuple(mask.shape)}")
        if mask.dtype != torch.bool:
            if mask.is_floating_point() or mask.is_complex():
                raise ValueError(f"{type(self).__name__}: mask must be a bool (True = real item) "
                                 f"or 0/1 integer tensor, got {mask.dtype}")
            mask = mask != 0
        return mask.to(x.device)

    def forward(self, item_embeddings: Tensor, mask: Tensor | None = None,
                output_positions: Tensor | None = None) -> Tensor:
        r"""Encode a padded batch.

        Args:
            item_embeddings: ``Tensor[B, L, D]``.
            mask: ``BoolTensor[B, L]``, ``True`` at real items (``None``: no padding).
            output_positions: ``LongTensor[B]`` of columns :math:`0 \le p_b < L` (``None``: all
                columns). When given, only the output at column :math:`p_b` of each row is
                returned — the value ``forward(x, mask)[b, p_b]`` would have — which lets
                inference (one scored position per row) skip work the other positions need.

        Returns:
            ``Tensor[B, L, D]``, zero at padding positions; ``Tensor[B, D]`` with
            ``output_positions`` (zero for a row whose position is padding).
        """
        mask = self.check_inputs(item_embeddings, mask)
        if output_positions is not None:
            return self._forward_at(item_embeddings, mask, output_positions)
        if mask.size(1) == 0:
            return item_embeddings * 0.0
        out = self._encode(item_embeddings, mask)
        return out.masked_fill(~mask.unsqueeze(-1), 0.0)

    def _forward_at(self, x: Tensor, mask: Tensor, positions: Tensor) -> Tensor:
        if (not isinstance(positions, Tensor) or positions.dim() != 1
                or positions.size(0) != x.size(0) or positions.is_floating_point()):
            raise ValueError(f"{type(self).__name__}: output_positions must be an integer "
                             f"tensor [B] = [{x.size(0)}], got "
                             f"{tuple(getattr(positions, 'shape', ()))}")
        if mask.size(1) == 0:
            return x.new_zeros(x.size(0), x.size(-1))
        positions = positions.to(device=x.device, dtype=torch.long)
        out = self._encode_at(x, mask, positions)
        real = mask.gather(1, positions.unsqueeze(1))
        return out.masked_fill(~real, 0.0)

    def _repr_args(self) -> str:
        return str(self.hidden_size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._repr_args()})"


_ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
}


class TransformerLayer(nn.Module):
    r"""One transformer block: multi-head self-attention and a point-wise feed-forward network.

    With :math:`\mathrm{Attn}(\mathbf{X}) = \mathrm{softmax}\!\big(\mathbf{Q}\mathbf{K}^\top/\sqrt{d_h}
    + \mathbf{A}\big)\mathbf{V}` per head (:math:`\mathbf{A}` is :math:`-\infty` where attention is
    not allowed) and :math:`\mathrm{FFN}(\mathbf{x}) = \mathbf{W}_2\,\sigma(\mathbf{W}_1\mathbf{x} +
    \mathbf{b}_1) + \mathbf{b}_2`, the pre-LN block (``norm_first=True``, SASRec's
    :math:`g(x) = x + \mathrm{Dropout}(g(\mathrm{LN}(x)))`) computes

    .. math::
        \mathbf{X}' = \mathbf{X} + \mathrm{Dropout}(\mathrm{Attn}(\mathrm{LN}_1(\mathbf{X}))),\qquad
        \mathbf{X}'' = \mathbf{X}' + \mathrm{Dropout}(\mathrm{FFN}(\mathrm{LN}_2(\mathbf{X}')))

    and the post-LN block (``norm_first=False``, BERT / BERT4Rec / RecBole)

    .. math::
        \mathbf{X}' = \mathrm{LN}_1(\mathbf{X} + \mathrm{Dropout}(\mathrm{Attn}(\mathbf{X}))),\qquad
        \mathbf{X}'' = \mathrm{LN}_2(\mathbf{X}' + \mathrm{Dropout}(\mathrm{FFN}(\mathbf{X}'))).

    Attention runs through :func:`torch.nn.functional.scaled_dot_product_attention` (flash /
    memory-efficient kernels where the device has them).

    Args:
        hidden_size: model width :math:`D`.
        num_heads: number of heads (must divide :math:`D`).
        inner_size: width of the feed-forward layer.
        hidden_dropout: dropout on the attention and FFN outputs.
        attn_dropout: dropout on the attention probabilities.
        activation: ``"relu"``, ``"gelu"``, ``"gelu_tanh"`` or ``"silu"``.
        norm_first: pre-LN (``True``) or post-LN (``False``).
        layer_norm_eps: :math:`\epsilon` of the layer norms.
    """

    def __init__(self, hidden_size: int, num_heads: int, inner_size: int,
                 hidden_dropout: float = 0.1, attn_dropout: float = 0.1, activation: str = "gelu",
                 norm_first: bool = False, layer_norm_eps: float = 1e-12) -> None:
        super().__init__()
        if hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size={hidden_size} is not divisible by num_heads={num_heads}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, "
                             f"got {activation!r}")
        self.hidden_size, self.num_heads, self.inner_size = hidden_size, num_heads, inner_size
        self.head_dim = hidden_size // num_heads
        self.attn_dropout = attn_dropout
        self.activation = activation
        self.norm_first = norm_first
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)
        self.ffn1 = nn.Linear(hidden_size, inner_size)
        self.ffn2 = nn.Linear(inner_size, hidden_size)
        self.norm1 = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.norm2 = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(hidden_dropout)

    def reset_parameters(self, std: float = 0.02) -> None:
        """Weights :math:`\\sim \\mathcal{N}(0, \\mathrm{std}^2)`, biases 0, layer norms 1/0."""
        for lin in (self.qkv, self.out, self.ffn1, self.ffn2):
            nn.init.normal_(lin.weight, 0.0, std)
            nn.init.zeros_(lin.bias)
        for ln in (self.norm1, self.norm2):
            ln.reset_parameters()

    def _attention(self, x: Tensor, attn_mask: Tensor | None, is_causal: bool) -> Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=is_causal,
            dropout_p=self.attn_dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, L, D))

    def _attention_one(self, query: Tensor, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        """Attention of one query row per sequence (``query: [B, 1, D]``) over all of ``x``."""
        B, L, D = x.shape
        w_q, w_kv = self.qkv.weight.split([D, 2 * D])
        b_q, b_kv = self.qkv.bias.split([D, 2 * D])
        q = F.linear(query, w_q, b_q).view(B, 1, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = F.linear(x, w_kv, b_kv).view(B, L, 2, self.num_heads,
                                            self.head_dim).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask,
            dropout_p=self.attn_dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, 1, D))

    def _ffn(self, x: Tensor) -> Tensor:
        return self.ffn2(_ACTIVATIONS[self.activation](self.ffn1(x)))

    def forward(self, x: Tensor, attn_mask: Tensor | None = None,
                is_causal: bool = False, query_index: Tensor | None = None) -> Tensor:
        """Args:
            x: ``Tensor[B, L, D]``.
            attn_mask: boolean ``[B, 1, L, L]`` / ``[B, 1, 1, L]`` (``True`` = may attend) or
                ``None``; every query must be allowed at least one key.
            is_causal: apply a causal mask (with ``attn_mask=None``).
            query_index: ``LongTensor[B]``: compute the block's output at column
                ``query_index[b]`` of each row only, ``Tensor[B, 1, D]`` (keys and values still
                come from every column). ``attn_mask`` is then that query's row, ``[B, 1, 1, L]``
                (``is_causal`` is not allowed: the caller states which keys the query sees).

        Returns:
            ``Tensor[B, L, D]``, or ``Tensor[B, 1, D]`` with ``query_index``.
        """
        if query_index is not None:
            if is_causal:
                raise ValueError("query_index needs an explicit attn_mask, not is_causal")
            index = query_index.view(-1, 1, 1).expand(-1, 1, x.size(-1))
            if self.norm_first:
                xn = self.norm1(x)
                x = x.gather(1, index) + self.dropout(
                    self._attention_one(xn.gather(1, index), xn, attn_mask))
                return x + self.dropout(self._ffn(self.norm2(x)))
            x_q = x.gather(1, index)
            x = self.norm1(x_q + self.dropout(self._attention_one(x_q, x, attn_mask)))
            return self.norm2(x + self.dropout(self._ffn(x)))
        if self.norm_first:
            x = x + self.dropout(self._attention(self.norm1(x), attn_mask, is_causal))
            return x + self.dropout(self._ffn(self.norm2(x)))
        x = self.norm1(x + self.dropout(self._attention(x, attn_mask, is_causal)))
        return self.norm2(x + self.dropout(self._ffn(x)))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.hidden_size}, num_heads={self.num_heads}, "
                f"inner_size={self.inner_size}, activation={self.activation!r}, "
                f"norm_first={self.norm_first})")


def check_max_len(mask: Tensor, max_len: int, owner: str) -> None:
    """Raise ``ValueError`` when a row holds more real items than ``max_len`` positions.

    Only inspects the data (one host synchronisation) when the window is longer than ``max_len``.
    """
    if mask.size(1) <= max_len:
        return
    longest = int(mask.sum(dim=1).max())
    if longest > max_len:
        raise ValueError(f"{owner}: a row holds {longest} real items but max_len={max_len}; "
                         f"truncate the sequences or raise max_len")


@dataclass
class HFEncoderConfig(EncoderConfig):
    r"""Configuration shared by the Hugging Face backbone adapters.

    Args:
        hidden_size: width :math:`D` of the item embeddings and of the output; projections to and
            from the backbone width are added when they differ.
        backbone_config: the backbone's Hugging Face configuration as a dict
            (``PreTrainedConfig.to_dict()``; a config object is converted). ``None`` builds the
            adapter's small default backbone of width :math:`D`. Always filled after construction,
            so a saved adapter config rebuilds the architecture without network access.
        pretrained_name_or_path: where the weights came from (informational; construction from a
            config never downloads — use ``from_pretrained``).
        freeze_backbone: exclude the backbone weights from training (``requires_grad=False``).
        attn_implementation: Hugging Face attention implementation (``"sdpa"``, ``"eager"``, …;
            ``None``: the library default).
    """

    hidden_size: int = 64
    backbone_config: dict[str, Any] | None = None
    pretrained_name_or_path: str | None = None
    freeze_backbone: bool = False
    attn_implementation: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.backbone_config is not None and not isinstance(self.backbone_config, dict):
            if not hasattr(self.backbone_config, "to_dict"):
                raise TypeError("backbone_config must be a dict or a Hugging Face config, got "
                                f"{type(self.backbone_config).__name__}")
            self.backbone_config = self.backbone_config.to_dict()
        if self.pretrained_name_or_path is not None:
            self.pretrained_name_or_path = str(self.pretrained_name_or_path)


class HFBackboneEncoder(SequenceEncoder):
    r"""Base of the adapters that run a Hugging Face transformer on item embeddings.

    .. math::
        \mathbf{H} = \mathbf{W}_{\mathrm{out}}\,
            \mathrm{Backbone}\big(\mathbf{W}_{\mathrm{in}} \mathbf{X} + \mathbf{b}_{\mathrm{in}},
            \mathbf{M}\big) + \mathbf{b}_{\mathrm{out}}

    where the projections are identities when :math:`D` equals the backbone width. Item
    embeddings enter through ``inputs_embeds``; the backbone's token embedding table is unused.
    Subclasses implement :meth:`_build_backbone`, :meth:`_load_backbone` and :meth:`_run`.
    ``transformers`` is imported only inside those methods.

    Args:
        config: an :class:`HFEncoderConfig` subclass (or a dict of its fields).
        backbone: an already built Hugging Face model to wrap (its config is recorded).
        **kwargs: override configuration fields.
    """

    config_class: ClassVar[type[EncoderConfig]] = HFEncoderConfig

    def __init__(self, config: HFEncoderConfig | dict[str, Any] | None = None, *,
                 backbone: nn.Module | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        if backbone is None:
            backbone = self._build_backbone(self.config)
        self.config = dataclasses.replace(self.config, backbone_config=backbone.config.to_dict())
        self.backbone = backbone
        self.backbone_size = int(backbone.config.hidden_size)
        D = self.config.hidden_size
        same = D == self.backbone_size
        self.proj_in = nn.Identity() if same else nn.Linear(D, self.backbone_size)
        self.proj_out = nn.Identity() if same else nn.Linear(self.backbone_size, D)
        if self.config.freeze_backbone:
            self.backbone.requires_grad_(False)

    # -- hooks -----------------------------------------------------------------------------
    @classmethod
    def _build_backbone(cls, config: HFEncoderConfig) -> nn.Module:
        raise NotImplementedError

    @classmethod
    def _load_backbone(cls, name_or_path: str, attn_implementation: str | None,
                       **hf_kwargs: Any) -> nn.Module:
        raise NotImplementedError

    def _run(self, h: Tensor, mask: Tensor) -> Tensor:
        raise NotImplementedError

    # -- public ------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str | Any, hidden_size: int | None = None, *,
                        freeze_backbone: bool = False, attn_implementation: str | None = None,
                        **hf_kwargs: Any) -> HFBackboneEncoder:
        """Wrap pretrained weights (a hub name or a local folder written by ``save_pretrained``).

        Args:
            name_or_path: passed to the Hugging Face ``from_pretrained``.
            hidden_size: item embedding width :math:`D` (``None``: the backbone width, no
                projections).
            freeze_backbone: freeze the pretrained weights.
            attn_implementation: Hugging Face attention implementation.
            **hf_kwargs: further ``from_pretrained`` arguments (``dtype``, ``local_files_only``…).
        """
        backbone = cls._load_backbone(str(name_or_path), attn_implementation, **hf_kwargs)
        size = int(backbone.config.hidden_size)
        return cls(hidden_size=hidden_size or size, backbone=backbone,
                   pretrained_name_or_path=str(name_or_path), freeze_backbone=freeze_backbone,
                   attn_implementation=attn_implementation)

    def reset_parameters(self) -> None:
        """Re-initialise the projections, and the backbone when it was not loaded pretrained.

        Pretrained backbone weights are kept: reload with :meth:`from_pretrained` to restore them.
        """
        for proj in (self.proj_in, self.proj_out):
            if isinstance(proj, nn.Linear):
                proj.reset_parameters()
        if self.config.pretrained_name_or_path is None and hasattr(self.backbone, "_init_weights"):
            self.backbone.apply(self.backbone._init_weights)

    def _encode(self, x: Tensor, mask: Tensor) -> Tensor:
        h = self.proj_in(x)
        dtype = next(self.backbone.parameters()).dtype
        out = self._run(h.to(dtype), mask)
        return self.proj_out(out.to(h.dtype))

    def _repr_args(self) -> str:
        bc = self.config.backbone_config or {}
        src = self.config.pretrained_name_or_path
        return (f"{self.hidden_size}, backbone={bc.get('model_type', '?')}"
                f"({self.backbone_size})" + (f", pretrained={src!r}" if src else ""))
