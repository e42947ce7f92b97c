"""Training and evaluating knowledge-graph embeddings alone: filtered link prediction.

:func:`run_link_prediction` splits a KG's triples by node pair
(:func:`~kgseqgraph.data.triples.split_triples`), trains a
:class:`~kgseqgraph.nn.kge.KGEModel` on the training part (:func:`train_kge`, a
:class:`~kgseqgraph.models.base.PretrainStage` run by the one pre-training path,
:func:`~kgseqgraph.training.pretrain.run_stage`), keeps the epoch with the best validation MRR
and reports filtered MRR / Hits@k on test once, next to the exact figures of a random scorer
(:mod:`kgseqgraph.evaluation.link_prediction`).
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..data.triples import TripleIndex, Triples, kg_triples, split_triples
from ..evaluation.link_prediction import (filtered_rank_counts, link_prediction_metrics,
                                          random_baseline)
from ..models.base import PretrainStage
from ..nn.kge import KGEModel, sample_negative_tails
from .pretrain import run_stage

__all__ = ["KGETrainConfig", "train_kge", "LinkPredictionResult", "run_link_prediction"]

log = logging.getLogger("kgseqgraph")


@dataclass
class KGETrainConfig:
    """Settings of :func:`train_kge`."""

    epochs: int = 5
    batch_size: int = 1024
    lr: float = 5e-3
    filtered_negatives: bool = True
    seed: int = 0
    max_steps: int | None = None  # stop early after this many optimiser steps (tests, smoke runs)


def kge_stage(model: KGEModel, triples: Triples, config: KGETrainConfig,
              index: Tensor | None = None,
              filter_index: TripleIndex | None = None) -> PretrainStage:
    """The :class:`~kgseqgraph.models.base.PretrainStage` of :func:`train_kge`: each pass visits
    every training triple once, in a fresh random order, with (filtered) corrupted tails."""
    idx = torch.arange(triples.head.numel()) if index is None else index
    h, r, t = triples.head[idx], triples.relation[idx], triples.tail[idx]
    if h.numel() == 0:
        raise ValueError("no training triples")
    if not config.filtered_negatives:
        filter_index = None
    elif filter_index is None:
        filter_index = TripleIndex(h, r, t, triples.num_nodes, triples.num_relations)
    state: dict[str, Any] = {"perm": torch.empty(0, dtype=torch.long), "pos": 0}

    def sample(g: torch.Generator) -> dict[str, Tensor]:
        if state["pos"] >= state["perm"].numel():  # a new pass
            state["perm"], state["pos"] = torch.randperm(h.numel(), generator=g), 0
        b = state["perm"][state["pos"]:state["pos"] + config.batch_size]
        state["pos"] += b.numel()
        neg = sample_negative_tails(h[b], r[b], t[b], triples.num_nodes, generator=g,
                                    filter_index=filter_index)
        return {"head": h[b], "relation": r[b], "tail": t[b], "neg_tail": neg}

    def loss(batch: dict[str, Tensor]) -> Tensor:
        return model.loss(batch["head"], batch["relation"], batch["tail"], batch["neg_tail"])

    return PretrainStage(type(model).__name__.lower(), list(model.parameters()), sample, loss,
                         epochs=config.epochs,
                         steps_per_epoch=math.ceil(h.numel() / config.batch_size), lr=config.lr)


def train_kge(model: KGEModel, triples: Triples, config: KGETrainConfig | None = None,
              index: Tensor | None = None, filter_index: TripleIndex | None = None,
              on_epoch_end: Callable[[int, float], bool | None] | None = None) -> list[float]:
    """Train ``model`` on ``triples[index]`` with Adam and KGAT's pairwise loss.

    Args:
        model: a :class:`~kgseqgraph.nn.kge.KGEModel`.
        triples: all triples.
        config: training settings.
        index: the training triples (default: all).
        filter_index: known triples that negatives must avoid (default: the training triples,
            when ``config.filtered_negatives``).
        on_epoch_end: called as ``on_epoch_end(epoch, mean_loss)`` after every epoch (epochs
            count from 1); returning ``True`` stops training (early stopping).

    Returns:
        The mean loss of every epoch.
    """
    cfg = config or KGETrainConfig()
    stage = kge_stage(model, triples, cfg, index, filter_index)
    model.train()
    return run_stage(stage, seed=cfg.seed, on_epoch_end=on_epoch_end, max_steps=cfg.max_steps)


@dataclass
class LinkPredictionResult:
    """What :func:`run_link_prediction` measured."""

    model: str
    split: dict[str, int]
    config: dict
    loss_history: list[float]
    valid: dict[str, float]
    test: dict[str, float]
    random_test: dict[str, float]
    train_seconds: float
    eval_seconds: float
    extra: dict = field(default_factory=dict)


def run_link_prediction(model: KGEModel, graph: object, config: KGETrainConfig | None = None, *,
                        ratios: tuple[float, float, float] = (0.9, 0.05, 0.05),
                        split_seed: int = 0, node_types=("item", "entity"),
                        ks: tuple[int, ...] = (1, 3, 10), select_on_valid: bool = True,
                        patience: int | None = 2) -> LinkPredictionResult:
    """Split ``graph``'s triples, train ``model`` on the train part, and report filtered MRR /
    Hits@k on valid and test next to the random scorer's expected figures (test is seen once).

    Args:
        model: an untrained :class:`~kgseqgraph.nn.kge.KGEModel` sized for ``graph``.
        graph: anything :func:`~kgseqgraph.data.triples.kg_triples` accepts.
        config: training settings.
        ratios: train/valid/test fractions of node pairs.
        split_seed: seed of the split.
        node_types: node types of a ``HeteroData`` graph.
        ks: cut-offs for Hits@k.
        select_on_valid: evaluate on valid after every epoch and keep the parameters of the best
            epoch (valid MRR); test is evaluated once, at the end, on the selected model.
        patience: stop after this many epochs without a better valid MRR (``None``: never).
    """
    cfg = config or KGETrainConfig()
    tr = kg_triples(graph, node_types=node_types)
    if model.num_nodes != tr.num_nodes or model.num_relations != tr.num_relations:
        raise ValueError(f"model is sized for {model.num_nodes} nodes / {model.num_relations} "
                         f"relations, the graph has {tr.num_nodes} / {tr.num_relations}")
    split = split_triples(tr, ratios, seed=split_seed)
    everything = TripleIndex(tr.head, tr.relation, tr.tail, tr.num_nodes, tr.num_relations)

    def counts(idx: Tensor):
        return filtered_rank_counts(model, tr.head[idx], tr.relation[idx], tr.tail[idx],
                                    everything)

    best: dict[str, Any] = {"mrr": -1.0, "epoch": 0, "state": None, "bad": 0}
    curve: list[dict[str, float]] = []
    eval_time = [0.0]

    def select(epoch: int, loss: float) -> bool:
        t = time.perf_counter()
        met = link_prediction_metrics(counts(split.valid)[0], ks)
        eval_time[0] += time.perf_counter() - t
        curve.append({"epoch": epoch, "loss": loss, **met})
        log.info("kge epoch %d: valid mrr %.4f hits@10 %.4f", epoch, met["mrr"],
                 met.get("hits@10", float("nan")))
        if met["mrr"] > best["mrr"]:
            best.update(mrr=met["mrr"], epoch=epoch, bad=0,
                        state={k: v.detach().clone() for k, v in model.state_dict().items()})
            return False
        best["bad"] += 1
        return patience is not None and best["bad"] >= patience

    t0 = time.perf_counter()
    history = train_kge(model, tr, cfg, index=split.train,
                        on_epoch_end=select if select_on_valid else None)
    t1 = time.perf_counter()
    if select_on_valid and best["state"] is not None:
        model.load_state_dict(best["state"])
    valid = link_prediction_metrics(counts(split.valid)[0], ks)
    test_counts, n = counts(split.test)
    test = link_prediction_metrics(test_counts, ks)
    t2 = time.perf_counter()
    seen = torch.zeros(tr.num_nodes, dtype=torch.bool)
    seen[tr.head[split.train]] = True
    seen[tr.tail[split.train]] = True
    trained = seen[tr.head[split.test]] & seen[tr.tail[split.test]]
    from ..evaluation.metrics import RankCounts

    trained_counts = RankCounts(test_counts.greater[trained], test_counts.ties[trained])
    return LinkPredictionResult(
        model=repr(model), split=split.sizes(), config=asdict(cfg), loss_history=history,
        valid=valid, test=test, random_test=random_baseline(n, ks),
        train_seconds=t1 - t0 - eval_time[0], eval_seconds=t2 - t1 + eval_time[0],
        extra={"selected_epoch": best["epoch"] if select_on_valid else len(history),
               "valid_curve": curve,
               # test triples touching a node that no training triple mentions (its embedding
               # never trained): no model can rank these better than chance
               "test_with_untrained_node": float((~trained).double().mean()),
               "test_trained_nodes_only": link_prediction_metrics(trained_counts, ks)
               if trained.any() else {},
               "random_test_trained_nodes_only": random_baseline(n[trained], ks)
               if trained.any() else {}})
