r"""LANCER's texts (Jiang et al., 2023; authors' code ``Gnimixy/lancer``, ``utils/r_dataset.py``
and ``utils/k_dataset.py``): the item and knowledge token tables and the two kinds of inputs.

* **Reasoning input** of a user with history :math:`i_1 \dots i_T` (the last ``max_len`` items)::

      <prompt text> <item i_1> <sep> <item i_2> <sep> … <item i_T> <sep> [<item i_T+1> </s>]

  e.g. ``"A user watched sequence of movies : Toy Story -> GoldenEye -> Heat ->"``; the target
  part is present in training. The language-model targets are every token after the first
  (``lm_targets="all"``: the authors' ``labels=input_ids``, a next-item prediction at every item
  boundary) or the target item's tokens only (``"target"``). Prompts are left-padded (the last
  prompt token is the last column; positions count real tokens from 0).
* **Knowledge input** of an item: its content text (e.g. ``"Toy Story (1995). Genres:
  Animation, Children's, Comedy"``), the corpus of the knowledge pre-training (Eq. 4) and the
  text whose last hidden state represents the item in the reasoning prompt.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..data.batching import IGNORE_INDEX
from .tokenizers import encode_texts, token_table

__all__ = ["LancerTexts", "TextBatch", "left_pack", "item_texts"]


@dataclass
class TextBatch:
    """Left-padded token ids ``[B, S]``, ``mask``, ``positions`` and ``labels`` (``labels[:, j]``
    is the token position ``j`` predicts, :data:`~kgseqgraph.data.IGNORE_INDEX` elsewhere)."""

    ids: Tensor
    mask: Tensor
    positions: Tensor
    labels: Tensor


def left_pack(ids: Tensor, real: Tensor, is_label: Tensor) -> TextBatch:
    """Move each row's real tokens (kept in order) to its right end and derive positions and
    shifted labels; columns that are padding in every row are dropped."""
    order = torch.argsort(real.long(), dim=1, stable=True)
    width = int(real.sum(1).max()) if real.numel() else 0
    order = order[:, order.size(1) - max(width, 1):]
    ids, real, is_label = ids.gather(1, order), real.gather(1, order), is_label.gather(1, order)
    ids = ids.masked_fill(~real, 0)
    positions = (real.long().cumsum(1) - 1).clamp(min=0)
    nxt = torch.cat([ids[:, 1:], ids[:, :1]], 1)
    take = torch.cat([is_label[:, 1:] & real[:, 1:], torch.zeros_like(real[:, :1])], 1) & real
    labels = torch.where(take, nxt, torch.full_like(ids, IGNORE_INDEX))
    return TextBatch(ids, real, positions, labels)


class LancerTexts:
    """Token tables of the catalogue and assembly of LANCER's inputs.

    Args:
        tokenizer: the LMs' tokenizer.
        item_texts / knowledge_texts: per item, its surface text (history and target) and its
            content text (knowledge).
        prompt_text / separator: the text before the history and between items.
        max_item_tokens / max_knowledge_tokens: truncation of the two texts.
        leading_space: prepend a space to item texts and the separator (BPE tokenizers, where
            ``" Heat"`` and ``"Heat"`` differ).
    """

    def __init__(self, tokenizer: Any, item_texts: Sequence[str], knowledge_texts: Sequence[str],
                 prompt_text: str, separator: str, max_item_tokens: int = 32,
                 max_knowledge_tokens: int = 64, leading_space: bool = False) -> None:
        sp = " " if leading_space else ""
        self.eos_id = int(tokenizer.eos_token_id)
        self.prompt_ids = torch.tensor(encode_texts(tokenizer, [prompt_text])[0], dtype=torch.long)
        self.sep_ids = torch.tensor(encode_texts(tokenizer, [separator.strip()], sp)[0],
                                    dtype=torch.long)
        if self.sep_ids.numel() == 0:
            raise ValueError(f"separator {separator!r} has no tokens")
        self.item_tokens, self.item_len = token_table(encode_texts(tokenizer, item_texts, sp),
                                                      max_item_tokens)
        self.know_tokens, self.know_len = token_table(
            encode_texts(tokenizer, knowledge_texts), max_knowledge_tokens)
        if int(self.know_len.min()) == 0:
            raise ValueError("every item needs a non-empty knowledge text")

    @property
    def stop_ids(self) -> list[int]:
        """Tokens that end a generated item: end-of-sequence and a one-token separator."""
        return [self.eos_id] + ([int(self.sep_ids[0])] if self.sep_ids.numel() == 1 else [])

    def reasoning(self, items: Tensor, mask: Tensor, targets: Tensor | None = None,
                  lm_targets: str = "all") -> TextBatch:
        """The reasoning input of left-padded histories ``items [B, T]`` (``mask``), with the
        targets ``[B]`` and their end-of-sequence appended when given."""
        if lm_targets not in ("all", "target"):
            raise ValueError(f"lm_targets must be 'all' or 'target', got {lm_targets!r}")
        B, _ = items.shape
        dev = items.device
        safe = torch.where(mask, items, torch.zeros_like(items))
        tok = self.item_tokens.to(dev)[safe]                                  # [B, T, L]
        real = (torch.arange(tok.size(-1), device=dev) < self.item_len.to(dev)[safe][..., None])
        sep = self.sep_ids.to(dev).expand(*items.shape, -1)
        tok = torch.cat([tok, sep], -1)
        real = torch.cat([real, torch.ones_like(sep, dtype=torch.bool)], -1) & mask[..., None]
        prompt = self.prompt_ids.to(dev).expand(B, -1)
        ids = [prompt, tok.reshape(B, -1)]
        reals = [torch.ones_like(prompt, dtype=torch.bool), real.reshape(B, -1)]
        if targets is not None:
            t = torch.cat([self.item_tokens.to(dev)[targets],
                           torch.zeros_like(targets)[:, None]], 1)
            n = self.item_len.to(dev)[targets]
            t.scatter_(1, n[:, None], self.eos_id)
            ids.append(t)
            reals.append(torch.arange(t.size(1), device=dev) <= n[:, None])
        ids_t, real_t = torch.cat(ids, 1), torch.cat(reals, 1)
        if lm_targets == "all" or targets is None:
            is_label = real_t.clone()
        else:
            is_label = torch.zeros_like(real_t)
            is_label[:, ids_t.size(1) - ids[-1].size(1):] = reals[-1]
        return left_pack(ids_t, real_t, is_label)

    def knowledge(self, items: Tensor) -> TextBatch:
        """The knowledge inputs of ``items [M]`` (every token a target, Eq. 4)."""
        tok = self.know_tokens.to(items.device)[items]
        real = torch.arange(tok.size(1), device=items.device) < self.know_len.to(items.device)[
            items][:, None]
        return left_pack(tok, real, real)


def item_texts(data: Any, field: str) -> list[str]:
    """``data['item'].<field>`` (falling back to ``text``, then ``title``) as a list of str."""
    store = data["item"]
    for name in (field, "text", "title"):
        if name in store and isinstance(store[name], (list, tuple)):
            return [str(x) for x in store[name]]
    raise ValueError(f"needs item text: data['item'].{field} (or .text) as a list of str")
