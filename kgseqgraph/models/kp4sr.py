r"""KP4SR (Zhai, Zheng, Wang, Shen, Liu, Sun, Zhang, *Knowledge Prompt-tuning for Sequential
Recommendation*, ACM MM 2023; authors' code ``zhaijianyang/KP4SR``): a T5 reads the knowledge
tree of a user's history under the knowledge-tree mask and generates the next item's ID.

Part by part, where each lives (defaults = the authors' ``src/param.py``):

* **Knowledge prompts**: every KG triple :math:`(h, r, t)` rendered by its relation template
  (:func:`~kgseqgraph.prompts.knowledge.render_triples`; templates from ``templates_path``,
  e.g. their ``relation2template.json``, over the library's Freebase film templates), items
  written as their ID (``"1234 is directed by director m.0bxtg."``).
* **Knowledge tree** (:mod:`kgseqgraph.prompts.tree`): the root is a masked personalised prompt
  (one of :data:`~kgseqgraph.prompts.tree.TRAIN_TEMPLATES` drawn per example in training, the
  held-out :data:`~kgseqgraph.prompts.tree.EVAL_TEMPLATE` in evaluation); each of the last
  ``max_len`` = 5 history items gets up to ``degree`` = 8 of its relations with one tail each
  as 1-hop sub-trees, and each of those tails its own as 2-hop sub-trees (``hops`` = 2) —
  **sampled afresh for every training example** (relations and tails uniformly,
  :func:`~kgseqgraph.data.sample_relation_tails`), the first ones in evaluation.
* **Masks** (:mod:`kgseqgraph.nn.masks`): the authors' tree mask in the encoder (``tree_mask``;
  off = the ablation, full attention over real tokens); the cross mask (``cross_mask``, off by
  default as in their ``param.py``) lets the decoder read the root only.
* **Target**: the item's ID tokens, one digit a token, in ``"<extra_id_0> {item} <extra_id_1>"``
  plus ``</s>``; loss: the mean token NLL of each target, averaged over the batch.
* **Recommendation**: constrained beam search (20 beams; only valid item IDs can be generated,
  :class:`~kgseqgraph.nn.decoding.PrefixTrie`) → ranked item list → ``[B, N]`` scores (beam rank,
  every other item :math:`-\infty`), so the Evaluator's HR/NDCG are the metrics of the list.

Labelled option: ``item_tokens="single"`` + ``scorer="classifier"`` (this library's earlier
KP4SR: one ``<item_i>`` token per item, a softmax over the item tokens at the first decoder
step, catalogue cross-entropy).

Deviations from the authors' code, and why: no pretrained T5 can be installed here, so the
backbone is a small randomly initialised T5 over a word-level vocabulary built from the graph's
prompts (``pretrained=<folder>`` loads a checkpoint and its tokenizer); P5's whole-word
embeddings are not used (their code adds them in training but not in generation); the beam
search is constrained (theirs is free and drops outputs that are not item IDs); whole prompts
that do not fit ``max_tokens`` are dropped (they cut the token sequence); model selection uses
validation metrics (they keep the lowest validation loss); the history is a random cut of each
training window (theirs: one target per user per epoch among positions with a full history).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.batching import IGNORE_INDEX, random_cut
from ..data.sequences import Sequences
from ..data.views import relational_view, sample_relation_tails
from ..nn.decoding import ListMemo, PrefixTrie, ranked_list_scores
from ..nn.encoders.hf_t5 import T5LM
from ..prompts.knowledge import (DEFAULT_TEMPLATES, FREEBASE_TYPE_WORDS, load_templates,
                                 render_triples)
from ..prompts.tokenizers import build_word_tokenizer, encode_texts, load_tokenizer, word_vocabulary
from ..prompts.tree import (EVAL_TEMPLATE, TRAIN_TEMPLATES, PersonalizedPrompt, TreeBatch,
                            collate_trees, layout_tree)
from .base import SequentialRecommender, register_model

__all__ = ["KP4SRConfig", "KP4SR"]


@dataclass
class KP4SRConfig:
    """Configuration of :class:`KP4SR` (see the module docstring for the options).

    Backbone sizes (``d_model`` … ``dropout``) build a random-init T5; ``pretrained`` names a
    folder with a T5 checkpoint and its tokenizer instead. ``train_templates`` / ``eval_template``
    override the personalised prompts (``None``: the library's wordings); ``templates_path`` and
    ``entity_names_path`` are JSON files (relation → template, raw entity id → name).
    """

    num_items: int
    max_len: int = 5
    d_model: int = 64
    d_ff: int = 256
    num_layers: int = 2
    num_decoder_layers: int = 2
    num_heads: int = 4
    d_kv: int = 16
    dropout: float = 0.1
    pretrained: str | None = None
    attn_implementation: str | None = None
    degree: int = 8
    hops: int = 2
    max_tokens: int = 512
    templates_path: str | None = None
    entity_names_path: str | None = None
    min_word_frequency: int = 2
    train_templates: tuple[str, ...] | None = None
    eval_template: str | None = None
    user_names: str = "raw"
    tree_mask: bool = True
    cross_mask: bool = False
    item_tokens: str = "digits"
    target_template: str = "<extra_id_0> {item} <extra_id_1>"
    scorer: str = "beam"
    num_beams: int = 20
    length_penalty: float = 1.0
    min_history: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_items <= 0 or self.max_len < 1:
            raise ValueError("num_items must be positive and max_len >= 1")
        for name, allowed in {"item_tokens": ("digits", "single"), "user_names": ("raw", "none"),
                              "scorer": ("beam", "classifier")}.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.scorer == "classifier" and self.item_tokens != "single":
            raise ValueError("scorer='classifier' needs item_tokens='single'")
        if self.degree < 0 or self.hops < 0 or self.num_beams < 1:
            raise ValueError("degree and hops must be >= 0 and num_beams >= 1")
        if self.train_templates is not None:
            self.train_templates = tuple(self.train_templates)
        for t in (*(self.train_templates or ()), *([self.eval_template] if self.eval_template
                                                    else [])):
            PersonalizedPrompt(t)


@register_model("kp4sr")
class KP4SR(SequentialRecommender):
    """KP4SR over the collaborative KG (module docstring): ``build_model("kp4sr",
    split.train_graph, ...)`` or ``KP4SR(config, data=graph)``."""

    config_class = KP4SRConfig
    needs_graph = True

    def __init__(self, config: KP4SRConfig, data: Any = None) -> None:
        super().__init__(config, data)
        if data is None or int(data["item"].num_nodes) != config.num_items:
            raise ValueError("KP4SR needs the collaborative KG it scores (data=<HeteroData>) with "
                             f"config.num_items={config.num_items} items")
        cfg, N = config, config.num_items
        self.train_prompts = [PersonalizedPrompt(t) for t in cfg.train_templates or TRAIN_TEMPLATES]
        self.eval_prompt = PersonalizedPrompt(cfg.eval_template or EVAL_TEMPLATE)
        self.user_names = ([str(u) for u in data["user"].raw_id] if "raw_id" in data["user"]
                           else [str(u) for u in range(int(data["user"].num_nodes))])
        digits = cfg.item_tokens == "digits"
        self.item_names = [str(i + 1) if digits else f"<item_{i}>" for i in range(N)]
        templates = {**DEFAULT_TEMPLATES, **(load_templates(cfg.templates_path)
                                             if cfg.templates_path else {})}
        names = (json.loads(Path(cfg.entity_names_path).read_text("utf-8"))
                 if cfg.entity_names_path else None)
        self.graph = relational_view(data, ("item", "entity"), include_reverse=False)
        sentences = render_triples(data, self.graph, templates, item_names=self.item_names,
                                   entity_names=names)
        targets = [cfg.target_template.replace("{item}", n) for n in self.item_names]
        if cfg.pretrained:
            self.tokenizer = load_tokenizer(cfg.pretrained)
        else:
            roots = [" , ".join(p.parts(u)) for p in (*self.train_prompts, self.eval_prompt)
                     for u in (self.user_names if cfg.user_names == "raw" else [""])]
            always = ["<extra_id_0>", "<extra_id_1>", ","] + (
                [str(d) for d in range(10)] if digits else self.item_names)
            fixed = roots + [" ".join(w) for w in FREEBASE_TYPE_WORDS.values()] + [
                t.replace("[X]", " ").replace("[Y]", " ") for t in templates.values()]
            always += word_vocabulary(fixed, split_digits=digits)[3:]   # every template word
            vocab = word_vocabulary(sentences + targets, cfg.min_word_frequency, always,
                                    split_digits=digits)
            self.tokenizer = build_word_tokenizer(vocab, split_digits=digits)
        self.pad_id, self.eos_id = int(self.tokenizer.pad_token_id), int(self.tokenizer.eos_token_id)
        self._sentences = encode_texts(self.tokenizer, sentences)
        self._items = encode_texts(self.tokenizer, self.item_names)
        self._sep = encode_texts(self.tokenizer, [","])[0]
        self._targets = [t + [self.eos_id] for t in encode_texts(self.tokenizer, targets)]
        self._roots: dict[tuple[int, str], tuple[list[int], list[int]]] = {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.t5 = (T5LM.from_pretrained(cfg.pretrained, len(self.tokenizer)) if cfg.pretrained
                       else T5LM.from_config(len(self.tokenizer), cfg.d_model, cfg.d_ff,
                                             cfg.num_layers, cfg.num_decoder_layers,
                                             cfg.num_heads, cfg.d_kv, cfg.dropout, self.pad_id,
                                             self.eos_id, cfg.attn_implementation))
        self.trie = PrefixTrie(self._targets, self.t5.vocab_size)
        self._memo = ListMemo()
        self.register_load_state_dict_post_hook(lambda m, _: m._memo.clear())
        if cfg.scorer == "classifier":
            ids = [t[0] for t in self._items]
            self.register_buffer("item_token_ids", torch.tensor(ids), persistent=False)

    # ------------------------------------------------------------------ trees
    def _root(self, prompt: int, user: str) -> tuple[list[int], list[int]]:
        key = (prompt, user)
        if key not in self._roots:
            p = self.train_prompts[prompt] if prompt >= 0 else self.eval_prompt
            self._roots[key] = tuple(encode_texts(self.tokenizer, list(p.parts(user))))
        return self._roots[key]

    def trees(self, history: Sequences, generator: torch.Generator | None = None) -> TreeBatch:
        """The knowledge trees of ``history`` (last ``max_len`` items each): a random template
        and freshly sampled knowledge with ``generator`` (training), else the evaluation template
        and the first relations and tails."""
        cfg = self.config
        hists = [h[-cfg.max_len:].tolist() for h in history.to_list()]
        # knowledge of every history item of the batch at once, hop by hop (breadth first)
        count = [len(h) for h in hists]                 # node ids used so far (items: 1..J)
        heads = torch.tensor([i for h in hists for i in h], dtype=torch.long)
        example = torch.repeat_interleave(torch.arange(len(hists)), torch.tensor(count))
        parent = torch.tensor([j + 1 for h in hists for j in range(len(h))], dtype=torch.long)
        prompts_of: list[list[tuple[int, int]]] = [[] for _ in hists]   # (parent node, edge)
        for _ in range(cfg.hops if cfg.degree else 0):
            edges = sample_relation_tails(self.graph, heads, cfg.degree, generator)
            rows, slots = torch.nonzero(edges >= 0, as_tuple=True)
            e = edges[rows, slots]
            example, nodes = example[rows], []
            for b, par, ed in zip(example.tolist(), parent[rows].tolist(), e.tolist()):
                prompts_of[b].append((par, ed))
                count[b] += 1
                nodes.append(count[b])
            heads, parent = self.graph.tail[e], torch.tensor(nodes, dtype=torch.long)
        trees = []
        n_prompts = len(self.train_prompts)
        for b, (h, u) in enumerate(zip(hists, history.users.tolist())):
            p = int(torch.randint(n_prompts, (1,), generator=generator)) if generator else -1
            user = self.user_names[u] if cfg.user_names == "raw" and 0 <= u < len(
                self.user_names) else ""
            before, after = self._root(p, user)
            ids, anchors = list(before), []
            for j, item in enumerate(h):
                if j:
                    ids += self._sep
                anchors.append(list(range(len(ids), len(ids) + len(self._items[item]))))
                ids += self._items[item]
            ids += after
            prompts = [(par, self._sentences[e]) for par, e in prompts_of[b]]
            trees.append(layout_tree(ids, anchors, prompts, cfg.max_tokens))
        return collate_trees(trees, self.pad_id)

    def encode_batch(self, history: Sequences, generator: torch.Generator | None = None
                     ) -> dict[str, Tensor]:
        t = self.trees(history, generator)
        return {"input_ids": t.input_ids, "node": t.node, "parent": t.parent,
                "in_root": t.in_root, "padding_mask": t.padding_mask}

    def _encode(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        tree = TreeBatch(batch["input_ids"], batch["node"], batch["parent"], batch["in_root"],
                         batch["padding_mask"])
        enc = self.t5.encode(tree.input_ids, tree.attention_mask(self.config.tree_mask))
        return enc, tree.cross_mask(self.config.cross_mask)

    # ------------------------------------------------------------------ training
    def training_batch(self, sequences: Sequences, generator: torch.Generator) -> dict[str, Tensor]:
        history, targets = random_cut(sequences, generator, self.config.min_history)
        batch = self.encode_batch(history, generator)
        rows = [self._targets[int(t)] for t in targets]
        labels = torch.full((len(rows), max(map(len, rows))), IGNORE_INDEX, dtype=torch.long)
        for b, r in enumerate(rows):
            labels[b, : len(r)] = torch.tensor(r)
        return {**batch, "labels": labels, "targets": targets}

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        enc, cross = self._encode(batch)
        if self.config.scorer == "classifier":
            logits = self._first_step(enc, cross)[:, self.item_token_ids]
            loss = F.cross_entropy(logits.float(), batch["targets"])
        else:
            loss = self.t5.sequence_nll(enc, cross, batch["labels"]).mean()
        return {"loss": loss, "rec_loss": loss.detach()}

    def _first_step(self, enc: Tensor, cross: Tensor) -> Tensor:
        start = torch.full((enc.size(0), 1), self.t5.start_id, dtype=torch.long,
                           device=enc.device)
        return self.t5.decode(enc, cross, start)[:, 0]

    # ------------------------------------------------------------------ inference
    def _device_batch(self, sequences: Sequences) -> dict[str, Tensor]:
        dev = self.t5.model.get_input_embeddings().weight.device
        return {k: v.to(dev) for k, v in self.encode_batch(sequences).items()}

    @torch.no_grad()
    def generate_items(self, sequences: Sequences, num_beams: int | None = None) -> Tensor:
        """Constrained beam search: ``[B, K]`` generated items, best first (``-1``: none)."""
        K = num_beams or self.config.num_beams
        enc, cross = self._encode(self._device_batch(sequences))
        res = self.t5.beam_search(enc, cross, K, self.trie.max_length, [self.eos_id],
                                  self.trie.allowed, K, self.config.length_penalty)
        out = torch.full((len(sequences), K), -1, dtype=torch.long)
        for b in range(len(sequences)):
            for r, seq in enumerate(res.sequences(b)):
                out[b, r] = self.trie.lookup(seq)
        return out

    def score(self, sequences: Sequences) -> Tensor:
        """``[B, N]``: beam rank of the generated items, ``-inf`` elsewhere (``scorer="beam"``),
        or item-token log-probabilities (``"classifier"``)."""
        if self.config.scorer == "beam":
            gen = lambda: self.generate_items(sequences)  # noqa: E731
            lists = gen() if self.training else self._memo(
                (sequences.ptr, sequences.items, sequences.users), gen)
            return ranked_list_scores(lists, self.num_items)
        enc, cross = self._encode(self._device_batch(sequences))
        return F.log_softmax(self._first_step(enc, cross)[:, self.item_token_ids].float(), -1)

    def train(self, mode: bool = True) -> KP4SR:
        self._memo.clear()   # the Evaluator's eval() starts a fresh memo of beam lists
        return super().train(mode)

    def extra_repr(self) -> str:
        c = self.config
        return (f"num_items={c.num_items}, hops={c.hops}, degree={c.degree}, "
                f"tree_mask={c.tree_mask}, cross_mask={c.cross_mask}, scorer={c.scorer!r}")

