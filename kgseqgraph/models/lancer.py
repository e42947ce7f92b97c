r"""LANCER (Li et al., *Large Language Models Make Knowledge-aware Sequential Recommenders*): a
causal language model that reads a user's history as text, steered by a **knowledge prompt**
(prefix keys/values learned from domain text) and a **reasoning prompt** (history items attending
over their knowledge), and predicts the next item's title.

Input of one user with history :math:`i_1 \dots i_T` and next item :math:`i_{T+1}`:

.. code-block:: text

    [P knowledge tokens] r_1 … r_T history : title(i_1) ; … title(i_T) ; next : title(i_T+1) [eos]
     KnowledgePrompt       ReasoningPrompt                                         LM targets
     (keys/values of       (input embeddings)
      every layer)

Training minimises

.. math::
    \mathcal{L} = \lambda_{\mathrm{LM}}\, \mathcal{L}_{\mathrm{LM}}
        + \lambda_{\mathrm{rec}}\, \mathcal{L}_{\mathrm{rec}}, \qquad
    \mathcal{L}_{\mathrm{LM}} = -\tfrac{1}{|y|}\textstyle\sum_j \log p_\theta(y_j \mid
        \text{prompt}, y_{<j}), \qquad
    \mathcal{L}_{\mathrm{rec}} = -\log \frac{\exp(s_{b,i_{T+1}})}{\sum_{i < N} \exp(s_{b,i})},

where :math:`y` are the tokens of the next item's title (and end-of-text) and :math:`s` the
cheap scores below. The item of each training window that serves as target is its last one
(``cut="last"``) or a uniformly drawn position :math:`\ge 2` (``cut="random"``, the default: every
interaction becomes a target over the epochs).

Three ways to turn the model into catalogue scores ``[B, N]`` (``score_mode``; :meth:`LANCER.score`
uses the configured one, ``"embedding"`` by default):

* ``"embedding"`` (cheap, the default) — the final hidden state at the last prompt token
  :math:`\mathbf{h}_b`, projected, against item representations :math:`\mathbf{t}_i` (the item's
  title token embeddings max-pooled, plus an item-ID embedding):
  :math:`s_{b,i} = \cos(\mathbf{W}_u \mathbf{h}_b, \mathbf{W}_t \mathbf{t}_i) / \tau`.
  One LM pass per user; this is the head :math:`\mathcal{L}_{\mathrm{rec}}` trains.
* ``"likelihood"`` — the LM log-likelihood of every item's title given the prompt,
  :math:`s_{b,i} = \sum_j \log p_\theta(y^{(i)}_j \mid \text{prompt}_b, y^{(i)}_{<j})` (mean over
  tokens with ``length_normalize=True``). The prompt's keys/values are computed once per user;
  items are scored ``score_chunk_items`` at a time as one packed query block whose 4-D mask lets
  every title attend to the cached prompt and causally to its own tokens only. Cost:
  :math:`O(B \cdot N \cdot |y|)` token positions — about a thousand times the cheap mode.
* ``"generate"`` — greedy decoding of a title, mapped back to the catalogue by cosine similarity
  of max-pooled token embeddings (:func:`max_pooled_embeddings`,
  :meth:`LANCER.match_texts`).

Backbone: a GPT-2 built from a config (``backbone_config``; by default a small one of width
``hidden_size`` over a word-level tokenizer built from the catalogue's text), or any causal LM
loaded with ``AutoModelForCausalLM.from_pretrained(pretrained, gguf_file=…)`` — the knowledge
prefix goes through ``transformers.DynamicCache``, which GPT-2 and Llama-architecture models
(e.g. SmolLM2) accept alike, grouped-query attention included.
"""
from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.batching import pad_sequences, padding_id
from ..data.sequences import Sequences
from ..nn.encoders.base import left_align
from ..prompts.lancer import KnowledgePrompt, ReasoningPrompt, extend_attention_mask, prefix_cache
from .base import SequentialRecommender, register_model

__all__ = ["LANCERConfig", "LANCER", "build_word_tokenizer", "max_pooled_embeddings",
           "knowledge_texts"]

log = logging.getLogger("kgseqgraph")

IGNORE = -100
_SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
_TEMPLATE_WORDS = ["history", ":", ";", "next"]


@dataclass
class LANCERConfig:
    """Configuration of :class:`LANCER` (JSON round-trips through ``save_pretrained``).

    Args:
        num_items: catalogue size :math:`N`.
        max_len: most recent history items in the prompt.
        hidden_size / num_layers / num_heads: the default GPT-2 backbone (``backbone_config`` and
            ``pretrained`` unset).
        backbone_config: a Hugging Face config dict (``model_type`` key, ``"gpt2"`` assumed);
            ``vocab_size`` is set to the tokenizer's.
        pretrained: path or name for ``AutoModelForCausalLM.from_pretrained`` (overrides the two
            above); ``gguf_file``: a GGUF file inside it.
        tokenizer: ``"word"`` (word-level, built from the graph's item text, deterministic),
            ``"pretrained"`` (the tokenizer of ``pretrained``) or a tokenizer path/name.
        attn_implementation: ``"eager"``, ``"sdpa"`` or ``None`` (the library default).
        title_field / knowledge_field: ``data['item']`` attributes holding the title (target and
            history text; falls back to ``text``) and the domain-knowledge text.
        max_title_tokens / max_knowledge_tokens: truncation of the two texts.
        use_knowledge_prompt / num_knowledge_tokens / knowledge_hidden: the prefix (:math:`P`, MLP
            width).
        pretrain_knowledge_epochs: epochs of LM pre-training of the knowledge prompt on the
            knowledge texts, run when a training run starts (:meth:`LANCER.pretrain_knowledge`).
        pretrain_lr / pretrain_batch_size: its optimiser settings.
        pretrain_freeze_backbone: train only the prefix during pre-training (else the LM too).
        freeze_knowledge_prompt: keep the prefix fixed after pre-training.
        use_reasoning_prompt: prepend the reasoning prompts.
        reasoning_knowledge: ``"kg"`` (each history item attends over its own knowledge: its text
            and up to ``kg_max_neighbors`` KG neighbours with their relations) or ``"items"`` (one
            bank: the knowledge-text embeddings of the whole catalogue).
        reasoning_heads: attention heads of the reasoning prompt.
        use_id_embeddings: add an item-ID embedding to the item representations.
        freeze_backbone: keep the LM weights fixed during recommendation training.
        lm_weight / rec_weight: :math:`\\lambda_{\\mathrm{LM}}`, :math:`\\lambda_{\\mathrm{rec}}`.
        temperature: :math:`\\tau` of the cosine scores.
        score_mode: ``"embedding"``, ``"likelihood"`` or ``"generate"`` (see the module doc).
        length_normalize: mean instead of sum of token log-probabilities (likelihood mode).
        score_chunk_items: items per packed block in likelihood mode.
        cut: ``"random"`` or ``"last"`` (which item of a training window is the target).
        seed: seeds the weight initialisation and the KG neighbour sampling.
    """

    num_items: int
    max_len: int = 20
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    backbone_config: dict[str, Any] | None = None
    pretrained: str | None = None
    gguf_file: str | None = None
    tokenizer: str = "word"
    attn_implementation: str | None = None
    title_field: str = "title"
    knowledge_field: str = "text"
    max_title_tokens: int = 12
    max_knowledge_tokens: int = 32
    use_knowledge_prompt: bool = True
    num_knowledge_tokens: int = 10
    knowledge_hidden: int = 128
    pretrain_knowledge_epochs: int = 0
    pretrain_lr: float = 1e-3
    pretrain_batch_size: int = 64
    pretrain_freeze_backbone: bool = True
    freeze_knowledge_prompt: bool = False
    use_reasoning_prompt: bool = True
    reasoning_knowledge: str = "kg"
    kg_max_neighbors: int = 16
    reasoning_heads: int = 1
    use_id_embeddings: bool = True
    freeze_backbone: bool = False
    lm_weight: float = 1.0
    rec_weight: float = 1.0
    temperature: float = 0.05
    score_mode: str = "embedding"
    length_normalize: bool = False
    score_chunk_items: int = 64
    cut: str = "random"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_items <= 0 or self.max_len < 1:
            raise ValueError("num_items must be positive and max_len >= 1")
        choices = {"score_mode": ("embedding", "likelihood", "generate"),
                   "reasoning_knowledge": ("kg", "items"), "cut": ("random", "last")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.pretrained is None and self.tokenizer == "pretrained":
            raise ValueError("tokenizer='pretrained' needs a pretrained backbone path")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0")
        if self.lm_weight < 0 or self.rec_weight < 0 or self.lm_weight + self.rec_weight == 0:
            raise ValueError("lm_weight and rec_weight must be >= 0 and not both 0")


# ---------------------------------------------------------------------------------- helpers
def build_word_tokenizer(texts: Sequence[str], extra_words: Sequence[str] = ()) -> Any:
    """A deterministic word-level ``PreTrainedTokenizerFast`` over ``texts`` (lower-cased words and
    punctuation, ``tokenizers`` ``Whitespace`` pre-tokenizer), with ``[PAD] [UNK] [BOS] [EOS]`` at
    ids 0–3 and ``extra_words`` next; the rest sorted, so the same texts give the same ids."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    norm = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    pre = pre_tokenizers.Whitespace()
    words: set[str] = set()
    for t in texts:
        words.update(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(str(t))))
    vocab: dict[str, int] = {}
    for w in [*_SPECIALS, *extra_words, *sorted(words)]:
        vocab.setdefault(w, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tk.normalizer = norm
    tk.pre_tokenizer = pre
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]",
                                   bos_token="[BOS]", eos_token="[EOS]")


def max_pooled_embeddings(ids: Tensor, mask: Tensor, table: Tensor) -> Tensor:
    r"""Element-wise max over the real tokens' embeddings,
    :math:`\mathbf{e} = \max_{j:\,m_j=1} \mathbf{E}[w_j]` (``[..., T]`` ids → ``[..., D]``);
    rows without a real token give zeros."""
    emb = F.embedding(ids, table).masked_fill(~mask.unsqueeze(-1), float("-inf"))
    out = emb.amax(dim=-2)
    return torch.where(mask.any(-1, keepdim=True), out, torch.zeros_like(out))


def knowledge_texts(data: Any, field: str = "text") -> list[str]:
    """Domain-knowledge sentences of a graph: one per item (``data['item'].<field>``), then one per
    item→item KG triple, verbalised ``"<title> <relation words> <title>."`` (e.g.
    ``"die hard 2 film film prequel die hard."``); item→entity triples are left out because
    entities have no names in the graph."""
    texts = list(_item_field(data, field))
    titles = list(_item_field(data, "title"))
    names = getattr(data, "relation_names", {}) or {}
    for (src, rel, dst) in data.edge_types:
        if src != "item" or dst != "item" or rel.startswith("rev_") or rel.endswith("interacts"):
            continue
        words = names.get(rel, rel).replace(".", " ").replace("_", " ")
        h, t = data[src, rel, dst].edge_index
        texts.extend(f"{titles[a]} {words} {titles[b]}." for a, b in zip(h.tolist(), t.tolist()))
    return texts


def _item_field(data: Any, field: str) -> list[str]:
    store = data["item"]
    for name in (field, "text"):
        if name in store and isinstance(store[name], (list, tuple)):
            return [str(x) for x in store[name]]
    raise ValueError(f"LANCER needs item text: data['item'].{field} (or .text) as a list of str")


def _kg_neighbors(data: Any, num_items: int, k: int, seed: int) -> tuple[Tensor, Tensor, int, int]:
    """Up to ``k`` KG neighbours per item (a seeded random choice among all item-headed KG edges):
    ``(node [N, k], relation [N, k], num_entities, num_relations)``; node ids are items
    ``0 … N-1`` and entities ``N + e`` (compacted), ``-1`` where there is none."""
    heads, rels, tails = [], [], []
    rel_ids: dict[str, int] = {}
    for (src, rel, dst) in sorted(data.edge_types):
        if src != "item" or dst not in ("item", "entity") or rel.endswith("interacts"):
            continue
        h, t = data[src, rel, dst].edge_index
        r = rel_ids.setdefault(rel, len(rel_ids))
        heads.append(h)
        rels.append(torch.full_like(h, r))
        tails.append(t + (num_items if dst == "entity" else 0))
    if not heads or k <= 0:
        empty = torch.full((num_items, max(k, 1)), -1, dtype=torch.long)
        return empty, empty.clone(), 0, 0
    h, r, t = torch.cat(heads), torch.cat(rels), torch.cat(tails)
    g = torch.Generator().manual_seed(seed)
    key = torch.rand(h.numel(), generator=g)
    order = torch.argsort(key)
    order = order[torch.argsort(h[order], stable=True)]  # by item, random within an item
    h, r, t = h[order], r[order], t[order]
    counts = torch.bincount(h, minlength=num_items)
    start = torch.cumsum(counts, 0) - counts
    rank = torch.arange(h.numel()) - start[h]
    keep = rank < k
    h, r, t, rank = h[keep], r[keep], t[keep], rank[keep]
    ent = t >= num_items
    uniq, inv = torch.unique(t[ent], return_inverse=True)
    t = t.clone()
    t[ent] = num_items + inv
    node = torch.full((num_items, k), -1, dtype=torch.long)
    rel = torch.full((num_items, k), -1, dtype=torch.long)
    node[h, rank] = t
    rel[h, rank] = r
    return node, rel, int(uniq.numel()), len(rel_ids)


def _token_table(tokenizer: Any, texts: Sequence[str], max_tokens: int, prefix: str = "",
                 suffix_ids: Sequence[int] = ()) -> tuple[Tensor, Tensor]:
    """Token ids of each text (truncated to ``max_tokens``) followed by ``suffix_ids``, as a
    right-padded ``[M, T]`` table (pad 0) and lengths ``[M]``."""
    enc = tokenizer([prefix + t for t in texts], add_special_tokens=False)["input_ids"]
    rows = [list(ids[:max_tokens]) + list(suffix_ids) for ids in enc]
    width = max(1, max(len(r) for r in rows))
    table = torch.zeros(len(rows), width, dtype=torch.long)
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    for i, r in enumerate(rows):
        table[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return table, lengths


def _real(lengths: Tensor, width: int) -> Tensor:
    return torch.arange(width, device=lengths.device) < lengths.unsqueeze(-1)


# ---------------------------------------------------------------------------------- model
@register_model("lancer")
class LANCER(SequentialRecommender):
    """LANCER over a catalogue with item text (see the module docstring).

    Build with ``LANCER(LANCERConfig(num_items=N, ...), data=graph)`` or
    ``build_model("lancer", graph, ...)``; the graph provides item titles, knowledge text and
    the KG (it is needed again by ``from_pretrained(dir, data=graph)``).
    """

    config_class = LANCERConfig
    needs_graph = True

    def __init__(self, config: LANCERConfig, data: Any = None) -> None:
        super().__init__(config, data)
        if data is None:
            raise ValueError("LANCER needs the graph with item text: pass data=<HeteroData>")
        n_graph = int(data["item"].num_nodes)
        if n_graph != config.num_items:
            raise ValueError(f"graph has {n_graph} items, config {config.num_items}")
        N = config.num_items
        titles = _item_field(data, config.title_field)
        know = _item_field(data, config.knowledge_field)
        self.titles = titles
        self._pretrain_texts = knowledge_texts(data, config.knowledge_field)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.tokenizer = self._build_tokenizer(config, data)
            self.lm = self._build_lm(config, self.tokenizer)
            self._setup_text(titles, know)
            self._build_modules(config, data)
        if config.freeze_backbone:
            self.lm.requires_grad_(False)

    # ------------------------------------------------------------------ construction
    @staticmethod
    def _build_tokenizer(config: LANCERConfig, data: Any) -> Any:
        if config.tokenizer == "word":
            texts = (_item_field(data, config.title_field)
                     + knowledge_texts(data, config.knowledge_field))
            return build_word_tokenizer(texts, _TEMPLATE_WORDS)
        from transformers import AutoTokenizer

        path = config.pretrained if config.tokenizer == "pretrained" else config.tokenizer
        same = config.gguf_file and path == config.pretrained
        kw = {"gguf_file": config.gguf_file} if same else {}
        tok = AutoTokenizer.from_pretrained(path, **kw)
        if tok.eos_token_id is None:
            raise ValueError(f"tokenizer {path!r} has no end-of-text token")
        return tok

    @staticmethod
    def _build_lm(config: LANCERConfig, tokenizer: Any) -> nn.Module:
        import transformers as tf

        vocab_size = len(tokenizer)
        kw: dict[str, Any] = {}
        if config.attn_implementation is not None:
            kw["attn_implementation"] = config.attn_implementation
        if config.pretrained is not None:
            if config.gguf_file:
                kw["gguf_file"] = config.gguf_file
            lm = tf.AutoModelForCausalLM.from_pretrained(config.pretrained, **kw)
            lm_vocab = lm.get_input_embeddings().weight.size(0)
            if lm_vocab < vocab_size:
                raise ValueError(f"backbone {config.pretrained!r} has {lm_vocab} token embeddings "
                                 f"but the tokenizer has {vocab_size} tokens")
        else:
            d = dict(config.backbone_config or {
                "model_type": "gpt2", "n_embd": config.hidden_size, "n_layer": config.num_layers,
                "n_head": config.num_heads, "n_positions": 1024})
            model_type = d.pop("model_type", "gpt2")
            eos = tokenizer.eos_token_id
            d.update(vocab_size=vocab_size, eos_token_id=eos,
                     bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None
                     else eos,
                     pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                     else eos)
            bc = tf.AutoConfig.for_model(model_type, **d)
            lm = tf.AutoModelForCausalLM.from_config(bc, **kw)
        if getattr(lm.config, "is_encoder_decoder", False):
            raise ValueError("LANCER needs a decoder-only (causal) language model")
        return lm

    def _setup_text(self, titles: list[str], know: list[str]) -> None:
        tok = self.tokenizer
        word = self.config.tokenizer == "word"
        space = "" if word else " "
        enc = lambda s: list(tok(s, add_special_tokens=False)["input_ids"])  # noqa: E731
        self.eos_id = int(tok.eos_token_id)
        self.bos_id = int(tok.bos_token_id) if tok.bos_token_id is not None else self.eos_id
        sep = enc(";")
        cfg = self.config
        seg, seg_len = _token_table(tok, titles, cfg.max_title_tokens, space, sep)
        tgt, tgt_len = _token_table(tok, titles, cfg.max_title_tokens, space, [self.eos_id])
        ttl, ttl_len = _token_table(tok, titles, cfg.max_title_tokens, space)
        kn, kn_len = _token_table(tok, know, cfg.max_knowledge_tokens, space)
        for name, t in (("seg_tokens", seg), ("seg_len", seg_len), ("target_tokens", tgt),
                        ("target_len", tgt_len), ("title_tokens", ttl), ("title_len", ttl_len),
                        ("know_tokens", kn), ("know_len", kn_len),
                        ("head_ids", torch.tensor(enc("history:"), dtype=torch.long)),
                        ("tail_ids", torch.tensor(enc(space + "next:"), dtype=torch.long))):
            self.register_buffer(name, t, persistent=False)

    def _build_modules(self, config: LANCERConfig, data: Any) -> None:
        lmc = self.lm.config.get_text_config()
        d = int(lmc.hidden_size)
        heads = int(lmc.num_attention_heads)
        kv_heads = int(getattr(lmc, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(lmc, "head_dim", None) or d // heads)
        self.hidden = d
        self.max_positions = getattr(lmc, "n_positions", None) or getattr(
            lmc, "max_position_embeddings", None)
        base = self.lm.base_model
        self._cache_kw = ("cache" if "cache" in inspect.signature(base.forward).parameters
                          else "past_key_values")
        N = config.num_items
        self.knowledge = (KnowledgePrompt(int(lmc.num_hidden_layers), kv_heads, head_dim,
                                          config.num_knowledge_tokens, d, config.knowledge_hidden)
                          if config.use_knowledge_prompt else None)
        self.item_id = nn.Embedding(N, d) if config.use_id_embeddings else None
        if self.item_id is not None:
            nn.init.normal_(self.item_id.weight, std=0.02)
        self.reasoning = None
        if config.use_reasoning_prompt:
            self.reasoning = ReasoningPrompt(d, d, d, num_heads=config.reasoning_heads)
            if config.reasoning_knowledge == "kg":
                node, rel, n_ent, n_rel = _kg_neighbors(data, N, config.kg_max_neighbors,
                                                        config.seed)
                self.register_buffer("kg_node", node, persistent=False)
                self.register_buffer("kg_rel", rel, persistent=False)
                self.entity = nn.Embedding(max(n_ent, 1), d)
                self.relation = nn.Embedding(max(n_rel, 1), d)
                nn.init.normal_(self.entity.weight, std=0.02)
                nn.init.normal_(self.relation.weight, std=0.02)
        self.user_proj = nn.Linear(d, d)
        self.item_proj = nn.Linear(d, d)
        if self.knowledge is not None:
            with torch.no_grad():
                pooled = self.knowledge_embeddings()
                idx = torch.randperm(N)[: config.num_knowledge_tokens]
                if idx.numel() == config.num_knowledge_tokens:
                    self.knowledge.init_tokens_(pooled[idx])

    # ------------------------------------------------------------------ embeddings
    @property
    def token_table(self) -> Tensor:
        return self.lm.get_input_embeddings().weight

    def title_embeddings(self) -> Tensor:
        """``[N, D]``: each title's token embeddings max-pooled."""
        return max_pooled_embeddings(self.title_tokens, _real(self.title_len,
                                                              self.title_tokens.size(1)),
                                     self.token_table)

    def knowledge_embeddings(self) -> Tensor:
        """``[N, D]``: each item's knowledge text, token embeddings max-pooled."""
        return max_pooled_embeddings(self.know_tokens, _real(self.know_len,
                                                             self.know_tokens.size(1)),
                                     self.token_table)

    def item_embeddings(self, titles: Tensor | None = None) -> Tensor:
        """``[N, D]`` item embeddings: pooled title (+ ID embedding)."""
        t = self.title_embeddings() if titles is None else titles
        return t + self.item_id.weight if self.item_id is not None else t

    def item_representations(self) -> Tensor:
        """``[N, D]`` unit-norm item side of the cosine scores,
        :math:`\\mathbf{W}_t \\mathbf{t}_i`."""
        return F.normalize(self.item_proj(self.item_embeddings()), dim=-1)

    def reasoning_prompts(self, items: Tensor, mask: Tensor,
                          item_emb: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(prompts [B, T, D], attention [B, heads, T, K])`` for a padded history."""
        if self.reasoning is None:
            raise ValueError("this model has no reasoning prompt (use_reasoning_prompt=False)")
        N = self.num_items
        safe = torch.where(mask, items, torch.zeros_like(items))
        emb = self.item_embeddings() if item_emb is None else item_emb
        hist = emb[safe]
        know = self.knowledge_embeddings()
        if self.config.reasoning_knowledge == "items":
            return self.reasoning(hist, mask, know)
        node, rel = self.kg_node[safe], self.kg_rel[safe]          # [B, T, k]
        valid = node >= 0
        is_item = valid & (node < N)
        item_part = emb[torch.where(is_item, node, torch.zeros_like(node))]
        ent_idx = torch.where(valid & ~is_item, node - N, torch.zeros_like(node))
        ent_part = self.entity(ent_idx)
        z = torch.where(is_item.unsqueeze(-1), item_part, ent_part)
        z = z + self.relation(rel.clamp(min=0))
        z = torch.cat([know[safe].unsqueeze(2), z], dim=2)       # own text first
        km = torch.cat([torch.ones_like(valid[..., :1]), valid], dim=2)
        return self.reasoning(hist, mask, z, km)

    # ------------------------------------------------------------------ LM plumbing
    def _prefix_len(self) -> int:
        return self.knowledge.num_tokens if self.knowledge is not None else 0

    def _run(self, embeds: Tensor, mask: Tensor, positions: Tensor, cache: Any = None,
             attention_mask: Tensor | None = None) -> Tensor:
        """Backbone hidden states; ``cache`` defaults to a fresh knowledge-prefix cache."""
        B = embeds.size(0)
        if cache is None and self.knowledge is not None:
            cache = self.knowledge.as_cache(B)
        if attention_mask is None:
            attention_mask = extend_attention_mask(mask.long(), self._prefix_len())
        if self.max_positions is not None and int(positions.max()) >= int(self.max_positions):
            raise ValueError(f"prompt of {int(positions.max()) + 1} tokens exceeds the backbone's "
                             f"{self.max_positions} positions: lower max_len/max_title_tokens")
        kw = {self._cache_kw: cache} if cache is not None else {}
        out = self.lm.base_model(inputs_embeds=embeds, attention_mask=attention_mask,
                                 position_ids=positions, use_cache=False, return_dict=True, **kw)
        return out.last_hidden_state

    def _assemble(self, items: Tensor, mask: Tensor, targets: Tensor | None = None,
                  item_emb: Tensor | None = None) -> dict[str, Tensor]:
        """Right-padded input embeddings of ``[reasoning prompts] history: … next: [target]``.

        Returns ``embeds [B, S, D]``, ``mask``, ``labels`` (next-token targets already shifted:
        ``labels[:, j]`` is the token position ``j`` must predict), ``end`` (index of the last
        prompt token), ``positions``.
        """
        B, L = items.shape
        dev = items.device
        safe = torch.where(mask, items, torch.zeros_like(items))
        seg = self.seg_tokens[safe]                                     # [B, L, S]
        seg_real = _real(self.seg_len[safe], seg.size(-1)) & mask.unsqueeze(-1)
        head = self.head_ids.to(dev).unsqueeze(0).expand(B, -1)
        tail = self.tail_ids.to(dev).unsqueeze(0).expand(B, -1)
        ids = [head, seg.reshape(B, -1), tail]
        real = [torch.ones_like(head, dtype=torch.bool), seg_real.reshape(B, -1),
                torch.ones_like(tail, dtype=torch.bool)]
        is_end = [torch.zeros_like(real[0]), torch.zeros_like(real[1]),
                  torch.zeros_like(real[2])]
        is_end[2][:, -1] = True
        labels = [torch.full_like(x, IGNORE) for x in ids]
        if targets is not None:
            tgt = self.target_tokens[targets]
            tgt_real = _real(self.target_len[targets], tgt.size(1))
            ids.append(tgt)
            real.append(tgt_real)
            is_end.append(torch.zeros_like(tgt_real))
            labels.append(tgt.masked_fill(~tgt_real, IGNORE))
        ids_t = torch.cat(ids, 1)
        embeds = F.embedding(ids_t, self.token_table)
        real_t, end_t, lab_t = torch.cat(real, 1), torch.cat(is_end, 1), torch.cat(labels, 1)
        if self.reasoning is not None:
            prompts, _ = self.reasoning_prompts(items, mask, item_emb)
            embeds = torch.cat([prompts.to(embeds.dtype), embeds], 1)
            real_t = torch.cat([mask, real_t], 1)
            end_t = torch.cat([torch.zeros_like(mask), end_t], 1)
            lab_t = torch.cat([torch.full_like(items, IGNORE), lab_t], 1)
        perm = left_align(real_t)
        width = int(real_t.sum(1).max())
        perm = perm[:, :width]
        embeds = embeds.gather(1, perm.unsqueeze(-1).expand(-1, -1, embeds.size(-1)))
        real_t, end_t, lab_t = real_t.gather(1, perm), end_t.gather(1, perm), lab_t.gather(1, perm)
        shifted = torch.cat([lab_t[:, 1:], torch.full_like(lab_t[:, :1], IGNORE)], 1)
        positions = torch.arange(width, device=dev).unsqueeze(0).expand(B, -1)
        return {"embeds": embeds, "mask": real_t, "labels": shifted,
                "end": end_t.float().argmax(1), "positions": positions}

    def _batch(self, sequences: Sequences) -> tuple[Tensor, Tensor]:
        batch = pad_sequences(sequences, self.config.max_len, padding_id(self.num_items), "left")
        dev = self.token_table.device
        return batch.items.to(dev), batch.mask.to(dev)

    # ------------------------------------------------------------------ training
    def training_batch(self, sequences: Sequences, generator: torch.Generator) -> dict[str, Tensor]:
        lengths = sequences.lengths
        if (lengths < 2).any():
            raise ValueError("every training sequence needs >= 2 items (history and target)")
        if self.config.cut == "random":
            draw = torch.rand(lengths.numel(), generator=generator)
            cut = torch.minimum(1 + (draw * (lengths - 1)).long(), lengths - 1)
        else:
            cut = lengths - 1
        history = sequences.truncate(cut)
        batch = pad_sequences(history, self.config.max_len, padding_id(self.num_items), "left")
        return {"items": batch.items, "mask": batch.mask, "targets": sequences.item_at(cut)}

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        cfg = self.config
        items, mask, targets = batch["items"], batch["mask"], batch["targets"]
        titles = self.title_embeddings()
        item_emb = self.item_embeddings(titles)
        a = self._assemble(items, mask, targets if cfg.lm_weight > 0 else None, item_emb)
        hidden = self._run(a["embeds"], a["mask"], a["positions"])
        out: dict[str, Tensor] = {}
        total = hidden.new_zeros(())
        if cfg.lm_weight > 0:
            sel = a["labels"] != IGNORE
            logits = self.lm.get_output_embeddings()(hidden[sel])
            lm = F.cross_entropy(logits.float(), a["labels"][sel])
            total = total + cfg.lm_weight * lm
            out["lm_loss"] = lm.detach()
        if cfg.rec_weight > 0:
            u = self._user_vectors(hidden, a["end"])
            reps = F.normalize(self.item_proj(item_emb), dim=-1)
            rec = F.cross_entropy((u @ reps.t()).float() / cfg.temperature, targets)
            total = total + cfg.rec_weight * rec
            out["rec_loss"] = rec.detach()
        out["loss"] = total
        return out

    def _user_vectors(self, hidden: Tensor, end: Tensor) -> Tensor:
        h = hidden[torch.arange(hidden.size(0), device=hidden.device), end]
        return F.normalize(self.user_proj(h), dim=-1)

    def on_fit_start(self, seed: int) -> None:
        if self.config.pretrain_knowledge_epochs > 0 and self.knowledge is not None:
            self.pretrain_knowledge(seed=seed)
        if self.config.freeze_knowledge_prompt and self.knowledge is not None:
            self.knowledge.requires_grad_(False)

    def pretrain_knowledge(self, texts: Sequence[str] | None = None, epochs: int | None = None,
                           batch_size: int | None = None, lr: float | None = None,
                           seed: int = 0) -> list[float]:
        """LM pre-training of the knowledge prompt on domain text: minimise
        :math:`-\\sum_j \\log p(w_j \\mid \\text{prefix}, [\\mathrm{bos}], w_{<j})` over the
        knowledge sentences (:func:`knowledge_texts` of the graph given at construction, stored
        as ``self.pretrain_texts``; or ``texts``). Only the prefix is trained when
        ``pretrain_freeze_backbone`` (the paper's setting), else the LM too.

        Returns the mean loss of each epoch."""
        cfg = self.config
        if self.knowledge is None:
            raise ValueError("pretrain_knowledge needs use_knowledge_prompt=True")
        texts = list(texts if texts is not None else getattr(self, "pretrain_texts", []))
        if not texts:
            raise ValueError("no knowledge texts: pass texts=[...]")
        epochs = cfg.pretrain_knowledge_epochs if epochs is None else epochs
        bs = batch_size or cfg.pretrain_batch_size
        space = "" if cfg.tokenizer == "word" else " "
        table, lengths = _token_table(self.tokenizer, texts, cfg.max_knowledge_tokens, space,
                                      [self.eos_id])
        dev = self.token_table.device
        table = torch.cat([torch.full((len(texts), 1), self.bos_id), table], 1).to(dev)
        lengths = (lengths + 1).to(dev)
        params = list(self.knowledge.parameters())
        if not cfg.pretrain_freeze_backbone:
            params += [p for p in self.lm.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=lr or cfg.pretrain_lr)
        g = torch.Generator().manual_seed(seed)
        was_training = self.training
        self.train()
        frozen = [p for p in self.lm.parameters() if p.requires_grad] \
            if cfg.pretrain_freeze_backbone else []
        for p in frozen:
            p.requires_grad_(False)
        losses: list[float] = []
        try:
            for epoch in range(epochs):
                perm = torch.randperm(len(texts), generator=g)
                total, steps = 0.0, 0
                for s in range(0, len(texts), bs):
                    idx = perm[s:s + bs].to(dev)
                    ids, n = table[idx], lengths[idx]
                    width = int(n.max())
                    ids = ids[:, :width]
                    mask = _real(n, width)
                    pos = torch.arange(width, device=dev).unsqueeze(0).expand(ids.size(0), -1)
                    hidden = self._run(F.embedding(ids, self.token_table), mask, pos)
                    sel = mask[:, 1:]
                    logits = self.lm.get_output_embeddings()(hidden[:, :-1][sel])
                    loss = F.cross_entropy(logits.float(), ids[:, 1:][sel])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += float(loss.detach())
                    steps += 1
                losses.append(total / max(steps, 1))
                log.info("LANCER knowledge pre-training epoch %d: LM loss %.4f", epoch + 1,
                         losses[-1])
        finally:
            for p in frozen:
                p.requires_grad_(True)
            self.train(was_training)
        return losses

    # ------------------------------------------------------------------ inference
    def score(self, sequences: Sequences) -> Tensor:
        """``[B, N]`` scores in the configured ``score_mode`` (``"embedding"`` by default)."""
        mode = self.config.score_mode
        if mode == "embedding":
            return self.embedding_scores(sequences)
        if mode == "likelihood":
            return self.likelihood_scores(sequences)
        return self.generation_scores(sequences)

    def _prompt_states(self, sequences: Sequences, cache: Any = None) -> tuple[Tensor, dict]:
        items, mask = self._batch(sequences)
        a = self._assemble(items, mask)
        return self._run(a["embeds"], a["mask"], a["positions"], cache=cache), a

    def embedding_scores(self, sequences: Sequences) -> Tensor:
        """Cheap mode:
        :math:`\\cos(\\mathbf{W}_u \\mathbf{h}_b, \\mathbf{W}_t \\mathbf{t}_i)/\\tau`."""
        hidden, a = self._prompt_states(sequences)
        u = self._user_vectors(hidden, a["end"])
        return (u @ self.item_representations().t()) / self.config.temperature

    @torch.no_grad()
    def likelihood_scores(self, sequences: Sequences, chunk_items: int | None = None,
                          length_normalize: bool | None = None) -> Tensor:
        """``[B, N]`` title log-likelihoods given each prompt (see the module docstring)."""
        chunk = chunk_items or self.config.score_chunk_items
        norm = self.config.length_normalize if length_normalize is None else length_normalize
        B = len(sequences)
        P = self._prefix_len()
        cache = self.knowledge.as_cache(B) if self.knowledge is not None else prefix_cache([])
        hidden, a = self._prompt_states(sequences, cache=cache)
        kv = [(layer.keys, layer.values) for layer in cache.layers]
        n = a["mask"].sum(1)                                           # prompt lengths
        head = self.lm.get_output_embeddings()
        first = torch.log_softmax(head(hidden[torch.arange(B), a["end"]]).float(), -1)  # [B, V]
        ctx_mask = extend_attention_mask(a["mask"], P)                 # [B, P + Tp]
        dev, dtype = hidden.device, hidden.dtype
        neg = torch.finfo(dtype).min
        out = hidden.new_empty(B, self.num_items, dtype=torch.float32)
        for s in range(0, self.num_items, chunk):
            ids_all = torch.arange(s, min(s + chunk, self.num_items), device=dev)
            C = ids_all.numel()
            tok, tl = self.target_tokens[ids_all], self.target_len[ids_all]
            T = int(tl.max())
            tok = tok[:, :T]
            real = _real(tl, T)                                        # [C, T]
            q = F.embedding(tok.reshape(1, C * T), self.token_table).expand(B, -1, -1)
            pos = n.view(B, 1) + torch.arange(T, device=dev).repeat(C).view(1, -1)
            # 4-D additive mask: context keys by padding; item keys block-diagonal causal
            blk = torch.arange(C, device=dev).repeat_interleave(T)
            j = torch.arange(T, device=dev).repeat(C)
            own = (blk.view(-1, 1) == blk.view(1, -1)) & (j.view(1, -1) <= j.view(-1, 1)) \
                & real.reshape(1, -1)
            allowed = torch.cat([ctx_mask.bool().view(B, 1, -1).expand(-1, C * T, -1),
                                 own.unsqueeze(0).expand(B, -1, -1)], dim=2)
            mask4 = torch.zeros(allowed.shape, dtype=dtype, device=dev).masked_fill(~allowed, neg)
            h = self._run(q, None, pos, cache=prefix_cache(kv) if kv else None,
                          attention_mask=mask4.unsqueeze(1))
            logp = torch.log_softmax(head(h).float(), -1).view(B, C, T, -1)
            # token t of item c is predicted by position t-1 of its block (t = 0: the prompt end)
            lp_first = first[:, tok[:, 0]]                                       # [B, C]
            nxt = tok[:, 1:]
            lp_rest = logp[:, :, :-1].gather(-1, nxt.view(1, C, T - 1, 1).expand(B, -1, -1, 1))
            lp_rest = lp_rest.squeeze(-1) * real[:, 1:].unsqueeze(0)
            total = lp_first + lp_rest.sum(-1)
            out[:, s:s + C] = total / tl.view(1, -1) if norm else total
        return out

    @torch.no_grad()
    def generate_titles(self, sequences: Sequences, max_new_tokens: int | None = None) -> list[str]:
        """Greedy decoding of the next item's title for each sequence (stops at end-of-text)."""
        steps = max_new_tokens or self.config.max_title_tokens + 1
        B = len(sequences)
        cache = self.knowledge.as_cache(B) if self.knowledge is not None else prefix_cache([])
        hidden, a = self._prompt_states(sequences, cache=cache)
        kv_cache = cache
        mask = extend_attention_mask(a["mask"].long(), self._prefix_len())
        n = a["mask"].sum(1)
        head = self.lm.get_output_embeddings()
        logits = head(hidden[torch.arange(B), a["end"]])
        done = torch.zeros(B, dtype=torch.bool, device=hidden.device)
        out: list[list[int]] = [[] for _ in range(B)]
        for t in range(steps):
            nxt = logits.argmax(-1)
            for b in torch.nonzero(~done & (nxt != self.eos_id)).view(-1).tolist():
                out[b].append(int(nxt[b]))
            done |= nxt == self.eos_id
            if bool(done.all()) or t == steps - 1:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            pos = (n + t).view(B, 1)
            h = self._run(F.embedding(nxt.view(B, 1), self.token_table), None, pos,
                          cache=kv_cache if kv_cache.layers else None, attention_mask=mask)
            logits = head(h[:, -1])
        return [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in out]

    def match_texts(self, texts: Sequence[str]) -> Tensor:
        """``[len(texts), N]`` cosine similarity between each text and each item title, both
        embedded as max-pooled LM token embeddings (:func:`max_pooled_embeddings`)."""
        space = "" if self.config.tokenizer == "word" else " "
        ids, n = _token_table(self.tokenizer, list(texts), 10 ** 6, space)
        ids, n = ids.to(self.token_table.device), n.to(self.token_table.device)
        q = max_pooled_embeddings(ids, _real(n, ids.size(1)), self.token_table)
        return F.normalize(q, dim=-1) @ F.normalize(self.title_embeddings(), dim=-1).t()

    def texts_to_items(self, texts: Sequence[str]) -> Tensor:
        """The catalogue item whose title is most similar to each text (:meth:`match_texts`)."""
        return self.match_texts(texts).argmax(-1)

    def generation_scores(self, sequences: Sequences) -> Tensor:
        """Generate a title per sequence, score every item by :meth:`match_texts`."""
        return self.match_texts(self.generate_titles(sequences))

    @property
    def pretrain_texts(self) -> list[str]:
        return self._pretrain_texts

    def extra_repr(self) -> str:
        c = self.config
        return (f"num_items={c.num_items}, hidden={self.hidden}, "
                f"knowledge_prompt={c.use_knowledge_prompt}, "
                f"reasoning_prompt={c.use_reasoning_prompt}, score_mode={c.score_mode!r}")
