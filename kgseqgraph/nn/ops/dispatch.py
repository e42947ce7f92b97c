"""Backend selection for the segment ops: which implementation runs for a given tensor.

Backends
--------
``"torch"``
    Pure PyTorch (CPU and CUDA), custom autograd; the reference and the fast CPU path.
``"triton"``
    Triton kernels (forward and backward) for CUDA tensors. With ``TRITON_INTERPRET=1`` the same
    kernels run in Triton's interpreter, which also accepts CPU tensors (slow; used by the tests).
``"pyg"``
    :func:`torch_geometric.utils.softmax` plus a scatter-sum, differentiated by autograd — the
    path a PyG ``MessagePassing`` layer takes; kept as a comparison baseline.
``"scatter"``
    ``torch_scatter`` (``scatter_softmax`` + ``segment_csr``), only when that package is installed.
``"auto"``
    ``"triton"`` for CUDA tensors when Triton is importable, ``"torch"`` otherwise.
"""
from __future__ import annotations

import functools
import importlib.util
import os

import torch

__all__ = ["BACKENDS", "available_backends", "resolve_backend", "triton_available",
           "triton_interpret_mode"]

BACKENDS = ("auto", "torch", "triton", "pyg", "scatter")


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # e.g. sys.modules[name] is None (import blocked)
        return False


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """``True`` when :mod:`triton` is installed (checked without importing it)."""
    return _installed("triton")


@functools.lru_cache(maxsize=1)
def _scatter_available() -> bool:
    return _installed("torch_scatter")


def triton_interpret_mode() -> bool:
    """Whether ``TRITON_INTERPRET`` is set, i.e. Triton kernels run in the CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in {"1", "true", "yes", "on"}


def available_backends(device: torch.device | str | None = None) -> tuple[str, ...]:
    """Concrete backends that can run on ``device`` in this installation.

    Args:
        device: the device of the inputs (default: CPU).

    Returns:
        A tuple drawn from ``("torch", "triton", "pyg", "scatter")``; ``"triton"`` is listed for
        CUDA devices when Triton is installed, and for CPU only under ``TRITON_INTERPRET=1``.
    """
    dev = torch.device(device if device is not None else "cpu")
    out = ["torch"]
    if triton_available() and (dev.type == "cuda" or triton_interpret_mode()):
        out.append("triton")
    out.append("pyg")
    if _scatter_available():
        out.append("scatter")
    return tuple(out)


def resolve_backend(backend: str, device: torch.device) -> str:
    """Map ``backend`` (possibly ``"auto"``) to a concrete backend for tensors on ``device``.

    Raises:
        ValueError: for an unknown name, or ``"triton"`` on CPU without ``TRITON_INTERPRET=1``.
        ImportError: when the requested optional package (triton, torch_scatter) is missing.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if device.type == "cuda" and triton_available():
            return "triton"
        return "torch"
    if backend == "triton":
        if not triton_available():
            raise ImportError("backend='triton' needs the 'triton' package "
                              "(pip install 'kgseqgraph[triton]')")
        if device.type != "cuda" and not triton_interpret_mode():
            raise ValueError(f"backend='triton' needs CUDA tensors (got device {device}); set "
                             "TRITON_INTERPRET=1 to run the kernels in Triton's CPU interpreter")
    if backend == "scatter" and not _scatter_available():
        raise ImportError("backend='scatter' needs the optional 'torch_scatter' package")
    return backend
