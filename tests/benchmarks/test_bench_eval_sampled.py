"""benchmarks/bench_eval_sampled.py runs end to end and its two routes agree (no timings)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_eval_sampled as B  # noqa: E402


def test_one_pass_and_two_pass_give_identical_counts(tmp_path, capsys):
    out = tmp_path / "r.json"
    result = B.main(["--dataset", "synthetic", "--repeats", "1", "--out", str(out)])
    assert result["identical_counts"] is True
    assert json.loads(out.read_text()) == json.loads(capsys.readouterr().out)
    assert set(result["best_cpu_seconds"]) == {"one_pass", "two_pass"}
    assert result["users"] > 0 and result["negatives"] == 100 and "git_commit" in result
