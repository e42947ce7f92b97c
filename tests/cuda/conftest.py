"""The ``cuda`` tests: every CUDA path of the library against its CPU reference.

Every test module here sets ``pytestmark = pytest.mark.cuda``; a ``cuda`` test is skipped, with
the reason, when torch sees no CUDA device. ``benchmarks/gpu_check.sh`` runs them with
``pytest -m cuda tests/cuda``.

``KGSEQGRAPH_CUDA_TESTS_ON_CPU=1`` runs them on the CPU instead: the device under test is the
CPU, the Triton kernels run in Triton's interpreter (``TRITON_INTERPRET=1``) and autocast is CPU
autocast, with smaller problem sizes (:func:`cudatest.size`). That checks the tests themselves
(references, tolerances, shapes, the launchers' grid and block choices) on a machine without a
GPU; it says nothing about CUDA. Tests that need a real GPU (NCCL, several GPUs) still skip.
"""
from __future__ import annotations

import os

import pytest
import torch
from cudatest import ON_CPU_ENV, device_under_test, on_cpu


def pytest_runtest_setup(item: pytest.Item) -> None:
    if "cuda" not in item.keywords or on_cpu():
        return
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU: torch.cuda.is_available() is False (torch "
                    f"{torch.__version__}, CUDA build {torch.version.cuda}); "
                    f"{ON_CPU_ENV}=1 runs these tests on the CPU to check the tests themselves")


@pytest.fixture
def device(monkeypatch) -> torch.device:
    """The device under test; in CPU mode the Triton kernels run in the interpreter."""
    if on_cpu():
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    return device_under_test()


@pytest.fixture(autouse=True)
def _ieee_fp32_matmul():
    """CUDA-vs-CPU comparisons in float32 need IEEE float32 matmuls (no TF32)."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(before)


@pytest.fixture(autouse=True)
def _reference_threads():
    """The float64 CPU references of these tests are large: up to 8 threads on a GPU machine
    (the suite's one-thread rule is for the small CPU tests; it is restored afterwards by the
    root conftest's fixture for the next test)."""
    if not on_cpu():
        torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
    yield
