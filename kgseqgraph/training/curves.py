"""Training curve as a PNG: training losses and the validation metric per epoch.

Uses matplotlib's object-oriented API with the Agg canvas (no ``pyplot``, no global backend
change), imported lazily; without matplotlib the plot is skipped with one logged warning.
"""
from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..models.base import atomic_write_bytes

__all__ = ["plot_training_curve"]

log = logging.getLogger("kgseqgraph")

_warned_missing = False


def plot_training_curve(history: Sequence[dict[str, Any]], path: str | os.PathLike,
                        valid_metric: str = "NDCG@10", best_epoch: int | None = None,
                        title: str | None = None) -> Path | None:
    """Draw ``history`` (the trainer's per-epoch records) into a two-panel PNG at ``path``.

    Left: every training loss the model reports (``record["train"]``) against the epoch.
    Right: ``valid_metric`` at the evaluated epochs (``record["valid"]``), the best epoch marked.

    Args:
        history: records with ``"epoch"``, ``"train"`` (dict of floats) and ``"valid"`` (dict or
            ``None``).
        path: destination, written atomically.
        valid_metric: the validation key to plot.
        best_epoch: epoch to mark (a dashed line).
        title: figure title.

    Returns:
        The path, or ``None`` when matplotlib is not installed.
    """
    global _warned_missing
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        if not _warned_missing:
            log.warning("matplotlib is not installed: skipping the training-curve PNG "
                        "(pip install matplotlib)")
            _warned_missing = True
        return None

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_valid = fig.subplots(1, 2)

    epochs = [int(r["epoch"]) for r in history]
    loss_keys: list[str] = []
    for r in history:
        for k in r.get("train", {}):
            if k not in loss_keys:
                loss_keys.append(k)
    for k in loss_keys:
        pts = [(e, r["train"][k]) for e, r in zip(epochs, history) if k in r.get("train", {})]
        if pts:
            ax_loss.plot(*zip(*pts), marker="o", markersize=3, label=k)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss (mean over batches)")
    if loss_keys:
        ax_loss.legend(loc="best", fontsize="small")
    ax_loss.grid(alpha=0.3)

    vpts = [(e, r["valid"][valid_metric]) for e, r in zip(epochs, history)
            if r.get("valid") and valid_metric in r["valid"]]
    if vpts:
        ax_valid.plot(*zip(*vpts), marker="o", markersize=3, color="tab:green",
                      label=f"valid {valid_metric}")
    if best_epoch is not None:
        ax_valid.axvline(best_epoch, color="tab:red", linestyle="--", linewidth=1,
                         label=f"best epoch {best_epoch}")
    ax_valid.set_xlabel("epoch")
    ax_valid.set_ylabel(valid_metric)
    ax_valid.legend(loc="best", fontsize="small")
    ax_valid.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path
