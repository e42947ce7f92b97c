r"""LANCER (Jiang, Qu, Cheng, Liu et al., *Reformulating Sequential Recommendation: Learning
Dynamic User Interest with Content-enriched Language Modeling*, arXiv:2309.10435; authors' code
``Gnimixy/lancer``): a causal LM reads a user's history as text, steered by a knowledge prompt and
a reasoning prompt, generates the next item's text, and the text is mapped to an item.

* **Eq. 1–3, knowledge prompt** (:class:`~kgseqgraph.nn.prefix.PrefixKeyValues`): :math:`P`
  learned tokens → :math:`\mathbf{Z} = \tanh(\mathbf{E}\mathbf{W}_1 + \mathbf{b}_1)` → prefix
  keys/values of a **frozen knowledge LM** (``knowledge_lm``: a copy of the backbone's initial
  weights, as the authors load the same checkpoint twice).
* **Eq. 4, knowledge pre-training** (on by default): the knowledge LM's NLL of each item's content
  text under the prefix, only the prompt trained — a :class:`~kgseqgraph.models.base.
  PretrainStage` the Trainer runs before the first epoch (:meth:`LANCER.knowledge_stage`).
* **Eq. 5, reasoning prompt** (:class:`~kgseqgraph.nn.prefix.ReasoningPromptAttention`): each
  history item's state (the knowledge LM's last hidden state after its content text, detached as
  in the authors' code) attends over :math:`\mathbf{Z}`; :math:`\psi_t = \sigma(\mathbf{W}_r
  \mathbf{A}_t + \mathbf{b}_r)` is one prefix key/value position of the **reasoning LM** (``lm``).
* **Training**: the reasoning LM's next-token NLL of the user text
  (:class:`~kgseqgraph.prompts.lancer.LancerTexts`, every token as the authors'
  ``labels=input_ids``; ``lm_targets="target"``: the next item's tokens only); the reasoning LM
  and both prompts are trained.
* **Eq. 6–9, recommendation** (``scorer="beam"``): beam search (10 beams) of the next item's
  text; each beam max-pooled over the input embeddings and mapped to the most cosine-similar item
  (:func:`~kgseqgraph.nn.decoding.map_to_items`); the list becomes ``[B, N]`` scores by beam rank,
  :math:`-\infty` elsewhere (:func:`~kgseqgraph.nn.decoding.ranked_list_scores`), so the
  Evaluator's HR/NDCG are the metrics of the beam list.

Labelled options: ``scorer="cosine"`` (the library's earlier head: cosine of projected prompt-end
state and pooled item embeddings over :math:`\tau`, plus a catalogue cross-entropy);
``reasoning_knowledge="prompt+kg"`` (LANCER+KG: items also attend over ``kg_neighbors`` KG
neighbours, :class:`~kgseqgraph.nn.prefix.NeighborEmbedding`); ``use_reasoning_prompt=False``
(the knowledge prefix read by the reasoning LM directly); both prompts off (the ablation).

Deviations from the authors' code: item states are read at the last *real* token (theirs: the
embedding output at a padding position, one vector for every item); padded history positions are
masked out of the prefix and padding out of the loss; ``</s>`` follows the target; their
prompt-only warm-up (``f_epochs``, LM frozen, interleaved with Eq. 4) is not run; the target is a
random cut of each training window (:func:`~kgseqgraph.data.random_cut`), not each user's last
item; ``item_state_refresh > 0`` reuses item states for that many steps (0: every step, theirs).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.batching import IGNORE_INDEX, pad_sequences, padding_id, random_cut
from ..data.sequences import Sequences
from ..data.views import relational_view
from ..nn.decoding import ListMemo, map_to_items, max_pooled_embeddings, ranked_list_scores
from ..nn.encoders.hf_gpt2 import CausalLM
from ..nn.heads import CosineHead
from ..nn.prefix import NeighborEmbedding, PrefixKeyValues, ReasoningPromptAttention
from ..prompts.lancer import LancerTexts, item_texts
from ..prompts.tokenizers import build_word_tokenizer, load_tokenizer, word_vocabulary
from .base import PretrainStage, SequentialRecommender, register_model

__all__ = ["LANCERConfig", "LANCER"]


@dataclass
class LANCERConfig:
    """:class:`LANCER`'s options (defaults: the authors' ``utils/args.py``). Backbone: random-init
    GPT-2 of ``hidden_size``/``num_layers``/``num_heads`` over a word-level tokenizer of the item
    texts, ``backbone_config`` (a Hugging Face config dict), or ``pretrained`` (+ ``gguf_file``)
    with ``tokenizer="pretrained"``. ``separator=None``: ``"<sep>"`` (word) or ``" ->"``."""

    num_items: int
    max_len: int = 10
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    backbone_config: dict[str, Any] | None = None
    pretrained: str | None = None
    gguf_file: str | None = None
    tokenizer: str = "word"
    attn_implementation: str | None = None
    item_field: str = "title"
    knowledge_field: str = "text"
    prompt_text: str = "A user watched sequence of movies :"
    separator: str | None = None
    max_item_tokens: int = 32
    max_knowledge_tokens: int = 64
    lm_targets: str = "all"
    min_history: int = 1
    use_knowledge_prompt: bool = True
    use_reasoning_prompt: bool = True
    prefix_length: int = 20
    prefix_dropout: float = 0.2
    reasoning_activation: str = "sigmoid"
    reasoning_knowledge: str = "prompt"
    kg_neighbors: int = 8
    knowledge_pretrain_epochs: int = 5
    knowledge_lr: float = 2e-4
    knowledge_batch_size: int = 16
    item_state_refresh: int = 0
    freeze_lm: bool = False
    scorer: str = "beam"
    num_beams: int = 10
    length_penalty: float = 1.0
    rec_weight: float = 1.0
    temperature: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_items <= 0 or self.max_len < 1:
            raise ValueError("num_items must be positive and max_len >= 1")
        for name, allowed in {"tokenizer": ("word", "pretrained"), "lm_targets": ("all", "target"),
                              "reasoning_knowledge": ("prompt", "prompt+kg"),
                              "scorer": ("beam", "cosine")}.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for bad, msg in ((self.tokenizer == "pretrained" and not self.pretrained,
                          "tokenizer='pretrained' needs a pretrained backbone path"),
                         (self.use_reasoning_prompt and not self.use_knowledge_prompt,
                          "use_reasoning_prompt needs use_knowledge_prompt (its attention reads it)"),
                         (self.num_beams < 1 or self.temperature <= 0
                          or self.knowledge_pretrain_epochs < 0,
                          "need num_beams >= 1, temperature > 0, knowledge_pretrain_epochs >= 0")):
            if bad:
                raise ValueError(msg)


@register_model("lancer")
class LANCER(SequentialRecommender):
    """LANCER over a catalogue with item text (module docstring). Build from the split's training
    graph: ``build_model("lancer", split.train_graph, ...)``."""

    config_class = LANCERConfig
    needs_graph = True

    def __init__(self, config: LANCERConfig, data: Any = None) -> None:
        super().__init__(config, data)
        if data is None or int(data["item"].num_nodes) != config.num_items:
            raise ValueError("LANCER needs the graph it scores (data=<HeteroData>) with "
                             f"config.num_items={config.num_items} items")
        cfg, N = config, config.num_items
        items, know = item_texts(data, cfg.item_field), item_texts(data, cfg.knowledge_field)
        sep = cfg.separator or ("<sep>" if cfg.tokenizer == "word" else " ->")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            word = cfg.tokenizer == "word"
            self.tokenizer = (build_word_tokenizer(word_vocabulary(
                items + know + [cfg.prompt_text], always=[sep.strip()])) if word
                else load_tokenizer(cfg.pretrained, cfg.gguf_file))
            self.lm = (CausalLM.from_config(len(self.tokenizer), cfg.hidden_size, cfg.num_layers,
                                            cfg.num_heads, cfg.backbone_config,
                                            cfg.attn_implementation, self.tokenizer.eos_token_id,
                                            self.tokenizer.pad_token_id) if word
                       else CausalLM.from_pretrained(cfg.pretrained, cfg.gguf_file,
                                                     cfg.attn_implementation))
            self.texts = LancerTexts(self.tokenizer, items, know, cfg.prompt_text, sep,
                                     cfg.max_item_tokens, cfg.max_knowledge_tokens,
                                     leading_space=not word)
            lm, d = self.lm, self.lm.hidden_size
            shape = (lm.num_layers, lm.num_kv_heads, lm.head_dim)
            self.knowledge_lm = (copy.deepcopy(lm).requires_grad_(False)
                                 if cfg.use_knowledge_prompt else None)
            self.prefix = (PrefixKeyValues(*shape, cfg.prefix_length, d, cfg.prefix_dropout)
                           if cfg.use_knowledge_prompt else None)
            self.reasoning = (ReasoningPromptAttention(d, *shape, cfg.reasoning_activation)
                              if cfg.use_reasoning_prompt else None)
            if cfg.use_reasoning_prompt and cfg.reasoning_knowledge == "prompt+kg":
                self.kg = NeighborEmbedding.sampled(relational_view(data, ("item", "entity")), N,
                                                    cfg.kg_neighbors, d, cfg.seed)
            if cfg.scorer == "cosine":
                self.head = CosineHead(d, cfg.temperature)
        if cfg.freeze_lm:
            self.lm.requires_grad_(False)
        self._step, self._states, self._memo = 0, (None, None, None), ListMemo()
        self.register_load_state_dict_post_hook(lambda m, _: m._forget())

    def _forget(self) -> None:  # new weights: drop the cached item states and beam lists
        self._states = (None, None, None)
        self._memo.clear()

    def train(self, mode: bool = True) -> LANCER:
        super().train(mode)
        self._memo.clear()
        if self.knowledge_lm is not None:
            self.knowledge_lm.eval()   # frozen: never in training mode
        return self

    def on_train_step_start(self) -> None:
        self._step += 1

    # ------------------------------------------------------------------ prompts
    @staticmethod
    def _nll(lm: CausalLM, tb: Any, prefix: Any, pmask: Tensor | None = None
             ) -> tuple[Tensor, Tensor]:
        """Hidden states of a :class:`~kgseqgraph.prompts.lancer.TextBatch` and its NLL."""
        h = lm(lm.token_embeddings[tb.ids], tb.mask, tb.positions, prefix, pmask)
        sel = tb.labels != IGNORE_INDEX
        return h, F.cross_entropy(lm.logits(h[sel]).float(), tb.labels[sel])

    def item_states(self, items: Tensor) -> Tensor:
        """``[M, d]``: the knowledge LM's last-layer state at the end of each item's content text,
        read with the knowledge prefix (no gradient, as the authors' ``detach``)."""
        with torch.no_grad():
            tb, lm = self.texts.knowledge(items), self.knowledge_lm
            kv = self.prefix.keys_values(items.numel())
            return lm(lm.token_embeddings[tb.ids], tb.mask, tb.positions, kv)[:, -1].float()

    def _history_states(self, items: Tensor, mask: Tensor) -> Tensor:
        refresh = self.config.item_state_refresh
        if self.training and refresh == 0:
            uniq, inv = torch.unique(items[mask], return_inverse=True)
            out = items.new_zeros(*items.shape, self.lm.hidden_size, dtype=torch.float)
            out[mask] = self.item_states(uniq)[inv]
            return out
        key = (self.training, self._step // refresh if self.training else self._step)
        if self._states[0] != key:  # item states are computed lazily, once per key
            self._states = (key, items.new_zeros(self.num_items, self.lm.hidden_size,
                                                 dtype=torch.float),
                            torch.zeros(self.num_items, dtype=torch.bool, device=items.device))
        _, table, known = self._states
        need = torch.unique(items[mask])
        need = need[~known[need]]
        for chunk in need.split(256) if need.numel() else ():
            table[chunk], known[chunk] = self.item_states(chunk), True
        return table[items.clamp(max=self.num_items - 1)] * mask[..., None]

    def prompt_prefix(self, items: Tensor, mask: Tensor) -> tuple[list | None, Tensor | None]:
        """The reasoning LM's prefix (per layer ``(K, V)``) and its visibility mask."""
        if self.reasoning is None:
            return (self.prefix.keys_values(items.size(0)), None) if self.prefix else (None, None)
        h = self._history_states(items, mask).to(self.prefix.tokens.weight.dtype)
        z, kmask = self.prefix.hidden(), None
        if self.config.reasoning_knowledge == "prompt+kg":
            kg, ok = self.kg(items.clamp(max=self.num_items - 1))
            z = torch.cat([z.expand(*items.shape, *z.shape), kg], 2)
            kmask = torch.cat([ok.new_ones(*items.shape, self.prefix.length), ok], 2)
        return self.reasoning(h, mask, z, kmask), mask

    # ------------------------------------------------------------------ training
    def training_batch(self, sequences: Sequences, generator: torch.Generator) -> dict[str, Tensor]:
        history, targets = random_cut(sequences, generator, self.config.min_history)
        b = pad_sequences(history, self.config.max_len, padding_id(self.num_items), "left")
        return {"items": b.items, "mask": b.mask, "targets": targets}

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        cfg = self.config
        items, mask, targets = batch["items"], batch["mask"], batch["targets"]
        prefix, pmask = self.prompt_prefix(items, mask)
        h, total = self._nll(self.lm, self.texts.reasoning(items, mask, targets, cfg.lm_targets),
                             prefix, pmask)
        out = {"lm_loss": total.detach()}
        if cfg.scorer == "cosine":
            end = h.size(1) - 2 - self.texts.item_len.to(h.device)[targets]
            logits = self.head(h[torch.arange(h.size(0), device=h.device), end],
                               self.item_embeddings())
            rec = F.cross_entropy(logits.float(), targets)
            total = total + cfg.rec_weight * rec
            out["rec_loss"] = rec.detach()
        out["loss"] = total
        return out

    def pretraining_stages(self) -> list[PretrainStage]:
        on = self.prefix is not None and self.config.knowledge_pretrain_epochs > 0
        return [self.knowledge_stage()] if on else []

    def knowledge_stage(self, epochs: int | None = None) -> PretrainStage:
        """Eq. 4: the knowledge LM's NLL of item content texts under the prefix; only the
        prompt's parameters are updated (one pass = ``N / knowledge_batch_size`` batches)."""
        cfg, lm = self.config, self.knowledge_lm

        def loss(batch: dict[str, Tensor]) -> Tensor:
            tb = self.texts.knowledge(batch["items"].to(lm.token_embeddings.device))
            return self._nll(lm, tb, self.prefix.keys_values(tb.ids.size(0)))[1]

        bs = cfg.knowledge_batch_size
        return PretrainStage(
            "lancer_knowledge", list(self.prefix.parameters()),
            lambda g: {"items": torch.randint(self.num_items, (bs,), generator=g)}, loss,
            epochs=cfg.knowledge_pretrain_epochs if epochs is None else epochs,
            steps_per_epoch=max(1, math.ceil(self.num_items / bs)), lr=cfg.knowledge_lr)

    # ------------------------------------------------------------------ inference
    def _batch(self, sequences: Sequences) -> tuple[Tensor, Tensor]:
        b = pad_sequences(sequences, self.config.max_len, padding_id(self.num_items), "left")
        dev = self.lm.token_embeddings.device
        return b.items.to(dev), b.mask.to(dev)

    def item_embeddings(self) -> Tensor:
        """Eq. 8 on the catalogue: ``[N, D]`` max-pooled input embeddings of the item texts."""
        tok, n = self.texts.item_tokens, self.texts.item_len
        table = self.lm.token_embeddings
        real = torch.arange(tok.size(1)) < n[:, None]
        return max_pooled_embeddings(tok.to(table.device), real.to(table.device), table)

    @torch.no_grad()
    def generate_items(self, sequences: Sequences, num_beams: int | None = None) -> Tensor:
        """Eq. 6–9: ``[B, K]`` items of the ``K`` beams, best first (``-1``: empty generation)."""
        cfg = self.config
        K = num_beams or cfg.num_beams
        items, mask = self._batch(sequences)
        prefix, pmask = self.prompt_prefix(items, mask)
        tb = self.texts.reasoning(items, mask)
        table = self.lm.token_embeddings
        res = self.lm.beam_search(table[tb.ids], tb.mask, tb.positions, prefix, pmask, K,
                                  cfg.max_item_tokens + 1, self.texts.stop_ids, K,
                                  cfg.length_penalty)
        gen = res.tokens.to(table.device)
        keep = (gen >= 0) & ~torch.isin(gen, torch.tensor(self.texts.stop_ids, device=gen.device))
        B, R, L = gen.shape
        mapped = map_to_items(gen.clamp(min=0).view(B * R, L), keep.view(B * R, L),
                              self.item_embeddings(), table).view(B, R).cpu()
        return mapped.masked_fill(torch.isinf(res.scores), -1)

    def score(self, sequences: Sequences) -> Tensor:
        """``[B, N]``: beam rank of the mapped items, ``-inf`` elsewhere (``scorer="beam"``), or
        the cosine head's scores (``"cosine"``)."""
        if self.config.scorer == "beam":
            gen = lambda: self.generate_items(sequences)  # noqa: E731
            lists = gen() if self.training else self._memo(
                (sequences.ptr, sequences.items, sequences.users), gen)
            return ranked_list_scores(lists, self.num_items)
        items, mask = self._batch(sequences)
        prefix, pmask = self.prompt_prefix(items, mask)
        tb = self.texts.reasoning(items, mask)
        h = self.lm(self.lm.token_embeddings[tb.ids], tb.mask, tb.positions, prefix, pmask)
        return self.head(h[:, -1], self.item_embeddings())

    def extra_repr(self) -> str:
        c = self.config
        return (f"num_items={c.num_items}, knowledge_prompt={c.use_knowledge_prompt}, "
                f"reasoning_prompt={c.use_reasoning_prompt}, scorer={c.scorer!r}")

