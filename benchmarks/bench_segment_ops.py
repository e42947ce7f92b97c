"""Forward+backward time of ``segment_softmax_aggregate``: our torch path vs PyG's path.

PyG's path is what a ``MessagePassing`` layer does: ``torch_geometric.utils.softmax(score, index)``
then a scatter-sum of ``alpha * x``, differentiated by autograd. ``torch_scatter`` is added when
installed, and the Triton backend when the inputs are on CUDA.

Graphs are random CSR with power-law (Pareto) segment sizes, ``E / S = 10`` on average, some empty
segments. Prints one JSON object; ``ratio_vs_pyg`` > 1 means faster than PyG.

Usage::

    python benchmarks/bench_segment_ops.py                 # E in {1e5, 1e6}, CPU
    python benchmarks/bench_segment_ops.py --large         # adds E = 1e7
    python benchmarks/bench_segment_ops.py --device cuda --heads 2 --out bench.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kgseqgraph.nn.ops import available_backends, segment_softmax_aggregate  # noqa: E402


def power_law_ptr(num_edges: int, num_segments: int, exponent: float, seed: int) -> torch.Tensor:
    """CSR offsets with heavy-tailed segment sizes summing to ``num_edges``.

    Each segment gets a Pareto(1, ``exponent``) weight; the edges are then spread over the
    segments in proportion to their weights (multinomial), so light segments may stay empty.
    """
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(num_segments, generator=g, dtype=torch.float64).clamp_min(1e-12)
    w = u.pow(-1.0 / exponent)  # Pareto(1, exponent)
    owner = torch.multinomial(w, num_edges, replacement=True, generator=g)
    counts = torch.bincount(owner, minlength=num_segments)
    ptr = torch.zeros(num_segments + 1, dtype=torch.long)
    ptr[1:] = counts.cumsum(0)
    return ptr


def time_fwd_bwd(backends: list[str], score: torch.Tensor, x: torch.Tensor, ptr: torch.Tensor,
                 grad: torch.Tensor, repeats: int, sync) -> dict:
    """Median/min seconds of forward+backward per backend; backends run interleaved (one of each
    per round) so that background load hits them alike."""
    def step(backend):
        s = score.detach().requires_grad_()
        xx = x.detach().requires_grad_()
        out = segment_softmax_aggregate(s, xx, ptr, backend=backend)
        out.backward(grad)

    for b in backends:  # warm-up (and Triton compilation)
        step(b)
    sync()
    times: dict[str, list[float]] = {b: [] for b in backends}
    for _ in range(repeats):
        for b in backends:
            t0 = time.perf_counter()
            step(b)
            sync()
            times[b].append(time.perf_counter() - t0)
    return {b: {"median_ms": 1e3 * statistics.median(t), "min_ms": 1e3 * min(t)}
            for b, t in times.items()}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--large", action="store_true", help="also run E = 1e7")
    p.add_argument("--sizes", type=float, nargs="+", default=None,
                   help="edge counts to run instead of the default 1e5 1e6 (e.g. --sizes 1e4)")
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--heads", type=int, default=1, help="1 = single-head [E] scores")
    p.add_argument("--avg-degree", type=float, default=10.0)
    p.add_argument("--exponent", type=float, default=1.2, help="Pareto exponent of the degrees")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)
    backends = ["torch", "pyg"] + [b for b in ("scatter", "triton")
                                   if b in available_backends(device)]
    sizes = ([int(e) for e in args.sizes] if args.sizes else [100_000, 1_000_000])
    sizes += [10_000_000] if args.large else []
    results = []
    for E in sizes:
        S = max(1, int(E / args.avg_degree))
        ptr = power_law_ptr(E, S, args.exponent, args.seed).to(device)
        g = torch.Generator().manual_seed(args.seed)
        shape = (E,) if args.heads == 1 else (E, args.heads)
        score = torch.randn(shape, generator=g).to(device)
        x = torch.randn(shape + (args.dim,), generator=g).to(device)
        grad = torch.randn((S,) + shape[1:] + (args.dim,), generator=g).to(device)
        counts = ptr.diff()
        row = {"E": E, "S": S, "D": args.dim, "H": args.heads,
               "max_degree": int(counts.max()), "empty_segments": int((counts == 0).sum())}
        row["fwd_bwd"] = time_fwd_bwd(backends, score, x, ptr, grad, args.repeats, sync)
        base = row["fwd_bwd"]["pyg"]["median_ms"]
        row["ratio_vs_pyg"] = {b: base / r["median_ms"] for b, r in row["fwd_bwd"].items()
                               if b != "pyg"}
        results.append(row)
    report = {
        "benchmark": "segment_softmax_aggregate forward+backward",
        "baseline": "pyg: torch_geometric.utils.softmax(score, index) + scatter-sum(alpha * x)",
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "results": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
