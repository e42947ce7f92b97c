r"""One composition for every ID-based sequential recommender:

.. math::
    \mathbf{T} = \mathrm{ItemEmbedder}() \in \mathbb{R}^{(N + 2) \times D}, \quad
    \mathbf{H} = \mathrm{Encoder}(\mathbf{T}[s], \mathbf{M}), \quad
    \hat{y}_{b,i} = \mathbf{h}_b^\top \mathbf{t}_i \;(i < N),

where rows :math:`N` and :math:`N+1` of :math:`\mathbf{T}` are the padding and ``[mask]`` tokens.
The same table embeds the input and scores the output (shared embeddings, as SASRec and BERT4Rec),
unless the item embedder returns separate :class:`~kgseqgraph.nn.embed.ItemTables` (an input
table and an output table :math:`\mathbf{O} \in \mathbb{R}^{N \times D}`, KATRec's output
fusion); then :math:`\hat{y}_{b,i} = \mathbf{h}_b^\top \mathbf{o}_i`.

Two training objectives, chosen by the preset, not by the trainer:

* ``"next"`` (SASRec, GRU4Rec): every position predicts the item after it (causal encoders only);
* ``"cloze"`` (BERT4Rec, KATRec): a fraction ``mask_prob`` of items is replaced by ``[mask]`` and
  predicted; at inference ``[mask]`` is appended and its output scores the next item.

The loss is the softmax cross-entropy over the whole catalogue at every target position.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.batching import (IGNORE_INDEX, append_mask_token, cloze_mask, pad_sequences,
                             padding_id, shifted_targets)
from ..data.sequences import Sequences
from ..nn.embed.id import IDEmbedder
from ..nn.heads import PredictionHead
from ..nn.embed.tables import ItemTables, as_item_tables
from ..nn.encoders.base import encode_at
from ..nn.losses import catalogue_cross_entropy
from .base import SequentialRecommender, catalogue_size, register_model
from .scorer import SequenceScorer

__all__ = ["SequentialConfig", "SequentialModel", "SASRec", "BERT4Rec", "GRU4Rec", "IDEmbedder",
           "PredictionHead", "build_encoder"]

_ENCODER_ALIASES = {"t5": "hf_t5", "gpt2": "hf_gpt2"}


def build_encoder(name: str, hidden_size: int, max_len: int, **kwargs: Any) -> nn.Module:
    """Construct a sequence encoder of :mod:`kgseqgraph.nn.encoders` by short name
    (``sasrec``, ``bert4rec``, ``gru4rec``, ``t5``/``hf_t5``, ``gpt2``/``hf_gpt2``), passing
    ``max_len`` to encoders that have positional embeddings."""
    from ..nn import encoders

    key = _ENCODER_ALIASES.get(name, name)
    cls = encoders._resolve(key)
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    if "max_len" in fields:
        kwargs.setdefault("max_len", max_len)
    return encoders.build_encoder(key, hidden_size=hidden_size, **kwargs)


@dataclass
class SequentialConfig:
    r"""Configuration of :class:`SequentialModel` (JSON round-trips through ``save_pretrained``).

    Args:
        num_items: catalogue size :math:`N`.
        max_len: longest input sequence (older items are cut).
        hidden_size: width :math:`D` of item embeddings and encoder states.
        encoder: ``sasrec``, ``bert4rec``, ``gru4rec``, ``t5`` or ``gpt2``.
        encoder_kwargs: extra fields of the encoder's config (layers, heads, dropout…).
        objective: ``"next"`` or ``"cloze"``.
        mask_prob: cloze masking probability.
        last_item_mask_prob: cloze only: fraction of training windows in which only the last
            item is masked, the position inference predicts (RecBole's ``ft_ratio``).
        last_item_random_prefix: cloze only: cut each of those last-item windows to a random
            prefix (2 items up to the whole window) first, so the masked last item — the
            next-item case inference scores — falls at every position of a history, not only at
            a window's end. RecBole's BERT4Rec gets this from training on every prefix of every
            sequence; here it costs nothing extra.
        init_std: std of the normal init of item embeddings.
        prediction_head: BERT4Rec's output layer (Sun et al., 2019, eq. 7, with the layer norm of
            the authors' code and of RecBole's BERT4Rec): a transform of the encoder output and a
            per-item output bias,
            :math:`P(v) = \mathrm{softmax}\big(\mathrm{LN}(\mathrm{GELU}(\mathbf{h}
            \mathbf{W}^P + \mathbf{b}^P))\,\mathbf{T}^\top + \mathbf{b}^O\big)` with the
            shared item table :math:`\mathbf{T}`. ``False``: :math:`\mathbf{h}\mathbf{T}^\top`.
        head_layer_norm_eps: :math:`\epsilon` of the prediction head's layer norm.
        label_smoothing: :math:`\varepsilon` of the recommendation loss: the target
            distribution is :math:`(1 - \varepsilon)` on the true item plus
            :math:`\varepsilon / N` on every item (0: plain cross-entropy; see
            :func:`~kgseqgraph.nn.losses.catalogue_cross_entropy`).
    """

    num_items: int
    max_len: int = 50
    hidden_size: int = 64
    encoder: str = "sasrec"
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    objective: str = "next"
    mask_prob: float = 0.2
    last_item_mask_prob: float = 0.0
    last_item_random_prefix: bool = False
    init_std: float = 0.02
    prediction_head: bool = False
    head_layer_norm_eps: float = 1e-12
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.objective not in {"next", "cloze"}:
            raise ValueError(f"objective must be 'next' or 'cloze', got {self.objective!r}")
        if self.num_items <= 0 or self.max_len <= 1:
            raise ValueError("num_items must be positive and max_len > 1")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing!r}")


class SequentialModel(SequentialRecommender):
    """Item embedder → sequence encoder → dot-product scorer over the catalogue."""

    config_class = SequentialConfig
    #: config fields a preset fixes (filled in by :func:`~kgseqgraph.models.factory.build_model`)
    preset_defaults: dict[str, Any] = {}

    def __init__(self, config: SequentialConfig, data: Any = None) -> None:
        super().__init__(config, data)
        self.item_embedder = self.build_item_embedder(config, data)
        self.encoder = build_encoder(config.encoder, config.hidden_size, config.max_len,
                                     **config.encoder_kwargs)
        if config.objective == "next" and not getattr(self.encoder, "is_causal", False):
            raise ValueError(f"objective 'next' needs a causal encoder; {config.encoder} is "
                             "bidirectional (use objective='cloze')")
        self.head = (PredictionHead(config.hidden_size, config.num_items, config.init_std,
                                    config.head_layer_norm_eps) if config.prediction_head
                     else None)
        self._table_cache: ItemTables | None = None

    def build_item_embedder(self, config: SequentialConfig, data: Any) -> nn.Module:
        return IDEmbedder(config.num_items, config.hidden_size, config.init_std)

    # ------------------------------------------------------------------ embeddings
    def item_tables(self) -> ItemTables:
        """The input ``[N + 2, D]`` and output ``[N, D]`` item tables (recomputed while
        training, cached in eval mode)."""
        if self.training:
            self._table_cache = None
            return as_item_tables(self.item_embedder(), self.num_items)
        if self._table_cache is None:
            self._table_cache = as_item_tables(self.item_embedder(), self.num_items)
        return self._table_cache

    def item_table(self) -> Tensor:
        """The ``[N + 2, D]`` input table (see :meth:`item_tables`)."""
        return self.item_tables().input

    def train(self, mode: bool = True) -> SequentialModel:
        self._table_cache = None
        return super().train(mode)

    def encode(self, items: Tensor, mask: Tensor, table: Tensor | None = None) -> Tensor:
        table = self.item_table() if table is None else table
        return self.encoder(F.embedding(items, table), mask)

    # ------------------------------------------------------------------ training
    def training_batch(self, sequences: Sequences, generator: torch.Generator) -> dict[str, Tensor]:
        cfg = self.config
        pad = padding_id(cfg.num_items)
        if cfg.objective == "next":
            batch, targets = shifted_targets(pad_sequences(sequences, cfg.max_len + 1, pad))
        else:
            rows = None  # windows in which only the last item is masked
            if cfg.last_item_random_prefix and cfg.last_item_mask_prob > 0:
                rows, sequences = self._random_prefixes(sequences, generator)
            padded = pad_sequences(sequences, cfg.max_len, pad)
            batch, targets = cloze_mask(padded, cfg.num_items, cfg.mask_prob, generator)
            if cfg.last_item_mask_prob > 0:
                if rows is None:
                    rows = (torch.rand(padded.items.size(0), generator=generator)
                            < cfg.last_item_mask_prob) & padded.mask[:, -1]
                # left padding: the last real item sits in the last column
                batch.items[rows] = padded.items[rows]
                targets[rows] = IGNORE_INDEX
                batch.items[rows, -1] = cfg.num_items + 1
                targets[rows, -1] = padded.items[rows, -1]
        return {"items": batch.items, "mask": batch.mask, "targets": targets}

    def _random_prefixes(self, sequences: Sequences,
                         generator: torch.Generator) -> tuple[Tensor, Sequences]:
        """``last_item_random_prefix``: draw the last-item rows and cut each of them to a random
        prefix of 2 items up to its whole length (the other rows are kept whole)."""
        lengths = sequences.lengths
        rows = (torch.rand(len(sequences), generator=generator)
                < self.config.last_item_mask_prob) & (lengths >= 2)
        u = torch.rand(len(sequences), generator=generator)
        prefix = 2 + (u * (lengths - 1).clamp(min=1)).long()  # uniform in [2, length]
        return rows, sequences.truncate(torch.where(rows, prefix, lengths))

    def shard_batch(self, batch: dict[str, Tensor], rank: int,
                    world_size: int) -> dict[str, Tensor]:
        r"""Rank ``rank``'s block of rows, plus ``"loss_denominator"`` :math:`T / W`.

        The loss averages over target positions, and a block's number of targets varies (window
        lengths, random cloze masks), so a mean of the blocks' means is not the batch's mean.
        With the global count :math:`T` in the batch, rank :math:`r` returns
        :math:`W \sum_{t \in r} \ell_t / T`; the mean over the :math:`W` ranks (DDP's gradient
        average) is :math:`\sum_t \ell_t / T`, the single-process loss, for any split.
        """
        count = (batch["targets"] != IGNORE_INDEX).sum()
        part = super().shard_batch(batch, rank, world_size)
        part["loss_denominator"] = count.double() / world_size
        return part

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        tables = self.item_tables()
        hidden = self.encode(batch["items"], batch["mask"], tables.input)
        targets = batch["targets"]
        sel = targets != IGNORE_INDEX
        h, weight = hidden[sel], tables.output
        if self.head is not None:
            h, weight = PredictionHead.augment(self.head(h), weight, self.head.output_bias)
        # full-catalogue softmax CE; the [targets, N] logits are processed in blocks when they
        # exceed a memory budget (exactly F.cross_entropy(h @ weight.t(), …) below it), and on
        # the CPU in cache-sized blocks, which is faster (see kgseqgraph.nn.losses)
        denominator = batch.get("loss_denominator")  # set by shard_batch (several processes)
        smoothing = self.config.label_smoothing
        if denominator is None:
            rec = catalogue_cross_entropy(h, weight, targets[sel], label_smoothing=smoothing)
        else:
            rec = catalogue_cross_entropy(h, weight, targets[sel], reduction="sum",
                                          label_smoothing=smoothing) / denominator.to(h)
        return {"loss": rec, "rec_loss": rec.detach()}

    # ------------------------------------------------------------------ inference
    def sequence_representation(self, sequences: Sequences, table: Tensor) -> Tensor:
        cfg = self.config
        device = table.device
        if cfg.objective == "cloze":
            batch = append_mask_token(sequences, cfg.max_len, cfg.num_items).to(device)
        else:
            batch = pad_sequences(sequences, cfg.max_len, padding_id(cfg.num_items)).to(device)
        # left padding: the most recent item (or the appended [mask]) is in the last column; only
        # that column's output is computed in full (see SequenceEncoder.forward)
        last = torch.full((batch.items.size(0),), batch.items.size(1) - 1, dtype=torch.long,
                          device=device)
        rep = encode_at(self.encoder, F.embedding(batch.items, table), batch.mask, last)
        return rep if self.head is None else self.head(rep)

    def score(self, sequences: Sequences) -> Tensor:
        tables = self.item_tables()
        scores = self.sequence_representation(sequences, tables.input) @ tables.output.t()
        return scores if self.head is None else scores + self.head.output_bias

    # ------------------------------------------------------------------ new items
    @torch.no_grad()
    def add_items(self, data: Any, *, generator: torch.Generator | None = None,
                  **options: Any) -> SequentialModel:
        """Extend the trained model by the items ``data`` appends (see
        :meth:`SequentialRecommender.add_items`): the item embedder's rows
        (:meth:`extend_item_embedder`), the prediction head's output biases (0: no popularity
        information) and ``config.num_items`` (padding and ``[mask]`` ids move up with it).
        Existing items score exactly as before. ``options`` go to the embedder's
        ``add_items`` (e.g. ``init="transr"`` for the KG item embedders)."""
        m = self._new_item_count(data)
        self.extend_item_embedder(data, m, generator, **options)
        if self.head is not None:
            self.head.add_items(m)
        self.config = dataclasses.replace(self.config, num_items=self.num_items + m)
        if self.needs_graph and hasattr(data, "node_types"):
            from ..data.fingerprint import graph_fingerprint

            self.graph_fingerprint = graph_fingerprint(data,
                                                       self.fingerprint_node_types(self.config))
        self._table_cache = None
        return self

    def extend_item_embedder(self, data: Any, count: int,
                             generator: torch.Generator | None, **options: Any) -> None:
        """Add ``count`` rows to the item embedder. An ID table gets rows drawn as at
        initialisation (untrained: noise, no information about the item); embedders with an
        ``add_items(data)`` of their own (graph, features) are handed the graph."""
        embedder = self.item_embedder
        if isinstance(embedder, IDEmbedder):
            if options:
                raise TypeError(f"unexpected add_items options {sorted(options)} for an ID model")
            embedder.add_items(count, init="normal", generator=generator)
        elif hasattr(embedder, "add_items"):
            if not hasattr(data, "node_types"):
                raise ValueError(f"{type(self).__name__} scores new items from the graph: pass "
                                 "the graph with the new items appended, not a count")
            embedder.add_items(data, **options)
        else:
            raise NotImplementedError(f"{type(embedder).__name__} cannot add items")

    # ------------------------------------------------------------------ serving
    @property
    def serving_window(self) -> int:
        """Most history items :meth:`score` reads: ``max_len`` (``max_len - 1`` for cloze
        models, whose last position holds the appended ``[mask]``)."""
        return self.config.max_len - 1 if self.config.objective == "cloze" else self.config.max_len

    @torch.no_grad()
    def frozen_item_tables(self) -> ItemTables:
        """The item tables inference uses (:meth:`item_tables`), computed once in eval mode
        (dropout off) and detached: for graph models (KATRec) the KG propagation and the fusion
        run here, once, over the whole graph. The model's train/eval mode is left as it was."""
        was_training = self.training
        self.eval()
        try:
            tables = as_item_tables(self.item_embedder(), self.num_items)
            return ItemTables(tables.input.detach().clone(), tables.output.detach().clone())
        finally:
            self.train(was_training)

    def frozen_item_table(self) -> Tensor:
        """The input table of :meth:`frozen_item_tables`."""
        return self.frozen_item_tables().input

    def scorer(self, exclude_history: bool = False) -> SequenceScorer:
        """A pure tensor module scoring like :meth:`score`: padded ids ``[B, L]`` → ``[B, N]``.

        The item table is frozen into a buffer (:meth:`frozen_item_table`) and the encoder is a
        copy in eval mode, so the scorer does not change when this model trains on, and holds
        nothing graph-related. See :class:`~kgseqgraph.models.scorer.SequenceScorer` for the
        input convention and :func:`kgseqgraph.export.export_scorer` to write it to a file.
        """
        tables = self.frozen_item_tables()
        tied = tables.output.shape == tables.input[: self.num_items].shape and bool(
            torch.equal(tables.output, tables.input[: self.num_items]))
        return SequenceScorer(copy.deepcopy(self.encoder), tables.input,
                              self.num_items, self.serving_window,
                              append_mask_token=self.config.objective == "cloze",
                              exclude_history=exclude_history,
                              head=copy.deepcopy(self.head),
                              output_table=None if tied else tables.output)


def _preset(name: str, encoder: str, objective: str, doc: str):
    @register_model(name)
    class Preset(SequentialModel):
        __doc__ = doc
        preset_defaults = {"encoder": encoder, "objective": objective}

        def __init__(self, config: SequentialConfig, data: Any = None) -> None:
            if config.encoder != encoder or config.objective != objective:
                raise ValueError(f"{name} uses encoder={encoder!r}, objective={objective!r}; "
                                 "use SequentialModel for other combinations")
            super().__init__(config, data)

        @classmethod
        def from_dataset(cls, data: Any, **kwargs: Any) -> Preset:
            """Build for a dataset: its graph, a split, or (an ID model needs nothing else) the
            number of items (:func:`~kgseqgraph.models.base.catalogue_size`)."""
            return cls(SequentialConfig(num_items=catalogue_size(data), encoder=encoder,
                                        objective=objective, **kwargs))

    Preset.__name__ = Preset.__qualname__ = {"sasrec": "SASRec", "bert4rec": "BERT4Rec",
                                             "gru4rec": "GRU4Rec"}[name]
    return Preset


SASRec = _preset("sasrec", "sasrec", "next",
                 "SASRec (Kang & McAuley, 2018): causal self-attention, next-item CE over the catalogue.")
BERT4Rec = _preset("bert4rec", "bert4rec", "cloze",
                   "BERT4Rec (Sun et al., 2019): bidirectional transformer trained with the cloze task.")
GRU4Rec = _preset("gru4rec", "gru4rec", "next",
                  "GRU4Rec (Hidasi et al., 2016), sequential CE variant as in RecBole.")
register_model("sequential")(SequentialModel)
