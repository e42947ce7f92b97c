"""Full-ranking evaluation: our chunked, count-based evaluator vs a naive top-k baseline.

Both methods rank the same scores (every user's row is generated from its own seed, so the chunked
and the one-shot matrices are identical), exclude the same 20-item histories (never the target)
and report HR/NDCG/MAP@{1,5,10,20}:

* ``ours``: :func:`kgseqgraph.evaluation.evaluate_full_ranking`, ``score_fn`` called on chunks of
  ``chunk = max(1, chunk_elements // N)`` users (default ``chunk_elements = 2**22``, i.e. 16 MiB of
  float32 scores a chunk); ranks by comparison counts, pessimistic ties, history dropped from the
  counts;
* ``naive``: the whole ``[B, N]`` score matrix, history set to ``-inf``, ``torch.topk(k=20)`` and
  the metrics from the target's position in the top-k (ties broken by ``topk``'s order).

Scores are random with a planted target whose rank is log-uniform on ``[1, N]`` (so HR@10 is far
from 0 and both methods can be checked against each other; float32 ties are possible and are the
only allowed source of differences).

What is measured, per configuration, each in a fresh subprocess (so allocations of one method
cannot serve the other):

* ``users_per_s``: users / wall time of the whole evaluation *including* generating the scores;
  ``eval_users_per_s`` excludes the score generation (timed separately; the evaluation work is
  what differs between the methods). Best of ``--repeats`` runs.
* ``peak_rss_mib``: the process's peak resident set size during the evaluation minus its
  resident size just before (Linux ``VmHWM`` reset through ``/proc/self/clear_refs``; falls back
  to ``ru_maxrss`` deltas). This is the real extra memory, allocator overhead included, not an
  estimate; ``score_bytes_mib`` gives the analytic size of the score block each method holds.

Prints ONE JSON object. ``speedup`` = ours / naive users per second (> 1: ours faster);
``memory_ratio`` = naive / ours peak (> 1: ours smaller).

Usage::

    python benchmarks/bench_eval.py --quick
    python benchmarks/bench_eval.py --sizes 10000 100000 1000000 --users 4096 1024 256
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KS = (1, 5, 10, 20)
HISTORY = 20


# ------------------------------------------------------------------------------------ worker side
def _rss_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def _peak_kib(reset_ok: bool) -> int:
    if reset_ok:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _worker(args: argparse.Namespace) -> dict:
    import torch

    from kgseqgraph.evaluation import evaluate_full_ranking

    torch.set_num_threads(args.threads)
    n, b, seed = args.items, args.num_users, args.seed
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, n, (b,), generator=g)
    hist = torch.randint(0, n, (b, HISTORY), generator=g)
    ptr = torch.arange(b + 1) * HISTORY
    # planted target score: rank ~ N ** (1 - U), log-uniform on [1, N]
    u = torch.rand(b, generator=g, dtype=torch.float64)
    target_score = (1 - torch.pow(10.0, -u * torch.log10(torch.tensor(float(n)))) * 1.0).float()
    row_gen = torch.Generator()
    score_time = [0.0]

    def fill(out: torch.Tensor, start: int) -> None:
        t0 = time.perf_counter()
        for i in range(out.size(0)):
            row_gen.manual_seed(seed * 1_000_003 + start + i)
            torch.rand(n, generator=row_gen, out=out[i])
        idx = torch.arange(start, start + out.size(0))
        out[torch.arange(out.size(0)), targets[idx]] = target_score[idx]
        score_time[0] += time.perf_counter() - t0

    chunk = max(1, min(b, args.chunk_elements // n))

    def run_ours(m: int) -> dict:
        def score_fn(start: int, end: int) -> torch.Tensor:
            out = torch.empty(end - start, n)
            fill(out, start)
            return out

        return evaluate_full_ranking(score_fn, targets[:m],
                                     exclude=(ptr[:m + 1], hist[:m].view(-1)), ks=KS,
                                     chunk_size=chunk)

    def run_naive(m: int) -> dict:
        scores = torch.empty(m, n)
        fill(scores, 0)
        row = torch.arange(m).repeat_interleave(HISTORY)
        item = hist[:m].view(-1)
        keep = item != targets[row]  # the target is never excluded, as in ours
        scores[row[keep], item[keep]] = float("-inf")
        top = torch.topk(scores, max(KS), dim=1).indices
        hit = top == targets[:m].view(-1, 1)
        found = hit.any(1)
        rank = (hit.float().argmax(1) + 1).double()
        out = {}
        for k in KS:
            inside = found & (rank <= k)
            out[f"HR@{k}"] = float(inside.double().mean())
            out[f"NDCG@{k}"] = float(torch.where(inside, 1 / torch.log2(rank + 1),
                                                 torch.zeros_like(rank)).mean())
            out[f"MAP@{k}"] = float(torch.where(inside, 1 / rank, torch.zeros_like(rank)).mean())
        return out

    fn = run_ours if args.method == "ours" else run_naive
    fn(min(b, 4))  # warm-up on 4 users: first-call initialisation stays out of the measurement
    before = _rss_kib()
    reset_ok = _reset_peak()
    best_total = best_eval = float("inf")
    metrics: dict = {}
    for _ in range(args.repeats):
        score_time[0] = 0.0
        t0 = time.perf_counter()
        metrics = fn(b)
        total = time.perf_counter() - t0
        best_total = min(best_total, total)
        best_eval = min(best_eval, total - score_time[0])
    peak = _peak_kib(reset_ok)
    held = (chunk if args.method == "ours" else b) * n * 4
    return {
        "users_per_s": b / best_total,
        "eval_users_per_s": b / max(best_eval, 1e-9),
        "seconds": best_total,
        "peak_rss_mib": (peak - before) / 1024,
        "peak_method": "VmHWM reset" if reset_ok else "ru_maxrss delta",
        "score_bytes_mib": held / 2**20,
        "chunk_size": chunk if args.method == "ours" else b,
        "metrics": {k: metrics[k] for k in ("HR@10", "NDCG@10", "MAP@10", "HR@20")},
    }


# ------------------------------------------------------------------------------------ driver side
def _run_worker(method: str, n: int, b: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--method", method,
           "--items", str(n), "--num-users", str(b), "--threads", str(args.threads),
           "--repeats", str(args.repeats), "--chunk-elements", str(args.chunk_elements),
           "--seed", str(args.seed)]
    env = dict(os.environ, CI=os.environ.get("CI", "1"))  # no progress bars
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} N={n} B={b} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="catalogue sizes N")
    p.add_argument("--users", type=int, nargs="+", default=None,
                   help="users per size (one value for all, or one per size)")
    p.add_argument("--quick", action="store_true",
                   help="a quarter of the default users and one repeat")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--threads", type=int, default=1, help="torch threads in every worker")
    p.add_argument("--chunk-elements", type=int, default=1 << 22,
                   help="our chunk size is max(1, chunk_elements // N) users")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", choices=["ours", "naive"], help=argparse.SUPPRESS)
    p.add_argument("--items", type=int, help=argparse.SUPPRESS)
    p.add_argument("--num-users", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        print(json.dumps(_worker(args)))
        return

    sizes = args.sizes or [10_000, 100_000, 1_000_000]
    default_users = {10_000: 4096, 100_000: 1024, 1_000_000: 256}
    if args.users is None:
        users = [default_users.get(n, max(1, (4096 * 10_000) // n)) for n in sizes]
        if args.quick:
            users = [max(1, u // 4) for u in users]
    elif len(args.users) == 1:
        users = args.users * len(sizes)
    elif len(args.users) == len(sizes):
        users = args.users
    else:
        p.error("--users takes one value or one per size")
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3

    import torch

    results = {}
    for n, b in zip(sizes, users):
        ours = _run_worker("ours", n, b, args)
        naive = _run_worker("naive", n, b, args)
        diff = {k: abs(ours["metrics"][k] - naive["metrics"][k]) for k in ours["metrics"]}
        results[str(n)] = {
            "users": b,
            "ours": ours,
            "naive": naive,
            "speedup": ours["users_per_s"] / naive["users_per_s"],
            "eval_only_speedup": ours["eval_users_per_s"] / naive["eval_users_per_s"],
            "memory_ratio": naive["peak_rss_mib"] / max(ours["peak_rss_mib"], 1e-9),
            "max_abs_metric_diff": max(diff.values()),
        }
    print(json.dumps({
        "benchmark": "full-ranking evaluation, chunked rank counts vs full matrix + topk",
        "device": "cpu",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": args.threads,
        "repeats": args.repeats,
        "quick": args.quick,
        "history_per_user": HISTORY,
        "peak_memory": "peak RSS increase during the evaluation, fresh subprocess per method",
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
