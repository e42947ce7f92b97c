"""Helpers for the test-suite: locating the real datasets in ``$KGSEQGRAPH_DATA``.

Outside CI a missing dataset skips the test with a reason that says how to enable it; under
``CI=true`` a missing dataset is a failure, so a broken data mount can never turn the real-data
tests green by skipping them.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_root", "require_data", "require_package"]

DATA_ENV = "KGSEQGRAPH_DATA"


def data_root() -> Path | None:
    """The folder named by ``$KGSEQGRAPH_DATA``, or ``None`` when the variable is unset."""
    root = os.environ.get(DATA_ENV)
    return Path(root) if root else None


def require_data(*relpaths: str) -> Path:
    """Return ``$KGSEQGRAPH_DATA/<relpaths[0]>`` after checking every path exists.

    Skips the calling test (``pytest.skip``) when the data is not available, or fails it when
    running under ``CI=true``.
    """
    import pytest

    root = data_root()
    in_ci = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
    if root is None:
        msg = (f"real-data test: set {DATA_ENV} to the folder holding the shared datasets "
               f"(needs {', '.join(relpaths)})")
        if in_ci:
            pytest.fail(msg + " — CI=true, so a missing dataset is a failure")
        pytest.skip(msg)
    missing = [p for p in relpaths if not (root / p).exists()]
    if missing:
        msg = f"real-data test: {', '.join(str(root / p) for p in missing)} not found"
        if in_ci:
            pytest.fail(msg + " — CI=true, so a missing dataset is a failure")
        pytest.skip(msg)
    return root / relpaths[0] if relpaths else root


def require_package(module: str, install: str) -> None:
    """Skip the calling test when ``module`` cannot be imported (fail under ``CI=true``, whose
    ``.ci/run`` installs it). ``install`` says how to get it, e.g. ``pip install --no-deps X``."""
    import importlib.util

    import pytest

    if importlib.util.find_spec(module) is not None:
        return
    msg = f"needs the {module!r} package ({install})"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(msg + " — CI=true, so a missing package is a failure")
    pytest.skip(msg)
