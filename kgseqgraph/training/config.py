r"""Training configuration: one dataclass, JSON round-trip, validated on construction.

The optimiser is AdamW; the learning rate follows

.. math::
    \eta_s = \eta \cdot \begin{cases}
        \frac{s + 1}{W} & s < W \quad \text{(linear warm-up)}\\[2pt]
        \frac{S - s}{S - W} & s \ge W \quad \text{(linear decay to 0, ``lr_decay="linear"``)}\\[2pt]
        1 & s \ge W \quad \text{(``lr_decay="constant"``)}
    \end{cases}

for optimiser step :math:`s = 0 \dots S - 1`, where :math:`S` is the number of steps of the whole
run (``epochs`` × steps per epoch) and :math:`W = \lfloor \text{warmup\_ratio} \cdot S \rfloor`
(or ``warmup_steps``).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..utils.progress import progress_enabled

__all__ = ["TrainConfig", "RESUME_COMPATIBLE_FIELDS", "METRIC_NAMES"]

_METRIC_RE = re.compile(r"^(?P<name>[A-Za-z]+)(?:@(?P<k>\d+))?$")

#: Metric names the evaluators report (``<name>@<k>``, and ``MRR`` without a cut-off).
METRIC_NAMES: frozenset[str] = frozenset({"HR", "NDCG", "MAP", "MRR"})

#: Fields that may differ between an interrupted run and its resumption (they change neither the
#: optimisation trajectory nor the metrics).
RESUME_COMPATIBLE_FIELDS: frozenset[str] = frozenset(
    {"output_dir", "device", "progress", "num_threads", "eval_chunk_size"})


@dataclass
class TrainConfig:
    """Everything the :class:`~kgseqgraph.training.Trainer` needs besides a model and a split.

    Args:
        seed: seeds the global RNGs (:func:`~kgseqgraph.training.seed_everything`, i.e. dropout)
            and the trainer's own :class:`torch.Generator` (window shuffling, the model's batch
            randomness such as cloze masks).
        epochs: maximum number of passes over the training windows.
        batch_size: training windows per optimiser step.
        lr: peak learning rate of AdamW.
        weight_decay: AdamW decoupled weight decay, applied to parameters with ``ndim >= 2``
            (weight matrices, embedding tables) and never to biases or norm scales.
        warmup_ratio: fraction of all optimiser steps spent warming the rate up linearly.
        warmup_steps: warm-up length in optimiser steps (overrides ``warmup_ratio``; BERT's
            recipe, e.g. KATRec's 100).
        lr_decay: ``"linear"`` (decay to 0 at the end of the run) or ``"constant"``.
        grad_clip: max global L2 norm of the gradients (``None`` or ``0``: no clipping).
        patience: early stopping after this many evaluations without improvement of
            ``valid_metric`` (``None``: never stop early).
        valid_metric: validation metric used for model selection (a key of the evaluation result,
            e.g. ``"NDCG@10"``, ``"HR@20"``, ``"MRR"``); higher is better.
        eval_every: validate every this many epochs (and always after the last one).
        eval_chunk_size: users scored at a time during evaluation; ``None`` (default) sizes the
            chunks so one chunk's ``[chunk, num_items]`` scores stay within 256 MiB
            (:func:`~kgseqgraph.evaluation.budgeted_chunk_size`: 1,024 users up to ~32k items,
            335 at 100k items). The metrics do not depend on it.
        ks: cut-offs of the reported metrics.
        exclude_history: remove each user's input items from its ranking (``False`` keeps them,
            RecBole's full-sort protocol). The target itself is never removed.
        ties: tie rule of the ranking (``"pessimistic"``, ``"expected"``, ``"optimistic"``).
        sampled_negatives: also report sampled metrics against this many negatives per user
            (keys ``sampled-<n>/…``, or ``sampled-pop-<n>/…`` for popularity negatives);
            ``None``: full ranking only. Model selection uses the full-ranking ``valid_metric``
            unless it names a sampled key.
        sampled_strategy: ``"uniform"`` or ``"popularity"`` negatives.
        output_dir: folder of checkpoints, ``metrics.json``, ``training_curve.png``,
            ``results.json`` and ``best_model/``; ``None`` keeps everything in memory (no resume).
        max_len: training window length; ``None`` takes the model's ``config.max_len``, any other
            value must equal it.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``…
        num_threads: ``torch.set_num_threads`` for the run (``None``: leave as is).
        progress: tqdm bars; ``None`` = on only when stderr is a terminal and ``CI`` is unset.
        max_steps_per_epoch: cap on optimiser steps per epoch (quick runs, smoke tests).
        deterministic: also call ``torch.use_deterministic_algorithms(True)`` (CUDA runs).
    """

    seed: int = 0
    epochs: int = 50
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    warmup_steps: int | None = None
    lr_decay: str = "linear"
    grad_clip: float | None = 1.0
    patience: int | None = 10
    valid_metric: str = "NDCG@10"
    eval_every: int = 1
    eval_chunk_size: int | None = None
    ks: tuple[int, ...] = (1, 5, 10, 20)
    exclude_history: bool = True
    ties: str = "pessimistic"
    sampled_negatives: int | None = None
    sampled_strategy: str = "uniform"
    output_dir: str | None = None
    max_len: int | None = None
    device: str = "auto"
    num_threads: int | None = None
    progress: bool | None = None
    max_steps_per_epoch: int | None = None
    deterministic: bool = False

    def __post_init__(self) -> None:
        self.ks = tuple(int(k) for k in self.ks)
        if isinstance(self.output_dir, Path):
            self.output_dir = str(self.output_dir)
        _positive_int("epochs", self.epochs)
        _positive_int("batch_size", self.batch_size)
        _positive_int("eval_every", self.eval_every)
        if self.eval_chunk_size is not None:
            _positive_int("eval_chunk_size", self.eval_chunk_size)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an int, got {self.seed!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must lie in [0, 1), got {self.warmup_ratio!r}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps!r}")
        if self.lr_decay not in {"linear", "constant"}:
            raise ValueError(f"lr_decay must be 'linear' or 'constant', got {self.lr_decay!r}")
        if self.grad_clip is not None and self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0 or None, got {self.grad_clip!r}")
        if self.patience is not None:
            _positive_int("patience", self.patience)
        if not self.ks or any(k < 1 for k in self.ks):
            raise ValueError(f"ks must be non-empty positive cut-offs, got {self.ks!r}")
        if self.ties not in {"pessimistic", "expected", "optimistic"}:
            raise ValueError("ties must be 'pessimistic', 'expected' or 'optimistic', got "
                             f"{self.ties!r}")
        if self.sampled_negatives is not None:
            _positive_int("sampled_negatives", self.sampled_negatives)
        if self.sampled_strategy not in {"uniform", "popularity"}:
            raise ValueError("sampled_strategy must be 'uniform' or 'popularity', got "
                             f"{self.sampled_strategy!r}")
        if self.max_len is not None:
            _positive_int("max_len", self.max_len)
        if self.num_threads is not None:
            _positive_int("num_threads", self.num_threads)
        if self.max_steps_per_epoch is not None:
            _positive_int("max_steps_per_epoch", self.max_steps_per_epoch)
        self.check_metric_available(self.valid_metric)

    # ------------------------------------------------------------------ metrics
    def check_metric_available(self, metric: str) -> None:
        """Raise ``ValueError`` unless ``metric`` will be among the evaluation keys."""
        name = metric
        if metric.startswith("sampled"):
            prefix, _, name = metric.partition("/")
            if prefix != self.sampled_protocol:
                raise ValueError(f"valid_metric {metric!r} names a sampled protocol, but this "
                                 f"config evaluates {self.sampled_protocol or 'no sampled one'} "
                                 "(set sampled_negatives / sampled_strategy to match)")
        m = _METRIC_RE.match(name)
        if m is None:
            raise ValueError(f"valid_metric must look like 'NDCG@10', 'HR@20' or 'MRR'; got "
                             f"{metric!r}")
        if m.group("name") not in METRIC_NAMES or (m.group("k") is None
                                                   and m.group("name") != "MRR"):
            raise ValueError(f"valid_metric {metric!r}: the evaluators report "
                             f"{sorted(METRIC_NAMES)} at a cut-off (e.g. 'NDCG@10') and 'MRR'")
        if m.group("k") is not None and int(m.group("k")) not in self.ks:
            raise ValueError(f"valid_metric {metric!r} uses a cut-off not in ks={self.ks}")

    @property
    def sampled_protocol(self) -> str | None:
        """Key prefix of the sampled metrics (``"sampled-100"``, ``"sampled-pop-100"``) or
        ``None``."""
        if self.sampled_negatives is None:
            return None
        pop = "pop-" if self.sampled_strategy == "popularity" else ""
        return f"sampled-{pop}{self.sampled_negatives}"

    @property
    def progress_enabled(self) -> bool:
        return progress_enabled(self.progress)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``ks`` as a list)."""
        d = dataclasses.asdict(self)
        d["ks"] = list(self.ks)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; known: {sorted(names)}")
        return cls(**d)

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike) -> TrainConfig:
        """Parse a JSON string, or read a ``.json`` file when given a path."""
        s = str(text_or_path)
        if not s.lstrip().startswith("{"):
            s = Path(s).read_text()
        return cls.from_dict(json.loads(s))

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def diff(self, other: TrainConfig | dict[str, Any]) -> dict[str, tuple[Any, Any]]:
        """Fields that differ: ``{name: (self value, other value)}``."""
        a = self.to_dict()
        if not isinstance(other, TrainConfig):
            other = TrainConfig.from_dict(other)
        b = other.to_dict()
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
