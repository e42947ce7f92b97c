"""benchmarks/accuracy.py (one JSON a run, tuning on validation) and benchmarks/make_tables.py
(tables generated from the committed JSONs; the docs check CI runs)."""
from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks"


def _module(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


A = _module("accuracy")
M = _module("make_tables")
C = _module("accuracy_config")

REQUIRED = ["dataset", "model", "seed", "config", "best_epoch", "epochs_run", "valid", "test",
            "wall_seconds", "cpu_seconds", "git_commit", "dirty", "command", "versions", "date",
            "grid", "converged", "history", "popularity_buckets", "protocol", "split",
            "dataset_stats", "threads", "budget"]
METRICS = ["NDCG@10", "HR@10", "MRR", "NDCG@5", "HR@5", "sampled-100/NDCG@10",
           "sampled-100/HR@10", "sampled-100/MRR", "sampled-100/NDCG@5", "sampled-100/HR@5"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny real runs on the synthetic dataset: popularity, SASRec (grid of 2 points, seeds 0
    and 1) and a KATRec variant at a named grid point."""
    out = tmp_path_factory.mktemp("accuracy")
    common = ["--dataset", "synthetic", "--out-dir", str(out), "-q"]
    A.main([*common, "--model", "pop"])
    A.main([*common, "--model", "sasrec", "--tune"])
    A.main([*common, "--model", "sasrec", "--seed", "0"])
    A.main([*common, "--model", "sasrec", "--seed", "1"])
    A.main([*common, "--model", "katrec", "--variant", "noatten", "--point",
            "lr0.001_dropout0.2", "--epochs", "1"])
    torch.set_num_threads(1)
    return out


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.parametrize("name", ["pop_seed0", "sasrec_seed0", "sasrec_seed1",
                                  "katrec-noatten_seed0"])
def test_result_json_is_complete_and_consistent(runs, name):
    r = _read(runs / "synthetic" / f"{name}.json")
    assert [k for k in REQUIRED if k not in r] == []
    for stage in ("valid", "test"):
        m = r[stage]
        assert [k for k in METRICS if k not in m] == []
        assert all(0.0 <= v <= 1.0 for v in m.values())
        assert m["HR@10"] >= m["HR@5"] and m["NDCG@10"] >= m["NDCG@5"]
        assert m["HR@10"] >= m["NDCG@10"] >= 0.0
        # 100 negatives are a subset of the catalogue: sampled ranks are never worse
        assert m["sampled-100/HR@10"] >= m["HR@10"]
    b = r["popularity_buckets"]
    users = [x["users"] for x in b["buckets"]]
    assert len(users) == C.NUM_BUCKETS
    assert sum(users) == b["num_test_users"] == r["dataset_stats"]["test_users"]
    weighted = sum(x["users"] * x["NDCG@10"] for x in b["buckets"] if x["users"]) / sum(users)
    assert weighted == pytest.approx(r["test"]["NDCG@10"], abs=1e-9)
    assert b["inner_edges"] == sorted(b["inner_edges"])
    assert r["cpu_seconds"] > 0 and r["wall_seconds"] > 0
    assert r["command"].startswith("python ") and "--dataset synthetic" in r["command"]
    assert r["threads"] == 1 and r["config"]["train"]["ties"] == "pessimistic"
    assert r["config"]["train"]["exclude_history"] is True
    assert len(r["history"]) == r["epochs_run"] and r["best_epoch"] <= r["epochs_run"]
    if r["model"] == "pop":
        assert r["best_epoch"] == 0 and r["converged"] is None and r["history"] == []
    else:
        expect = r["stopped_early"] or r["best_epoch"] <= 0.8 * r["budget"]["epochs"]
        assert r["converged"] is expect
        assert all(h["valid_NDCG@10"] is not None for h in r["history"])


def test_configs_grid_and_variant(runs):
    sas = _read(runs / "synthetic" / "sasrec_seed1.json")
    assert sas["grid"]["selection"]["by"].startswith("best valid")
    point = sas["grid"]["point"]
    assert sas["config"]["train"]["lr"] == point["lr"]
    assert sas["config"]["model"]["encoder_kwargs"]["hidden_dropout"] == point["dropout"]
    kat = _read(runs / "synthetic" / "katrec-noatten_seed0.json")
    assert kat["variant"] == "noatten" and kat["config"]["model"]["use_attention"] is False
    assert "hidden_size" not in kat["config"]["model"]  # width = kg_dim + sum(kg_hidden)
    assert kat["budget"]["epochs"] == 1 and kat["budget"]["overridden"] == ["epochs"]


def test_seed0_is_the_winning_tuning_run(runs):
    final = _read(runs / "synthetic" / "sasrec_seed0.json")
    sel = A.select_point(runs, "synthetic", "sasrec")
    assert final["from_tuning"] == sel["file"]
    tuned = _read(runs / "synthetic" / sel["file"])
    assert final["valid"] == tuned["valid"] and final["test"] == tuned["test"]
    assert final["tuning"] is False and tuned["tuning"] is True


def test_refuses_overwrite_and_skips_done_grid_points(runs):
    path = runs / "synthetic" / "pop_seed0.json"
    before = path.read_bytes()
    with pytest.raises(SystemExit, match="exists"):
        A.main(["--dataset", "synthetic", "--model", "pop", "--out-dir", str(runs), "-q"])
    assert path.read_bytes() == before
    tuning = sorted((runs / "synthetic" / "tuning").glob("sasrec__*.json"))
    stamps = [p.stat().st_mtime_ns for p in tuning]
    A.main(["--dataset", "synthetic", "--model", "sasrec", "--tune", "--out-dir", str(runs),
            "-q"])
    assert [p.stat().st_mtime_ns for p in tuning] == stamps
    assert A.plan("tune", ["synthetic"], ["sasrec"], runs, 1, []) == []
    assert len(A.plan("final", ["synthetic"], ["sasrec"], runs, 1, [])) == 1  # seed 2 left


def test_options_that_change_a_run_need_a_name(tmp_path, capsys):
    with pytest.raises(SystemExit, match="--variant"):
        A.main(["--dataset", "synthetic", "--model", "sasrec", "--point", "lr0.001_dropout0.2",
                "--out-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="--variant"):
        A.resolve("synthetic", "sasrec", 0, point={}, sets={"max_len": 5}, out_dir=tmp_path)
    paths = A.main(["--dataset", "synthetic", "--model", "sasrec", "--seed", "1", "--dry-run",
                    "--out-dir", str(tmp_path)])
    shown = json.loads(capsys.readouterr().out)
    assert paths == [tmp_path / "synthetic" / "sasrec_seed1.json"] and not paths[0].exists()
    assert shown["train_options"]["seed"] == 1 and "pending" in shown["grid"]["selection"]


def test_resume_from_run_dir(tmp_path):
    args = ["--dataset", "synthetic", "--model", "katrec", "--variant", "level1", "--point",
            "lr0.001_dropout0.2", "--out-dir", str(tmp_path / "out"), "--run-dir",
            str(tmp_path / "runs"), "-q"]
    (first,) = A.main(args)
    a = _read(first)
    assert (tmp_path / "runs" / "synthetic" / "katrec-level1_seed0" / "checkpoint.pt").exists()
    (again,) = A.main([*args, "--resume", "--overwrite"])
    b = _read(again)
    assert b["resumed_from_epoch"] == a["epochs_run"] and b["test"] == a["test"]
    assert b["cpu_seconds"] >= a["history"][-1]["cpu_seconds"]


def test_commit_commits_the_result_file_alone(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    for cmd in (["init", "-q"], ["config", "user.email", "t@example.org"],
                ["config", "user.name", "t"]):
        subprocess.run(["git", "-C", str(repo), *cmd], check=True)
    (repo / "other.txt").write_text("x")
    subprocess.run(["git", "-C", str(repo), "add", "other.txt"], check=True)
    result = repo / "benchmarks" / "results" / "r.json"
    result.parent.mkdir(parents=True)
    result.write_text("{}")
    monkeypatch.setattr(A, "REPO", repo)
    A.git_commit_file(result, "accuracy: r")
    log = subprocess.run(["git", "-C", str(repo), "show", "--name-only", "--format=%s"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert log[:2] == ["accuracy:", "r"] and log[2:] == ["benchmarks/results/r.json"]
    assert A.git_state()["dirty"] is True  # other.txt is staged, not committed


def test_commit_result_commits_the_regenerated_tables_with_the_json(tmp_path, monkeypatch):
    """A result committed by a sweep lands with the tables regenerated from it, so ``main`` never
    fails ``make_tables.py --check`` between two commits (the CI failure of stop 21)."""
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(A.REPO / "benchmarks", repo / "benchmarks",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(A.REPO / "docs", repo / "docs")
    shutil.copy(A.REPO / "README.md", repo / "README.md")
    for cmd in (["init", "-q"], ["config", "user.email", "t@example.org"],
                ["config", "user.name", "t"], ["add", "-A"], ["commit", "-q", "-m", "base"]):
        subprocess.run(["git", "-C", str(repo), *cmd], check=True)
    src = repo / "benchmarks/results/accuracy/ml-100k/katrec-nopretrain_seed2.json"
    new = src.with_name("katrec-nopretrain_seed9.json")
    body = json.loads(src.read_text())
    body["seed"] = 9
    new.write_text(json.dumps(body))
    monkeypatch.setattr(A, "REPO", repo)
    A.commit_result(new, "accuracy: ml-100k katrec-nopretrain_seed9")
    names = subprocess.run(["git", "-C", str(repo), "show", "--name-only", "--format="],
                           capture_output=True, text=True, check=True).stdout.split()
    assert names[0] == "benchmarks/results/accuracy/ml-100k/katrec-nopretrain_seed9.json"
    assert "docs/results.md" in names and "README.md" not in names  # only what changed
    assert "| 0,1,2,9 |" in (repo / "docs/results.md").read_text()
    status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain"],
                            capture_output=True, text=True, check=True).stdout
    assert status == ""
    check = subprocess.run([sys.executable, str(repo / "benchmarks/make_tables.py"), "--check"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout


def _tuning_json(out: Path, point: dict, valid: float, test: float | None) -> None:
    pid = A.point_id(point)
    path = A.result_path(out, "synthetic", "sasrec", 0, tuning_point=pid)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"dataset": "synthetic", "model": "sasrec", "grid": {"point_id": pid, "point": point},
            "valid": {"NDCG@10": valid}}
    if test is not None:
        body["test"] = {"NDCG@10": test}
    path.write_text(json.dumps(body))


def test_selection_uses_validation_never_test(tmp_path):
    grid = A.grid_points(A.grid_of("synthetic", "sasrec"))
    (p1, pt1), (p2, pt2) = grid
    _tuning_json(tmp_path, pt1, valid=0.30, test=0.10)  # best on valid
    with pytest.raises(A.IncompleteTuning):
        A.select_point(tmp_path, "synthetic", "sasrec")
    _tuning_json(tmp_path, pt2, valid=0.20, test=0.50)  # best on test
    assert A.select_point(tmp_path, "synthetic", "sasrec")["point_id"] == p1
    # the selection does not even read the test block
    _tuning_json(tmp_path, pt1, valid=0.30, test=None)
    _tuning_json(tmp_path, pt2, valid=0.20, test=None)
    sel = A.select_point(tmp_path, "synthetic", "sasrec")
    assert sel["point_id"] == p1 and sel["valid"] == {p1: 0.30, p2: 0.20}
    _tuning_json(tmp_path, pt2, valid=0.30, test=None)  # a tie goes to the earlier point
    assert A.select_point(tmp_path, "synthetic", "sasrec")["point_id"] == p1
    spec = A.resolve("synthetic", "sasrec", 2, out_dir=tmp_path)
    assert spec.point == pt1 and spec.train_options["lr"] == pt1["lr"]


def test_popularity_buckets_by_hand():
    train_items = torch.tensor([0] * 9 + [1] * 5 + [2] * 2 + [3])  # counts 9, 5, 2, 1, 0
    targets = torch.tensor([4, 3, 2, 1, 0, 0, 1, 2, 3, 4])  # training counts 0 1 2 5 9 ...
    ndcg = torch.arange(10, dtype=torch.float64) / 10
    out = A.popularity_buckets(train_items, 5, targets, {"NDCG@10": ndcg, "HR@10": ndcg})
    assert out["inner_edges"] == [0, 1, 2, 5]
    assert [b["users"] for b in out["buckets"]] == [2, 2, 2, 2, 2]
    assert [b["count_range"] for b in out["buckets"]] == [[0, 0], [1, 1], [2, 2], [5, 5], [9, 9]]
    assert out["buckets"][0]["NDCG@10"] == pytest.approx((0.0 + 0.9) / 2)
    assert out["overall"]["NDCG@10"] == pytest.approx(0.45)


# --------------------------------------------------------------------------------- tables
def test_committed_docs_match_the_committed_results(capsys):
    """The check CI runs: docs/results.md and README.md are what make_tables generates."""
    assert M.main(["--check"]) == 0, capsys.readouterr().out


def test_check_fails_after_a_hand_edit(tmp_path, capsys):
    """On copies laid out as the repository (the figure's relative link stays the same)."""
    (tmp_path / "docs").mkdir()
    docs = [tmp_path / "docs" / "results.md", tmp_path / "README.md"]
    shutil.copy(REPO / "docs" / "results.md", docs[0])
    shutil.copy(REPO / "README.md", docs[1])
    png = tmp_path / "docs" / "popularity_buckets.png"
    if (REPO / "docs" / png.name).exists():
        shutil.copy(REPO / "docs" / png.name, png)
    args = ["--docs", *map(str, docs), "--png", str(png)]
    assert M.main(["--check", *args]) == 0
    text = docs[0].read_text()
    begin = "<!-- generated:accuracy:ml-100k begin -->\n"
    assert begin in text
    docs[0].write_text(text.replace(begin, begin + "| sasrec | 0 | 0.9999 |\n"))
    assert M.main(["--check", *args]) == 1
    assert "-| sasrec | 0 | 0.9999 |" in capsys.readouterr().out
    assert M.main(args) == 0  # regenerate
    assert docs[0].read_text() == text and M.main(["--check", *args]) == 0


def _fake_run(dataset: str, name: str, seed: int, valid: float, test: dict, best: int,
              epochs: int = 40, converged: bool | None = True, cpu: float = 60.0,
              variant: str | None = None, buckets: list[float] | None = None) -> dict:
    model = name.split("-" + variant)[0] if variant else name
    r = {"dataset": dataset, "model": model, "variant": variant, "name": name, "seed": seed,
         "valid": {"NDCG@10": valid}, "test": test, "best_epoch": best,
         "budget": {"epochs": epochs}, "converged": converged, "cpu_seconds": cpu,
         "grid": {"point_id": "lr0.001_dropout0.2",
                  "variant_options": C.VARIANTS.get(model, {}).get(variant)},
         "git_commit": "abcdef0123456789", "dirty": False}
    if buckets is not None:
        r["popularity_buckets"] = {"buckets": [
            {"bucket": i + 1, "count_range": [i, i], "users": 10, "NDCG@10": v}
            for i, v in enumerate(buckets)]}
    return r


def _metrics(x: float) -> dict:
    return {"HR@5": x, "HR@10": 2 * x, "NDCG@5": x / 2, "NDCG@10": x, "MRR": x / 4,
            **{f"sampled-100/{k}": 3 * x for k in ("HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR")}}


@pytest.fixture
def fake_results(tmp_path):
    res = tmp_path / "results"
    runs = [_fake_run("ml-100k", "sasrec", s, v, _metrics(t), b, converged=s != 2,
                      buckets=[0.1 * s, 0.2, 0.3, 0.4, 0.5])
            for s, v, t, b in [(0, 0.11, 0.10, 10), (1, 0.12, 0.11, 20), (2, 0.13, 0.12, 38)]]
    runs.append(_fake_run("ml-100k", "pop", 0, 0.05, _metrics(0.04), 0, converged=None, cpu=6.0))
    runs.append(_fake_run("yelp", "katrec", 0, 0.03, _metrics(0.02), 15, buckets=[0.1] * 5))
    runs.append(_fake_run("yelp", "katrec-noatten", 0, 0.025, _metrics(0.015), 12,
                          variant="noatten"))
    for r in runs:
        path = res / r["dataset"] / f"{r['name']}_seed{r['seed']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(r))
    return res


def test_mean_sd_formatting_and_rows(fake_results):
    assert M.fmt_mean_sd([0.1, 0.2, 0.3]) == "0.2000 ± 0.1000"
    assert M.fmt_mean_sd([0.12345]) == "0.1235" and M.fmt_mean_sd([]) == "–"
    results = M.load_results(fake_results)
    table = M.accuracy_block("ml-100k", results)
    lines = [ln for ln in table.splitlines() if ln.startswith("| ")]
    assert lines[0].startswith("| model | seeds | grid point | valid NDCG@10 | test HR@5 |")
    assert lines[1].startswith("| popularity | 0 |")
    assert lines[1].endswith("| – | – | 0.1 |")
    assert lines[2] == ("| SASRec | 0,1,2 | `lr0.001_dropout0.2` | 0.1200 ± 0.0100 | "
                        "0.1100 ± 0.0100 | 0.2200 ± 0.0200 | 0.0550 ± 0.0050 | "
                        "0.1100 ± 0.0100 | 0.0275 ± 0.0025 | 10, 20, 38 / 40 | no: seed 2 | "
                        "1.0 |")
    assert "Code at commit abcdef012." in table
    yelp = M.accuracy_block("yelp", results)
    assert "KATRec" in yelp and "noatten" not in yelp  # variants only in the ablation table
    abl = M.ablation_block("yelp", results)
    assert "| noatten | `use_attention=false` | 0 |" in abl and "| -0.0050 |" in abl
    assert "Not run yet: `katrec-level1`" in abl
    assert "No committed runs yet." in M.accuracy_block("beauty", results)
    sampled = M.sampled_block(results)
    assert "| SASRec | 0,1,2 | 0.3300 ± 0.0300 |" in sampled
    buckets = M.buckets_block(results, "b.png")
    assert "| SASRec | 0,1,2 | 0.1000 ± 0.1000 | 0.2000 ± 0.0000 |" in buckets
    summary = M.summary_block(results)
    assert "| model | ml-100k | yelp |" in summary and "| KATRec | – | 0.0200 |" in summary


def test_generation_is_deterministic_and_draws_the_figure(fake_results, tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- generated:accuracy:ml-100k begin -->\nSTALE-TEXT\n"
                   "<!-- generated:accuracy:ml-100k end -->\n<!-- generated:buckets begin -->\n"
                   "<!-- generated:buckets end -->\noutro\n")
    png = tmp_path / "popularity_buckets.png"
    args = ["--results-dir", str(fake_results), "--docs", str(doc), "--png", str(png)]
    assert M.main(["--check", *args]) == 1
    assert M.main(args) == 0 and png.stat().st_size > 0
    first = doc.read_text()
    assert first.startswith("intro\n") and first.endswith("outro\n") and "STALE-TEXT" not in first
    assert "![Test NDCG@10 by target popularity quintile](popularity_buckets.png)" in first
    assert M.main(args) == 0 and doc.read_text() == first
    assert M.main(["--check", *args]) == 0
    doc.write_text("<!-- generated:nonsense begin -->\n<!-- generated:nonsense end -->\n")
    with pytest.raises(ValueError, match="unknown generated block"):
        M.main(args)


def test_ablation_delta_pairs_each_variant_run_with_the_full_model_of_its_seed(tmp_path):
    runs = [_fake_run("yelp", "katrec", 0, 0.03, _metrics(0.02), 15),
            _fake_run("yelp", "katrec", 1, 0.03, _metrics(0.04), 15),
            _fake_run("yelp", "katrec-noatten", 1, 0.03, _metrics(0.03), 12, variant="noatten"),
            _fake_run("yelp", "katrec-level1", 5, 0.03, _metrics(0.03), 12, variant="level1")]
    results = {"yelp": {}}
    for r in runs:
        results["yelp"].setdefault(r["name"], []).append(r)
    abl = M.ablation_block("yelp", results)
    row = next(ln for ln in abl.splitlines() if ln.startswith("| noatten |"))
    assert "| -0.0100 |" in row  # 0.03 - 0.04 on seed 1, not 0.03 - mean(0.02, 0.04) = 0
    row = next(ln for ln in abl.splitlines() if ln.startswith("| level1 |"))
    assert "| – |" in row  # no full-model run of seed 5 to pair with


def test_text_block_lists_records_references_and_planned_runs_not_yet_run(tmp_path):
    folder = tmp_path / "text" / "ml-100k"
    folder.mkdir(parents=True)
    for name, seed, users, ndcg in [("kp4sr", 0, None, 0.01), ("kp4sr", 1, None, 0.03),
                                    ("kp4sr-notree", 0, 100, 0.02)]:
        record = {"dataset": "ml-100k", "model": name, "seed": seed, "config": {"users": users},
                  "valid": {"NDCG@10": ndcg}, "test": _metrics(ndcg), "best_epoch": 2,
                  "epochs_run": 3, "cpu_seconds": 120.0, "git_commit": "0123456789ab",
                  "dirty": False}
        (folder / f"{name}_seed{seed}.json").write_text(json.dumps(record))
    results = {"ml-100k": {"sasrec": [_fake_run("ml-100k", "sasrec", 0, 0.1, _metrics(0.1), 9)]}}
    block = M.text_block("kp4sr", "ml-100k", results, M.load_runs(tmp_path / "text"))
    rows = [ln for ln in block.splitlines() if ln.startswith("| ")]
    assert rows[1].startswith("| KP4SR (random-init T5) | all | 0,1 | ")
    assert "| 0.0200 ± 0.0141 |" in rows[1] and rows[1].endswith("| 2/3, 2/3 | 2.0 |")
    assert rows[2].startswith("| KP4SR without the tree mask (ablation) | 100 | 0 |")
    assert rows[3].startswith("| SASRec (accuracy benchmark) | all | 0 |")
    assert "Not run yet: `kp4sr-noprompts`, `kp4sr-classifier`." in block
    assert "Code at commit" in block
    assert "No committed runs yet." in M.text_block("lancer", "ml-100k", {}, {})


def test_a_named_point_runs_under_its_variant_name_and_is_marked(runs):
    """``--point`` outside tuning with a variant name and no option changes: the base model at
    that point, recorded as named (not selected by tuning), never copied from a tuning run."""
    with pytest.raises(SystemExit, match="--set/--train or a --point"):
        A.resolve("synthetic", "sasrec", 1, variant="nonsense", point={}, out_dir=runs)
    A.main(["--dataset", "synthetic", "--model", "sasrec", "--variant", "other-point",
            "--point", "lr0.001_dropout0.2", "--seed", "0", "--epochs", "1", "--out-dir",
            str(runs), "-q"])
    r = _read(runs / "synthetic" / "sasrec-other-point_seed0.json")
    assert r["grid"]["selection"]["by"] == A.NAMED_POINT and "from_tuning" not in r
    assert r["grid"]["point_id"] == "lr0.001_dropout0.2" and r["epochs_run"] == 1
    assert M._named_point(r) and not M._named_point(_read(runs / "synthetic" /
                                                          "sasrec_seed0.json"))


def test_a_named_point_run_is_reused_as_that_points_tuning_run(tmp_path):
    """Tuning a grid point already trained as a named-point run (same configuration, budget and
    seed) reuses it instead of training the same model again; a run that differs does not; the
    same holds for the final seeds once tuning has chosen that point."""
    common = ["--dataset", "synthetic", "--model", "sasrec", "--out-dir", str(tmp_path), "-q"]
    A.main([*common, "--variant", "p2", "--point", "lr0.003_dropout0.2"])
    A.main([*common, "--variant", "short", "--point", "lr0.001_dropout0.2", "--epochs", "1"])
    named = _read(tmp_path / "synthetic" / "sasrec-p2_seed0.json")
    (reused,) = A.main([*common, "--tune", "--point", "lr0.003_dropout0.2"])
    tuned = _read(reused)
    assert tuned["from_named_point"] == "sasrec-p2_seed0.json" and tuned["tuning"] is True
    assert tuned["name"] == "sasrec" and tuned["variant"] is None
    assert tuned["valid"] == named["valid"] and tuned["grid"]["selection"] is None
    assert tuned["grid"]["point_id"] == "lr0.003_dropout0.2"
    (trained,) = A.main([*common, "--tune", "--point", "lr0.001_dropout0.2"])
    assert "from_named_point" not in _read(trained)  # the 1-epoch run is another configuration
    sel = A.select_point(tmp_path, "synthetic", "sasrec")
    assert sel["point_id"] in {"lr0.003_dropout0.2", "lr0.001_dropout0.2"}
    # final seeds: a named-point run of the chosen point and seed is that seed's final run;
    # one at the other point is not
    other = ({"lr0.003_dropout0.2", "lr0.001_dropout0.2"} - {sel["point_id"]}).pop()
    A.main([*common, "--variant", "chosen", "--point", sel["point_id"], "--seed", "1"])
    A.main([*common, "--variant", "other", "--point", other, "--seed", "2"])
    (seed1,) = A.main([*common, "--seed", "1"])
    final, named1 = _read(seed1), _read(tmp_path / "synthetic" / "sasrec-chosen_seed1.json")
    assert final["from_named_point"] == "sasrec-chosen_seed1.json" and final["tuning"] is False
    assert final["name"] == "sasrec" and final["variant"] is None and final["seed"] == 1
    assert final["test"] == named1["test"] and final["grid"]["selection"]["point_id"] == \
        sel["point_id"]
    (seed2,) = A.main([*common, "--seed", "2"])
    assert "from_named_point" not in _read(seed2)


def test_named_point_rows_and_gpu_cost_in_the_tables():
    def named(seed: int, test: float) -> dict:
        r = _fake_run("yelp", "katrec-b4p", seed, 0.03, _metrics(test), 15, variant="b4p")
        r["grid"]["selection"] = {"by": A.NAMED_POINT}
        return r

    sasrec = [_fake_run("yelp", "sasrec", s, 0.05, _metrics(0.04), 20, cpu=120.0)
              for s in (0, 1)]
    sasrec[0].update(device="cuda:0", wall_seconds=90.0, machine={"gpu": "NVIDIA H200"})
    results = {"yelp": {"sasrec": sasrec, "katrec-b4p": [named(0, 0.02), named(1, 0.04)]}}
    table = M.accuracy_block("yelp", results)
    row = next(ln for ln in table.splitlines() if ln.startswith("| KATRec (b4p) |"))
    assert "(named, not tuned here)" in row and "| 0.0300 ± 0.0141 |" in row
    row = next(ln for ln in table.splitlines() if ln.startswith("| SASRec |"))
    assert row.endswith("| 2.0; seed 0 on NVIDIA H200: 1.5 wall |")  # CPU min of seed 1 only
    summary = M.summary_block(results)
    assert "| KATRec | 0.0300 ± 0.0141 † |" in summary and "† not tuned" in summary
    # once the model has tuned runs, the named-point run leaves the main table
    results["yelp"]["katrec"] = [_fake_run("yelp", "katrec", 0, 0.03, _metrics(0.05), 15)]
    assert "(b4p)" not in M.accuracy_block("yelp", results)
    assert "†" not in M.summary_block(results)


def test_records_name_the_code_the_process_started_with(tmp_path, monkeypatch):
    """A run records the commit it imported, not the one HEAD reaches while it trains."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.org", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "a.txt").write_text("1")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    monkeypatch.setattr(A, "REPO", repo)
    monkeypatch.setattr(A, "_STATE_AT_START", {})
    first = A.code_state()["git_commit"]
    (repo / "a.txt").write_text("2")
    subprocess.run([*git, "commit", "-qam", "two"], check=True)
    assert A.git_state()["git_commit"] != first and A.code_state()["git_commit"] == first


def test_targets_block_gains_verdicts_and_provisional_cells():
    """Gains, paired seeds and verdicts by hand; the best knowledge model is picked on
    validation (KG-SASRec: better valid, worse test than KATRec); a missing seed or candidate
    makes a cell provisional and keeps the verdict open."""
    def runs(dataset, name, tests, valid=0.05):
        return [_fake_run(dataset, name, s, valid, _metrics(t), 10) for s, t in enumerate(tests)]

    results = {
        "ml-100k": {"bert4rec": runs("ml-100k", "bert4rec", [0.10, 0.10, 0.10]),
                    "katrec": runs("ml-100k", "katrec", [0.12, 0.09, 0.12], valid=0.04),
                    "kg-sasrec": runs("ml-100k", "kg-sasrec", [0.10, 0.10, 0.10], valid=0.06),
                    "kirec": runs("ml-100k", "kirec", [0.2, 0.2, 0.2], valid=0.01),
                    "sasrec": runs("ml-100k", "sasrec", [0.11, 0.11, 0.11])},
        "yelp": {"bert4rec": runs("yelp", "bert4rec", [0.10, 0.10, 0.10]),
                 "katrec": runs("yelp", "katrec", [0.101, 0.102, 0.103]),
                 "sasrec": runs("yelp", "sasrec", [0.05])},
    }
    cells = {(c["target"][:6], c["dataset"]): c for c in M.target_rows(results)}
    ml = cells[("KATRec", "ml-100k")]
    assert ml["status"] == "met" and ml["gain"] == pytest.approx(0.10) and ml["ahead"] == 2
    assert ml["caveats"] == []
    assert cells[("KATRec", "yelp")]["status"] == "missed"  # +2 % < +3 %
    assert cells[("KATRec", "beauty")]["status"] == "not run"
    best = cells[("best k", "ml-100k")]
    assert best["model_run"] == "kg-sasrec" and best["status"] == "missed"  # not kirec (test)
    assert best["gain"] == pytest.approx(0.10 / 0.11 - 1) and best["ahead"] == 0
    yelp = cells[("best k", "yelp")]
    assert yelp["status"] == "met" and yelp["ahead"] == 1 and yelp["paired"] == 1
    assert "KG-SASRec not run" in yelp["caveats"] and "SASRec has 1 of 3 seeds" in yelp["caveats"]
    text = M.targets_block(results)
    assert ("| ml-100k | KATRec | 0.1100 | BERT4Rec | 0.1000 | +10.0 % | 2 of 3 | met |"
            in text)
    assert "| yelp | KATRec | 0.1020 | BERT4Rec | 0.1000 | +2.0 % | 3 of 3 | missed |" in text
    # KATRec must win on all three: missed once yelp's final cell misses
    assert "on every dataset** (relative gain ≥ 3 % on 3 of 3 datasets): **missed**" in text
    assert "on at least two datasets** (relative gain ≥ 3 % on 2 of 3 datasets): **open**" in text
    results["yelp"]["kg-sasrec"] = runs("yelp", "kg-sasrec", [0.04] * 3, valid=0.01)
    results["yelp"]["sasrec"] = runs("yelp", "sasrec", [0.05] * 3)
    results["beauty"] = {"sasrec": runs("beauty", "sasrec", [0.05] * 3),
                         "katrec": runs("beauty", "katrec", [0.06] * 3),
                         "kg-sasrec": runs("beauty", "kg-sasrec", [0.06] * 3, valid=0.01)}
    text = M.targets_block(results)
    assert "on at least two datasets** (relative gain ≥ 3 % on 2 of 3 datasets): **met**" in text
    # a candidate with a missing seed could still win on validation: provisional
    results["beauty"]["kirec"] = runs("beauty", "kirec", [0.01], valid=0.001)
    beauty = {c["dataset"]: c for c in M.target_rows(results)
              if c["model"] == "best-knowledge"}["beauty"]
    assert beauty["status"] == "met" and "candidate KIRec-text has 1 of 3 seeds" in beauty["caveats"]
    # two final misses out of three: the at-least-two target is missed
    results["beauty"] = {"sasrec": runs("beauty", "sasrec", [0.05] * 3),
                         "katrec": runs("beauty", "katrec", [0.05] * 3),
                         "kg-sasrec": runs("beauty", "kg-sasrec", [0.04] * 3, valid=0.01)}
    text = M.targets_block(results)
    assert "on at least two datasets** (relative gain ≥ 3 % on 2 of 3 datasets): **missed**" in text
    # a named (untuned) point and a zero reference
    named = runs("beauty", "katrec-b4p", [0.05] * 3)
    for r in named:
        r.update(model="katrec", variant="b4p")
        r["grid"]["selection"] = {"by": A.NAMED_POINT}
    results["beauty"] = {"katrec-b4p": named, "bert4rec": runs("beauty", "bert4rec", [0.0] * 3)}
    cell = {c["dataset"]: c for c in M.target_rows(results) if c["model"] == "katrec"}["beauty"]
    assert cell["gain"] is None and cell["status"] == "met"
    assert cell["caveats"] == ["KATRec at a named grid point, not tuned"]
    assert "| beauty | KATRec | 0.0500 | BERT4Rec | 0.0000 | – | 3 of 3 | met, provisional" in \
        M.targets_block(results)


def test_tries_plan_and_the_variants_table(runs):
    """``--plan tries`` lists every try on both target models; a training try runs as an ad-hoc
    variant, records what it changed, and its table row pairs it with the tuned run's seed."""
    cmds = A.plan("tries", ["synthetic"], None, runs, 1, [])
    per_seed = len(C.TRY_MODELS) * (len(C.MODEL_TRIES) + len(C.TRAINING_TRIES))
    assert len(cmds) == len(C.SEEDS) * per_seed
    assert any("--model katrec --variant warmup --train warmup_ratio=0.1 --seed 0" in c
               for c in cmds)
    assert all("--model sasrec" not in c for c in cmds)
    for model in C.TRY_MODELS:  # every option-set try resolves on both models
        for variant in C.MODEL_TRIES:
            (path,) = A.main(["--dataset", "synthetic", "--out-dir", str(runs), "--model", model,
                              "--variant", variant, "--seed", "0", "--dry-run", "-q"])
            assert path.name == f"{model}-{variant}_seed0.json"
    A.main(["--dataset", "synthetic", "--out-dir", str(runs), "-q", "--model", "sasrec",
            "--variant", "warmup", "--train", "warmup_ratio=0.1", "--seed", "0"])
    rec = json.loads((runs / "synthetic" / "sasrec-warmup_seed0.json").read_text())
    assert rec["grid"]["train_set"] == {"warmup_ratio": 0.1}
    assert rec["config"]["train"]["warmup_ratio"] == 0.1
    results = M.load_results(runs)
    block = M.variants_block("synthetic", results)
    row = next(ln for ln in block.splitlines() if ln.startswith("| SASRec | warmup |"))
    tuned = next(r for r in results["synthetic"]["sasrec"] if r["seed"] == 0)
    delta = rec["test"]["NDCG@10"] - tuned["test"]["NDCG@10"]
    assert "`train.warmup_ratio=0.1`" in row and f"| {delta:+.4f} |" in row
    assert "No variant runs" in M.variants_block("beauty", results)


def test_converged_cell_reports_the_validation_rise_in_the_last_fifth():
    def run(seed, scores, best, converged):
        r = _fake_run("yelp", "bert4rec", seed, max(scores), _metrics(0.02), best,
                      epochs=len(scores), converged=converged)
        r["history"] = [{"epoch": e + 1, "valid_NDCG@10": v} for e, v in enumerate(scores)]
        return r

    # budget 10: the cut is epoch 8; seed 0 rises 0.020 -> 0.022 (+10 %), seed 1 0.04 -> 0.046
    rising = run(0, [0.01] * 7 + [0.020, 0.021, 0.022], 10, False)
    also = run(1, [0.02] * 7 + [0.040, 0.046, 0.045], 9, False)
    flat = run(2, [0.01, 0.03] + [0.02] * 8, 2, True)
    assert M._late_rise(rising) == (8, pytest.approx(0.10))
    assert M._converged([rising, also, flat]) == "no: seeds 0, 1 (valid +12.5 % after epoch 8)"
    assert M._converged([flat]) == "yes"
    no_history = dict(rising, history=[])
    assert M._converged([no_history]) == "no: seed 0"  # older records without a history
    # evaluated every 3 epochs: the last evaluation at or before the cut is the reference
    sparse = dict(rising, history=[{"epoch": e, "valid_NDCG@10": v}
                                   for e, v in [(3, 0.01), (6, 0.02), (9, 0.025)]])
    assert M._late_rise(sparse) == (6, pytest.approx(0.25))
