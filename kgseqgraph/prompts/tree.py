r"""The KP4SR knowledge tree and its tree attention mask, laid out as one token sequence.

The tree (Zhai et al., 2023, "Knowledge Prompt-tuning for Sequential Recommendation"):

* **root** — the masked personalised prompt, e.g. ``"User 196 has watched <item_3>, <item_7>
  and will watch <extra_id_0> next."`` (:class:`PersonalizedPrompt`, wording configurable). The
  tokens that spell history item :math:`j` are its **anchor** tokens;
* **children** — for each history item :math:`j` (the most recent ``k`` of them), its knowledge
  prompts (:func:`~kgseqgraph.prompts.knowledge.knowledge_prompts`), one sub-tree per item.

Layout: ``[root tokens … </s>][prompt 1 of item j][prompt 2 of item j] … [prompts of the next
item] … [padding]``; per token we keep ``segment`` (0 root, :math:`s \ge 1` the :math:`s`-th
knowledge prompt, -1 padding) and ``item`` (the history position a token hangs from: an anchor
token's item, a knowledge token's item, -1 otherwise).

The tree attention mask :math:`\mathbf{M} \in \{0,1\}^{T \times T}` (query :math:`q`, key
:math:`k`; :math:`\rho(t)` = "token :math:`t` is in the root"):

.. math::
    M_{qk} = \begin{cases}
      1 & \rho(q) \wedge \rho(k) \\
      \mathrm{RS}(q, k) & \rho(q) \wedge \neg\rho(k) \\
      \mathrm{KR}(q, k) & \neg\rho(q) \wedge \rho(k) \\
      [s(q) = s(k)] \vee \big(\mathrm{sib} \wedge [i(q) = i(k)]\big)
        & \neg\rho(q) \wedge \neg\rho(k)
    \end{cases}

with ``root_sees`` = ``"all"`` (:math:`\mathrm{RS} = 1`, default: the personalised prompt reads
every piece of knowledge), ``"anchor"`` (:math:`\mathrm{RS} = [i(q) = i(k) \ge 0]`: only an
item's own anchor tokens read its sub-tree, as K-BERT's visible matrix) or ``"root"``
(:math:`\mathrm{RS} = 0`); ``knowledge_sees_root`` = ``"all"`` (default: a prompt token reads the
whole root) or ``"anchor"`` (only its item's anchor tokens); ``siblings`` (default ``True``): a
prompt token also reads the other prompts of the *same* item. A prompt token never reads the
prompts of another item — the property the tree mask exists for. Padding keys are never visible;
a padding query sees only itself (so no softmax row is empty).

This is our reading of the paper's "knowledge tree mask" (knowledge is visible within its own
sub-tree and to the prompt it hangs from, and noise from unrelated items' knowledge is cut off);
the KP4SR code for the mask was not available to compare with, so the options above make every
variant explicit.

Positions: Hugging Face T5 derives its relative-position bias from the flat layout positions, so
the distance between two tokens in different sub-trees is their distance in the flat sequence
(K-BERT's "soft positions" are not reproduced; T5 has no absolute positions to replace).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "PersonalizedPrompt",
    "KnowledgeTree",
    "TreeTokens",
    "TreeBatch",
    "build_tree_tokens",
    "collate_trees",
    "tree_attention_mask",
    "additive_attention_mask",
]

_ROOT_SEES = ("all", "anchor", "root")
_KNOWLEDGE_SEES = ("all", "anchor")


@dataclass
class PersonalizedPrompt:
    """The masked personalised prompt (the root of the knowledge tree).

    Args:
        template: text with ``{history}`` (required), ``{mask}`` (required) and optionally
            ``{user}``.
        separator: between two history items.
        mask_token: what ``{mask}`` becomes (T5's first sentinel by default).
    """

    template: str = "User {user} has watched {history} and will watch {mask} next."
    separator: str = ","
    mask_token: str = "<extra_id_0>"

    def __post_init__(self) -> None:
        for ph in ("{history}", "{mask}"):
            if self.template.count(ph) != 1:
                raise ValueError(f"personalised prompt template must contain {ph} exactly once, "
                                 f"got {self.template!r}")
        rest = self.template.replace("{history}", "").replace("{mask}", "").replace("{user}", "")
        if "{" in rest or "}" in rest:
            raise ValueError(f"unknown placeholder in {self.template!r}; allowed: {{user}}, "
                             "{history}, {mask}")

    def parts(self, user: str = "") -> tuple[str, str]:
        """The text before and after ``{history}`` for ``user``."""
        text = self.template.replace("{user}", user).replace("{mask}", self.mask_token)
        before, after = text.split("{history}")
        return before.strip(), after.strip()

    def render(self, history: Sequence[str], user: str = "") -> str:
        """The full prompt text (history oldest first)."""
        before, after = self.parts(user)
        hist = f" {self.separator} ".join(history) if self.separator else " ".join(history)
        return " ".join(x for x in (before, hist, after) if x)


@dataclass
class KnowledgeTree:
    """A knowledge tree in text form (for inspection; the model works on :class:`TreeTokens`).

    Attributes:
        root: the personalised prompt.
        children: ``(item name, [its knowledge prompts])`` per history item with knowledge.
    """

    root: str
    children: list[tuple[str, list[str]]]

    def __str__(self) -> str:
        lines = [self.root]
        for c, (name, prompts) in enumerate(self.children):
            last_child = c == len(self.children) - 1
            lines.append(("└── " if last_child else "├── ") + name)
            for p, text in enumerate(prompts):
                lines.append(("    " if last_child else "│   ")
                             + ("└── " if p == len(prompts) - 1 else "├── ") + text)
        return "\n".join(lines)


@dataclass
class TreeTokens:
    """One knowledge tree as a token sequence: ``input_ids``, ``segment`` and ``item`` (lists of
    equal length, see the module docstring) and ``dropped`` (knowledge prompts that did not fit
    in ``max_tokens``)."""

    input_ids: list[int]
    segment: list[int]
    item: list[int]
    dropped: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)


def build_tree_tokens(root_ids: Sequence[int], root_item: Sequence[int],
                      children: Sequence[tuple[int, Sequence[Sequence[int]]]],
                      max_tokens: int | None = None) -> TreeTokens:
    """Lay out one knowledge tree.

    Args:
        root_ids: token ids of the personalised prompt (end-of-sequence token included).
        root_item: per root token, the history position it spells (anchor) or -1.
        children: ``(history position, [token ids of each knowledge prompt])`` in priority order
            (put the most recent item first: prompts that do not fit are dropped from the end).
        max_tokens: length budget; the root always fits (else ``ValueError``), knowledge prompts
            are added whole while they fit.
    """
    if len(root_ids) != len(root_item):
        raise ValueError(f"root_ids ({len(root_ids)}) and root_item ({len(root_item)}) differ in "
                         "length")
    if max_tokens is not None and len(root_ids) > max_tokens:
        raise ValueError(f"the personalised prompt has {len(root_ids)} tokens, more than "
                         f"max_tokens={max_tokens}; raise max_tokens or shorten the history")
    ids, seg, item = list(root_ids), [0] * len(root_ids), [int(i) for i in root_item]
    dropped = 0
    s = 0
    for pos, prompts in children:
        for p in prompts:
            if not len(p):
                continue
            if max_tokens is not None and len(ids) + len(p) > max_tokens:
                dropped += 1
                continue
            s += 1
            ids.extend(int(t) for t in p)
            seg.extend([s] * len(p))
            item.extend([int(pos)] * len(p))
    return TreeTokens(ids, seg, item, dropped)


@dataclass
class TreeBatch:
    """A right-padded batch of trees: ``input_ids``, ``segment_ids``, ``item_ids`` ``[B, T]``
    (padding: ``pad_id``, -1, -1) and ``padding_mask`` ``[B, T]`` (``True`` at real tokens)."""

    input_ids: Tensor
    segment_ids: Tensor
    item_ids: Tensor
    padding_mask: Tensor
    dropped: int = 0

    def attention_mask(self, root_sees: str = "all", knowledge_sees_root: str = "all",
                       siblings: bool = True) -> Tensor:
        """The ``[B, T, T]`` boolean tree mask (:func:`tree_attention_mask`)."""
        return tree_attention_mask(self.segment_ids, self.item_ids, root_sees,
                                   knowledge_sees_root, siblings)


def collate_trees(trees: Sequence[TreeTokens], pad_id: int) -> TreeBatch:
    """Right-pad trees into a :class:`TreeBatch`."""
    if not trees:
        raise ValueError("collate_trees needs at least one tree")
    T = max(len(t) for t in trees)
    B = len(trees)
    ids = torch.full((B, T), int(pad_id), dtype=torch.long)
    seg = torch.full((B, T), -1, dtype=torch.long)
    item = torch.full((B, T), -1, dtype=torch.long)
    for b, t in enumerate(trees):
        n = len(t)
        ids[b, :n] = torch.tensor(t.input_ids, dtype=torch.long)
        seg[b, :n] = torch.tensor(t.segment, dtype=torch.long)
        item[b, :n] = torch.tensor(t.item, dtype=torch.long)
    return TreeBatch(ids, seg, item, seg >= 0, sum(t.dropped for t in trees))


def tree_attention_mask(segment: Tensor, item: Tensor, root_sees: str = "all",
                        knowledge_sees_root: str = "all", siblings: bool = True) -> Tensor:
    r"""The tree attention mask :math:`\mathbf{M}` of the module docstring.

    Args:
        segment: ``[B, T]`` or ``[T]``: 0 root, :math:`\ge 1` knowledge prompt, -1 padding.
        item: same shape: history position a token hangs from (-1 none).
        root_sees: ``"all"``, ``"anchor"`` or ``"root"``.
        knowledge_sees_root: ``"all"`` or ``"anchor"``.
        siblings: knowledge tokens also see the other prompts of their item.

    Returns:
        Boolean ``[B, T, T]`` (or ``[T, T]``), ``True`` where query row :math:`q` may attend to
        key column :math:`k`.
    """
    if root_sees not in _ROOT_SEES:
        raise ValueError(f"root_sees must be one of {_ROOT_SEES}, got {root_sees!r}")
    if knowledge_sees_root not in _KNOWLEDGE_SEES:
        raise ValueError(f"knowledge_sees_root must be one of {_KNOWLEDGE_SEES}, got "
                         f"{knowledge_sees_root!r}")
    if segment.shape != item.shape:
        raise ValueError(f"segment {tuple(segment.shape)} and item {tuple(item.shape)} must have "
                         "the same shape")
    squeeze = segment.dim() == 1
    if squeeze:
        segment, item = segment[None], item[None]
    real = segment >= 0
    root = segment == 0
    know = segment > 0
    rq, rk = root[:, :, None], root[:, None, :]
    kq, kk = know[:, :, None], know[:, None, :]
    same_item = (item[:, :, None] == item[:, None, :]) & (item[:, :, None] >= 0)
    same_seg = segment[:, :, None] == segment[:, None, :]

    mask = rq & rk
    if root_sees == "all":
        mask |= rq & kk
    elif root_sees == "anchor":
        mask |= rq & kk & same_item
    if knowledge_sees_root == "all":
        mask |= kq & rk
    else:
        mask |= kq & rk & same_item
    mask |= kq & kk & (same_seg | same_item if siblings else same_seg)
    mask &= real[:, None, :]
    eye = torch.eye(segment.size(1), dtype=torch.bool, device=segment.device)[None]
    mask |= eye & ~real[:, :, None]
    return mask[0] if squeeze else mask


def additive_attention_mask(mask: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    r"""A boolean ``[B, T, T]`` mask as the additive ``[B, 1, T, T]`` bias Hugging Face attention
    layers add to their scores: :math:`0` where visible, :math:`\min(\text{dtype})` elsewhere.

    Hugging Face ``transformers`` 5.x T5 passes a 4-D mask through unchanged and adds it to the
    scores (eager) or hands it to SDPA; a 3-D ``[B, T, T]`` mask raises inside the mask
    preparation (checked with 5.24), so the tree mask goes in as this 4-D additive bias.
    """
    if mask.dim() != 3 or mask.dtype != torch.bool:
        raise ValueError(f"expected a boolean [B, T, T] mask, got {mask.dtype} "
                         f"{tuple(mask.shape)}")
    out = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    out.masked_fill_(~mask, torch.finfo(dtype).min)
    return out[:, None]
