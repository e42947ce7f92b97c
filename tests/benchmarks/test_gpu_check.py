"""``benchmarks/gpu_check.sh``: the dry run (what CI can run without a GPU) and the report step
that turns the phases' files into ``gpu_check.json`` (checked on fabricated phase outputs)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
PHASES = ["env", "install", "cuda_tests", "bench_segment_ops", "bench_kg_layer",
          "bench_katrec_epoch", "report"]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def test_dry_run_prints_the_plan_and_exits_0(tmp_path):
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert time.perf_counter() - t0 < 5
    out = proc.stdout
    positions = [out.index(f" {p} ") for p in PHASES]
    assert positions == sorted(positions), "phases out of order"
    assert "pytest -m cuda" in out and "bench_segment_ops_cuda.py" in out
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert plan["dry_run"] is True and [p["name"] for p in plan["phases"]] == PHASES
    caps = [p["cap_seconds"] for p in plan["phases"] if p["cap_seconds"] is not None]
    assert plan["budget_seconds"] <= 480 and all(c > 0 for c in caps)
    # every script the plan runs exists
    for script in ("bench_segment_ops_cuda.py", "bench_kg_layer_cuda.py",
                   "bench_katrec_epoch_cuda.py", "gpu_check_report.py"):
        assert (ROOT / "benchmarks" / script).exists() and script in out
    for test in ("test_ops_cuda", "test_layers_cuda", "test_models_cuda", "test_export_cuda",
                 "test_ddp_cuda"):
        assert (ROOT / "tests" / "cuda" / f"{test}.py").exists() and test in out


def test_dry_run_options_and_usage(tmp_path):
    run = lambda *a: subprocess.run(["bash", str(SCRIPT), *a], capture_output=True,  # noqa: E731
                                    text=True, timeout=60, cwd=ROOT)
    proc = run("--dry-run", "--no-install", "--quick", "--peak-gbps", "4800")
    assert proc.returncode == 0
    assert "skipped (--no-install)" in proc.stdout and "--peak-gbps 4800" in proc.stdout
    assert "--sizes 1e6 " in proc.stdout
    assert run().returncode == 2  # no output folder
    assert run("--bogus", str(tmp_path)).returncode == 2


def _fabricate(out: Path, scatter_ms: float | None, fused_ms: float, pct: float,
               epoch_speedup: float) -> None:
    (out / "phases").mkdir(parents=True)
    (out / "logs").mkdir()
    for name, status in (("env", "ok"), ("install", "skipped"), ("cuda_tests", "ok"),
                         ("bench_segment_ops", "ok"), ("bench_kg_layer", "timeout"),
                         ("bench_katrec_epoch", "ok")):
        (out / "phases" / f"{name}.json").write_text(json.dumps(
            {"name": name, "status": status, "rc": 0, "seconds": 1.5}))
        (out / "logs" / f"{name}.log").write_text(f"log of {name}\n")
    (out / "run.json").write_text(json.dumps({"budget_seconds": 470}))
    (out / "env.json").write_text(json.dumps({"torch": "2.x", "gpus": [{"name": "NVIDIA H200"}]}))
    (out / "cuda_tests.xml").write_text(
        '<testsuites><testsuite tests="4" failures="1" errors="0" skipped="1" time="3.5">'
        '<testcase classname="tests.cuda.test_ops_cuda" name="test_a"/>'
        '<testcase classname="tests.cuda.test_ops_cuda" name="test_b">'
        '<failure message="AssertionError: out off">trace</failure></testcase>'
        '<testcase classname="tests.cuda.test_ddp_cuda" name="test_c">'
        '<skipped message="needs 2 GPUs"/></testcase>'
        '<testcase classname="tests.cuda.test_models_cuda" name="test_d"/>'
        '</testsuite></testsuites>')
    paths = {"fused": {"fwd_bwd_ms": fused_ms, "fwd_bwd_pct_of_peak": pct, "fwd_bwd_gbps": 1.0}}
    if scatter_ms is not None:
        paths["scatter"] = {"fwd_bwd_ms": scatter_ms}
    (out / "bench_segment_ops.json").write_text(json.dumps({"results": [
        {"mode": "edge", "E": 10_000_000, "D": 32, "dtype": "float32", "paths": paths}]}))
    (out / "bench_katrec_epoch.json").write_text(json.dumps(
        {"dataset": "yelp (S3-Rec files)", "speedup_device_vs_1_thread_cpu": epoch_speedup}))


def _report(out: Path) -> dict:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check_report.py"),
                           str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "gpu_check summary" in proc.stdout
    return json.loads((out / "gpu_check.json").read_text())


def test_report_measures_the_targets(tmp_path):
    _fabricate(tmp_path / "a", scatter_ms=40.0, fused_ms=10.0, pct=65.0, epoch_speedup=25.0)
    rep = _report(tmp_path / "a")
    assert list(rep["phases"]) == PHASES[:-1]
    assert rep["phases"]["bench_kg_layer"]["status"] == "timeout"
    assert rep["phases"]["env"]["log_tail"] == "log of env\n"
    t = rep["cuda_tests"]
    assert (t["tests"], t["passed"], t["failures"], t["skipped"]) == (4, 2, 1, 1)
    assert t["failed"][0]["test"].endswith("test_b") and "out off" in t["failed"][0]["message"]
    tg = rep["targets"]
    assert tg["fused_vs_torch_scatter_fwd_bwd_10M"]["measured"] == pytest.approx(4.0)
    assert all(v["met"] is True for v in tg.values())

    _fabricate(tmp_path / "b", scatter_ms=None, fused_ms=10.0, pct=30.0, epoch_speedup=5.0)
    tg = _report(tmp_path / "b")["targets"]
    assert tg["fused_vs_torch_scatter_fwd_bwd_10M"]["met"] is None  # torch-scatter missing
    assert "torch-scatter" in tg["fused_vs_torch_scatter_fwd_bwd_10M"]["note"]
    assert tg["fused_pct_of_peak_bandwidth_10M"]["met"] is False
    assert tg["katrec_epoch_speedup_vs_1_thread_cpu"]["met"] is False


def test_report_falls_back_to_the_pytest_log_when_pytest_was_killed(tmp_path):
    out = tmp_path / "c"
    (out / "phases").mkdir(parents=True)
    (out / "logs").mkdir()
    (out / "phases" / "cuda_tests.json").write_text(json.dumps({"status": "timeout", "rc": 124}))
    (out / "env.json").write_text(json.dumps({"torch": "2.x"}))
    (out / "logs" / "cuda_tests.log").write_text(
        "tests/cuda/test_ops_cuda.py::test_x[a] PASSED [ 1%]\n"
        "tests/cuda/test_ops_cuda.py::test_x[b] FAILED [ 2%]\n"
        "tests/cuda/test_ops_cuda.py::test_y SKIPPED (needs 2 GPUs) [ 3%]\n")
    t = _report(out)["cuda_tests"]
    assert (t["passed"], t["failed"][0]["test"], t["skipped"]) == (
        1, "tests/cuda/test_ops_cuda.py::test_x[b]", 1)
