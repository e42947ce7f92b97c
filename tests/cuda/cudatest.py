"""Helpers of the ``cuda`` tests (imported by the test modules of this folder and its conftest).

CPU mode: ``KGSEQGRAPH_CUDA_TESTS_ON_CPU=1`` runs the ``cuda`` tests on the CPU, with the Triton
kernels in Triton's interpreter and smaller problem sizes — a check of the tests themselves, not
of CUDA (see ``conftest.py``).
"""
from __future__ import annotations

import os

import torch
from torch import Tensor

#: set to run the ``cuda`` tests on the CPU (see the module docstring)
ON_CPU_ENV = "KGSEQGRAPH_CUDA_TESTS_ON_CPU"

#: Stated tolerances of a result computed in ``dtype`` against a float64 reference computed from
#: the same (rounded) inputs: ``|got - want| <= atol * scale + rtol * |want|`` with ``scale`` the
#: largest ``|want|`` of the tensor. float32: a few ulps of accumulated rounding; float16 (10-bit
#: mantissa, unit roundoff 4.9e-4) and bfloat16 (7 bits, 3.9e-3): about four unit roundoffs, as
#: the kernels accumulate in float32 and round once when they store.
TOL: dict[torch.dtype, tuple[float, float]] = {
    torch.float32: (2e-5, 1e-4),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
    torch.float64: (1e-10, 1e-8),
}


def on_cpu() -> bool:
    """Whether the ``cuda`` tests run in CPU mode (``KGSEQGRAPH_CUDA_TESTS_ON_CPU=1``)."""
    return os.environ.get(ON_CPU_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def size(gpu: int, cpu: int) -> int:
    """A problem size: ``gpu`` on a GPU, ``cpu`` in CPU mode (the Triton interpreter runs every
    program of a grid in Python)."""
    return cpu if on_cpu() else gpu


def device_under_test() -> torch.device:
    return torch.device("cpu") if on_cpu() else torch.device("cuda")


#: unit roundoff of each dtype
UNIT_ROUNDOFF = {torch.float64: 2.0 ** -53, torch.float32: 2.0 ** -24, torch.float16: 2.0 ** -11,
                 torch.bfloat16: 2.0 ** -8}


def assert_close_scaled(got: Tensor, want: Tensor, dtype: torch.dtype, what: str = "",
                        factor: float = 1.0, extra: Tensor | None = None) -> None:
    """``got`` (computed in ``dtype``, any device) against the reference ``want``:
    ``|got - want| <= factor (atol * scale + rtol * |want|) + extra`` elementwise, with
    ``(atol, rtol) = TOL[dtype]``, ``scale`` the largest finite ``|want|`` and ``extra`` an
    optional per-element error bound (e.g. of a cancelling difference). Non-finite entries must
    agree exactly."""
    got = got.detach().to("cpu", torch.float64)
    want = want.detach().to("cpu", torch.float64)
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} vs {tuple(want.shape)}"
    fin = torch.isfinite(want)
    assert torch.equal(fin, torch.isfinite(got)), f"{what}: non-finite entries differ"
    assert torch.equal(got[~fin], want[~fin]), f"{what}: infinities differ"
    if not fin.any():
        return
    atol, rtol = TOL[dtype]
    scale = float(want[fin].abs().max())
    err = (got - want).abs()
    allowed = factor * (atol * scale + rtol * want.abs())
    if extra is not None:
        allowed = allowed + extra.detach().to("cpu", torch.float64).expand_as(allowed)
    bad = fin & ~(err <= allowed)
    if bad.any():
        worst = int(torch.argmax(torch.where(fin, err - allowed, -torch.inf)))
        raise AssertionError(
            f"{what} ({dtype}): {int(bad.sum())} of {int(fin.sum())} elements off; worst at flat "
            f"index {worst}: got {got.flatten()[worst]:.6g}, want {want.flatten()[worst]:.6g}, "
            f"|diff| {err.flatten()[worst]:.3g} > allowed {allowed.flatten()[worst]:.3g} "
            f"(atol {atol} x scale {scale:.3g}, rtol {rtol}, factor {factor})")


#: config fields set only where the library has them (they keep runs short and deterministic):
#: no BPRMF pre-training at fit start
OPTIONAL_OPTIONS = {"pretrain_bprmf_epochs": 0}


def build(name: str, split, data, **options):
    """``build_model(name, graph, **options)`` over the graph a model trained on ``split`` may be
    built from (``split.train_graph`` where the library has it, else the whole graph), plus the
    :data:`OPTIONAL_OPTIONS` its config knows."""
    import dataclasses

    from kgseqgraph.models.base import MODEL_REGISTRY
    from kgseqgraph.models.factory import build_model

    fields = {f.name for f in dataclasses.fields(MODEL_REGISTRY[name].config_class)}
    extra = {k: v for k, v in OPTIONAL_OPTIONS.items() if k in fields and k not in options}
    return build_model(name, getattr(split, "train_graph", data), **options, **extra)


def sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
