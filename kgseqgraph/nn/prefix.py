r"""Prefix keys/values for a causal language model: LANCER's knowledge prompt (Eq. 1–3) and
reasoning prompt (Eq. 5) (Jiang et al., *Reformulating Sequential Recommendation: Learning
Dynamic User Interest with Content-enriched Language Modeling*, 2023; authors' code
``Gnimixy/lancer``, ``layer/prefix.py`` and ``layer/attention.py``).

Knowledge prompt (:class:`PrefixKeyValues`, prefix tuning re-parameterised by an MLP). :math:`P`
learned token embeddings :math:`\mathbf{E} \in \mathbb{R}^{P \times d}` give

.. math::
    \mathbf{Z} = \tanh(\mathbf{E}\mathbf{W}_1 + \mathbf{b}_1) \quad (1), \qquad
    [\mathbf{K}; \mathbf{V}] = \mathbf{Z}\mathbf{W}_2 + \mathbf{b}_2 \quad (2),

and the :math:`2 L H d_h` columns of (2) are split into one key and one value per layer
:math:`l`, key/value head :math:`h` and prefix position :math:`p` (3): every attention layer of
the LM then reads :math:`[\mathbf{K}^{(l)}_{1..P};\ \mathbf{K}^{(l)}_{\text{text}}]` (and the same
for values). Dropout (0.2 in the authors' code) follows (2). :meth:`PrefixKeyValues.hidden` is
:math:`\mathbf{Z}`, which the reasoning prompt attends over.

Reasoning prompt (:class:`ReasoningPromptAttention`). History item representations
:math:`\mathbf{h}_1 \dots \mathbf{h}_T` (queries) attend over knowledge :math:`\mathbf{Z}`
(``[P, d]`` shared by every item — the paper — or ``[B, T, K, d]`` per item with a mask, e.g.
:math:`\mathbf{Z}` plus an item's KG neighbours):

.. math::
    \mathbf{A}_t = \operatorname{softmax}_k\Big(\frac{(\mathbf{h}_t\mathbf{W}_Q + \mathbf{b}_Q)
        (\mathbf{z}_k\mathbf{W}_K + \mathbf{b}_K)^\top}{\sqrt{d}}\Big)
        (\mathbf{Z}\mathbf{W}_V + \mathbf{b}_V), \qquad
    \psi_t = \sigma(\mathbf{A}_t \mathbf{W}_r + \mathbf{b}_r) \quad (5),

and :math:`\psi_t \in \mathbb{R}^{2 L H d_h}` is split like (3) into one prefix key/value per
layer for history item :math:`t`: the reasoning LM reads :math:`T` prefix positions, one per
history item. :math:`\sigma` is the paper's activation (``"sigmoid"``); the authors' code applies
none (``activation="identity"``). Padded history positions get zero weights and are meant to be
masked out of the LM's attention by the caller (the authors' code keeps them visible).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["PrefixKeyValues", "ReasoningPromptAttention", "NeighborEmbedding", "split_prefix"]

_ACTIVATIONS = {"identity": nn.Identity, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def split_prefix(flat: Tensor, num_layers: int, num_kv_heads: int,
                 head_dim: int) -> list[tuple[Tensor, Tensor]]:
    """Eq. (3): ``[B, P, 2·L·H·d_h]`` → per layer ``(K, V)``, each ``[B, H, P, d_h]``.

    The last dimension is read as ``[2, L, H, d_h]`` (key/value outermost, as the authors' code
    views it)."""
    B, P, width = flat.shape
    if width != 2 * num_layers * num_kv_heads * head_dim:
        raise ValueError(f"expected 2*{num_layers}*{num_kv_heads}*{head_dim} columns, got {width}")
    x = flat.view(B, P, 2, num_layers, num_kv_heads, head_dim).permute(3, 2, 0, 4, 1, 5)
    return [(x[l, 0], x[l, 1]) for l in range(num_layers)]


class PrefixKeyValues(nn.Module):
    r"""Eq. (1)–(3): :math:`P` learned tokens → MLP → prefix keys/values for every layer.

    Args:
        num_layers / num_kv_heads / head_dim: the LM's :math:`L`, key/value heads :math:`H`
            (``num_key_value_heads`` for grouped-query attention) and head width :math:`d_h`.
        length: :math:`P`.
        dim: width :math:`d` of the tokens and of :math:`\mathbf{Z}` (the LM width).
        dropout: dropout on (2).
    """

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, length: int = 20,
                 dim: int = 64, dropout: float = 0.2) -> None:
        super().__init__()
        for name, v in (("num_layers", num_layers), ("num_kv_heads", num_kv_heads),
                        ("head_dim", head_dim), ("length", length), ("dim", dim)):
            if int(v) < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        self.num_layers, self.num_kv_heads, self.head_dim = num_layers, num_kv_heads, head_dim
        self.length, self.dim = length, dim
        self.tokens = nn.Embedding(length, dim)
        self.mlp1 = nn.Linear(dim, dim)
        self.mlp2 = nn.Linear(dim, 2 * num_layers * num_kv_heads * head_dim)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The authors' initialisation: tokens :math:`U(\\pm\\sqrt{1/P})`, Xavier-normal weights,
        biases 0.1."""
        bound = math.sqrt(1.0 / self.length)
        nn.init.uniform_(self.tokens.weight, -bound, bound)
        for lin in (self.mlp1, self.mlp2):
            nn.init.xavier_normal_(lin.weight)
            nn.init.constant_(lin.bias, 0.1)

    def hidden(self) -> Tensor:
        r"""Eq. (1): :math:`\mathbf{Z} = \tanh(\mathbf{E}\mathbf{W}_1 + \mathbf{b}_1)`, ``[P, d]``."""
        return torch.tanh(self.mlp1(self.tokens.weight))

    def flat(self) -> Tensor:
        """Eq. (2) with dropout: ``[P, 2·L·H·d_h]``."""
        return self.dropout(self.mlp2(self.hidden()))

    def keys_values(self, batch_size: int) -> list[tuple[Tensor, Tensor]]:
        """Eq. (3): per layer ``(K, V)``, each ``[batch_size, H, P, d_h]`` (expanded views)."""
        kv = split_prefix(self.flat().unsqueeze(0), self.num_layers, self.num_kv_heads,
                          self.head_dim)
        return [(k.expand(batch_size, -1, -1, -1), v.expand(batch_size, -1, -1, -1))
                for k, v in kv]

    def extra_repr(self) -> str:
        return (f"length={self.length}, layers={self.num_layers}, kv_heads={self.num_kv_heads}, "
                f"head_dim={self.head_dim}")


class ReasoningPromptAttention(nn.Module):
    r"""Eq. (5): history items attend over knowledge; each item yields prefix keys/values.

    Args:
        dim: width :math:`d` of the item representations and of the knowledge.
        num_layers / num_kv_heads / head_dim: shape of the produced prefix (the reasoning LM's).
        activation: :math:`\sigma` — ``"sigmoid"`` (paper), ``"identity"`` (authors' code) or
            ``"tanh"``.
    """

    def __init__(self, dim: int, num_layers: int, num_kv_heads: int, head_dim: int,
                 activation: str = "sigmoid") -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got "
                             f"{activation!r}")
        self.dim, self.num_layers = dim, num_layers
        self.num_kv_heads, self.head_dim = num_kv_heads, head_dim
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, 2 * num_layers * num_kv_heads * head_dim)
        self.activation = _ACTIVATIONS[activation]()
        for lin in (self.q, self.k, self.v, self.out):  # the authors' initialisation
            nn.init.xavier_normal_(lin.weight)
            nn.init.constant_(lin.bias, 0.01)

    def attend(self, items: Tensor, mask: Tensor, knowledge: Tensor,
               knowledge_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        r""":math:`\mathbf{A}` ``[B, T, d]`` and the weights ``[B, T, K]`` (zero on padding).

        Args:
            items: ``[B, T, d]`` history item representations; ``mask`` ``[B, T]`` real items.
            knowledge: ``[K, d]`` (shared) or ``[B, T, K, d]`` (per item).
            knowledge_mask: ``[B, T, K]`` usable entries of per-item knowledge (each real item
                needs one).
        """
        q = self.q(items)
        k, v = self.k(knowledge), self.v(knowledge)
        if knowledge.dim() == 2:
            scores = torch.einsum("btd,kd->btk", q, k)
        elif knowledge.dim() == 4 and knowledge.shape[:2] == items.shape[:2]:
            scores = torch.einsum("btd,btkd->btk", q, k)
        else:
            raise ValueError(f"knowledge must be [K, d] or [B, T, K, d], got "
                             f"{tuple(knowledge.shape)}")
        scores = scores / math.sqrt(self.dim)
        if knowledge_mask is not None:
            if bool((mask & ~knowledge_mask.any(-1)).any()):
                raise ValueError("a real history item has no usable knowledge entry")
            scores = scores.masked_fill(~knowledge_mask, float("-inf"))
        scores = scores.masked_fill(~mask.unsqueeze(-1), 0.0)   # no NaN on padded rows
        weights = torch.softmax(scores, -1) * mask.unsqueeze(-1).to(scores.dtype)
        ctx = (torch.einsum("btk,kd->btd", weights, v) if knowledge.dim() == 2
               else torch.einsum("btk,btkd->btd", weights, v))
        return ctx, weights

    def forward(self, items: Tensor, mask: Tensor, knowledge: Tensor,
                knowledge_mask: Tensor | None = None) -> list[tuple[Tensor, Tensor]]:
        """Eq. (5) then (3): per layer ``(K, V)``, each ``[B, H, T, d_h]`` (one prefix position
        per history item)."""
        ctx, _ = self.attend(items, mask, knowledge, knowledge_mask)
        psi = self.activation(self.out(ctx))
        return split_prefix(psi, self.num_layers, self.num_kv_heads, self.head_dim)


class NeighborEmbedding(nn.Module):
    r"""Knowledge entries from the KG for LANCER+KG: item :math:`i`'s neighbours
    :math:`(r_{ik}, n_{ik})` (a fixed table, e.g. from :func:`~kgseqgraph.data.sample_neighbors`)
    embedded as :math:`\mathbf{e}_{n_{ik}} + \mathbf{r}_{r_{ik}}` (learned; only the nodes that
    occur get a row).

    Args:
        nodes: ``[N, k]`` neighbour node ids (any id space), ``-1`` where there is none.
        relations: ``[N, k]`` relation ids.
        dim: embedding width.
    """

    def __init__(self, nodes: Tensor, relations: Tensor, dim: int) -> None:
        super().__init__()
        ok = nodes >= 0
        uniq, inv = torch.unique(nodes[ok], return_inverse=True)
        compact = torch.full_like(nodes, -1)
        compact[ok] = inv
        self.register_buffer("nodes", compact, persistent=False)
        self.register_buffer("relations", torch.where(ok, relations, 0), persistent=False)
        self.node_emb = nn.Embedding(max(int(uniq.numel()), 1), dim)
        self.rel_emb = nn.Embedding(max(int(relations.max()) + 1 if relations.numel() else 1, 1),
                                    dim)
        nn.init.normal_(self.node_emb.weight, std=0.02)
        nn.init.normal_(self.rel_emb.weight, std=0.02)

    @classmethod
    def sampled(cls, graph, num_items: int, k: int, dim: int, seed: int = 0) -> NeighborEmbedding:
        """Up to ``k`` neighbours of each item of a relational view
        (:func:`~kgseqgraph.data.sample_neighbors`, a seeded draw)."""
        from ..data.views import sample_neighbors

        edges = sample_neighbors(graph, torch.arange(num_items), k,
                                 torch.Generator().manual_seed(seed))
        e = edges.clamp(min=0)
        return cls(torch.where(edges >= 0, graph.tail[e], -1), graph.relation[e], dim)

    def forward(self, items: Tensor) -> tuple[Tensor, Tensor]:
        """``(embeddings [..., k, dim], mask [..., k])`` of ``items`` (any shape of item ids)."""
        nodes, rels = self.nodes[items], self.relations[items]
        return self.node_emb(nodes.clamp(min=0)) + self.rel_emb(rels), nodes >= 0
