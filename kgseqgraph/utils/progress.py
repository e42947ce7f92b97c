"""The one rule for progress bars (downloads, dataset processing, training epochs, evaluation)."""
from __future__ import annotations

import os
import sys

__all__ = ["progress_enabled", "in_ci"]


def in_ci() -> bool:
    """Whether the ``CI`` environment variable is set to a true value (``1``, ``true``, ``yes``,
    or any other non-empty value but ``0``, ``false``, ``no``)."""
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


def progress_enabled(progress: bool | None = None) -> bool:
    """Whether to draw a tqdm bar.

    ``False``: never. ``True`` or ``None`` (auto): only when stderr is a terminal and not in CI —
    a bar written to a log file or a CI console is noise, so no setting forces one there.
    """
    if progress is False:
        return False
    if in_ci():
        return False
    return bool(getattr(sys.stderr, "isatty", lambda: False)())
