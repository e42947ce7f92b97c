"""The interface every sequential recommender implements, and what it gets for free.

A model is a thin composition of layers (item embedder → sequence encoder → scorer). The trainer
and the evaluators talk to it only through this interface and never branch on its name:

* :meth:`SequentialRecommender.training_batch` turns a chunk of training sequences into the
  model's training batch (shifted next-item targets, or a cloze-masked batch);
* :meth:`SequentialRecommender.loss` returns a dict of named losses whose ``"loss"`` entry is
  optimised;
* :meth:`SequentialRecommender.shard_batch` keeps one rank's part of a training batch in
  multi-process training (``docs/distributed.md``);
* :meth:`SequentialRecommender.score` returns full-catalogue scores ``[B, N]`` for input
  sequences (what the full-ranking evaluator ranks);
* :meth:`SequentialRecommender.recommend` gives top-k items for new sequences;
* :meth:`SequentialRecommender.scorer` returns a pure tensor module (padded ids → scores) with
  everything graph-related precomputed, for export and serving (:mod:`kgseqgraph.export`);
* :meth:`SequentialRecommender.save_pretrained` / :meth:`from_pretrained` store the config as
  JSON and the weights as safetensors, so a trained model reloads in one line;
* :meth:`SequentialRecommender.pretraining_stages` lists the pre-training a model wants before
  its first epoch (KATRec: BPRMF, TransR), which :mod:`kgseqgraph.training.pretrain` runs.

Graph-based models need the collaborative KG at construction time; ``from_pretrained`` takes it
again as ``data=`` (the graph itself is never stored inside a checkpoint).
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..data.fingerprint import compare_fingerprints, graph_fingerprint
from ..data.batching import SequenceBatch
from ..data.sequences import Sequences
from ..utils.io import atomic_path, atomic_write_bytes

__all__ = ["SequentialRecommender", "MODEL_REGISTRY", "register_model", "check_saved_graph",
           "PretrainStage", "catalogue_size"]

MODEL_REGISTRY: dict[str, type[SequentialRecommender]] = {}

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def catalogue_size(data: Any) -> int:
    """The number of items of a dataset given as its graph (``data['item'].num_nodes``), as
    anything with ``num_items`` (a split, :class:`~kgseqgraph.data.Sequences`), or as the number
    itself — what every model's ``from_dataset(data, …)`` reads."""
    if isinstance(data, bool):
        raise TypeError("expected a graph, a split or a number of items, got a bool")
    if isinstance(data, int):
        n = data
    elif hasattr(data, "node_types"):
        n = int(data["item"].num_nodes)
    elif hasattr(data, "num_items"):
        n = int(data.num_items)
    else:
        raise TypeError(f"expected a graph (HeteroData), a split or a number of items, got "
                        f"{type(data).__name__}")
    if n < 1:
        raise ValueError(f"the catalogue must hold at least one item, got {n}")
    return n


@dataclass
class PretrainStage:
    """One pre-training stage a model asks for (:meth:`SequentialRecommender.pretraining_stages`),
    run by :func:`kgseqgraph.training.pretrain.run_pretraining` before the first epoch of a fresh
    run: ``epochs × steps_per_epoch`` Adam steps on ``loss(sample_batch(generator))`` over
    ``parameters``, then ``finish()`` (e.g. copy the pre-trained rows into the model's tables).

    Attributes:
        name: a short name (``"bprmf"``, ``"transr"``), used in logs and results.
        parameters: what the stage's optimiser updates.
        sample_batch: one training batch (tensors on the CPU) from the stage's generator.
        loss: the scalar loss of a batch (tensors already on the model's device).
        epochs: passes; one pass is ``steps_per_epoch`` batches.
        steps_per_epoch: batches a pass.
        lr: Adam learning rate.
        finish: run once after the last step.
    """

    name: str
    parameters: list[torch.nn.Parameter]
    sample_batch: Callable[[torch.Generator], dict[str, Tensor]]
    loss: Callable[[dict[str, Tensor]], Tensor]
    epochs: int
    steps_per_epoch: int
    lr: float = 1e-3
    finish: Callable[[], None] | None = None


def register_model(name: str):
    """Class decorator: make a model constructible by name (CLI, ``from_pretrained``)."""

    def wrap(cls: type[SequentialRecommender]) -> type[SequentialRecommender]:
        previous = MODEL_REGISTRY.get(name)
        if previous is not None and previous.__qualname__ != cls.__qualname__:
            import warnings

            warnings.warn(f"register_model: {name!r} now names {cls.__module__}."
                          f"{cls.__qualname__}, no longer {previous.__module__}."
                          f"{previous.__qualname__}", stacklevel=2)
        cls.model_name = name
        MODEL_REGISTRY[name] = cls
        return cls

    return wrap


class SequentialRecommender(nn.Module):
    """Base class of next-item recommenders over a catalogue of ``num_items`` items.

    Subclasses set ``config_class`` (a dataclass with at least ``num_items`` and ``max_len``),
    build their layers in ``__init__(config, data=None)`` and implement :meth:`training_batch`,
    :meth:`loss` and :meth:`score`.
    """

    model_name: ClassVar[str] = "base"
    config_class: ClassVar[type] = object
    needs_graph: ClassVar[bool] = False
    #: config fields that change how, not what, the model computes (e.g. memory/time
    #: trade-offs): a training checkpoint may be resumed with them changed
    compute_only_fields: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: Any, data: Any = None) -> None:
        super().__init__()
        self.config = config
        # graph models remember which graph their node rows belong to (saved by save_pretrained,
        # checked by from_pretrained)
        self.graph_fingerprint = (
            graph_fingerprint(data, self.fingerprint_node_types(config))
            if self.needs_graph and data is not None else None)

    @property
    def num_items(self) -> int:
        return int(self.config.num_items)

    @classmethod
    def fingerprint_node_types(cls, config: Any) -> tuple[str, ...]:
        """The node types whose structure the weights of a graph model depend on (recorded by
        :func:`~kgseqgraph.data.graph_fingerprint`): the config's ``node_types``, else items and
        entities."""
        return tuple(getattr(config, "node_types", ("item", "entity")))

    # ------------------------------------------------------------------ training
    def training_batch(self, sequences: Sequences, generator: torch.Generator) -> dict[str, Tensor]:
        """Turn training sequences (already cut to at most ``max_len + 1`` items) into a batch."""
        raise NotImplementedError

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Named losses for one batch; ``"loss"`` is the one the optimiser minimises."""
        raise NotImplementedError

    def shard_batch(self, batch: dict[str, Tensor], rank: int,
                    world_size: int) -> dict[str, Tensor]:
        """This rank's part of a global training batch (distributed data-parallel training).

        Every rank builds the same global batch with :meth:`training_batch` (same sequences, same
        generator state) and keeps its part; DDP then averages the ranks' gradients. The contract:
        the mean over the ranks of ``loss(part)`` must equal ``loss(batch)``.

        The default keeps rank ``rank``'s block of rows (:func:`torch.tensor_split` into
        ``world_size`` blocks) of every tensor, which must all share their first dimension. That
        meets the contract for a loss averaged over rows when the blocks have equal sizes (the
        trainer makes the global batch size a multiple of ``world_size``; only an epoch's last,
        smaller batch may split unevenly). Models whose loss averages over a varying number of
        terms (masked tokens) or holds non-row tensors override this (see
        :meth:`~kgseqgraph.models.sequential.SequentialModel.shard_batch`).
        """
        rows = {int(v.size(0)) for v in batch.values() if isinstance(v, Tensor) and v.dim() > 0}
        if len(rows) > 1:
            raise ValueError(f"{type(self).__name__}.shard_batch: the batch's tensors have "
                             f"different first dimensions {sorted(rows)}; override shard_batch "
                             "to say which tensors to split")
        return {k: torch.tensor_split(v, world_size)[rank]
                if isinstance(v, Tensor) and v.dim() > 0 else v for k, v in batch.items()}

    def on_train_step_start(self) -> None:
        """Hook run before each optimiser step."""

    def on_fit_start(self, seed: int) -> None:
        """Hook run once when a fresh training run starts (not on resume), after
        :meth:`pretraining_stages` have run."""

    def pretraining_stages(self) -> list[PretrainStage]:
        """The pre-training this model wants before its first epoch (none by default)."""
        return []

    # ------------------------------------------------------------------ inference
    def score(self, sequences: Sequences) -> Tensor:
        """Scores ``[B, num_items]`` of every catalogue item as the next item of each sequence."""
        raise NotImplementedError

    @torch.no_grad()
    def recommend(self, item_sequences: Sequences | list[list[int]], k: int = 10,
                  exclude_seen: bool = True) -> tuple[Tensor, Tensor]:
        """Top-``k`` next items for each input sequence.

        Args:
            item_sequences: item-id sequences (oldest first), as :class:`Sequences` or lists.
            k: number of items to return.
            exclude_seen: never recommend an item already in the sequence.

        Returns:
            ``(items [B, k], scores [B, k])``, best first.
        """
        was_training = self.training
        self.eval()
        if not isinstance(item_sequences, Sequences):
            item_sequences = Sequences.from_lists(item_sequences, self.num_items)
        scores = self.score(item_sequences).float()
        if exclude_seen and item_sequences.num_interactions:
            row = torch.repeat_interleave(torch.arange(len(item_sequences)), item_sequences.lengths)
            scores[row, item_sequences.items.to(scores.device)] = float("-inf")
        top = torch.topk(scores, min(k, scores.size(1)), dim=1)
        self.train(was_training)
        return top.indices, top.values

    def add_items(self, data: Any, *, generator: torch.Generator | None = None
                  ) -> SequentialRecommender:
        """Extend a trained model by new items, without training: ``data`` is the model's graph
        with the new items appended (items ``N … N+M-1``, e.g.
        :attr:`~kgseqgraph.data.ColdItemSplit.cold_graph` or
        :func:`~kgseqgraph.data.append_items`), or for models that read nothing but IDs the new
        catalogue size. Existing items keep their indices and their scores; how a new item is
        scored is each model's (its KG links, its text, or nothing). Returns ``self``."""
        raise NotImplementedError(f"{type(self).__name__} cannot add items")

    def _new_item_count(self, data: Any) -> int:
        total = catalogue_size(data)
        if total < self.num_items:
            raise ValueError(f"the new catalogue has {total} items, fewer than the model's "
                             f"{self.num_items}")
        return total - self.num_items

    def scorer(self, exclude_history: bool = False) -> nn.Module:
        """A frozen, pure tensor scoring module for serving: ``LongTensor[B, L]`` of left-padded
        item ids (padding id ``num_items``) → ``Tensor[B, num_items]``, agreeing with
        :meth:`score`. Models that support export override this (see
        :meth:`~kgseqgraph.models.sequential.SequentialModel.scorer`)."""
        raise NotImplementedError(f"{type(self).__name__} has no tensor scorer for export")

    # ------------------------------------------------------------------ persistence
    def config_dict(self) -> dict[str, Any]:
        cfg = dataclasses.asdict(self.config)
        out = {"model": self.model_name, "config": cfg}
        if getattr(self, "graph_fingerprint", None) is not None:
            out["graph"] = self.graph_fingerprint
        return out

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (atomically)."""
        from safetensors.torch import save_model

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # save_model de-duplicates tensors shared between modules (e.g. KATRec's TransR table,
        # also the KG enricher's layer-0 input); written to a temporary file, then renamed.
        with atomic_path(directory / WEIGHTS_NAME) as tmp:
            save_model(self, str(tmp))
        atomic_write_bytes(directory / CONFIG_NAME,
                           json.dumps(self.config_dict(), indent=2, sort_keys=True).encode())
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, data: Any = None,
                        map_location: str | torch.device = "cpu",
                        check_graph: bool = True) -> SequentialRecommender:
        """Rebuild a model saved by :meth:`save_pretrained` (``data``: the graph, for graph models).

        A graph model's weights hold one row per node of the graph it was trained on. When the
        saved model recorded that graph's fingerprint (:func:`~kgseqgraph.data.fingerprint.
        graph_fingerprint`), ``data`` must have the same one, or a :class:`ValueError` says what
        differs (``check_graph=False`` skips the check)."""
        from safetensors.torch import load_model

        directory = Path(directory)
        meta = json.loads((directory / CONFIG_NAME).read_text())
        name = meta["model"]
        if name not in MODEL_REGISTRY:
            raise ValueError(f"{directory / CONFIG_NAME}: unknown model {name!r}; "
                             f"known: {sorted(MODEL_REGISTRY)}")
        model_cls = MODEL_REGISTRY[name]
        if cls is not SequentialRecommender and not issubclass(model_cls, cls):
            raise ValueError(f"{directory} holds a {name!r} model, not a {cls.__name__}")
        config = model_cls.config_class(**meta["config"])
        if model_cls.needs_graph:
            if data is None:
                raise ValueError(f"{name} needs the collaborative KG: pass data=<HeteroData>")
            model = model_cls(config, data=data)
            if check_graph:
                check_saved_graph(directory, meta, model)
        else:
            model = model_cls(config)
        load_model(model, str(directory / WEIGHTS_NAME), strict=True, device=str(map_location))
        return model.to(map_location)


def check_saved_graph(directory: str | os.PathLike, meta: dict[str, Any],
                      model: SequentialRecommender) -> None:
    """Raise if ``model`` was built over another graph than the one ``meta`` (a saved
    ``config.json``) records; nothing to check when either fingerprint is missing."""
    saved = meta.get("graph")
    if saved is None or getattr(model, "graph_fingerprint", None) is None:
        return
    problem = compare_fingerprints(saved, model.graph_fingerprint)
    if problem is not None:
        raise ValueError(f"{directory}: this {meta.get('model')} model was trained on another "
                         f"graph than the one given ({problem}); pass the dataset it was trained "
                         "on (from Python, from_pretrained(..., check_graph=False) skips this "
                         "check)")
