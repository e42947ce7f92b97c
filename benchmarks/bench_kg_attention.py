"""Forward + backward time and peak memory of one KGAttentionConv layer: our fused
attention-aggregation path (``kgseqgraph.nn.ops.segment_softmax_aggregate``) against PyG's
``torch_geometric.utils.softmax`` + ``MessagePassing.propagate`` path, at equal results.

    python benchmarks/bench_kg_attention.py --data $KGSEQGRAPH_DATA [--with-10m] [--out r.json]

(The script re-executes itself with ``THP_MEM_ALLOC_ENABLE=1`` unless ``--no-thp`` is given.)

Graphs: the ML-100K Freebase KG (items + entities, with reverse relations), the S3-Rec Yelp item
-> attribute KG (``(item, has_attribute, attr)`` plus reverse), and synthetic KGs with 1M (and,
with ``--with-10m``, 10M) edges. For every graph and path the script reports the median wall time
of ``out = conv(x, ...); out.backward(g)`` (the whole layer: relation-space scores, attention,
aggregation, bi-interaction aggregator; the layer is ``cached=True`` as inside ``KGEnricher``, so
the edge plan is built once) and of the attention + aggregation step alone, the peak memory
allocated through torch during one run (profiler memory accounting), the largest output /
gradient difference between the paths, and the ratios ``pyg / fused`` (fastest repeats). The
path ``auto+recompute`` is the fused path with ``recompute_scores=True`` (nothing per edge kept
for backward; its results are checked against the fused path's). Every
(graph, path) runs in its own fresh process. ``linear_growth`` compares the time per edge at 1M
and 10M edges.
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from kgseqgraph.nn.conv import KGAttentionConv


# ------------------------------------------------------------------------------------ graphs
def _csr(num_nodes: int, head: torch.Tensor, rel: torch.Tensor, tail: torch.Tensor, R: int,
         name: str) -> dict:
    order = torch.argsort(head, stable=True)
    head, rel, tail = head[order], rel[order], tail[order]
    ptr = torch.zeros(num_nodes + 1, dtype=torch.long)
    torch.cumsum(torch.bincount(head, minlength=num_nodes), 0, out=ptr[1:])
    return {"name": name, "num_nodes": num_nodes, "num_relations": R,
            "edge_index": torch.stack([tail, head]), "edge_type": rel, "ptr": ptr}


def ml100k(root: Path) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    from transr_ml100k import load_ml100k

    from kgseqgraph.data import relational_view

    v = relational_view(load_ml100k(root))
    return {"name": "ml-100k", "num_nodes": v.num_nodes, "num_relations": v.num_relations,
            "edge_index": v.edge_index, "edge_type": v.relation, "ptr": v.ptr}


def yelp(path: Path) -> dict:
    """Items 0..I-1 (S3-Rec ids 1..I), then attributes; relation 0 has_attribute, 1 its reverse."""
    table = json.loads(path.read_text())
    items = sorted(int(k) for k in table)
    pos = {it: i for i, it in enumerate(items)}
    attrs = sorted({int(a) for v in table.values() for a in v})
    apos = {a: len(items) + j for j, a in enumerate(attrs)}
    pairs = [(pos[int(k)], apos[int(a)]) for k, v in table.items() for a in dict.fromkeys(v)]
    it = torch.tensor([p[0] for p in pairs])
    at = torch.tensor([p[1] for p in pairs])
    head, tail = torch.cat([it, at]), torch.cat([at, it])
    rel = torch.cat([torch.zeros_like(it), torch.ones_like(it)])
    return _csr(len(items) + len(attrs), head, rel, tail, 2, "yelp-attributes")


def synthetic(num_edges: int, num_nodes: int, R: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    head = torch.randint(num_nodes, (num_edges,), generator=g)
    tail = torch.randint(num_nodes, (num_edges,), generator=g)
    rel = torch.randint(R, (num_edges,), generator=g)
    return _csr(num_nodes, head, rel, tail, R, f"synthetic-{num_edges // 1_000_000}M")


# ------------------------------------------------------------------------------------ timing
def _peak_mib(fn) -> float:
    """Peak of the bytes allocated through the torch allocator while ``fn()`` runs (MiB), from
    the profiler's memory accounting: every op's self allocation and every free, in time order,
    summed. Resident-set figures are not used: glibc keeps freed pages and serves later requests
    from them, which made the second path measured look cheaper than it is."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    cur = peak = 0
    for e in events:
        cur += e.self_cpu_memory_usage
        peak = max(peak, cur)
    return peak / 2 ** 20


GRAPHS = ("ml-100k", "yelp", "synthetic-1M", "synthetic-10M")


def make_graph(name: str, args) -> tuple[dict, int]:
    """The graph ``name`` and the embedding width used on it."""
    if name == "ml-100k":
        return ml100k(args.data / "ml-100k"), args.channels
    if name == "yelp":
        return yelp(args.data / "s3rec" / "Yelp_item2attributes.json"), args.channels
    n = {"synthetic-1M": 1_000_000, "synthetic-10M": 10_000_000}[name]
    return synthetic(n, n // 10, args.synthetic_relations, args.seed), args.synthetic_channels


#: path suffix: the same backend with ``recompute_scores=True`` (no per-edge tensors kept)
RECOMPUTE = "+recompute"


def probe(name: str, backend: str, args, dump: Path) -> dict:
    """One path on one graph, in a fresh process: timings, peak memory, and the output and
    gradients (saved to ``dump``) for the equality check."""
    g, ch = make_graph(name, args)
    N, ei, et, ptr = g["num_nodes"], g["edge_index"], g["edge_type"], g["ptr"]
    E = ei.size(1)
    torch.manual_seed(args.seed)  # same parameters and inputs for every path
    recompute = backend.endswith(RECOMPUTE)
    conv = KGAttentionConv(ch, ch, g["num_relations"], backend=backend.removesuffix(RECOMPUTE),
                           cached=True, recompute_scores=recompute)
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(N, ch, generator=gen).requires_grad_()
    grad_out = torch.randn(N, ch, generator=gen)
    with torch.no_grad():
        score = conv.attention_logits(x, ei, et).requires_grad_()

    def layer():
        x.grad = None
        conv.zero_grad(set_to_none=True)
        out = conv(x, ei, et, ptr=ptr)
        out.backward(grad_out)
        return out

    def attend():  # the attention + aggregation call alone
        score.grad = None
        x.grad = None
        out, _ = conv.attend(score, x, ei, ptr, need_alpha=False)
        out.backward(grad_out)
        return out

    repeats = args.repeats if E < 5_000_000 else max(2, args.repeats // 2)
    row = {"graph": g["name"], "nodes": N, "edges": E, "relations": g["num_relations"],
           "max_in_degree": int((ptr[1:] - ptr[:-1]).max()), "channels": ch, "repeats": repeats}
    for kind, fn in (("layer", layer), ("attend", attend)):
        fn()  # warm-up (builds the cached edge plan)
        t = []
        for _ in range(repeats):
            gc.collect()
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
        gc.collect()
        row.update({f"{kind}_seconds_min": min(t), f"{kind}_seconds_median": statistics.median(t),
                    f"{kind}_all_seconds": t, f"{kind}_peak_mib": _peak_mib(fn)})
    row["layer_ns_per_edge"] = row["layer_seconds_min"] / E * 1e9
    out = layer().detach()
    torch.save({"out": out, "grad_x": x.grad, "grad_rel_proj": conv.rel_proj.grad}, dump)
    return row


def compare(name: str, rows: dict, dumps: dict) -> dict:
    res = {k: rows["pyg"][k] for k in ("graph", "nodes", "edges", "relations", "max_in_degree",
                                       "channels", "repeats")}
    res["paths"] = {b: {k: v for k, v in r.items() if k not in res} for b, r in rows.items()}
    fused = [b for b in rows if b != "pyg"][0]
    a, b = torch.load(dumps[fused]), torch.load(dumps["pyg"])
    lean = fused + RECOMPUTE
    if lean in rows:  # the recomputing variant gives the fused path's results
        c = torch.load(dumps[lean])
        res["recompute_max_abs_diff_vs_fused"] = {
            k: float((c[k] - a[k]).abs().max()) for k in ("out", "grad_x", "grad_rel_proj")}
    res["max_abs_diff"] = {}
    for k in ("out", "grad_x", "grad_rel_proj"):
        d = (a[k] - b[k]).abs()
        res["max_abs_diff"][k] = float(d.max())
        res["max_abs_diff"][k + "_scale"] = float(b[k].abs().max())
        # Elements off by more than 1e-4 of the scale. The few there are come from LeakyReLU's
        # kink: a pre-activation within float32 rounding of 0 takes the other slope in the other
        # path and that element's gradient changes by (1 - slope) x its upstream gradient. With
        # negative_slope=1 (no kink) the count is 0 on every graph (checked on synthetic-1M).
        res["max_abs_diff"][k + "_elements_off_by_1e-4_of_scale"] = int(
            (d > 1e-4 * b[k].abs().max()).sum())
    P, F = res["paths"]["pyg"], res["paths"][fused]
    res["ratio_pyg_over_fused"] = {
        "layer_time": P["layer_seconds_min"] / F["layer_seconds_min"],
        "layer_time_median": P["layer_seconds_median"] / F["layer_seconds_median"],
        "attend_time": P["attend_seconds_min"] / F["attend_seconds_min"],
        "attend_time_median": P["attend_seconds_median"] / F["attend_seconds_median"],
        "layer_peak_memory": P["layer_peak_mib"] / F["layer_peak_mib"],
        "attend_peak_memory": P["attend_peak_mib"] / F["attend_peak_mib"]}
    if lean in rows:
        L = res["paths"][lean]
        res["ratio_pyg_over_fused_recompute"] = {
            "layer_time": P["layer_seconds_min"] / L["layer_seconds_min"],
            "layer_time_median": P["layer_seconds_median"] / L["layer_seconds_median"],
            "layer_peak_memory": P["layer_peak_mib"] / L["layer_peak_mib"]}
    return res


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path(os.environ.get("KGSEQGRAPH_DATA",
                                                                    "../shared/data")))
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: stable timings on a shared machine)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--channels", type=int, default=64, help="in_channels for the real KGs")
    p.add_argument("--synthetic-channels", type=int, default=32)
    p.add_argument("--synthetic-relations", type=int, default=16)
    p.add_argument("--with-10m", action="store_true", help="also the 10M-edge synthetic KG")
    p.add_argument("--only", nargs="*", default=None, choices=GRAPHS, help="subset of graphs")
    p.add_argument("--no-thp", action="store_true",
                   help="do not set THP_MEM_ALLOC_ENABLE=1 (transparent huge pages for torch's "
                        "CPU allocations; without them page faults and TLB misses dominate the "
                        "large graphs on this VM)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--probe", nargs=3, metavar=("GRAPH", "BACKEND", "DUMP"), default=None,
                   help=argparse.SUPPRESS)  # internal: one path in a fresh process
    args = p.parse_args(argv)
    if not args.no_thp and os.environ.get("THP_MEM_ALLOC_ENABLE") != "1" and argv is None:
        # read by torch at start-up: re-run this script with it set
        os.execve(sys.executable, [sys.executable, *sys.argv],
                  {**os.environ, "THP_MEM_ALLOC_ENABLE": "1"})
    torch.set_num_threads(args.threads)
    if args.probe:
        name, backend, dump = args.probe
        print(json.dumps(probe(name, backend, args, Path(dump))))
        return {}

    backends = ["auto", "auto" + RECOMPUTE, "pyg"]
    if importlib.util.find_spec("torch_scatter") is not None:
        backends.insert(1, "scatter")
    wanted = args.only or ["ml-100k", "yelp", "synthetic-1M"] + (["synthetic-10M"]
                                                                 if args.with_10m else [])
    passthrough = [a for a in (sys.argv[1:] if argv is None else argv)]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in GRAPHS:
            if name not in wanted:
                continue
            rows, dumps = {}, {}
            for backend in backends:
                dumps[backend] = Path(tmp) / f"{name}-{backend}.pt"
                cmd = [sys.executable, __file__, *passthrough, "--probe", name, backend,
                       str(dumps[backend])]
                done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    raise RuntimeError(f"probe {name}/{backend} failed:\n{done.stderr[-3000:]}")
                rows[backend] = json.loads(done.stdout.strip().splitlines()[-1])
            r = compare(name, rows, dumps)
            print(json.dumps({"graph": name, **r["ratio_pyg_over_fused"]}), file=sys.stderr,
                  flush=True)
            results.append(r)
    out = {"benchmark": "KGAttentionConv forward+backward, fused vs PyG softmax+propagate",
           "command": "python benchmarks/bench_kg_attention.py " + " ".join(passthrough),
           "torch": torch.__version__, "threads": torch.get_num_threads(),
           "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE", ""),
           "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
           "torch_scatter_installed": "scatter" in backends,
           "isolation": "every (graph, path) runs in its own fresh process", "results": results}
    by = {r["graph"]: r for r in results}
    if "synthetic-1M" in by and "synthetic-10M" in by:
        out["linear_growth"] = {
            b: by["synthetic-10M"]["paths"][b]["layer_ns_per_edge"]
            / by["synthetic-1M"]["paths"][b]["layer_ns_per_edge"] for b in backends}
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return out


if __name__ == "__main__":
    main()
