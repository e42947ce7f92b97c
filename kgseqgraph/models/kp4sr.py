r"""KP4SR (Zhai et al., 2023, "Knowledge Prompt-tuning for Sequential Recommendation"): a T5
encoder–decoder reads the knowledge tree of a user's history under the tree attention mask and
predicts the next item.

Input (:mod:`kgseqgraph.prompts.tree`): the masked personalised prompt (root) followed by the
knowledge prompts (:mod:`kgseqgraph.prompts.knowledge`) of the ``knowledge_items`` most recent
history items; the encoder runs with the ``[B, T, T]`` tree mask (given to Hugging Face T5 as a
4-D additive bias, :func:`~kgseqgraph.prompts.tree.additive_attention_mask`); the decoder
cross-attends to every non-padding encoder token.

Items as decoder targets (``target``):

* ``"token"`` (default): item :math:`i` is one new vocabulary token ``<item_i>``, so its
  log-likelihood is read off the first decoder step and every catalogue item is scored with one
  softmax,

  .. math::
      s_{b,i} = \log \mathrm{softmax}_{j \in \mathcal{C}}\big(\mathbf{W}\,\mathbf{d}_{b,1}
          \big)_{\langle i \rangle},

  where :math:`\mathbf{d}_{b,1}` is the decoder state after the start token, :math:`\mathbf{W}`
  the LM head and :math:`\mathcal{C}` the item tokens (``item_softmax="items"``, the loss is the
  catalogue cross-entropy as for SASRec) or the whole vocabulary (``"vocab"``, the T5 LM loss;
  the ranking is the same either way);
* ``"title"``: item :math:`i` is its title's token sequence :math:`y^{(i)}` plus ``</s>``, and
  :math:`s_{b,i} = \sum_t \log p(y^{(i)}_t \mid y^{(i)}_{<t}, \text{tree})` (teacher-forced for
  every item, chunked — about :math:`N` decoder passes per user; items sharing a title tie).

Either way :meth:`KP4SR.score` returns ``[B, N]`` for the full-ranking evaluator, and
:meth:`KP4SR.generate_items` offers the generative mode: beam search restricted to valid item
token sequences with ``prefix_allowed_tokens_fn`` over a trie of the items' sequences.

Backbone: a T5 built from the config's sizes (random init) with a word-level tokenizer built
from the graph's prompts (:func:`build_word_tokenizer`), or a pretrained checkpoint
(``pretrained="t5-small"`` or a local folder) with its own tokenizer, extended with the item
tokens (embeddings resized).
"""
from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.sequences import Sequences
from ..prompts.knowledge import EntityNames, KnowledgePrompts, knowledge_prompts, load_templates
from ..prompts.tree import (PersonalizedPrompt, TreeBatch, additive_attention_mask,
                            build_tree_tokens, collate_trees, tree_attention_mask)
from .base import (CONFIG_NAME, WEIGHTS_NAME, SequentialRecommender, check_saved_graph,
                   register_model)

__all__ = ["KP4SRConfig", "KP4SR", "build_word_tokenizer", "word_vocabulary", "item_token",
           "SPECIAL_TOKENS"]

log = logging.getLogger("kgseqgraph")

#: Special tokens of the word-level tokenizer, with T5's ids: pad 0, eos 1, unk 2, sentinel 3.
SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>", "<extra_id_0>"]
_PRETOKENIZE = r"<[^<>\s]+>|[a-z]\.[0-9a-z_]+|\w+|[^\w\s]"
TOKENIZER_DIR = "tokenizer"


def item_token(i: int) -> str:
    """The vocabulary token of item ``i`` (graph item index)."""
    return f"<item_{int(i)}>"


def _require_transformers() -> Any:
    try:
        import transformers
    except ImportError as err:  # pragma: no cover
        raise ImportError("KP4SR needs the Hugging Face `transformers` package "
                          "(pip install 'kgseqgraph[hf]')") from err
    return transformers


def word_vocabulary(texts: Iterable[str], min_frequency: int = 1,
                    always: Sequence[str] = ()) -> list[str]:
    """Vocabulary of a word-level tokenizer: :data:`SPECIAL_TOKENS`, then ``always`` (in order),
    then every pre-token of ``texts`` seen at least ``min_frequency`` times (most frequent first,
    ties alphabetical). Pre-tokens: ``<…>`` tokens, Freebase mids (``m.04t36``), words and single
    punctuation marks, lower-cased."""
    import re

    pat = re.compile(_PRETOKENIZE)
    counts: Counter[str] = Counter()
    for t in texts:
        counts.update(pat.findall(t.lower()))
    vocab = list(SPECIAL_TOKENS)
    seen = set(vocab)
    for w in always:
        w = w.lower()
        if w not in seen:
            vocab.append(w)
            seen.add(w)
    for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if c >= min_frequency and w not in seen:
            vocab.append(w)
            seen.add(w)
    return vocab


def build_word_tokenizer(vocab: Sequence[str]) -> Any:
    """A ``transformers.PreTrainedTokenizerFast`` over a ``tokenizers`` ``WordLevel`` model with
    the given vocabulary (ids in list order; must start with :data:`SPECIAL_TOKENS`)."""
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel

    tf = _require_transformers()
    if list(vocab[:len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
        raise ValueError(f"vocab must start with {SPECIAL_TOKENS}")
    if len(set(vocab)) != len(vocab):
        raise ValueError("vocab lists a token twice")
    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Split(Regex(_PRETOKENIZE), behavior="isolated")])
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                      unk_token="<unk>")


@dataclass
class KP4SRConfig:
    """Configuration of :class:`KP4SR` (JSON round-trips through ``save_pretrained``).

    Args:
        num_items: catalogue size :math:`N`.
        max_len: history items in the personalised prompt (most recent kept).
        d_model, d_ff, num_layers, num_decoder_layers, num_heads, d_kv, dropout: sizes of a
            randomly initialised T5 (ignored with ``pretrained``).
        pretrained: Hugging Face name or folder of a T5 checkpoint (weights + tokenizer).
        backbone_config: the T5 config as a dict; filled in when loading ``pretrained`` so a
            saved model rebuilds its architecture without the checkpoint.
        vocab: vocabulary of the word-level tokenizer; filled in at construction (so a saved
            model rebuilds the same tokenizer).
        min_word_frequency: words rarer than this in the prompts become ``<unk>``.
        prompt_template, prompt_separator, mask_token: :class:`PersonalizedPrompt`.
        user_names: ``"raw"`` puts the user's raw id for ``{user}``, ``"none"`` an empty string.
        item_surface: how items appear in prompts: ``"token"`` (``<item_i>``) or ``"title"``.
        target: ``"token"`` or ``"title"`` (see the module docstring).
        item_softmax: ``"items"`` or ``"vocab"`` (``target="token"`` only).
        templates: relation templates (``None``: the Freebase film + attribute defaults).
        templates_path: JSON file of templates (e.g. KP4SR's ``relation2template.json``),
            merged over ``templates``.
        entity_names: ``raw entity id → name``; entity_names_path: a JSON file of the same.
        prompts_per_item: knowledge prompt budget per item; two_hop: slots for 2-hop prompts.
        knowledge_items: the most recent this many history items get knowledge children.
        max_prompt_tokens: a knowledge prompt is cut to this many tokens.
        max_tokens: length budget of the whole tree (prompts that do not fit are dropped,
            oldest items first).
        use_tree_mask: ``False`` lets every token see every token (ablation).
        root_sees, knowledge_sees_root, sibling_prompts: :func:`~kgseqgraph.prompts.tree.
            tree_attention_mask`.
        train_target: ``"random"`` (each training window predicts the item after a random
            prefix, drawn with the trainer's generator) or ``"last"``.
        score_chunk: items scored per decoder pass for ``target="title"``.
    """

    num_items: int
    max_len: int = 20
    d_model: int = 64
    d_ff: int = 256
    num_layers: int = 2
    num_decoder_layers: int = 1
    num_heads: int = 4
    d_kv: int = 16
    dropout: float = 0.1
    pretrained: str | None = None
    backbone_config: dict[str, Any] | None = None
    vocab: list[str] | None = None
    min_word_frequency: int = 2
    prompt_template: str = "User {user} has watched {history} and will watch {mask} next."
    prompt_separator: str = ","
    mask_token: str = "<extra_id_0>"
    user_names: str = "raw"
    item_surface: str = "token"
    target: str = "token"
    item_softmax: str = "items"
    templates: dict[str, str] | None = None
    templates_path: str | None = None
    entity_names: dict[str, str] | None = None
    entity_names_path: str | None = None
    prompts_per_item: int = 3
    two_hop: int = 0
    knowledge_items: int = 5
    max_prompt_tokens: int = 24
    max_tokens: int = 192
    use_tree_mask: bool = True
    root_sees: str = "all"
    knowledge_sees_root: str = "all"
    sibling_prompts: bool = True
    train_target: str = "random"
    score_chunk: int = 64

    def __post_init__(self) -> None:
        if self.num_items <= 0 or self.max_len < 1:
            raise ValueError("num_items must be positive and max_len >= 1")
        choices = {"item_surface": ("token", "title"), "target": ("token", "title"),
                   "item_softmax": ("items", "vocab"), "train_target": ("random", "last"),
                   "user_names": ("raw", "none")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        PersonalizedPrompt(self.prompt_template, self.prompt_separator, self.mask_token)
        tree_attention_mask(torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long),
                            self.root_sees, self.knowledge_sees_root)
        for name in ("prompts_per_item", "knowledge_items", "two_hop"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")


@register_model("kp4sr")
class KP4SR(SequentialRecommender):
    """KP4SR: knowledge tree + tree mask into a T5, next item as decoder target (see module
    docstring). Construct with the collaborative KG: ``KP4SR(config, data=graph)``; reload with
    ``KP4SR.from_pretrained(folder, data=graph)``."""

    config_class = KP4SRConfig
    needs_graph = True

    def __init__(self, config: KP4SRConfig, data: Any = None, tokenizer: Any = None,
                 load_pretrained_weights: bool = True) -> None:
        super().__init__(config, data)
        if data is None:
            raise ValueError("KP4SR needs the collaborative KG: KP4SR(config, data=<HeteroData>)")
        n = int(data["item"].num_nodes)
        if n != config.num_items:
            raise ValueError(f"config.num_items={config.num_items} but the graph has {n} items")
        tf = _require_transformers()
        self.prompt = PersonalizedPrompt(config.prompt_template, config.prompt_separator,
                                         config.mask_token)
        self._user_raw = ([str(u) for u in data["user"].raw_id] if "raw_id" in data["user"]
                          else None)
        # ---- knowledge prompts (text)
        templates = dict(config.templates) if config.templates is not None else None
        if config.templates_path:
            templates = {**(templates or {}), **load_templates(config.templates_path)}
        ent_names = dict(config.entity_names or {})
        if config.entity_names_path:
            ent_names.update(json.loads(Path(config.entity_names_path).read_text("utf-8")))
        titles = EntityNames(data, ent_names).items
        self.item_titles = titles
        surfaces = ([item_token(i) for i in range(n)] if config.item_surface == "token"
                    else titles)
        self.knowledge: KnowledgePrompts = knowledge_prompts(
            data, templates, entity_names=ent_names, item_names=surfaces,
            max_per_item=config.prompts_per_item, two_hop=config.two_hop)
        # ---- tokenizer
        item_tokens = [item_token(i) for i in range(n)]
        if tokenizer is None:
            if config.pretrained:
                tokenizer = tf.AutoTokenizer.from_pretrained(config.pretrained)
            else:
                if config.vocab is None:
                    config.vocab = self._build_vocab(surfaces, item_tokens)
                tokenizer = build_word_tokenizer(config.vocab)
        missing = [t for t in item_tokens + [config.mask_token]
                   if t not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_tokens(missing)
        self.tokenizer = tokenizer
        # ---- backbone
        if config.backbone_config is not None:
            bc = tf.T5Config.from_dict(dict(config.backbone_config))
            self.t5 = tf.T5ForConditionalGeneration(bc)
        elif config.pretrained:
            if not load_pretrained_weights:
                raise ValueError("load_pretrained_weights=False needs config.backbone_config")
            self.t5 = tf.T5ForConditionalGeneration.from_pretrained(config.pretrained)
        else:
            bc = tf.T5Config(vocab_size=len(tokenizer), d_model=config.d_model, d_ff=config.d_ff,
                             num_layers=config.num_layers,
                             num_decoder_layers=config.num_decoder_layers,
                             num_heads=config.num_heads, d_kv=config.d_kv,
                             dropout_rate=config.dropout, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id,
                             decoder_start_token_id=tokenizer.pad_token_id)
            self.t5 = tf.T5ForConditionalGeneration(bc)
        if self.t5.config.vocab_size < len(tokenizer):
            self.t5.resize_token_embeddings(len(tokenizer))
        for key, value in (("decoder_start_token_id", tokenizer.pad_token_id),
                           ("pad_token_id", tokenizer.pad_token_id),
                           ("eos_token_id", tokenizer.eos_token_id)):
            if getattr(self.t5.config, key, None) is None:
                setattr(self.t5.config, key, value)
            if getattr(self.t5.generation_config, key, None) is None:
                setattr(self.t5.generation_config, key, getattr(self.t5.config, key))
        if config.pretrained and config.backbone_config is None:
            config.backbone_config = self.t5.config.to_dict()
        # ---- token caches
        ids = tokenizer.convert_tokens_to_ids(item_tokens)
        self.register_buffer("item_token_ids", torch.tensor(ids, dtype=torch.long),
                             persistent=False)
        self.pad_id = int(tokenizer.pad_token_id)
        self.eos_id = int(tokenizer.eos_token_id)
        self._surface_ids = self._encode_texts(surfaces)
        self._sep_ids = self._encode_texts([config.prompt_separator])[0] \
            if config.prompt_separator else []
        know_ids = self._encode_texts(self.knowledge.texts)
        ptr = self.knowledge.ptr.tolist()
        self._prompt_ids = [[p[:config.max_prompt_tokens] for p in know_ids[ptr[i]:ptr[i + 1]]]
                            for i in range(n)]
        self._root_cache: dict[str, tuple[list[int], list[int]]] = {}
        self._targets: list[list[int]] | None = None
        if config.target == "title":
            self._targets = [t + [self.eos_id] for t in self._encode_texts(titles)]
        self.last_dropped_prompts = 0

    # ------------------------------------------------------------------ tokens
    def _build_vocab(self, surfaces: list[str], item_tokens: list[str]) -> list[str]:
        cfg = self.config
        users = self._user_raw or []
        always = item_tokens[:]
        root_words = []
        for u in (users if cfg.user_names == "raw" else [""]):
            before, after = self.prompt.parts(u if cfg.user_names == "raw" else "")
            root_words.append(f"{before} {cfg.prompt_separator} {after}")
        always += word_vocabulary(root_words, 1)[len(SPECIAL_TOKENS):]
        texts = list(self.knowledge.texts)
        if cfg.item_surface == "title" or cfg.target == "title":
            always += word_vocabulary(self.item_titles, 1)[len(SPECIAL_TOKENS):]
        return word_vocabulary(texts, cfg.min_word_frequency, always)

    def _encode_texts(self, texts: Sequence[str]) -> list[list[int]]:
        if not len(texts):
            return []
        return [list(x) for x in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    def _root_parts(self, user: int) -> tuple[list[int], list[int]]:
        name = ""
        if self.config.user_names == "raw":
            name = (self._user_raw[user] if self._user_raw is not None
                    and 0 <= user < len(self._user_raw) else str(user))
        if name not in self._root_cache:
            before, after = self.prompt.parts(name)
            b, a = self._encode_texts([before, after])
            self._root_cache[name] = (b, a + [self.eos_id])
        return self._root_cache[name]

    def tree_tokens(self, history: Sequence[int], user: int = -1):
        """Token layout of one user's knowledge tree (:class:`~kgseqgraph.prompts.tree.TreeTokens`)
        for ``history`` (item ids, oldest first; the last ``max_len`` are used)."""
        cfg = self.config
        hist = [int(i) for i in history][-cfg.max_len:]
        before, after = self._root_parts(user)
        ids, anchor = list(before), [-1] * len(before)
        for j, it in enumerate(hist):
            if j and self._sep_ids:
                ids += self._sep_ids
                anchor += [-1] * len(self._sep_ids)
            ids += self._surface_ids[it]
            anchor += [j] * len(self._surface_ids[it])
        ids += after
        anchor += [-1] * len(after)
        children, seen = [], set()
        for j in range(len(hist) - 1, -1, -1):
            if len(children) >= cfg.knowledge_items:
                break
            if hist[j] in seen:
                continue  # an item repeated in the history keeps its knowledge at its latest place
            seen.add(hist[j])
            children.append((j, self._prompt_ids[hist[j]]))
        return build_tree_tokens(ids, anchor, children, cfg.max_tokens)

    def knowledge_tree_text(self, history: Sequence[int], user: int = -1):
        """The :class:`~kgseqgraph.prompts.tree.KnowledgeTree` of ``history`` as text."""
        from ..prompts.tree import KnowledgeTree

        cfg = self.config
        hist = [int(i) for i in history][-cfg.max_len:]
        name = ""
        if (cfg.user_names == "raw" and self._user_raw is not None
                and 0 <= user < len(self._user_raw)):
            name = self._user_raw[user]
        surf = [item_token(i) if cfg.item_surface == "token" else self.item_titles[i]
                for i in hist]
        children = [(f"{surf[j]} ({self.item_titles[hist[j]]})", self.knowledge[hist[j]])
                    for j in range(len(hist) - 1, max(len(hist) - 1 - cfg.knowledge_items, -1), -1)]
        return KnowledgeTree(self.prompt.render(surf, name), children)

    def encode_batch(self, sequences: Sequences) -> dict[str, Tensor]:
        """Tokenised knowledge trees of ``sequences``: ``input_ids``, ``padding_mask`` ``[B, T]``
        and the ``[B, T, T]`` ``attention_mask`` (tree mask, or padding only when
        ``use_tree_mask=False``)."""
        cfg = self.config
        users = sequences.users.tolist()
        trees = [self.tree_tokens(s.tolist(), u) for s, u in zip(sequences.to_list(), users)]
        batch: TreeBatch = collate_trees(trees, self.pad_id)
        self.last_dropped_prompts = batch.dropped
        if cfg.use_tree_mask:
            mask = batch.attention_mask(cfg.root_sees, cfg.knowledge_sees_root,
                                        cfg.sibling_prompts)
        else:
            seg = batch.segment_ids.clamp(max=0)  # every real token is "root": full attention
            mask = tree_attention_mask(seg, batch.item_ids)
        return {"input_ids": batch.input_ids, "padding_mask": batch.padding_mask,
                "attention_mask": mask}

    # ------------------------------------------------------------------ network
    def encode(self, batch: dict[str, Tensor]) -> Tensor:
        """Encoder states ``[B, T, D]`` under the tree mask."""
        bias = additive_attention_mask(batch["attention_mask"], self.t5.dtype)
        return self.t5.encoder(input_ids=batch["input_ids"], attention_mask=bias).last_hidden_state

    def _decode(self, enc: Tensor, padding_mask: Tensor, decoder_input_ids: Tensor) -> Tensor:
        from transformers.modeling_outputs import BaseModelOutput

        out = self.t5(encoder_outputs=BaseModelOutput(last_hidden_state=enc),
                      attention_mask=padding_mask.long(), decoder_input_ids=decoder_input_ids)
        return out.logits

    def _first_step_logits(self, batch: dict[str, Tensor]) -> Tensor:
        enc = self.encode(batch)
        start = torch.full((enc.size(0), 1), int(self.t5.config.decoder_start_token_id),
                           dtype=torch.long, device=enc.device)
        return self._decode(enc, batch["padding_mask"], start)[:, 0]

    def _item_log_probs(self, logits: Tensor) -> Tensor:
        if self.config.item_softmax == "vocab":
            return F.log_softmax(logits.float(), -1)[:, self.item_token_ids]
        return F.log_softmax(logits[:, self.item_token_ids].float(), -1)

    def _title_labels(self, targets: Tensor) -> Tensor:
        seqs = [self._targets[int(t)] for t in targets.tolist()]
        L = max(len(s) for s in seqs)
        labels = torch.full((len(seqs), L), -100, dtype=torch.long)
        for b, s in enumerate(seqs):
            labels[b, :len(s)] = torch.tensor(s)
        return labels

    # ------------------------------------------------------------------ training
    def training_batch(self, sequences: Sequences, generator: torch.Generator) -> dict[str, Tensor]:
        """Trees of a prefix of each window and the item that follows it (``train_target``)."""
        lengths = sequences.lengths
        if (lengths < 2).any():
            raise ValueError("every training window needs at least 2 items")
        if self.config.train_target == "random":
            cut = 1 + (torch.rand(len(lengths), generator=generator) * (lengths - 1)).long()
            cut = torch.minimum(cut, lengths - 1)
        else:
            cut = lengths - 1
        targets = sequences.item_at(cut)
        batch = self.encode_batch(sequences.truncate(cut))
        batch["targets"] = targets
        if self.config.target == "title":
            batch["labels"] = self._title_labels(targets)
        return batch

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.config.target == "title":
            from transformers.modeling_outputs import BaseModelOutput

            enc = self.encode(batch)
            out = self.t5(encoder_outputs=BaseModelOutput(last_hidden_state=enc),
                          attention_mask=batch["padding_mask"].long(), labels=batch["labels"])
            return {"loss": out.loss, "rec_loss": out.loss.detach()}
        logits = self._first_step_logits(batch)
        if self.config.item_softmax == "vocab":
            loss = F.cross_entropy(logits.float(), self.item_token_ids[batch["targets"]])
        else:
            loss = F.cross_entropy(logits[:, self.item_token_ids].float(), batch["targets"])
        return {"loss": loss, "rec_loss": loss.detach()}

    # ------------------------------------------------------------------ inference
    def _to_device(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        dev = self.item_token_ids.device
        return {k: v.to(dev) for k, v in batch.items()}

    def score(self, sequences: Sequences) -> Tensor:
        """Log-likelihood of every catalogue item as the next item, ``[B, N]``."""
        batch = self._to_device(self.encode_batch(sequences))
        if self.config.target == "token":
            return self._item_log_probs(self._first_step_logits(batch))
        return self._title_scores(batch)

    def _title_scores(self, batch: dict[str, Tensor]) -> Tensor:
        enc = self.encode(batch)
        B, dev = enc.size(0), enc.device
        out = torch.empty(B, self.num_items, device=dev)
        start = int(self.t5.config.decoder_start_token_id)
        for lo in range(0, self.num_items, self.config.score_chunk):
            items = torch.arange(lo, min(lo + self.config.score_chunk, self.num_items))
            labels = self._title_labels(items).to(dev)              # [C, L]
            C, L = labels.shape
            dec_in = torch.cat([torch.full((C, 1), start, device=dev, dtype=torch.long),
                                labels[:, :-1].clamp(min=0)], 1)
            e = enc[:, None].expand(B, C, *enc.shape[1:]).reshape(B * C, *enc.shape[1:])
            pm = batch["padding_mask"][:, None].expand(B, C, -1).reshape(B * C, -1)
            logp = F.log_softmax(self._decode(e, pm, dec_in.repeat(B, 1)).float(), -1)
            lab = labels.repeat(B, 1)
            tok = logp.gather(-1, lab.clamp(min=0)[..., None])[..., 0] * (lab >= 0)
            out[:, lo:lo + C] = tok.sum(-1).view(B, C)
        return out

    def _item_sequences(self) -> list[list[int]]:
        if self.config.target == "title":
            return self._targets
        return [[int(t), self.eos_id] for t in self.item_token_ids.tolist()]

    @torch.no_grad()
    def generate_items(self, sequences: Sequences | list[list[int]], k: int = 10,
                       num_beams: int | None = None) -> Tensor:
        """Constrained beam search: top-``k`` generated items ``[B, k]`` (``-1`` where fewer
        than ``k`` valid sequences were found). Only prefixes of valid item token sequences can
        be generated (``prefix_allowed_tokens_fn`` over a trie)."""
        from transformers.modeling_outputs import BaseModelOutput

        if not isinstance(sequences, Sequences):
            sequences = Sequences.from_lists(sequences, self.num_items)
        num_beams = max(num_beams or k, k)
        seqs = self._item_sequences()
        trie: dict[tuple[int, ...], set[int]] = {}
        lookup: dict[tuple[int, ...], int] = {}
        for i, s in enumerate(seqs):
            for t in range(len(s)):
                trie.setdefault(tuple(s[:t]), set()).add(s[t])
            lookup.setdefault(tuple(s), i)
        allowed = {p: sorted(v) for p, v in trie.items()}
        pad = [self.pad_id]

        def prefix_fn(_: int, ids: Tensor) -> list[int]:
            return allowed.get(tuple(ids[1:].tolist()), pad)

        was = self.training
        self.eval()
        batch = self._to_device(self.encode_batch(sequences))
        enc = self.encode(batch)
        out = self.t5.generate(encoder_outputs=BaseModelOutput(last_hidden_state=enc),
                               attention_mask=batch["padding_mask"].long(), num_beams=num_beams,
                               num_return_sequences=k, do_sample=False,
                               max_new_tokens=max(len(s) for s in seqs),
                               prefix_allowed_tokens_fn=prefix_fn)
        self.train(was)
        res = torch.full((len(sequences), k), -1, dtype=torch.long)
        for r, row in enumerate(out.tolist()):
            toks = [t for t in row[1:] if t != self.pad_id]
            res[r // k, r % k] = lookup.get(tuple(toks), -1)
        return res

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Config JSON + safetensors (tied T5 embeddings de-duplicated by the base class) and,
        with a pretrained tokenizer, the tokenizer in ``tokenizer/``."""
        directory = super().save_pretrained(directory)
        if self.config.pretrained:
            self.tokenizer.save_pretrained(str(directory / TOKENIZER_DIR))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, data: Any = None,
                        map_location: str | torch.device = "cpu",
                        check_graph: bool = True) -> KP4SR:
        """Rebuild a model saved by :meth:`save_pretrained` (``data``: the same graph; checked
        against the saved fingerprint unless ``check_graph=False``)."""
        from safetensors.torch import load_model

        tf = _require_transformers()
        directory = Path(directory)
        meta = json.loads((directory / CONFIG_NAME).read_text())
        if meta.get("model") != cls.model_name:
            return SequentialRecommender.from_pretrained(directory, data, map_location,
                                                         check_graph)
        config = cls.config_class(**meta["config"])
        tok = None
        if (directory / TOKENIZER_DIR).is_dir():
            tok = tf.AutoTokenizer.from_pretrained(str(directory / TOKENIZER_DIR))
        model = cls(config, data=data, tokenizer=tok, load_pretrained_weights=False)
        if check_graph:
            check_saved_graph(directory, meta, model)
        load_model(model, str(directory / WEIGHTS_NAME), strict=True, device=str(map_location))
        return model.to(map_location)
