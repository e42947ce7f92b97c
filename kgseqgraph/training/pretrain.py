"""The one pre-training path: run the stages a model asks for before its first epoch.

A model lists its stages with :meth:`~kgseqgraph.models.base.SequentialRecommender.
pretraining_stages` (KATRec: BPRMF on the training interactions, then TransR on the KG); this
module runs each one — a seeded generator, Adam over the stage's parameters, ``epochs ×
steps_per_epoch`` steps, then the stage's ``finish`` — and returns the mean loss of every pass.
:class:`~kgseqgraph.training.Trainer` calls :func:`run_pretraining` once at the start of a fresh
run (never on resume: the checkpoint already holds the pre-trained weights).
"""
from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["run_pretraining", "run_stage"]

log = logging.getLogger("kgseqgraph")


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def run_stage(stage: Any, seed: int = 0, device: torch.device | str | None = None,
              on_epoch_end: Callable[[int, float], bool | None] | None = None,
              max_steps: int | None = None) -> list[float]:
    """Run one :class:`~kgseqgraph.models.base.PretrainStage`; returns the mean loss of each
    pass. The stage's generator is seeded from ``seed`` and the stage's name, so stages draw
    independent batches and a run is reproducible.

    Args:
        stage: the stage.
        seed: the run's seed.
        device: where the batches go (default: the device of the stage's first parameter).
        on_epoch_end: ``on_epoch_end(pass, mean_loss)`` after every pass (counted from 1);
            returning ``True`` stops (early stopping on a validation metric).
        max_steps: stop after this many optimiser steps (smoke runs).
    """
    params = [p for p in stage.parameters if p.requires_grad]
    if stage.epochs < 0 or stage.steps_per_epoch < 1:
        raise ValueError(f"pre-training stage {stage.name!r}: epochs must be >= 0 and "
                         f"steps_per_epoch >= 1, got {stage.epochs}, {stage.steps_per_epoch}")
    if not params:
        raise ValueError(f"pre-training stage {stage.name!r} has no trainable parameters")
    if device is None:
        device = params[0].device
    generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(stage.name.encode()))
    optimizer = torch.optim.Adam(params, lr=stage.lr)
    losses: list[float] = []
    step = 0
    for epoch in range(stage.epochs):
        total = torch.zeros((), device=device)
        done = 0
        for _ in range(stage.steps_per_epoch):
            loss = stage.loss(_to(stage.sample_batch(generator), torch.device(device)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
            done += 1
            step += 1
            if max_steps is not None and step >= max_steps:
                break
        losses.append(float(total) / done)
        if not torch.isfinite(torch.tensor(losses[-1])):
            raise FloatingPointError(f"pre-training stage {stage.name!r}: loss {losses[-1]} in "
                                     f"pass {epoch + 1}; lower its learning rate")
        log.info("pre-training %s: pass %d/%d loss %.4f", stage.name, epoch + 1, stage.epochs,
                 losses[-1])
        if max_steps is not None and step >= max_steps:
            break
        if on_epoch_end is not None:
            if on_epoch_end(epoch + 1, losses[-1]):
                break
    if stage.finish is not None:
        with torch.no_grad():
            stage.finish()
    return losses


def run_pretraining(model: torch.nn.Module, seed: int = 0,
                    device: torch.device | str | None = None) -> dict[str, list[float]]:
    """Run every stage of ``model.pretraining_stages()`` in order (the model is put in training
    mode meanwhile and left as it was); returns ``{stage name: per-pass mean losses}``."""
    stages = getattr(model, "pretraining_stages", lambda: [])()
    out: dict[str, list[float]] = {}
    if not stages:
        return out
    was_training = model.training
    model.train()
    try:
        for stage in stages:
            out[stage.name] = run_stage(stage, seed, device)
    finally:
        model.train(was_training)
    return out
