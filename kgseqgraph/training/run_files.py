"""The files of a training run (``TrainConfig.output_dir``), written atomically by rank 0:

* ``checkpoint.pt`` — the full training state after every epoch (:mod:`.checkpoint`);
* ``metrics.json`` — every epoch's record, the best epoch and its validation metrics;
* ``training_curve.png`` — losses and the validation metric by epoch (:mod:`.curves`);
* ``best_model/`` — the selected weights (``save_pretrained``) and ``dataset.json``, the dataset
  they were trained on, which ``kgseqgraph export`` / ``evaluate`` / ``recommend`` read;
* ``results.json`` — the run's result, configuration, timings, versions and dataset.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .checkpoint import CHECKPOINT_NAME, atomic_write_json
from .curves import plot_training_curve

__all__ = ["RunFolder", "dataset_info", "METRICS_NAME", "RESULTS_NAME", "CURVE_NAME",
           "BEST_MODEL_DIR", "DATASET_INFO_NAME"]

log = logging.getLogger("kgseqgraph")

METRICS_NAME = "metrics.json"
RESULTS_NAME = "results.json"
CURVE_NAME = "training_curve.png"
BEST_MODEL_DIR = "best_model"
#: beside the saved best model: the dataset it was trained on (``data.dataset_info``), read by
#: ``kgseqgraph export`` / ``evaluate`` / ``recommend`` when no ``--dataset`` is given
DATASET_INFO_NAME = "dataset.json"


def dataset_info(data: Any) -> dict[str, Any] | None:
    """What the graph records about its dataset (name, root, raw-file sha256s), or ``None``."""
    info = getattr(data, "dataset_info", None) if data is not None else None
    return dict(info) if isinstance(info, dict) else None


class RunFolder:
    """Where a training run writes its files (see the module docstring)."""

    FILES = {"metrics": METRICS_NAME, "curve": CURVE_NAME, "best_model": BEST_MODEL_DIR,
             "checkpoint": CHECKPOINT_NAME}

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_NAME

    @property
    def best_model(self) -> Path:
        return self.path / BEST_MODEL_DIR

    def write_epoch(self, history: list[dict[str, Any]], valid_metric: str, best_epoch: int,
                    best_valid: dict[str, float] | None, title: str | None = None) -> None:
        """``metrics.json`` and ``training_curve.png`` after an epoch (a plotting problem is
        logged, never raised: it must not kill a training run)."""
        atomic_write_json({"valid_metric": valid_metric, "best_epoch": best_epoch,
                           "best_valid": best_valid, "epochs": history},
                          self.path / METRICS_NAME)
        try:
            plot_training_curve(history, self.path / CURVE_NAME, valid_metric,
                                best_epoch or None, title=title)
        except Exception as exc:
            log.warning("could not draw the training curve: %s", exc)

    def write_final(self, model: Any, data: Any, results: dict[str, Any]) -> None:
        """``best_model/`` (with ``dataset.json``) and ``results.json`` at the end of a run."""
        save = getattr(model, "save_pretrained", None)
        if callable(save):
            save(self.best_model)
            info = dataset_info(data)
            if info is not None:
                atomic_write_json(info, self.best_model / DATASET_INFO_NAME)
        atomic_write_json(results, self.path / RESULTS_NAME)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"
