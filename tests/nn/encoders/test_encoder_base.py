"""Shared pieces: positions, alignment, last-state gathering, the transformer block."""
from __future__ import annotations

import pytest
import torch

from kgseqgraph.nn.encoders import (BERT4RecConfig, GRU4RecConfig, SASRecConfig, TransformerLayer,
                                    gather_last, left_align, positions_from_mask)
from kgseqgraph.nn.encoders.base import _left_align_without_sort

MASK = torch.tensor([[0, 0, 1, 1, 1],
                     [1, 1, 1, 0, 0],
                     [0, 1, 0, 1, 0],
                     [0, 0, 0, 0, 0]], dtype=torch.bool)


def test_positions_from_mask_hand_values() -> None:
    first = torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 0]])
    last = torch.tensor([[0, 0, 2, 1, 0], [2, 1, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 0]])
    assert torch.equal(positions_from_mask(MASK), first)
    assert torch.equal(positions_from_mask(MASK, "last"), last)
    with pytest.raises(ValueError, match="position_origin"):
        positions_from_mask(MASK, "middle")


def test_left_align_hand_values() -> None:
    perm = left_align(MASK)
    assert torch.equal(perm, torch.tensor([[2, 3, 4, 0, 1], [0, 1, 2, 3, 4],
                                           [1, 3, 0, 2, 4], [0, 1, 2, 3, 4]]))
    aligned = MASK.gather(1, perm)
    assert torch.equal(aligned.sum(1), MASK.sum(1))
    assert torch.equal(aligned, torch.arange(5) < MASK.sum(1, keepdim=True))
    y = torch.arange(20.0).view(4, 5)
    assert torch.equal(torch.zeros_like(y).scatter(1, perm, y.gather(1, perm)), y)


def test_left_align_without_sort_equals_the_stable_sort() -> None:
    """The sort-free form used under graph capture (ONNX has no stable sort) is the same map."""
    g = torch.Generator().manual_seed(0)
    for length in (1, 2, 7, 33):
        mask = torch.rand(64, length, generator=g) < torch.rand(64, 1, generator=g)
        mask[0], mask[1] = True, False  # a full and an empty row
        assert torch.equal(_left_align_without_sort(mask), left_align(mask))
    assert torch.equal(_left_align_without_sort(MASK), left_align(MASK))
    assert _left_align_without_sort(MASK[:, :0]).shape == (4, 0)


def test_gather_last_hand_values() -> None:
    h = torch.arange(4 * 5 * 2, dtype=torch.float).view(4, 5, 2)
    want = torch.stack([h[0, 4], h[1, 2], h[2, 3], torch.zeros(2)])
    assert torch.equal(gather_last(h, MASK), want)
    assert gather_last(h[:, :0], MASK[:, :0]).shape == (4, 2)
    with pytest.raises(ValueError):
        gather_last(h, MASK[:, :3])


def test_transformer_layer_and_config_validation() -> None:
    with pytest.raises(ValueError, match="divisible"):
        TransformerLayer(10, 3, 20)
    with pytest.raises(ValueError, match="activation"):
        TransformerLayer(8, 2, 16, activation="tanh")
    with pytest.raises(ValueError, match="divisible"):
        SASRecConfig(hidden_size=10, num_heads=3)
    with pytest.raises(ValueError, match="position_origin"):
        BERT4RecConfig(position_origin="end")
    with pytest.raises(ValueError, match="hidden_size"):
        GRU4RecConfig(hidden_size=0)
    assert SASRecConfig(hidden_size=32).inner_size == 32          # paper: FFN width D
    assert BERT4RecConfig(hidden_size=32).inner_size == 128       # paper: 4D
    assert GRU4RecConfig(hidden_size=32).rnn_hidden_size == 32
    rb = SASRecConfig.recbole(max_len=200)
    assert (rb.norm_first, rb.activation, rb.inner_size, rb.max_len) == (False, "gelu", 256, 200)
