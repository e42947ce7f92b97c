"""The report step of ``benchmarks/gpu_check.sh`` (standard library only, so it runs whatever
else failed).

``python benchmarks/gpu_check_report.py OUT`` merges what the phases left in ``OUT`` — their
status files (``phases/*.json``), logs, the ``cuda`` tests' JUnit XML (or, when pytest was killed
before writing it, its ``-v`` log) and the benchmarks' JSON — into ``OUT/gpu_check.json``, with
the issue's targets measured against their thresholds, and prints a summary.

``python benchmarks/gpu_check_report.py --env FILE`` writes the environment facts (python,
torch, CUDA, Triton, GPU, nvidia-smi) to ``FILE`` (the ``env`` phase).
"""
from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

SCHEMA = "kgseqgraph.gpu_check/1"
ROOT = Path(__file__).resolve().parents[1]

#: the issue's targets: (key, description, threshold, how to read the measurement)
TARGETS = [
    ("fused_vs_torch_scatter_fwd_bwd_10M",
     "fused attention-aggregation forward+backward vs torch-scatter at 10M edges (fp32)", 3.0),
    ("fused_pct_of_peak_bandwidth_10M",
     "fused forward+backward achieved bandwidth, % of the GPU's peak, at 10M edges (fp32)", 60.0),
    ("katrec_epoch_speedup_vs_1_thread_cpu",
     "KATRec epoch on Yelp, one GPU vs one CPU thread (CPU extrapolated)", 20.0),
]


def _run(cmd: list[str]) -> str | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception:  # noqa: BLE001 - a missing tool is a fact, not an error
        return None


def environment() -> dict:
    env: dict = {"python": sys.version.split()[0], "executable": sys.executable,
                 "platform": platform.platform(), "machine": platform.machine(),
                 "nvidia_smi": _run(["nvidia-smi", "--query-gpu=name,memory.total,"
                                     "driver_version,compute_cap", "--format=csv,noheader"]),
                 "git_commit": _run(["git", "-C", str(ROOT), "rev-parse", "HEAD"]),
                 "git_dirty": bool(_run(["git", "-C", str(ROOT), "status", "--porcelain"]))}
    try:
        import torch

        env.update(torch=torch.__version__, torch_cuda=torch.version.cuda,
                   cuda_available=torch.cuda.is_available(),
                   nccl_available=torch.distributed.is_available()
                   and torch.distributed.is_nccl_available())
        if torch.cuda.is_available():
            env["gpus"] = [{"name": torch.cuda.get_device_name(i),
                            "capability": list(torch.cuda.get_device_capability(i)),
                            "memory_gib": torch.cuda.get_device_properties(i).total_memory / 2**30}
                           for i in range(torch.cuda.device_count())]
    except Exception as err:  # noqa: BLE001
        env["torch_error"] = f"{type(err).__name__}: {err}"
    for mod in ("triton", "torch_geometric", "torch_scatter", "onnxruntime"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception as err:  # noqa: BLE001
            env[mod] = None
            env[f"{mod}_error"] = f"{type(err).__name__}: {str(err)[:200]}"
    return env


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except Exception:  # noqa: BLE001 - a missing or partial file is reported as missing
        return None


def _tail(path: Path, n: int = 3000) -> str | None:
    return path.read_text(errors="replace")[-n:] if path.exists() else None


def test_summary(out: Path) -> dict:
    """Counts and failures of the ``cuda`` tests, from the JUnit XML or else the ``-v`` log."""
    xml = out / "cuda_tests.xml"
    if xml.exists():
        try:
            root = ET.parse(xml).getroot()
            suites = [root] if root.tag == "testsuite" else list(root)
            res = {"source": "junit", "tests": 0, "failures": 0, "errors": 0, "skipped": 0,
                   "seconds": 0.0, "failed": [], "skip_reasons": {}}
            for s in suites:
                for k in ("tests", "failures", "errors", "skipped"):
                    res[k] += int(s.get(k, 0))
                res["seconds"] += float(s.get("time", 0))
                for case in s.iter("testcase"):
                    name = f"{case.get('classname')}::{case.get('name')}"
                    for tag in ("failure", "error"):
                        for el in case.findall(tag):
                            res["failed"].append({"test": name, "kind": tag,
                                                  "message": (el.get("message") or "")[:600]})
                    for el in case.findall("skipped"):
                        msg = (el.get("message") or "")[:200]
                        res["skip_reasons"][msg] = res["skip_reasons"].get(msg, 0) + 1
            res["passed"] = res["tests"] - res["failures"] - res["errors"] - res["skipped"]
            return res
        except ET.ParseError as err:
            pass_err = str(err)
        else:  # pragma: no cover
            pass_err = None
    else:
        pass_err = "no JUnit XML (pytest did not finish)"
    log = out / "logs" / "cuda_tests.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    counts = {k: len(re.findall(rf"^\S+::\S+ {k.upper()}", text, re.M))
              for k in ("passed", "failed", "skipped", "error")}
    failed = re.findall(r"^(\S+::\S+) (?:FAILED|ERROR)", text, re.M)
    return {"source": f"-v log ({pass_err})", **counts,
            "failed": [{"test": t} for t in failed]}


def targets(results: dict) -> dict:
    out = {}
    ops = results.get("bench_segment_ops") or {}
    row = next((r for r in ops.get("results", []) if r.get("mode") == "edge"
                and r.get("E") == 10_000_000 and r.get("dtype") == "float32"), None)
    fused = (row or {}).get("paths", {}).get("fused", {})
    scatter = (row or {}).get("paths", {}).get("scatter", {})
    for key, desc, threshold in TARGETS:
        measured, note = None, None
        if key.startswith("fused_vs_torch_scatter"):
            if row is None:
                note = "no 10M-edge fp32 edge-mode row (benchmark failed, timed out or --quick)"
            elif "fwd_bwd_ms" not in scatter:
                note = scatter.get("error", "torch-scatter not installed")
            elif "fwd_bwd_ms" not in fused:
                note = fused.get("error", "fused path did not run")
            else:
                measured = scatter["fwd_bwd_ms"] / fused["fwd_bwd_ms"]
        elif key.startswith("fused_pct"):
            if row is None:
                note = "no 10M-edge fp32 edge-mode row"
            elif "fwd_bwd_pct_of_peak" not in fused:
                note = fused.get("error", "peak bandwidth unknown (pass --peak-gbps)")
            else:
                measured = fused["fwd_bwd_pct_of_peak"]
        else:
            ep = results.get("bench_katrec_epoch") or {}
            measured = ep.get("speedup_device_vs_1_thread_cpu")
            if measured is None:
                note = "epoch benchmark did not finish"
            elif "yelp" not in str(ep.get("dataset", "")):
                note = f"measured on {ep.get('dataset')}, not the Yelp files"
        out[key] = {"description": desc, "threshold": threshold, "measured": measured,
                    "met": None if measured is None else bool(measured >= threshold),
                    **({"note": note} if note else {})}
    return out


def ratios(results: dict) -> dict:
    """The headline ratios per benchmark row (for docs/results.md)."""
    rows = []
    for r in (results.get("bench_segment_ops") or {}).get("results", []):
        f = r.get("paths", {}).get("fused", {})
        rows.append({"mode": r["mode"], "E": r["E"], "D": r["D"], "dtype": r["dtype"],
                     "fused_fwd_bwd_ms": f.get("fwd_bwd_ms"),
                     "fused_fwd_bwd_gbps": f.get("fwd_bwd_gbps"),
                     "fused_fwd_bwd_pct_of_peak": f.get("fwd_bwd_pct_of_peak"),
                     "speedup_of_fused": r.get("speedup_of_fused")})
    layer = [{"graph": r["graph"], "edges": r["edges"], "speedup_vs_pyg": r.get("speedup_vs_pyg")}
             for r in (results.get("bench_kg_layer") or {}).get("results", [])]
    return {"segment_ops": rows, "kg_layer": layer}


#: the phases in the order gpu_check.sh runs them
PHASE_ORDER = ["env", "install", "cuda_tests", "bench_segment_ops", "bench_kg_layer",
               "bench_katrec_epoch"]


def report(out: Path) -> dict:
    phases = {}
    found = sorted((out / "phases").glob("*.json"),
                   key=lambda p: (PHASE_ORDER.index(p.stem) if p.stem in PHASE_ORDER else 99))
    for p in found:
        rec = _load(p) or {"status": "unreadable"}
        rec["log_tail"] = _tail(out / "logs" / f"{p.stem}.log")
        phases[p.stem] = rec
    results = {name: _load(out / f"{name}.json")
               for name in ("bench_segment_ops", "bench_kg_layer", "bench_katrec_epoch")}
    rep = {"schema": SCHEMA, "run": _load(out / "run.json"), "environment": _load(out / "env.json"),
           "phases": phases, "cuda_tests": test_summary(out), "results": results,
           "targets": targets(results), "ratios": ratios(results)}
    if rep["environment"] is None:
        rep["environment"] = environment()
    run = rep["run"] or {}
    run["phase_seconds_total"] = sum(float(p.get("seconds") or 0) for p in phases.values())
    rep["run"] = run
    (out / "gpu_check.json").write_text(json.dumps(rep, indent=2) + "\n")
    return rep


def summary(rep: dict) -> str:
    lines = ["gpu_check summary"]
    env = rep.get("environment") or {}
    gpus = ", ".join(g["name"] for g in env.get("gpus", [])) or "no CUDA GPU visible to torch"
    lines.append(f"  GPU: {gpus}; torch {env.get('torch')} (CUDA {env.get('torch_cuda')}), "
                 f"triton {env.get('triton')}, torch-scatter {env.get('torch_scatter')}")
    for name, p in rep["phases"].items():
        secs = p.get("seconds")
        lines.append(f"  {name:19s} {p.get('status'):8s} " + ("-" if secs is None else f"{secs}s"))
    t = rep["cuda_tests"]
    if t.get("tests") and t.get("skipped") == t.get("tests"):
        lines.append("  cuda tests: ALL SKIPPED (no CUDA GPU visible to torch?)")
    failed = t.get("failed", [])
    lines.append(f"  cuda tests: {t.get('passed')} passed, "
                 f"{failed if isinstance(failed, int) else len(failed)} failed, "
                 f"{t.get('skipped')} skipped ({t.get('source')})")
    for key, v in rep["targets"].items():
        m = v["measured"]
        note = f"  [{v['note']}]" if v.get("note") else ""
        lines.append(f"  target {key}: {'-' if m is None else f'{m:.2f}'} "
                     f"(>= {v['threshold']}) met={v['met']}{note}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--env":
        text = json.dumps(environment(), indent=2)
        Path(argv[1]).write_text(text + "\n")
        print(text)
        return 0
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    rep = report(Path(argv[0]))
    print(summary(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
