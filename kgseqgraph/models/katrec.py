r"""KATRec: knowledge-aware attentive sequential recommendation (BERT4Rec + KGAT-style
graph-enriched item embeddings + a joint TransR loss).

Item representation (every training step, over the whole item–entity KG):

.. math::
    \mathbf{E} = \mathrm{KGEnricher}(\mathbf{e}^{(0)}) \in \mathbb{R}^{N \times (d + \sum_l d_l)},
    \qquad
    \mathbf{t}_i = \sigma\big((\mathbf{v}_i \,\Vert\, \mathbf{e}_i)\mathbf{W} + \mathbf{b}\big),

where :math:`\mathbf{e}^{(0)}` is the TransR entity table (shared by the KG-embedding loss and the
attention, as in KGAT), the enricher stacks :class:`~kgseqgraph.nn.conv.KGAttentionConv` layers
(32/16/16 by default) and :math:`\mathbf{v}_i` is the item's ID embedding. BERT4Rec reads
:math:`\mathbf{t}_i` and scores the catalogue against the same table. The loss is

.. math::
    \mathcal{L} = \mathcal{L}_{\mathrm{cloze}} + \lambda_{\mathrm{KG}}\,\mathcal{L}_{\mathrm{TransR}},

with :math:`\mathcal{L}_{\mathrm{TransR}} = -\ln\sigma(f(h,r,t') - f(h,r,t))` on a batch of KG
triples with corrupted tails, drawn every step.

Ablations of the paper, as config options: ``use_attention=False`` (uniform neighbour weights),
``kg_hidden=(32,)`` (one propagation level), ``connect=False`` (no connection: the recommender
reads the KG embeddings but its loss does not train the KG module, which learns from TransR
alone), ``pretrain_kge_epochs=0`` (no TransR pre-training; see :meth:`KATRec.pretrain_kge`),
``fusion="concat"`` (concatenation + linear instead of the sigmoid gate).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..data.sequences import Sequences
from ..nn.embed.fusion import build_fusion
from .base import register_model
from .sequential import IDEmbedder, SequentialConfig, SequentialModel

__all__ = ["KATRecConfig", "KATRec", "KGItemEmbedder"]

log = logging.getLogger("kgseqgraph")

_KG_KEYS = frozenset({"kg_head", "kg_relation", "kg_tail", "kg_neg_tail"})


@dataclass
class KATRecConfig(SequentialConfig):
    """:class:`SequentialConfig` (BERT4Rec encoder, cloze objective) plus the KG part.

    Args:
        kg_dim: TransR entity/relation width :math:`d` (= :math:`\\mathbf{e}^{(0)}`).
        kg_hidden: output widths of the propagation layers (``(32, 16, 16)``).
        aggregator: ``bi-interaction``, ``gcn`` or ``graphsage``.
        kg_dropout: message dropout of the propagation layers.
        use_attention: KGAT attention (``False``: uniform weights).
        reuse_attention: compute the attention once from the TransR embeddings and reuse it in
            every layer, as KGAT does (``False``: each layer attends with its own relations).
        fusion: ``gate`` (KATRec) or ``concat`` / ``sum``.
        connect: let the recommendation loss train the KG module.
        kge_weight: :math:`\\lambda_{\\mathrm{KG}}`.
        kge_batch_size: KG triples per training step.
        kge_reg: L2 coefficient of the TransR loss.
        pretrain_kge_epochs: epochs of TransR pre-training run by :meth:`KATRec.pretrain_kge`.
        node_types: KG node types propagated over.
        kg_recompute: keep no per-edge tensors of the KG layers for backward (recompute the
            relation projections instead): memory in ``O(E)`` scalars for large KGs, the KG step
            somewhat slower (see docs/scale.md). Same results.
    """

    encoder: str = "bert4rec"
    objective: str = "cloze"
    kg_dim: int = 64
    kg_hidden: list[int] = field(default_factory=lambda: [32, 16, 16])
    aggregator: str = "bi-interaction"
    kg_dropout: float = 0.1
    use_attention: bool = True
    reuse_attention: bool = True
    fusion: str = "gate"
    connect: bool = True
    kge_weight: float = 1.0
    kge_batch_size: int = 1024
    kge_reg: float = 1e-5
    pretrain_kge_epochs: int = 0
    node_types: list[str] = field(default_factory=lambda: ["item", "entity"])
    kg_recompute: bool = False


class KGItemEmbedder(nn.Module):
    r"""Item table :math:`[N + 2, D]` fusing ID embeddings with graph-enriched KG embeddings
    (rows :math:`N`, :math:`N+1`: padding and ``[mask]``, taken from the ID table)."""

    def __init__(self, config: KATRecConfig, data: Any) -> None:
        super().__init__()
        from ..nn.embed.graph_enriched import KGEnricher
        from ..nn.kge import TransR, kg_triples

        if data is None:
            raise ValueError("KATRec needs the collaborative KG: pass data=<HeteroData>")
        triples = kg_triples(data, node_types=tuple(config.node_types))
        if triples.head.numel() == 0:
            raise ValueError("the graph has no KG edges among node types "
                             f"{config.node_types}: KATRec needs a knowledge graph")
        self.num_items = config.num_items
        self.connect = config.connect
        self.id = IDEmbedder(config.num_items, config.hidden_size, config.init_std)
        self.kge = TransR(triples.num_nodes, triples.num_relations, config.kg_dim,
                          reg_weight=config.kge_reg)
        self.enricher = KGEnricher(data, in_channels=config.kg_dim,
                                   hidden_channels=tuple(config.kg_hidden),
                                   node_types=tuple(config.node_types),
                                   aggregator=config.aggregator, dropout=config.kg_dropout,
                                   use_attention=config.use_attention,
                                   reuse_attention=config.reuse_attention, kge=self.kge,
                                   recompute_scores=config.kg_recompute)
        if self.enricher.num_items != config.num_items:
            raise ValueError(f"graph has {self.enricher.num_items} items, config {config.num_items}")
        self.fusion = build_fusion(config.fusion, config.hidden_size, self.enricher.out_channels,
                                   config.hidden_size)
        self.register_buffer("kg_head", triples.head.clone(), persistent=False)
        self.register_buffer("kg_relation", triples.relation.clone(), persistent=False)
        self.register_buffer("kg_tail", triples.tail.clone(), persistent=False)

    def forward(self) -> Tensor:
        ids = self.id()
        kg = self.enricher()
        if not self.connect:
            kg = kg.detach()
        fused = self.fusion(ids[: self.num_items], kg)
        return torch.cat([fused, ids[self.num_items:]])


@register_model("katrec")
class KATRec(SequentialModel):
    """KATRec (see the module docstring). Build with ``KATRec(KATRecConfig(num_items=…), data=g)``
    or :meth:`from_dataset`."""

    config_class = KATRecConfig
    needs_graph = True
    compute_only_fields = frozenset({"kg_recompute"})

    def build_item_embedder(self, config: KATRecConfig, data: Any) -> nn.Module:
        return KGItemEmbedder(config, data)

    @classmethod
    def from_dataset(cls, data: Any, **kwargs: Any) -> KATRec:
        return cls(KATRecConfig(num_items=int(data["item"].num_nodes), **kwargs), data=data)

    # ------------------------------------------------------------------ KG loss
    def _kg_batch(self, generator: torch.Generator, size: int) -> dict[str, Tensor]:
        from ..nn.kge import sample_negative_tails

        emb = self.item_embedder
        idx = torch.randint(emb.kg_head.numel(), (size,), generator=generator)
        h, r, t = emb.kg_head.cpu()[idx], emb.kg_relation.cpu()[idx], emb.kg_tail.cpu()[idx]
        neg = sample_negative_tails(h, r, t, emb.kge.num_nodes, generator=generator)
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
        kge = self.item_embedder.kge
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

    def on_fit_start(self, seed: int) -> None:
        if self.config.pretrain_kge_epochs > 0:
            self.pretrain_kge(seed=seed)

    def pretrain_kge(self, epochs: int | None = None, batch_size: int = 4096, lr: float = 1e-3,
                     seed: int = 0) -> list[float]:
        """Pre-train the TransR embeddings alone (KATRec's pre-training stage).

        Returns the mean loss of each epoch (one epoch = one pass over the KG triples)."""
        epochs = self.config.pretrain_kge_epochs if epochs is None else epochs
        emb = self.item_embedder
        g = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(emb.kge.parameters(), lr=lr)
        n = emb.kg_head.numel()
        losses = []
        was_training = self.training
        self.train()
        for epoch in range(epochs):
            total, steps = 0.0, 0
            for _ in range(max(1, n // batch_size)):
                loss = self.kge_loss(self._kg_batch(g, batch_size))
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss)
                steps += 1
            losses.append(total / steps)
            log.info("TransR pre-training epoch %d: loss %.4f", epoch + 1, losses[-1])
        self.train(was_training)
        return losses
