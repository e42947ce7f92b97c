"""Compile the Triton kernels for NVIDIA targets through the *launchers* themselves, on a machine
without a GPU.

``python tests/nn/ops/aot_launch.py [ARCH ...]`` (default: 80 90) runs
:mod:`kgseqgraph.nn.ops.triton_kernels`' launchers (``softmax_fwd``, ``softmax_bwd``,
``aggregate_fwd``, ``aggregate_bwd``) on CPU tensors of several shapes and dtypes with

* Triton's active driver replaced by a stub that reports ``GPUTarget("cuda", ARCH, 32)``, and
* every ``kernel[grid](*args, **constexprs)`` launch replaced by
  ``kernel.warmup(*args, grid=grid, **constexprs)``: Triton's own JIT path (argument binding,
  specialisation of integer and pointer arguments — ``H == 1`` becomes a constant, 16-byte
  alignment — and compilation to PTX and, with the ``ptxas`` that ships with Triton, a cubin)
  without a launch.

So the grid and the constexpr/block choices compiled are exactly those the launchers make on a
GPU for those shapes. Prints one JSON list, one record per launch: kernel, arch, grid,
constexprs, input dtype, PTX target line, cubin size. Must run without ``TRITON_INTERPRET``
(Triton's standard library is then in compiled form). Used by ``test_triton_compile.py``.
"""
from __future__ import annotations

import json
import re
import sys
from types import SimpleNamespace

import torch


class StubDriver:
    """The parts of a Triton driver that ``JITFunction.run(..., warmup=True)`` uses."""

    def __init__(self, arch: int) -> None:
        self.arch = arch

    def get_current_target(self):
        from triton.backends.compiler import GPUTarget

        return GPUTarget("cuda", self.arch, 32)

    def get_current_device(self) -> int:
        return self.arch  # one kernel cache per target

    def get_current_stream(self, device=None) -> int:
        return 0

    def get_active_torch_device(self) -> torch.device:
        return torch.device("cpu")


#: (E counts of the segments, heads, D): every forward feature tile (16, 32, 64, 128 with two
#: tiles), every backward tile (16, 32, 64), one and several heads, a long segment
SHAPES = [([3, 0, 70], 1, 5), ([64, 1], 1, 32), ([130, 2, 0], 1, 64), ([5, 9], 1, 130),
          ([40, 3, 7], 3, 16), ([2, 200], 2, 64)]
#: the half-precision and float64 variants on fewer shapes (each distinct specialisation is a
#: compilation of 0.2-0.5 s): one and several heads, the narrowest and the widest tiles
FEW = [SHAPES[0], SHAPES[3], SHAPES[5]]
PLAN = {torch.float32: SHAPES, torch.bfloat16: FEW, torch.float16: FEW, torch.float64: FEW[:1]}


def compile_launches(archs: list[int]) -> list[dict]:
    from triton.runtime import driver

    from kgseqgraph.nn.ops import triton_kernels as tk

    records: list[dict] = []
    state = {"arch": None, "dtype": None}

    class CompileOnly:
        def __init__(self, name: str, fn) -> None:
            self.name, self.fn = name, fn

        def __getitem__(self, grid):
            def launch(*args, **constexprs):
                kernel = self.fn.warmup(*args, grid=grid, **constexprs)
                ptx = kernel.asm.get("ptx", "")
                target = re.search(r"^\.target\s+(\S+)", ptx, re.M)
                records.append({
                    "kernel": self.name, "arch": state["arch"], "dtype": str(state["dtype"]),
                    "grid": list(grid),
                    "constexprs": {k: str(v) for k, v in constexprs.items()},
                    "ptx_target": target.group(1) if target else None,
                    "cubin_bytes": len(kernel.asm.get("cubin", b"")),
                    "shared_bytes": int(getattr(kernel.metadata, "shared", 0))})
            return launch

    compiled = tk.get_kernels(False)
    stub = SimpleNamespace(**{n: CompileOnly(n, getattr(compiled, n)) for n in tk._RAW})
    tk._kernels_for = lambda t: stub
    g = torch.Generator().manual_seed(0)
    for arch in archs:
        driver.set_active(StubDriver(arch))
        state["arch"] = arch
        for dtype, shapes in PLAN.items():
            state["dtype"] = dtype
            for counts, H, D in shapes:
                ptr = torch.zeros(len(counts) + 1, dtype=torch.long)
                ptr[1:] = torch.tensor(counts).cumsum(0)
                E, S = int(ptr[-1]), len(counts)
                score = torch.randn(E, H, generator=g).to(dtype)
                x = torch.randn(E, H, D, generator=g).to(dtype)
                seg = torch.repeat_interleave(torch.arange(S), ptr.diff())
                tk.softmax_fwd(score, ptr)
                tk.softmax_bwd(score, score, ptr)
                out, m, ell = tk.aggregate_fwd(score, x, ptr)
                gout = torch.randn(S, H, D, generator=g).to(dtype)
                dot = torch.randn(S, H, generator=g).to(dtype)
                for need_gx in (True, False):
                    tk.aggregate_bwd(score, x, seg, m, ell, gout, dot, need_gx)
    return records  # the stub driver stays active: run this in a process of its own


if __name__ == "__main__":
    archs = [int(a) for a in sys.argv[1:]] or [80, 90]
    print(json.dumps(compile_launches(archs)))
