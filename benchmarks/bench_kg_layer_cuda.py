"""One ``KGAttentionConv`` layer on a GPU: forward + backward time and peak GPU memory of every
attention path, on the real KGs and synthetic ones, with the results checked against PyG's path.

Paths: ``auto`` (on CUDA the Triton kernels), ``auto+recompute`` (``recompute_scores=True``: the
gather-free torch aggregation and no per-edge tensors kept), ``torch`` (the gather-free torch
path), ``pyg`` (``torch_geometric.utils.softmax`` + ``propagate``) and ``scatter`` (torch-scatter,
when installed). Graphs (as ``bench_kg_attention.py`` builds them): ML-100K and the Yelp
item-attribute KG (from ``--data``, skipped when absent), synthetic KGs with 1M and 10M edges.
Times are CUDA-event medians of ``out = conv(x, ...); out.backward(g)`` (layer ``cached=True``, so
the edge plan is built once, as inside ``KGEnricher``).

    python benchmarks/bench_kg_layer_cuda.py --data $KGSEQGRAPH_DATA --out layer.json
    python benchmarks/bench_kg_layer_cuda.py --device cpu --graphs synthetic-1M   # smoke run
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_kg_attention import ml100k, synthetic, yelp  # noqa: E402

from kgseqgraph.nn.conv import KGAttentionConv  # noqa: E402

GRAPHS = ("ml-100k", "yelp", "synthetic-1M", "synthetic-10M")


def load_graph(name: str, data: Path | None, relations: int, seed: int) -> dict | None:
    if name == "ml-100k":
        return ml100k(data / "ml-100k") if data and (data / "ml-100k").is_dir() else None
    if name == "yelp":
        f = data / "s3rec" / "Yelp_item2attributes.json" if data else None
        return yelp(f) if f and f.exists() else None
    n = {"synthetic-1M": 1_000_000, "synthetic-10M": 10_000_000}[name]
    return synthetic(n, n // 10, relations, seed)


def measure(fn, device: torch.device, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            out.append(a.elapsed_time(b) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return out


def bench_graph(g: dict, args, device: torch.device) -> dict:
    N, R = g["num_nodes"], g["num_relations"]
    ei, et, ptr = g["edge_index"].to(device), g["edge_type"].to(device), g["ptr"].to(device)
    E = ei.size(1)
    ch = args.channels if not g["name"].startswith("synthetic") else args.synthetic_channels
    gen = torch.Generator().manual_seed(args.seed)
    x0 = torch.randn(N, ch, generator=gen).to(device)
    gout = torch.randn(N, ch, generator=gen).to(device)
    paths = ["auto", "auto+recompute", "torch", "pyg"]
    if importlib.util.find_spec("torch_scatter") is not None:
        paths.append("scatter")
    row = {"graph": g["name"], "nodes": N, "edges": E, "relations": R, "channels": ch,
           "max_in_degree": int((g["ptr"][1:] - g["ptr"][:-1]).max()), "paths": {}}
    outputs = {}
    for path in paths:
        backend, _, extra = path.partition("+")
        rec: dict = {}
        try:
            torch.manual_seed(args.seed)  # the same parameters for every path
            conv = KGAttentionConv(ch, ch, R, backend=backend, cached=True,
                                   recompute_scores=extra == "recompute").to(device)
            x = x0.clone().requires_grad_()

            def step():
                x.grad = None
                conv.zero_grad(set_to_none=True)
                out = conv(x, ei, et, ptr=ptr)
                out.backward(gout)
                return out

            out = step().detach()  # warm-up: edge plan, Triton compilation
            outputs[path] = (out, x.grad.clone())
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            repeats = args.repeats if E < 5_000_000 else max(3, args.repeats // 2)
            t = measure(step, device, repeats)
            rec = {"fwd_bwd_ms": 1e3 * statistics.median(t), "fwd_bwd_min_ms": 1e3 * min(t),
                   "ns_per_edge": statistics.median(t) / max(E, 1) * 1e9, "repeats": repeats}
            if device.type == "cuda":
                rec["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
            del conv, x
        except Exception as err:  # noqa: BLE001 - one failing path must not hide the others
            rec = {"error": f"{type(err).__name__}: {str(err)[:500]}"}
        row["paths"][path] = rec
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if "pyg" in outputs:
        ref_out, ref_gx = outputs["pyg"]
        for path, (out, gx) in outputs.items():
            row["paths"][path]["max_rel_diff_vs_pyg"] = {
                "out": float((out - ref_out).abs().max() / ref_out.abs().max().clamp_min(1e-30)),
                "grad_x": float((gx - ref_gx).abs().max() / ref_gx.abs().max().clamp_min(1e-30))}
        p = row["paths"]["pyg"].get("fwd_bwd_ms")
        if p:
            row["speedup_vs_pyg"] = {k: p / v["fwd_bwd_ms"] for k, v in row["paths"].items()
                                     if "fwd_bwd_ms" in v and k != "pyg"}
    return row


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path(os.environ["KGSEQGRAPH_DATA"])
                   if os.environ.get("KGSEQGRAPH_DATA") else None)
    p.add_argument("--graphs", nargs="+", default=list(GRAPHS), choices=GRAPHS)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--synthetic-channels", type=int, default=32)
    p.add_argument("--synthetic-relations", type=int, default=16)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--device", default="cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch.cuda.is_available() is False")
    torch.set_float32_matmul_precision("highest")
    results, skipped = [], {}
    for name in args.graphs:
        g = load_graph(name, args.data, args.synthetic_relations, args.seed)
        if g is None:
            skipped[name] = f"no data under --data {args.data}"
            continue
        results.append(bench_graph(g, args, device))
        print(json.dumps({"graph": name, "speedup_vs_pyg": results[-1].get("speedup_vs_pyg")}),
              file=sys.stderr, flush=True)
    report = {"benchmark": "KGAttentionConv forward+backward on the GPU, every attention path",
              "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
              else "cpu",
              "torch": torch.__version__, "cuda": torch.version.cuda,
              "torch_scatter_installed": importlib.util.find_spec("torch_scatter") is not None,
              "skipped": skipped, "results": results}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
