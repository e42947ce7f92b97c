r"""KP4SR's knowledge tree laid out as one token sequence (Zhai et al., *Knowledge Prompt-tuning
for Sequential Recommendation*, 2023; authors' code ``zhaijianyang/KP4SR``,
``src/pretrain_data.py``: ``get_root``, ``get_next_level_nodes``, ``get_input``).

The tree of one user:

* **root** (node 0) — the masked personalised prompt, e.g. ``"User 196 has watched 3 , 7 and
  will watch <extra_id_0> next."`` (:class:`PersonalizedPrompt`; several wordings,
  :data:`TRAIN_TEMPLATES`, drawn per example in training, :data:`EVAL_TEMPLATE` for evaluation,
  as the authors train on ten templates and test on another);
* **item nodes** (1 … J) — the root tokens that spell history item :math:`j` (no new tokens);
* **1-hop knowledge prompts** — children of an item node: its KG triples rendered by relation
  templates (:func:`~kgseqgraph.prompts.knowledge.render_triples`);
* **2-hop knowledge prompts** — children of a 1-hop prompt: the triples of that prompt's tail.

Layout: ``[root tokens][prompt][prompt]…[padding]`` in breadth-first order (all 1-hop prompts in
history order, then all 2-hop prompts), as the authors add nodes level by level. Each token
records its node, the node's parent and whether it is in the root text; the attention masks are
tensor operations over those (:mod:`kgseqgraph.nn.masks`). ``max_tokens`` bounds the sequence:
whole prompts are added while they fit and the rest is dropped (the authors cut the token
sequence at ``max_text_length``, possibly inside a prompt).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..nn.masks import cross_attention_mask, tree_attention_mask

__all__ = ["TRAIN_TEMPLATES", "EVAL_TEMPLATE", "PersonalizedPrompt", "TreeTokens", "TreeBatch",
           "layout_tree", "collate_trees", "render_tree"]

#: Wordings of the personalised prompt used in training (one drawn per example).
TRAIN_TEMPLATES = (
    "User {user} has watched {history} and will watch {mask} next .",
    "Before watching {mask} , user {user} watched {history} .",
    "{history} were watched by user {user} , who will watch {mask} next .",
    "User {user} watched {history} in the past ; the next movie is {mask} .",
    "Having seen {history} , user {user} now picks {mask} .",
    "The viewing history of user {user} is {history} ; the next one is {mask} .",
)
#: The wording used for validation and test (not among the training ones, as in the paper).
EVAL_TEMPLATE = "User {user} watched {history} . Next the user will watch {mask} ."


@dataclass(frozen=True)
class PersonalizedPrompt:
    """The masked personalised prompt (the root): ``template`` with ``{history}`` and
    ``{mask}`` (exactly once each) and optionally ``{user}``."""

    template: str
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


@dataclass
class TreeTokens:
    """One knowledge tree as tokens: ``input_ids``, ``node``, ``parent`` and ``in_root`` (lists of
    equal length, see the module docstring), ``num_prompts`` laid out and ``dropped`` (prompts that
    did not fit)."""

    input_ids: list[int]
    node: list[int]
    parent: list[int]
    in_root: list[bool]
    num_prompts: int = 0
    dropped: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)


def layout_tree(root_ids: Sequence[int], anchors: Sequence[Sequence[int]],
                prompts: Sequence[tuple[int, Sequence[int]]],
                max_tokens: int | None = None) -> TreeTokens:
    """Lay out one knowledge tree.

    Args:
        root_ids: token ids of the personalised prompt.
        anchors: for item node :math:`j = 1 \\dots J`, the positions in ``root_ids`` of its tokens.
        prompts: ``(parent node id, token ids)`` in layout order; prompt :math:`p` (0-based) gets
            node id :math:`J + 1 + p`, and its parent must come before it (an item node or an
            earlier prompt).
        max_tokens: length budget; the root always fits (else ``ValueError``), prompts are added
            whole while they fit, and a prompt whose parent was dropped is dropped too.
    """
    n = len(root_ids)
    if max_tokens is not None and n > max_tokens:
        raise ValueError(f"the personalised prompt has {n} tokens, more than max_tokens="
                         f"{max_tokens}; raise max_tokens or shorten the history")
    node, parent = [0] * n, [-1] * n
    for j, positions in enumerate(anchors, start=1):
        for p in positions:
            if not 0 <= p < n:
                raise ValueError(f"anchor position {p} of item node {j} is outside the root")
            node[p], parent[p] = j, 0
    ids, in_root = list(root_ids), [True] * n
    present = set(range(len(anchors) + 1))
    first_prompt = len(anchors) + 1
    kept = dropped = 0
    for i, (par, toks) in enumerate(prompts):
        nid = first_prompt + i
        if par not in present or par >= nid:
            if par >= nid:
                raise ValueError(f"prompt {i} names parent {par}, which is not laid out before it")
            dropped += 1
            continue
        if not len(toks) or (max_tokens is not None and len(ids) + len(toks) > max_tokens):
            dropped += 1
            continue
        present.add(nid)
        ids.extend(int(t) for t in toks)
        node.extend([nid] * len(toks))
        parent.extend([par] * len(toks))
        in_root.extend([False] * len(toks))
        kept += 1
    return TreeTokens(ids, node, parent, in_root, kept, dropped)


@dataclass
class TreeBatch:
    """Right-padded trees: ``input_ids``, ``node``, ``parent``, ``in_root`` and ``padding_mask``
    (``True`` at real tokens), all ``[B, T]``."""

    input_ids: Tensor
    node: Tensor
    parent: Tensor
    in_root: Tensor
    padding_mask: Tensor

    def attention_mask(self, tree: bool = True) -> Tensor:
        """``[B, T, T]``: the authors' tree mask, or (``tree=False``, the ablation) every real
        token visible to every token."""
        if tree:
            return tree_attention_mask(self.node, self.parent, self.in_root, self.padding_mask)
        real = self.padding_mask
        eye = torch.eye(real.size(1), dtype=torch.bool)[None]
        return (real[:, :, None] & real[:, None, :]) | (eye & ~real[:, :, None])

    def cross_mask(self, root_only: bool = False) -> Tensor:
        """``[B, T]`` encoder tokens the decoder reads (the cross mask: the root only)."""
        return cross_attention_mask(self.in_root, self.padding_mask, root_only)


def collate_trees(trees: Sequence[TreeTokens], pad_id: int) -> TreeBatch:
    """Right-pad trees into a :class:`TreeBatch` (padding: ``pad_id``, node -2, parent -3)."""
    if not trees:
        raise ValueError("collate_trees needs at least one tree")
    T = max(len(t) for t in trees)
    B = len(trees)
    ids = torch.full((B, T), int(pad_id), dtype=torch.long)
    node = torch.full((B, T), -2, dtype=torch.long)
    parent = torch.full((B, T), -3, dtype=torch.long)
    in_root = torch.zeros(B, T, dtype=torch.bool)
    real = torch.zeros(B, T, dtype=torch.bool)
    for b, t in enumerate(trees):
        n = len(t)
        ids[b, :n] = torch.tensor(t.input_ids, dtype=torch.long)
        node[b, :n] = torch.tensor(t.node, dtype=torch.long)
        parent[b, :n] = torch.tensor(t.parent, dtype=torch.long)
        in_root[b, :n] = torch.tensor(t.in_root, dtype=torch.bool)
        real[b, :n] = True
    return TreeBatch(ids, node, parent, in_root, real)


def render_tree(tree: TreeTokens, decode) -> str:
    """The tree as indented text (``decode``: token ids → text), for inspection."""
    nodes: dict[int, list[int]] = {}
    parents: dict[int, int] = {}
    for tok, nd, par, root in zip(tree.input_ids, tree.node, tree.parent, tree.in_root):
        if not root:
            nodes.setdefault(nd, []).append(tok)
            parents[nd] = par
    root = [t for t, r in zip(tree.input_ids, tree.in_root) if r]
    lines = [decode(root)]

    def walk(parent: int, depth: int) -> None:
        for nd in [n for n, p in parents.items() if p == parent]:
            lines.append("  " * depth + "- " + decode(nodes[nd]))
            walk(nd, depth + 1)

    for item in sorted({n for n, r, p in zip(tree.node, tree.in_root, tree.parent)
                        if r and p == 0}):
        anchor = [t for t, n in zip(tree.input_ids, tree.node) if n == item]
        lines.append(f"[{decode(anchor)}]")
        walk(item, 1)
    return "\n".join(lines)
