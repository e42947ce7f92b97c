"""The Triton kernels compile for NVIDIA sm_80 (A100) and sm_90 (H100/H200) — no GPU needed.

``aot_launch.py`` (run in a fresh process without ``TRITON_INTERPRET``) calls the launchers of
:mod:`kgseqgraph.nn.ops.triton_kernels` on CPU tensors with Triton's driver stubbed to report
the target and every launch turned into ``JITFunction.warmup``: Triton's own argument binding
and specialisation, then compilation to PTX and a cubin by the ``ptxas`` that ships with Triton.
So every grid / block / constexpr choice the launchers make for its shapes (every feature-tile
width, one and several heads, ``WRITE_GX`` on and off, float32 / float16 / bfloat16 / float64) is
compiled for both targets. What this cannot check (register pressure at run time, occupancy,
numerics on the device) is left to the ``cuda`` tests (``tests/cuda``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed (pip install triton)")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


def _nvidia_toolchain() -> str | None:
    """Why the NVIDIA compilation cannot run here, or ``None`` when it can."""
    from triton.backends import backends

    if "nvidia" not in backends:
        return "this triton build has no NVIDIA backend"
    try:
        from triton import knobs

        ptxas = knobs.nvidia.ptxas.path
    except Exception as err:  # noqa: BLE001 - any failure to locate it means: cannot compile
        return f"triton's ptxas is not available ({type(err).__name__}: {err})"
    if not ptxas or not os.path.exists(ptxas):
        return f"triton's ptxas is not available ({ptxas!r})"
    return None


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"  # Triton 3.9 warns when unset
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@pytest.fixture(scope="module")
def launches() -> list[dict]:
    reason = _nvidia_toolchain()
    if reason:
        pytest.skip(reason)
    proc = subprocess.run([sys.executable, str(HERE / "aot_launch.py"), "80", "90"],
                          capture_output=True, text=True, timeout=600, env=_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_launch_compiles_to_a_cubin_for_both_targets(launches):
    assert {r["arch"] for r in launches} == {80, 90}
    for r in launches:
        assert r["cubin_bytes"] > 0, r
        # Triton targets the arch-specific sm_90a on Hopper
        assert r["ptx_target"] in ({"sm_80"} if r["arch"] == 80 else {"sm_90", "sm_90a"}), r
    kernels = {(r["arch"], r["kernel"]) for r in launches}
    for arch in (80, 90):
        assert {k for a, k in kernels if a == arch} == {"softmax_fwd", "softmax_bwd",
                                                       "aggregate_fwd", "aggregate_bwd"}


def test_the_launchers_tile_choices_are_all_compiled(launches):
    """Every value of the launchers' tile choices (forward ``BLOCK_D`` 16..128, backward 16..64,
    ``WRITE_GX`` both ways) and every input dtype was compiled on both targets."""
    from kgseqgraph.nn.ops import triton_kernels as tk

    for arch in (80, 90):
        mine = [r for r in launches if r["arch"] == arch]
        fwd = {int(r["constexprs"]["BLOCK_D"]) for r in mine if r["kernel"] == "aggregate_fwd"}
        bwd = {(int(r["constexprs"]["BLOCK_D"]), r["constexprs"]["WRITE_GX"])
               for r in mine if r["kernel"] == "aggregate_bwd"}
        assert fwd == {tk._block_d(d) for d in range(1, 1025)} == {16, 32, 64, 128}
        assert {b for b, _ in bwd} == {min(tk._block_d(d), 64) for d in range(1, 1025)}
        assert {w for _, w in bwd} == {"True", "False"}
        assert {r["dtype"] for r in mine} == {str(d) for d in (torch.float32, torch.float16,
                                                                torch.bfloat16, torch.float64)}
        # the accumulator: float64 for float64 inputs, float32 for every other dtype
        for r in mine:
            assert r["constexprs"]["ACC"] == ("fp64" if r["dtype"] == "torch.float64"
                                              else "fp32"), r
        # one program per (segment, head[, feature tile]) / per (edge block, head)
        for r in mine:
            assert all(n >= 1 for n in r["grid"]) and r["constexprs"]["BLOCK_E"] == "64", r


def test_compile_for_target_api():
    """:func:`~kgseqgraph.nn.ops.triton_kernels.compile_for_target` (the public helper)."""
    reason = _nvidia_toolchain()
    if reason:
        pytest.skip(reason)
    code = ("from kgseqgraph.nn.ops.triton_kernels import compile_for_target\n"
            "sizes = compile_for_target(90)\n"
            "assert len(sizes) == 4 and all(v > 0 for v in sizes.values()), sizes\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
