r"""Sequence encoders: :math:`(\mathbf{X}[B, L, D], \mathbf{M}[B, L]) \mapsto \mathbf{H}[B, L, D]`.

All encoders share the :class:`SequenceEncoder` interface (see :mod:`.base` for the contract on
padding, causality and positions). The Hugging Face adapters (:class:`HFT5Encoder`,
:class:`HFGPT2Encoder`) import ``transformers`` only when one is built, so this package imports
without it. The same modules hold the whole language models the text recommenders are built on:
:class:`~.hf_t5.T5LM` (KP4SR's encoder–decoder) and :class:`~.hf_gpt2.CausalLM` (LANCER's causal
LM with prefix keys/values).

Construct classes directly (``SASRecEncoder(hidden_size=64)``) or by name with
:func:`build_encoder` (``build_encoder("sasrec", hidden_size=64)``).
"""
from __future__ import annotations

from typing import Any

from .base import (EncoderConfig, HFBackboneEncoder, HFEncoderConfig, SequenceEncoder,
                   TransformerLayer, gather_last, left_align, positions_from_mask)
from .bert4rec import BERT4RecConfig, BERT4RecEncoder
from .gru4rec import GRU4RecConfig, GRU4RecEncoder
from .hf_gpt2 import CausalLM, HFGPT2Encoder, HFGPT2EncoderConfig
from .hf_t5 import T5LM, HFT5Encoder, HFT5EncoderConfig
from .sasrec import SASRecConfig, SASRecEncoder

__all__ = [
    "SequenceEncoder",
    "EncoderConfig",
    "TransformerLayer",
    "positions_from_mask",
    "left_align",
    "gather_last",
    "SASRecConfig",
    "SASRecEncoder",
    "BERT4RecConfig",
    "BERT4RecEncoder",
    "GRU4RecConfig",
    "GRU4RecEncoder",
    "HFEncoderConfig",
    "HFBackboneEncoder",
    "HFT5EncoderConfig",
    "HFT5Encoder",
    "HFGPT2EncoderConfig",
    "HFGPT2Encoder",
    "T5LM",
    "CausalLM",
    "ENCODERS",
    "register_encoder",
    "build_encoder",
]

#: registry name -> encoder class
ENCODERS: dict[str, type[SequenceEncoder]] = {
    "sasrec": SASRecEncoder,
    "bert4rec": BERT4RecEncoder,
    "gru4rec": GRU4RecEncoder,
    "hf_t5": HFT5Encoder,
    "hf_gpt2": HFGPT2Encoder,
}


def register_encoder(name: str, cls: type[SequenceEncoder]) -> type[SequenceEncoder]:
    """Register ``cls`` under ``name`` for :func:`build_encoder` (returns ``cls``)."""
    if not (isinstance(cls, type) and issubclass(cls, SequenceEncoder)):
        raise TypeError(f"register_encoder expects a SequenceEncoder subclass, got {cls!r}")
    ENCODERS[name.lower()] = cls
    return cls


def _resolve(name: str) -> type[SequenceEncoder]:
    key = name.lower()
    if key not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; known: {sorted(ENCODERS)}")
    return ENCODERS[key]


def build_encoder(name: str, config: Any = None, **kwargs: Any) -> SequenceEncoder:
    """Build the encoder registered as ``name`` from a config (dataclass or dict) and/or kwargs.

    Example:
        >>> enc = build_encoder("sasrec", hidden_size=32, num_layers=1)
        >>> enc.hidden_size, enc.is_causal
        (32, True)
    """
    return _resolve(name)(config, **kwargs)
