r"""What an item embedder returns: the tables a sequential model reads its items from and scores
its items against.

A plain item embedder returns one table :math:`\mathbf{T} \in \mathbb{R}^{(N + 2) \times D}`
(items, then the padding and ``[mask]`` rows) used both ways, as SASRec and BERT4Rec tie their
input and output embeddings. An embedder whose output layer differs from its input (KATRec's
output fusion :math:`\hat{\mathbf{E}} = \sigma((\mathbf{V}^* \Vert \mathbf{E}^*)\hat{\mathbf{W}} +
\hat{\mathbf{b}})`) returns :class:`ItemTables`.
"""
from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

__all__ = ["ItemTables", "as_item_tables"]


class ItemTables(NamedTuple):
    """``input [N + 2, D]`` (what the encoder reads, rows ``N``/``N + 1``: padding, ``[mask]``)
    and ``output [N, D]`` (what the encoder's output is scored against)."""

    input: Tensor
    output: Tensor


def as_item_tables(tables: Tensor | ItemTables, num_items: int) -> ItemTables:
    """An embedder's return value as :class:`ItemTables` (a single table is used both ways)."""
    if isinstance(tables, ItemTables):
        inp, out = tables
    else:
        inp, out = tables, tables[:num_items]
    if inp.dim() != 2 or inp.size(0) != num_items + 2:
        raise ValueError(f"the input item table must be [num_items + 2, D] = [{num_items + 2}, D],"
                         f" got {tuple(inp.shape)}")
    if out.dim() != 2 or out.size(0) != num_items:
        raise ValueError(f"the output item table must be [num_items, D'] = [{num_items}, D'], got "
                         f"{tuple(out.shape)}")
    return ItemTables(inp, out)
