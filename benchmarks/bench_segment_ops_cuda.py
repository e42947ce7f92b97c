"""Fused attention-aggregation on a GPU: forward + backward time and achieved memory bandwidth of
``segment_softmax_aggregate`` (Triton) against PyG and torch-scatter, as a fraction of the GPU's
peak memory bandwidth.

Two problems, power-law (Pareto 1.2) segment sizes with ``E / S = 10`` (some segments empty):

``edge``
    ``score [E]``, per-edge values ``x [E, D]``, CSR offsets: the op itself. Paths: ``fused``
    (our Triton kernels), ``torch`` (our CSR torch path on the GPU), ``pyg`` (PyG's
    ``softmax(score, index)`` then a scatter-sum of ``alpha * x``, under autograd), ``scatter``
    (``torch_scatter.scatter_softmax`` + ``segment_csr``, when torch-scatter is installed).
``node``
    ``score [E]``, a node table ``x [N, D]``, ``src [E]``: the KG layer's case, every edge reads
    ``x[src[e]]``. Paths: ``fused`` (gather, then the Triton kernels), ``torch`` (our gather-free
    path), ``pyg_propagate`` (PyG's ``softmax`` + ``MessagePassing.propagate`` with the message
    ``alpha * x_j`` and sum aggregation: what a PyG attention layer does), ``scatter``.

Bandwidth: ``bytes / time`` with ``bytes`` the traffic the fused algorithm cannot avoid
(:func:`min_bytes`): forward reads ``score``, ``x`` (per edge) and ``ptr`` and writes ``out``;
backward reads ``score``, ``x``, the segment index, ``grad_out`` and the statistics and writes
``grad_score`` and ``grad_x``. The same byte count is used for every path, so ``GB/s`` ranks them
exactly as time does; ``pct_of_peak`` divides by the peak bandwidth of the GPU (a table by device
name, else derived from the memory clock and bus width, else ``--peak-gbps``).

Prints one JSON object (and writes it with ``--out``)::

    python benchmarks/bench_segment_ops_cuda.py --out ops.json            # 1M and 10M edges
    python benchmarks/bench_segment_ops_cuda.py --sizes 1e5 --device cpu  # smoke run, no GPU
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_segment_ops import power_law_ptr  # noqa: E402

from kgseqgraph.nn.ops import ptr_to_index, segment_softmax_aggregate  # noqa: E402

#: Peak memory bandwidth (GB/s, 1e9 bytes) by a substring of ``torch.cuda.get_device_name``,
#: from the vendors' data sheets; the first match wins, so more specific names come first.
PEAK_GBPS = [
    ("GH200", 4000.0), ("H200", 4800.0), ("H100 NVL", 3900.0), ("H100 PCIe", 2000.0),
    ("H100", 3350.0), ("H800", 3350.0), ("B200", 8000.0), ("B100", 8000.0),
    ("A100-SXM4-80GB", 2039.0), ("A100 80GB PCIe", 1935.0), ("A100-PCIE-40GB", 1555.0),
    ("A100", 1555.0), ("A800", 2039.0), ("A30", 933.0), ("A40", 696.0), ("A10G", 600.0),
    ("A10", 600.0), ("L40S", 864.0), ("L40", 864.0), ("L4", 300.0), ("V100", 900.0),
    ("T4", 320.0), ("RTX 4090", 1008.0), ("RTX 3090", 936.0), ("RTX A6000", 768.0),
    ("RTX 6000 Ada", 960.0),
]


def peak_bandwidth(device: torch.device, override: float | None) -> tuple[float | None, str]:
    """``(GB/s, how it was found)`` for ``device``."""
    if override:
        return float(override), "--peak-gbps"
    if device.type != "cuda":
        return None, "not a GPU"
    name = torch.cuda.get_device_name(device)
    for key, gbps in PEAK_GBPS:
        if key.lower() in name.lower():
            return gbps, f"table ({key})"
    props = torch.cuda.get_device_properties(device)
    clock_khz = getattr(props, "memory_clock_rate", 0)
    bus_bits = getattr(props, "memory_bus_width", 0)
    if clock_khz and bus_bits:  # double data rate
        return 2 * clock_khz * 1e3 * bus_bits / 8 / 1e9, "memory clock x bus width"
    return None, f"unknown GPU {name!r}: pass --peak-gbps"


def min_bytes(E: int, S: int, H: int, D: int, elem: int) -> dict[str, int]:
    """Traffic the fused forward and backward cannot avoid (see the module docstring)."""
    fwd = E * H * elem + E * H * D * elem + (S + 1) * 8 + S * H * D * elem
    bwd = (2 * E * H * elem + 2 * E * H * D * elem + E * 8 + S * H * D * elem + 2 * S * H * 4
           + S * H * elem)  # + the per-segment <g, out> it reads
    return {"forward": fwd, "forward_backward": fwd + bwd}


class _Propagate:
    """PyG's path: ``softmax(score, index)`` then ``MessagePassing.propagate`` (message
    ``alpha * x_j``, sum aggregation), as ``KGAttentionConv(backend="pyg")`` runs it."""

    def __init__(self):
        from torch_geometric.nn.conv import MessagePassing

        class Agg(MessagePassing):
            def __init__(self):
                super().__init__(aggr="sum", node_dim=0)

            def forward(self, x, edge_index, alpha, size):
                return self.propagate(edge_index, x=x, alpha=alpha, size=size)

            def message(self, x_j, alpha):
                return alpha.unsqueeze(-1) * x_j

        self.agg = Agg()

    def __call__(self, score, x, index, src, S):
        from torch_geometric.utils import softmax

        alpha = softmax(score, index, num_nodes=S)
        return self.agg(x, torch.stack([src, index]), alpha, (x.size(0), S))


def _scatter_node(score, x, ptr, index, src):
    from torch_scatter import segment_csr
    from torch_scatter.composite import scatter_softmax

    alpha = scatter_softmax(score, index, dim=0, dim_size=ptr.numel() - 1)
    return segment_csr(alpha.unsqueeze(-1) * x.index_select(0, src), ptr, reduce="sum")


def paths(mode: str, device: torch.device) -> dict:
    """``name -> fn(score, x, ptr, index, src)`` returning ``out``, for the paths that run here."""
    have_scatter = importlib.util.find_spec("torch_scatter") is not None
    on_gpu = device.type == "cuda"
    agg = segment_softmax_aggregate
    if mode == "edge":
        out = {
            "fused": lambda s, x, p, i, _: agg(s, x, p, index=i, backend="triton"),
            "torch": lambda s, x, p, i, _: agg(s, x, p, index=i, backend="torch"),
            "pyg": lambda s, x, p, i, _: agg(s, x, p, index=i, backend="pyg"),
        }
        if have_scatter:
            out["scatter"] = lambda s, x, p, i, _: agg(s, x, p, index=i, backend="scatter")
    else:
        prop = _Propagate()
        out = {
            "fused": lambda s, x, p, i, src: agg(s, x, p, index=i, src=src, backend="triton"),
            "torch": lambda s, x, p, i, src: agg(s, x, p, index=i, src=src, backend="torch"),
            "pyg_propagate": lambda s, x, p, i, src: prop(s, x, i, src, p.numel() - 1),
        }
        if have_scatter:
            out["scatter"] = lambda s, x, p, i, src: _scatter_node(s, x, p, i, src)
    if not on_gpu:  # the Triton kernels need a GPU (or TRITON_INTERPRET=1, far too slow here)
        from kgseqgraph.nn.ops import available_backends

        if "triton" not in available_backends(device):
            out.pop("fused")
    return out


def _timer(device: torch.device):
    if device.type == "cuda":
        def measure(fn) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
    else:
        def measure(fn) -> float:
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0
    return measure


_PTR: dict[tuple[int, int], torch.Tensor] = {}


def run_case(mode: str, E: int, D: int, dtype: torch.dtype, args, device, peak) -> dict:
    S = max(1, E // 10)
    N = S if mode == "node" else None
    if (E, S) not in _PTR:  # the same graph for every mode, width and dtype
        _PTR[(E, S)] = power_law_ptr(E, S, 1.2, args.seed)
    ptr = _PTR[(E, S)].to(device)
    index = ptr_to_index(ptr, E)
    g = torch.Generator(device=device).manual_seed(args.seed)
    score = (3 * torch.randn(E, generator=g, device=device)).to(dtype)
    rows = N if mode == "node" else E
    x = torch.randn(rows, D, generator=g, device=device).to(dtype)
    src = torch.randint(N, (E,), generator=g, device=device) if mode == "node" else None
    gout = torch.randn(S, D, generator=g, device=device).to(dtype)
    counts = ptr.diff()
    elem = torch.finfo(dtype).bits // 8
    nbytes = min_bytes(E, S, 1, D, elem)
    row = {"mode": mode, "E": E, "S": S, "N": N, "D": D, "dtype": str(dtype).replace("torch.", ""),
           "max_segment": int(counts.max()), "empty_segments": int((counts == 0).sum()),
           "min_bytes": nbytes, "paths": {}}
    measure = _timer(device)
    results = {}
    for name, fn in paths(mode, device).items():
        def fwd():
            with torch.no_grad():
                return fn(score, x, ptr, index, src)

        def fwd_bwd():
            s = score.detach().requires_grad_()
            xx = x.detach().requires_grad_()
            out = fn(s, xx, ptr, index, src)
            out.backward(gout)
            return out.detach(), s.grad, xx.grad

        rec: dict = {}
        try:
            results[name] = fwd_bwd()  # warm-up: Triton compilation, allocator
            fwd()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            t_fb = [measure(fwd_bwd) for _ in range(args.repeats)]
            t_f = [measure(fwd) for _ in range(args.repeats)]
            rec = {"fwd_bwd_ms": 1e3 * statistics.median(t_fb), "fwd_bwd_min_ms": 1e3 * min(t_fb),
                   "fwd_ms": 1e3 * statistics.median(t_f), "fwd_min_ms": 1e3 * min(t_f)}
            rec["fwd_bwd_gbps"] = nbytes["forward_backward"] / (rec["fwd_bwd_ms"] / 1e3) / 1e9
            rec["fwd_gbps"] = nbytes["forward"] / (rec["fwd_ms"] / 1e3) / 1e9
            if peak:
                rec["fwd_bwd_pct_of_peak"] = 100 * rec["fwd_bwd_gbps"] / peak
                rec["fwd_pct_of_peak"] = 100 * rec["fwd_gbps"] / peak
            if device.type == "cuda":
                rec["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
        except Exception as err:  # noqa: BLE001 - one failing path must not hide the others
            rec = {"error": f"{type(err).__name__}: {str(err)[:500]}"}
            results.pop(name, None)
        row["paths"][name] = rec
        if device.type == "cuda":
            torch.cuda.empty_cache()
    # agreement with the first path that ran (the fused one on a GPU), relative to its scale
    if results:
        base_name = next(iter(results))
        base = results[base_name]
        row["agreement_vs"] = base_name
        def rel(a, b) -> float:
            scale = b.float().abs().max().clamp_min(1e-30)
            return float((a.float() - b.float()).abs().max() / scale)

        for name, res in results.items():
            row["paths"][name]["max_rel_diff"] = {
                k: rel(a, b) for k, a, b in zip(("out", "grad_score", "grad_x"), res, base)}
    fused = row["paths"].get("fused", {})
    if "fwd_bwd_ms" in fused:
        row["speedup_of_fused"] = {n: r["fwd_bwd_ms"] / fused["fwd_bwd_ms"]
                                   for n, r in row["paths"].items()
                                   if n != "fused" and "fwd_bwd_ms" in r}
    return row


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=float, nargs="+", default=[1e6, 1e7], help="edge counts")
    p.add_argument("--dims", type=int, nargs="+", default=[32])
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--modes", nargs="+", default=["edge", "node"], choices=["edge", "node"])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--device", default="cuda")
    p.add_argument("--peak-gbps", type=float, default=None,
                   help="peak memory bandwidth of the GPU in GB/s (default: by device name)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch.cuda.is_available() is False")
    torch.set_float32_matmul_precision("highest")
    peak, peak_source = peak_bandwidth(device, args.peak_gbps)
    rows = []
    for mode in args.modes:
        for E in (int(e) for e in args.sizes):
            for D in args.dims:
                for dt in args.dtypes:
                    rows.append(run_case(mode, E, D, getattr(torch, dt), args, device, peak))
                    print(json.dumps({k: rows[-1].get(k) for k in ("mode", "E", "D", "dtype",
                                                                   "speedup_of_fused")}),
                          file=sys.stderr, flush=True)
    report = {
        "benchmark": "segment_softmax_aggregate forward+backward on the GPU",
        "command": "python benchmarks/bench_segment_ops_cuda.py " + " ".join(
            sys.argv[1:] if argv is None else argv),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else
        platform.processor() or platform.machine(),
        "peak_gbps": peak, "peak_source": peak_source,
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "triton": _version("triton"), "torch_scatter": _version("torch_scatter"),
        "torch_geometric": _version("torch_geometric"),
        "results": rows,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return report


def _version(module: str) -> str | None:
    try:
        return importlib.import_module(module).__version__
    except Exception:  # noqa: BLE001
        return None


if __name__ == "__main__":
    main()
