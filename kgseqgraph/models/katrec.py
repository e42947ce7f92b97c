r"""KATRec: Knowledge Aware aTtentive sequential Recommendations (Amjadi, Taheri & Tulabandhula,
DS 2021; authors' code ``DanialTaheri/KATRec``), and KG-SASRec / KG-GRU4Rec, the same KG item
tables under a causal encoder.

Equation by equation, where each part lives (defaults = the paper's model):

1. **Collaborative KG** (KGAT's, users from the training interactions only): the split's
   ``train_graph`` flattened by :func:`~kgseqgraph.data.relational_view` over
   ``node_types = ("item", "entity", "user")``: every KG relation, ``interacts`` and their
   reverses are relation types (KATRec's loader: ``R``, ``R_inv`` and each ``K_r``, ``K_r_inv``).
2. **TransR** (KATRec eq. 1–2; :class:`~kgseqgraph.nn.kge.TransR`):
   :math:`f(h,r,t) = \|\mathbf{W}_r\mathbf{e}_h + \mathbf{e}_r - \mathbf{W}_r\mathbf{e}_t\|_2^2`,
   loss :math:`-\ln\sigma(f(h,r,t') - f(h,r,t))` plus the L2 term of the authors' code, on a batch
   of heads drawn uniformly (one triple each, :func:`~kgseqgraph.nn.kge.sample_triples_by_head`)
   with *filtered* negative tails (:math:`(h, r, t')` never a known triple), every step.
3. **Knowledge-aware attention** (eq. 3–4; :class:`~kgseqgraph.nn.conv.KGAttentionConv`):
   :math:`\pi(h,r,t) = (\mathbf{W}_r\mathbf{e}_t)^\top\tanh(\mathbf{W}_r\mathbf{e}_h +
   \mathbf{e}_r)` with TransR's :math:`\mathbf{W}_r, \mathbf{e}_r, \mathbf{e}^{(0)}`, softmax over
   each head's triples, computed once per step and reused by every layer (the authors'
   ``update_attentive_A``).
4. **Bi-interaction propagation** (eq. 5–6; :class:`~kgseqgraph.nn.embed.KGEnricher`):
   :math:`\mathrm{LeakyReLU}(\mathbf{W}_1(\mathbf{e}_h + \mathbf{e}_{\mathcal{N}_h})) +
   \mathrm{LeakyReLU}(\mathbf{W}_2(\mathbf{e}_h \odot \mathbf{e}_{\mathcal{N}_h}))`, message
   dropout, 3 layers 32/16/16, each layer's output L2-normalised into
   :math:`\mathbf{e}^{*} = \mathbf{e}^{(0)} \Vert \mathbf{e}^{(1)} \Vert \mathbf{e}^{(2)} \Vert
   \mathbf{e}^{(3)}` (width :math:`q = 64 + 32 + 16 + 16 = 128`).
5. **Sequence encoder input** (eq. 7): BERT reads :math:`\mathbf{e}^{*}_i + \mathbf{p}_t`
   (LayerNorm, dropout; :class:`~kgseqgraph.nn.encoders.BERT4RecEncoder`), so its width is
   :math:`q` — ``hidden_size`` is derived, not set.
6. **Output** (eq. 8–9; :class:`~kgseqgraph.nn.embed.KGItemEmbedder` and the prediction head):
   :math:`\hat{\mathbf{E}} = \sigma((\mathbf{V}^{*} \Vert \mathbf{E}^{*})\hat{\mathbf{W}} +
   \hat{\mathbf{b}})`, :math:`P = \mathrm{softmax}(\mathrm{LN}(\mathrm{GELU}(\mathbf{v}
   \mathbf{W}^P + \mathbf{b}^P))\hat{\mathbf{E}}^\top + \mathbf{b}^O)`.
7. **Loss**: :math:`\mathcal{L} = \mathcal{L}_{\mathrm{cloze}} + \lambda_{\mathrm{KG}}
   \mathcal{L}_{\mathrm{TransR}}`.
8. **Pre-training**: BPRMF user/item embeddings on the training interactions initialise the
   users' and items' rows of :math:`\mathbf{e}^{(0)}` (the authors' ``pretrain=-1``, KGAT's
   ``mf.npz``), run as a :class:`~kgseqgraph.models.base.PretrainStage` before the first epoch.

Ablations of the paper, each an option meaning what the paper means:

* **NoAtten** — ``use_attention=False``: KGAT's attention-free propagation matrix (each
  relation's adjacency row-normalised, summed over relations; ``uniform_weights="node"`` gives
  the plain neighbour mean instead);
* **Level-1** — ``kg_hidden=[32]``: one propagation layer (:math:`q = 96`);
* **Concat** — ``output_fusion=False``: no ID/KG fusion at the output, the input table is scored
  against (the authors' ``use_token_entity_concat=False``);
* **Connection** — ``connection=False``: BERT reads its own ID table, not :math:`\mathbf{e}^{*}`
  (the authors' ``use_KG_connection=False``); the KG still enters the output fusion;
* **NoPretrain** — ``pretrain_bprmf_epochs=0``.

Deviations that remain, and why:

* The authors step two optimisers (one on the cloze loss, one on the TransR loss, each its own
  AdamW state); here one AdamW steps on their sum — the same gradients, a shared moment estimate.
* Their training data are BERT4Rec's pre-generated masked copies (``dupe_factor=10``, sliding
  windows); here each epoch draws fresh cloze masks over the training windows.
* Their output fusion also runs over four special rows and reads entity rows for them (an
  off-by-four of ``get_kg_embedding_table``); here only the :math:`N` items are scored.
* :meth:`KATRecConfig.paper` holds the hyper-parameters of their Amazon-book script (lr 1e-4,
  400k steps); the tables in ``docs/results.md`` use a budget that fits a CPU, stated with them.

Other options: ``wiring="gated"`` is this library's earlier KATRec (an ID table and
:math:`\mathbf{e}^{*}` fused by a sigmoid gate into one table of width ``hidden_size``, used for
input and output); ``detach_kg=True`` keeps the recommendation loss out of the KG part.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..data.graph import INTERACTS
from ..data.sequences import Sequences
from ..nn.embed.kg_items import GatedKGItemEmbedder, KGItemEmbedder
from ..nn.kge import TripleIndex, sample_negative_tails, sample_triples_by_head
from ..nn.mf import BPRMF, sample_bpr_negatives
from .base import PretrainStage, catalogue_size, register_model
from .sequential import SequentialConfig, SequentialModel

__all__ = ["KATRecConfig", "KATRec", "KGSASRec", "KGGRU4Rec"]

log = logging.getLogger("kgseqgraph")

_KG_KEYS = frozenset({"kg_head", "kg_relation", "kg_tail", "kg_neg_tail"})
WIRINGS = ("paper", "gated")


@dataclass
class KATRecConfig(SequentialConfig):
    r""":class:`SequentialConfig` (BERT4Rec encoder, cloze objective, BERT4Rec's prediction head)
    plus the KG part. Defaults are the paper's model (see the module docstring).

    Args:
        hidden_size: the encoder width. With ``wiring="paper"`` it is
            :math:`q = \mathrm{kg\_dim} + \sum \mathrm{kg\_hidden}` (``None`` derives it; another
            value is an error). With ``wiring="gated"``: the fused table's width (default 64).
        kg_dim: :math:`d`, width of :math:`\mathbf{e}^{(0)}` (TransR entity space).
        relation_dim: TransR relation space :math:`d_r` (``None``: :math:`d`; the authors'
            Amazon-book script uses 32).
        kg_hidden: widths of the propagation layers (``[32, 16, 16]``; ``[32]``: Level-1).
        aggregator: ``bi-interaction``, ``gcn`` or ``graphsage``.
        kg_dropout: message dropout of the propagation layers.
        use_attention: knowledge-aware attention (``False``: NoAtten).
        uniform_weights: the fixed weights of NoAtten (``"relation"``: KGAT's; ``"node"``).
        reuse_attention: one attention per step, reused by every layer (KGAT/KATRec).
        node_types: node types of the collaborative KG propagated over (``user`` included:
            KGAT's collaborative KG, which needs the split's ``train_graph``).
        wiring: ``"paper"`` or ``"gated"`` (this library's earlier KATRec).
        connection: BERT reads :math:`\mathbf{e}^{*}` (``False``: the Connection ablation).
        output_fusion: score against :math:`\hat{\mathbf{E}}` (``False``: the Concat ablation).
        output_activation: :math:`\sigma` of the output fusion (the authors' code: GELU).
        fusion: the gated wiring's fusion (``gate``, ``concat``, ``sum``).
        detach_kg: the recommendation loss does not train the KG part.
        kge_weight: :math:`\lambda_{\mathrm{KG}}`.
        kge_batch_size: KG triples per training step.
        kge_reg: L2 coefficient of the TransR loss.
        kge_sampling: ``"head"`` (a head uniformly, then one of its triples, as KGAT) or
            ``"triple"`` (triples uniformly).
        kge_filtered: redraw negative tails that form a known triple (KGAT's sampler).
        pretrain_bprmf_epochs: passes of BPRMF pre-training over the training interactions
            (``0``: NoPretrain).
        pretrain_kge_epochs: passes of TransR pre-training over the KG triples (not in the
            paper; ``0``).
        pretrain_lr: Adam learning rate of the pre-training stages.
        pretrain_batch_size: batch of the pre-training stages.
        bprmf_reg: L2 coefficient of the BPR loss.
        kg_recompute: keep no per-edge tensors of the KG layers for backward (large KGs; same
            results, see docs/scale.md).
    """

    encoder: str = "bert4rec"
    objective: str = "cloze"
    hidden_size: int | None = None  # type: ignore[assignment]
    prediction_head: bool = True
    kg_dim: int = 64
    relation_dim: int | None = None
    kg_hidden: list[int] = field(default_factory=lambda: [32, 16, 16])
    aggregator: str = "bi-interaction"
    kg_dropout: float = 0.1
    use_attention: bool = True
    uniform_weights: str = "relation"
    reuse_attention: bool = True
    node_types: list[str] = field(default_factory=lambda: ["item", "entity", "user"])
    wiring: str = "paper"
    connection: bool = True
    output_fusion: bool = True
    output_activation: str = "gelu"
    fusion: str = "gate"
    detach_kg: bool = False
    kge_weight: float = 1.0
    kge_batch_size: int = 1024
    kge_reg: float = 1e-5
    kge_sampling: str = "head"
    kge_filtered: bool = True
    pretrain_bprmf_epochs: int = 20
    pretrain_kge_epochs: int = 0
    pretrain_lr: float = 1e-3
    pretrain_batch_size: int = 1024
    bprmf_reg: float = 1e-5
    kg_recompute: bool = False

    def __post_init__(self) -> None:
        if self.wiring not in WIRINGS:
            raise ValueError(f"wiring must be one of {WIRINGS}, got {self.wiring!r}")
        self.kg_hidden = [int(h) for h in self.kg_hidden]
        self.node_types = list(self.node_types)
        if "item" not in self.node_types:
            raise ValueError(f"node_types must include 'item', got {self.node_types}")
        width = self.kg_width
        if self.wiring == "paper":
            if self.hidden_size is None:
                self.hidden_size = width
            elif int(self.hidden_size) != width:
                raise ValueError(
                    f"KATRec's encoder reads e* directly, so its width is kg_dim + "
                    f"sum(kg_hidden) = {width}, not hidden_size={self.hidden_size}; change "
                    "kg_dim / kg_hidden (or leave hidden_size unset), or use wiring='gated'")
        elif self.hidden_size is None:
            self.hidden_size = 64
        if self.kge_sampling not in {"head", "triple"}:
            raise ValueError(f"kge_sampling must be 'head' or 'triple', got {self.kge_sampling!r}")
        for name in ("pretrain_bprmf_epochs", "pretrain_kge_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        super().__post_init__()

    @property
    def kg_width(self) -> int:
        r""":math:`q = d + \sum_l d_l`, the width of :math:`\mathbf{e}^{*}`."""
        return int(self.kg_dim) + sum(self.kg_hidden)

    #: the training side of the authors' Amazon-book script (``Model/run_amazon-book.sh``,
    #: BERT's AdamW with warm-up and linear decay), for :class:`~kgseqgraph.training.TrainConfig`
    PAPER_TRAINING: ClassVar[dict[str, Any]] = {
        "lr": 1e-4, "weight_decay": 0.01, "lr_decay": "linear", "warmup_steps": 100,
        "batch_size": 128}

    @classmethod
    def paper(cls, num_items: int, **overrides: Any) -> KATRecConfig:
        """The model side of the authors' Amazon-book script and BERT config
        (``bert_config_amazon-book_128.json``): embeddings 64, relation space 32, layers
        32/16/16, message dropout 0.2, TransR/BPR L2 1e-4, 1,024 KG triples a step, BERT 2 layers
        × 2 heads, FFN 256, hidden dropout 0.4, attention dropout 0.2, max length 50, masking
        0.4. Train with :attr:`PAPER_TRAINING` (``TrainConfig(**KATRecConfig.PAPER_TRAINING)``).
        """
        options: dict[str, Any] = dict(
            kg_dim=64, relation_dim=32, kg_hidden=[32, 16, 16], kg_dropout=0.2, kge_reg=1e-4,
            bprmf_reg=1e-5, kge_batch_size=1024, max_len=50, mask_prob=0.4,
            encoder_kwargs=dict(num_layers=2, num_heads=2, inner_size=256, hidden_dropout=0.4,
                                attn_dropout=0.2, initializer_range=0.02))
        options.update(overrides)
        return cls(num_items=num_items, **options)


class KATRec(SequentialModel):
    """KATRec (see the module docstring). Build with ``build_model("katrec", split.train_graph)``,
    ``KATRec.from_dataset(split.train_graph)`` or ``KATRec(KATRecConfig(num_items=…), data=g)``."""

    config_class = KATRecConfig
    needs_graph = True
    compute_only_fields = frozenset({"kg_recompute"})
    preset_defaults: dict[str, Any] = {}

    def __init__(self, config: KATRecConfig, data: Any = None) -> None:
        super().__init__(config, data)
        interactions = (data[INTERACTS].edge_index if data is not None
                        and INTERACTS in data.edge_types else torch.zeros(2, 0, dtype=torch.long))
        self._num_users = int(data["user"].num_nodes) if data is not None \
            and "user" in data.node_types else 0
        # the training interactions, for BPRMF pre-training (never saved)
        self.register_buffer("train_interactions", interactions.clone(), persistent=False)
        self._cpu_triples: tuple[Tensor, Tensor, Tensor, Tensor] | None = None
        self._triple_index: TripleIndex | None = None

    def build_item_embedder(self, config: KATRecConfig, data: Any) -> nn.Module:
        common = dict(kg_dim=config.kg_dim, relation_dim=config.relation_dim,
                      kg_hidden=config.kg_hidden, node_types=config.node_types,
                      aggregator=config.aggregator, kg_dropout=config.kg_dropout,
                      use_attention=config.use_attention, uniform_weights=config.uniform_weights,
                      reuse_attention=config.reuse_attention, kge_reg=config.kge_reg,
                      detach_kg=config.detach_kg, init_std=config.init_std,
                      recompute=config.kg_recompute)
        if config.wiring == "gated":
            return GatedKGItemEmbedder(data, config.num_items, config.hidden_size,
                                       fusion=config.fusion, **common)
        return KGItemEmbedder(data, config.num_items, connection=config.connection,
                              output_fusion=config.output_fusion,
                              output_activation=config.output_activation, **common)

    @classmethod
    def fingerprint_node_types(cls, config: Any) -> tuple[str, ...]:
        """KATRec's weights depend on the users and interactions of its graph whenever it
        propagates over users or pre-trains on interactions: then they are fingerprinted too."""
        types = list(config.node_types)
        if config.pretrain_bprmf_epochs > 0 and "user" not in types:
            types.append("user")
        return tuple(types)

    @classmethod
    def from_dataset(cls, data: Any, **kwargs: Any) -> KATRec:
        """Build for the graph ``data`` (a split's ``train_graph``)."""
        options = {**cls.preset_defaults, **kwargs}
        return cls(KATRecConfig(num_items=catalogue_size(data), **options), data=data)

    def add_items(self, data: Any, *, generator: torch.Generator | None = None,
                  init: str = "mean") -> KATRec:
        """New items scored from their KG facts, nothing trained (see
        :meth:`~kgseqgraph.nn.embed.KGItemEmbedder.add_items`): ``data`` is the model's training
        graph with the new items and their facts appended (e.g.
        :attr:`~kgseqgraph.data.ColdItemSplit.cold_graph`); ``init`` sets their TransR rows
        (``"mean"`` of their neighbours' rows, or ``"transr"``: fitted to their triples)."""
        super().add_items(data, generator=generator, init=init)
        self._cpu_triples = None
        self._triple_index = None
        self._items_added = True
        return self

    def save_pretrained(self, directory: Any) -> Any:
        """As :meth:`SequentialRecommender.save_pretrained`; refused after :meth:`add_items`:
        the new items read the graph one way only (existing nodes do not read them), which a
        model rebuilt over the extended graph would not reproduce — retrain on it instead."""
        if getattr(self, "_items_added", False):
            raise ValueError("this KATRec was extended by add_items: its new items propagate one "
                             "way only, which from_pretrained cannot rebuild; train a model on "
                             "the extended graph to save one")
        return super().save_pretrained(directory)

    # ------------------------------------------------------------------ KG loss
    @property
    def kge(self):
        return self.item_embedder.kge

    def _triples(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(head, relation, tail, ptr) of the KG triples, on the CPU (sampling runs there)."""
        if self._cpu_triples is None:
            g = self.item_embedder.graph
            self._cpu_triples = (g.kg_head.cpu(), g.kg_relation.cpu(), g.kg_tail.cpu(),
                                 g.kg_ptr.cpu())
        return self._cpu_triples

    def _kg_batch(self, generator: torch.Generator, size: int) -> dict[str, Tensor]:
        cfg = self.config
        head, relation, tail, ptr = self._triples()
        if cfg.kge_sampling == "head":
            idx = sample_triples_by_head(ptr, size, generator)
        else:
            idx = torch.randint(head.numel(), (size,), generator=generator)
        h, r, t = head[idx], relation[idx], tail[idx]
        index = None
        if cfg.kge_filtered:
            if self._triple_index is None:
                kge = self.kge
                self._triple_index = TripleIndex(head, relation, tail, kge.num_nodes,
                                                 kge.num_relations)
            index = self._triple_index
        neg = sample_negative_tails(h, r, t, self.kge.num_nodes, generator=generator,
                                    filter_index=index)
        return {"kg_head": h, "kg_relation": r, "kg_tail": t, "kg_neg_tail": neg}

    def training_batch(self, sequences: Sequences, generator: torch.Generator) -> dict[str, Tensor]:
        batch = super().training_batch(sequences, generator)
        if self.config.kge_weight > 0:
            batch.update(self._kg_batch(generator, self.config.kge_batch_size))
        return batch

    def shard_batch(self, batch: dict[str, Tensor], rank: int,
                    world_size: int) -> dict[str, Tensor]:
        """The sequence rows are split as :meth:`SequentialModel.shard_batch` does; the KG
        triples are kept whole on every rank (each rank's TransR loss is the global one, so the
        average over ranks is too)."""
        kg = {k: v for k, v in batch.items() if k in _KG_KEYS}
        rest = {k: v for k, v in batch.items() if k not in _KG_KEYS}
        return {**super().shard_batch(rest, rank, world_size), **kg}

    def kge_loss(self, batch: dict[str, Tensor]) -> Tensor:
        kge = self.kge
        dev = kge.node_emb.weight.device
        return kge.loss(batch["kg_head"].to(dev), batch["kg_relation"].to(dev),
                        batch["kg_tail"].to(dev), batch["kg_neg_tail"].to(dev))

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = super().loss(batch)
        if self.config.kge_weight > 0 and "kg_head" in batch:
            kg = self.kge_loss(batch)
            out["loss"] = out["loss"] + self.config.kge_weight * kg
            out["kge_loss"] = kg.detach()
        return out

    # ------------------------------------------------------------------ pre-training
    def pretraining_stages(self) -> list[PretrainStage]:
        stages = []
        if self.config.pretrain_bprmf_epochs > 0:
            stages.append(self.bprmf_stage())
        if self.config.pretrain_kge_epochs > 0:
            stages.append(self.transr_stage())
        return stages

    def bprmf_stage(self, epochs: int | None = None) -> PretrainStage:
        """BPRMF on the training interactions of the model's graph; ``finish`` copies the user
        and item embeddings into the rows of :math:`\\mathbf{e}^{(0)}` (the TransR node table)
        that the graph has (the authors' ``pretrain=-1``)."""
        cfg = self.config
        if cfg.kg_dim < 1 or self.train_interactions.size(1) == 0 or self._num_users == 0:
            raise ValueError("BPRMF pre-training needs the training interactions: build the model "
                             "from a graph with users (split.train_graph), or set "
                             "pretrain_bprmf_epochs=0")
        users, items = self.train_interactions.cpu()
        n = self.num_items
        order = torch.argsort(users, stable=True)
        users, items = users[order], items[order]
        ptr = torch.zeros(self._num_users + 1, dtype=torch.long)
        ptr[1:] = torch.cumsum(torch.bincount(users, minlength=self._num_users), 0)
        seen = torch.unique(users * n + items)
        node_emb = self.kge.node_emb.weight
        mf = BPRMF(self._num_users, n, cfg.kg_dim, cfg.bprmf_reg).to(node_emb.device)

        def sample(g: torch.Generator) -> dict[str, Tensor]:
            idx = sample_triples_by_head(ptr, cfg.pretrain_batch_size, g)  # a user, then an item
            u = users[idx]
            return {"user": u, "pos": items[idx], "neg": sample_bpr_negatives(u, n, seen, g)}

        def finish() -> None:
            offsets = self.item_embedder.enricher.node_offsets
            i0 = offsets["item"]
            node_emb[i0:i0 + n] = mf.item.weight.to(node_emb.dtype)
            if "user" in offsets:
                u0 = offsets["user"]
                node_emb[u0:u0 + self._num_users] = mf.user.weight.to(node_emb.dtype)

        return PretrainStage(
            "bprmf", list(mf.parameters()), sample,
            lambda b: mf.loss(b["user"], b["pos"], b["neg"]),
            epochs=cfg.pretrain_bprmf_epochs if epochs is None else epochs,
            steps_per_epoch=max(1, math.ceil(users.numel() / cfg.pretrain_batch_size)),
            lr=cfg.pretrain_lr, finish=finish)

    def transr_stage(self, epochs: int | None = None) -> PretrainStage:
        """TransR alone on the KG triples (one pass = ``triples / pretrain_batch_size`` steps)."""
        cfg = self.config
        head = self._triples()[0]
        return PretrainStage(
            "transr", list(self.kge.parameters()),
            lambda g: self._kg_batch(g, cfg.pretrain_batch_size), self.kge_loss,
            epochs=cfg.pretrain_kge_epochs if epochs is None else epochs,
            steps_per_epoch=max(1, head.numel() // cfg.pretrain_batch_size), lr=cfg.pretrain_lr)


def _kg_preset(name: str, cls_name: str, encoder: str, objective: str, doc: str) -> type:
    @register_model(name)
    class Preset(KATRec):
        __doc__ = doc
        preset_defaults = {"encoder": encoder, "objective": objective, "prediction_head": False}

        def __init__(self, config: KATRecConfig, data: Any = None) -> None:
            if config.encoder != encoder or config.objective != objective:
                raise ValueError(f"{name} uses encoder={encoder!r}, objective={objective!r}; "
                                 "use KATRec with those options for other combinations")
            super().__init__(config, data)

    Preset.__name__ = Preset.__qualname__ = cls_name
    return Preset


register_model("katrec")(KATRec)
KGSASRec = _kg_preset(
    "kg-sasrec", "KGSASRec", "sasrec", "next",
    "KG-SASRec: KATRec's KG item tables (e* as input, output fusion, joint TransR loss, BPRMF "
    "pre-training) under SASRec's causal encoder and next-item objective — the way to put the "
    "graph under any sequence encoder.")
KGGRU4Rec = _kg_preset(
    "kg-gru4rec", "KGGRU4Rec", "gru4rec", "next",
    "KG-GRU4Rec: KATRec's KG item tables under GRU4Rec's recurrent encoder, next-item objective.")
