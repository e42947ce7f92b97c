r"""LANCER's two prompt modules (Li et al., *Large Language Models Make Knowledge-aware
Sequential Recommenders*): a **knowledge prompt** that injects domain knowledge into every layer
of a causal LM as trainable prefix keys/values, and a **reasoning prompt** that turns a user's
history into soft prompt vectors by attending over domain-knowledge embeddings.

Knowledge prompt (prefix tuning, Li & Liang 2021). :math:`P` learned knowledge tokens
:math:`\mathbf{U} \in \mathbb{R}^{P \times d_u}` are mapped by a two-layer MLP to one key and one
value per layer and key/value head,

.. math::
    [\mathbf{K}^{(l)}_{p}, \mathbf{V}^{(l)}_{p}]_{l=1..L_{\mathrm{LM}}}
    = \mathrm{reshape}\big(\mathbf{W}_2 \tanh(\mathbf{W}_1 \mathbf{u}_p + \mathbf{b}_1)
    + \mathbf{b}_2\big) \in \mathbb{R}^{L_{\mathrm{LM}} \times 2 \times H_{kv} \times d_h},

so :meth:`KnowledgePrompt.prefix` has shape ``[layers, 2, kv_heads, P, head_dim]``. Every layer's
attention then reads :math:`[\mathbf{K}^{(l)}_{1..P};\ \mathbf{K}^{(l)}_{\mathrm{text}}]` (and
the same for values); the padding mask is extended with :math:`P` ones
(:func:`extend_attention_mask`). The prefix enters the Hugging Face model as a
``transformers.DynamicCache`` filled with the prefix (:meth:`KnowledgePrompt.as_cache`): in
transformers 5.x ``GPT2Model`` / ``LlamaModel`` take a ``Cache`` object (keyword ``cache``,
formerly ``past_key_values``), concatenate each layer's new keys after the cached ones
(``DynamicLayer.update`` is a ``torch.cat``, so gradients reach the prefix) and size the causal
mask from the cache length. Keys are used as stored, so the prefix works for learned absolute
positions (GPT-2) and for rotary ones (Llama: cached keys are never rotated again), and with
grouped-query attention (``kv_heads < heads``).

Reasoning prompt. History item embeddings :math:`\mathbf{h}_1 \dots \mathbf{h}_T` (queries)
attend over knowledge embeddings :math:`\mathbf{z}_1 \dots \mathbf{z}_K` (a bank shared by all
positions, ``[K, d_z]``, or one set per history item, ``[B, T, K, d_z]``):

.. math::
    \alpha^{(h)}_{t,k} = \operatorname{softmax}_{k:\,m_{t,k}=1}\!\Big(
        \tfrac{(\mathbf{W}^{(h)}_Q \mathbf{h}_t)^\top \mathbf{W}^{(h)}_K \mathbf{z}_k}{\sqrt{d_a}}\Big),
    \qquad
    \mathbf{r}_t = \mathbf{W}_O\big[\mathbf{h}_t \,\Vert\, \Vert_h \textstyle\sum_k
        \alpha^{(h)}_{t,k} \mathbf{W}^{(h)}_V \mathbf{z}_k\big] \cdot \mathbb{1}[t \text{ real}],

so the weights of every real history position sum to one over its (unmasked) knowledge, padded
history positions get all-zero weights and prompts, and a real position's prompt does not depend
on any other position. The :math:`\mathbf{r}_t` are prepended to the LM's input embeddings.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["KnowledgePrompt", "ReasoningPrompt", "extend_attention_mask", "prefix_cache"]


def extend_attention_mask(mask: Tensor, num_prefix: int) -> Tensor:
    """Prepend ``num_prefix`` ones (the always-visible prefix) to a ``[B, T]`` padding mask."""
    if mask.dim() != 2:
        raise ValueError(f"expected a [B, T] attention mask, got shape {tuple(mask.shape)}")
    if num_prefix == 0:
        return mask
    ones = torch.ones(mask.size(0), num_prefix, dtype=mask.dtype, device=mask.device)
    return torch.cat([ones, mask], dim=1)


def prefix_cache(keys_values: list[tuple[Tensor, Tensor]]) -> Any:
    """A fresh ``transformers.DynamicCache`` holding ``[(K_l, V_l)]`` (each ``[B, H_kv, P, d_h]``).

    A cache object is mutated by every forward pass (new keys are appended), so build a new one
    per call."""
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=[(k, v) for k, v in keys_values])


class KnowledgePrompt(nn.Module):
    r"""Trainable prefix keys/values for every layer of a causal LM, produced by an MLP over
    :math:`P` learned knowledge-token embeddings (see the module docstring for the math).

    Args:
        num_layers: transformer layers of the LM :math:`L_{\mathrm{LM}}`.
        num_kv_heads: key/value heads per layer :math:`H_{kv}` (``n_head`` for GPT-2,
            ``num_key_value_heads`` for Llama).
        head_dim: width of one head :math:`d_h`.
        num_tokens: prefix length :math:`P`.
        token_dim: width :math:`d_u` of the knowledge-token embeddings.
        hidden_dim: width of the MLP's hidden layer.
        dropout: dropout on the produced prefix.
    """

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, num_tokens: int = 10,
                 token_dim: int = 64, hidden_dim: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        for name, v in (("num_layers", num_layers), ("num_kv_heads", num_kv_heads),
                        ("head_dim", head_dim), ("num_tokens", num_tokens),
                        ("token_dim", token_dim), ("hidden_dim", hidden_dim)):
            if int(v) < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        self.num_layers, self.num_kv_heads, self.head_dim = num_layers, num_kv_heads, head_dim
        self.num_tokens, self.token_dim, self.hidden_dim = num_tokens, token_dim, hidden_dim
        self.tokens = nn.Parameter(torch.empty(num_tokens, token_dim))
        self.mlp = nn.Sequential(nn.Linear(token_dim, hidden_dim), nn.Tanh(),
                                 nn.Linear(hidden_dim, num_layers * 2 * num_kv_heads * head_dim))
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.tokens, std=1.0)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def init_tokens_(self, embeddings: Tensor) -> None:
        """Initialise the knowledge tokens from ``embeddings`` (``[>= P, token_dim]``, e.g. text
        embeddings of items), taking the first :math:`P` rows."""
        if embeddings.dim() != 2 or embeddings.size(1) != self.token_dim \
                or embeddings.size(0) < self.num_tokens:
            raise ValueError(f"expected [>= {self.num_tokens}, {self.token_dim}] embeddings, got "
                             f"{tuple(embeddings.shape)}")
        with torch.no_grad():
            self.tokens.copy_(embeddings[: self.num_tokens])

    def prefix(self) -> Tensor:
        """The prefix ``[layers, 2, kv_heads, P, head_dim]`` (index 0: keys, 1: values)."""
        out = self.dropout(self.mlp(self.tokens))  # [P, layers * 2 * H * d]
        out = out.view(self.num_tokens, self.num_layers, 2, self.num_kv_heads, self.head_dim)
        return out.permute(1, 2, 3, 0, 4)

    def keys_values(self, batch_size: int) -> list[tuple[Tensor, Tensor]]:
        """Per layer ``(K, V)``, each ``[batch_size, kv_heads, P, head_dim]`` (expanded views)."""
        pre = self.prefix()
        shape = (batch_size, self.num_kv_heads, self.num_tokens, self.head_dim)
        return [(pre[l, 0].unsqueeze(0).expand(shape), pre[l, 1].unsqueeze(0).expand(shape))
                for l in range(self.num_layers)]

    def as_cache(self, batch_size: int) -> Any:
        """A fresh ``DynamicCache`` pre-filled with the prefix for ``batch_size`` sequences."""
        return prefix_cache(self.keys_values(batch_size))

    def forward(self, batch_size: int) -> Any:
        return self.as_cache(batch_size)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(tokens={self.num_tokens}, layers={self.num_layers}, "
                f"kv_heads={self.num_kv_heads}, head_dim={self.head_dim})")


class ReasoningPrompt(nn.Module):
    r"""Soft prompt vectors from a user's history attending over domain-knowledge embeddings
    (see the module docstring for the math).

    Args:
        query_dim: width of the history item embeddings :math:`\mathbf{h}_t`.
        knowledge_dim: width of the knowledge embeddings :math:`\mathbf{z}_k`.
        out_dim: width of the produced prompts (the LM's hidden size).
        attn_dim: width :math:`d_a` of one attention head (default ``out_dim // num_heads``).
        num_heads: attention heads.
        dropout: dropout on the attention weights.
    """

    def __init__(self, query_dim: int, knowledge_dim: int, out_dim: int,
                 attn_dim: int | None = None, num_heads: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        if num_heads < 1:
            raise ValueError(f"num_heads must be >= 1, got {num_heads}")
        attn_dim = attn_dim if attn_dim is not None else max(1, out_dim // num_heads)
        self.query_dim, self.knowledge_dim, self.out_dim = query_dim, knowledge_dim, out_dim
        self.attn_dim, self.num_heads = attn_dim, num_heads
        self.q = nn.Linear(query_dim, num_heads * attn_dim, bias=False)
        self.k = nn.Linear(knowledge_dim, num_heads * attn_dim, bias=False)
        self.v = nn.Linear(knowledge_dim, num_heads * attn_dim, bias=False)
        self.out = nn.Linear(query_dim + num_heads * attn_dim, out_dim)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (self.q, self.k, self.v, self.out):
            nn.init.xavier_uniform_(lin.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, history: Tensor, history_mask: Tensor, knowledge: Tensor,
                knowledge_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Prompts for every history position.

        Args:
            history: ``[B, T, query_dim]`` history item embeddings.
            history_mask: ``BoolTensor[B, T]``, ``True`` at real items.
            knowledge: a shared bank ``[K, knowledge_dim]`` or per-item knowledge
                ``[B, T, K, knowledge_dim]``.
            knowledge_mask: ``BoolTensor`` ``[K]`` or ``[B, T, K]`` (``True``: usable); a real
                history position must keep at least one knowledge entry.

        Returns:
            ``(prompts [B, T, out_dim], weights [B, heads, T, K])``; both are zero at padded
            history positions.
        """
        if history.dim() != 3 or history_mask.shape != history.shape[:2]:
            raise ValueError(f"history must be [B, T, D] with a [B, T] mask, got "
                             f"{tuple(history.shape)} and {tuple(history_mask.shape)}")
        B, T, _ = history.shape
        H, d = self.num_heads, self.attn_dim
        q = self.q(history).view(B, T, H, d)
        if knowledge.dim() == 2:
            K = knowledge.size(0)
            k = self.k(knowledge).view(K, H, d)
            v = self.v(knowledge).view(K, H, d)
            scores = torch.einsum("bthd,khd->bhtk", q, k)
            km = None if knowledge_mask is None else knowledge_mask.view(1, 1, 1, K)
        elif knowledge.dim() == 4 and knowledge.shape[:2] == (B, T):
            K = knowledge.size(2)
            k = self.k(knowledge).view(B, T, K, H, d)
            v = self.v(knowledge).view(B, T, K, H, d)
            scores = torch.einsum("bthd,btkhd->bhtk", q, k)
            km = None if knowledge_mask is None else knowledge_mask.view(B, 1, T, K)
        else:
            raise ValueError("knowledge must be [K, D] or [B, T, K, D] matching the history, got "
                             f"{tuple(knowledge.shape)}")
        scores = scores / math.sqrt(d)
        hm = history_mask.view(B, 1, T, 1)
        allowed = hm if km is None else (hm & km)
        if km is not None and bool((history_mask.view(B, 1, T) & ~km.any(-1)).any()):
            raise ValueError("a real history position has no usable knowledge entry")
        if km is not None:
            scores = scores.masked_fill(~km, float("-inf"))
        # padded history rows: finite scores (no NaN in forward or backward), weights zeroed below
        scores = scores.masked_fill(~hm, 0.0)
        weights = torch.softmax(scores, dim=-1)
        weights = torch.where(allowed, weights, torch.zeros_like(weights))
        attn = self.dropout(weights)
        if knowledge.dim() == 2:
            ctx = torch.einsum("bhtk,khd->bthd", attn, v)
        else:
            ctx = torch.einsum("bhtk,btkhd->bthd", attn, v)
        prompts = self.out(torch.cat([history, ctx.reshape(B, T, H * d)], dim=-1))
        prompts = prompts * history_mask.unsqueeze(-1).to(prompts.dtype)
        return prompts, weights

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.query_dim} -> {self.out_dim}, "
                f"knowledge_dim={self.knowledge_dim}, heads={self.num_heads})")
