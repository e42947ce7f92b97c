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

from ..utils.io import atomic_write_bytes

__all__ = ["plot_training_curve", "training_curve_figure"]

log = logging.getLogger("kgseqgraph")

_warned_missing = False


#: record["train"] keys that are not losses: drawn on their own axis, not the loss axis
NON_LOSS_KEYS = ("grad_norm",)


def plot_training_curve(history: Sequence[dict[str, Any]], path: str | os.PathLike,
                        valid_metric: str = "NDCG@10", best_epoch: int | None = None,
                        title: str | None = None) -> Path | None:
    """Draw ``history`` (the trainer's per-epoch records) into a two-panel PNG at ``path``.

    Left: every training loss the model reports (``record["train"]``) against the epoch, and the
    gradient norm (``grad_norm``, before clipping) on a second y-axis of its own. Right:
    ``valid_metric`` at the evaluated epochs (``record["valid"]``), the best epoch marked.
    Epoch axes have integer ticks.

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
        fig = training_curve_figure(history, valid_metric, best_epoch, title)
    except ImportError:
        if not _warned_missing:
            log.warning("matplotlib is not installed: skipping the training-curve PNG "
                        "(pip install matplotlib)")
            _warned_missing = True
        return None
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def training_curve_figure(history: Sequence[dict[str, Any]], valid_metric: str = "NDCG@10",
                          best_epoch: int | None = None, title: str | None = None) -> Any:
    """The :class:`matplotlib.figure.Figure` :func:`plot_training_curve` saves (axes: loss,
    validation metric, and a twin of the loss axis for ``grad_norm`` when it was recorded).

    Raises:
        ImportError: matplotlib is not installed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_valid = fig.subplots(1, 2)

    epochs = [int(r["epoch"]) for r in history]
    keys: list[str] = []
    for r in history:
        for k in r.get("train", {}):
            if k not in keys:
                keys.append(k)

    def points(k: str) -> list[tuple[int, float]]:
        return [(e, r["train"][k]) for e, r in zip(epochs, history) if k in r.get("train", {})]

    loss_keys = [k for k in keys if k not in NON_LOSS_KEYS]
    handles = []
    for k in loss_keys:
        pts = points(k)
        if pts:
            handles += ax_loss.plot(*zip(*pts), marker="o", markersize=3, label=k)
    other = [k for k in keys if k in NON_LOSS_KEYS and points(k)]
    if other:
        ax_other = ax_loss.twinx()
        for k in other:
            handles += ax_other.plot(*zip(*points(k)), marker=".", markersize=3, linestyle=":",
                                     color="tab:gray", label=f"{k} (right axis)")
        ax_other.set_ylabel(", ".join(other))
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss (mean over batches)")
    if handles:
        ax_loss.legend(handles=handles, loc="best", fontsize="small")
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
    for ax in (ax_loss, ax_valid):  # epochs are whole numbers
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
