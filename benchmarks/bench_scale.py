"""Scaling: build, training and full-ranking evaluation on the synthetic KG as it grows 10x, 100x.

Sizes (``--sizes``, factors of the 1x size; each runs in its own fresh subprocess, so every peak
RSS belongs to one size only):

====  ==========  ========  ==========  =====================  ======================
size  users       items     entities    interactions (~20/u)   KG triples (+ reverse)
====  ==========  ========  ==========  =====================  ======================
1x    10,000      1,000     10,000      ~200k                  ~100k
10x   100,000     10,000    100,000     ~2M                    ~1M
100x  1,000,000   100,000   1,000,000   ~20M                   ~10M
====  ==========  ========  ==========  =====================  ======================

(``make_synthetic(num_users=10_000 f, num_items=1_000 f, num_entities=10_000 f,
num_relations=16, seq_len=20, entities_per_item=50, entity_links_per_entity=5)``: 50 entity
draws per item plus 5 links per entity, so about half the triples are item→entity and half
entity→entity.)

Phases measured in the worker, each with wall seconds, CPU seconds of the process (user + system:
robust when other jobs share the cores) and the peak RSS reached during the phase (``VmHWM``, reset
at the start of the phase through ``/proc/self/clear_refs``):

* ``build``: :func:`~kgseqgraph.datasets.make_synthetic` (generation + the collaborative-KG
  builder); ``split``: :func:`~kgseqgraph.data.leave_one_out` + the training windows;
* ``train``: SASRec (``max_len=50``, hidden 64, 2 layers, batch 256, AdamW, grad clip 1.0, the
  trainer's loop: ``training_batch`` → ``loss`` (softmax cross-entropy over the whole catalogue)
  → backward → step). One epoch = one pass over the training windows (one window a user here, so
  each user's training sequence once). ``--steps`` steps are timed after one warm-up step; when
  they are fewer than an epoch's steps the epoch time is **extrapolated** from the measured
  steps/s (``epoch_seconds_extrapolated``; ``epoch_measured`` says which);
* ``kg_step`` (``--kg-sizes``): the KG part of KATRec a training step runs — the item embedder
  (TransR table → 3 KG attention layers 64→32→16→16 over all item/entity nodes and both edge
  directions → gate fusion with the ID embeddings) forward + backward, ``--kg-steps`` times;
  ``--kg-recompute`` runs it with ``KATRec(kg_recompute=True)`` (no per-edge tensors kept for
  backward);
* ``eval``: full-ranking evaluation (every item ranked, history excluded, pessimistic ties) of
  the SASRec model on the first ``--eval-users`` validation users (a **sample**: users/s and the
  extrapolated seconds for all validation users are reported), chunks sized by the default
  256 MiB score budget.

``--ce-compare`` also times one training step with the previous, unblocked cross-entropy (the
whole ``[targets, N]`` logits held at once) in another fresh subprocess, at the sizes where the
loss runs blocked (logits over its 256 MiB budget) and the unblocked logits fit in
``--ce-compare-max-gib``.

Prints one JSON object: the per-size results and, for each size, its ratios to the smallest
size of the run (``vs_<size>``).

Usage::

    python benchmarks/bench_scale.py                       # 1x 10x 100x
    python benchmarks/bench_scale.py --sizes 1 10 --steps 20 --eval-users 20000
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# ------------------------------------------------------------------------------------ worker side
def _status_kib(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key} line (this benchmark needs Linux)")


_PROCESS_PEAK_KIB = [0]  # VmHWM before each reset: the whole process's peak survives the resets


def _process_peak_kib() -> int:
    return max(_PROCESS_PEAK_KIB[0], _status_kib("VmHWM"))


def _reset_peak() -> bool:
    _PROCESS_PEAK_KIB[0] = _process_peak_kib()
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # VmHWM := current RSS
        return True
    except OSError:
        return False


class Phase:
    """Wall / CPU seconds and peak RSS (MiB) of a block of code."""

    def __init__(self, out: dict, name: str) -> None:
        self.out, self.name = out, name

    def __enter__(self) -> Phase:
        import gc

        gc.collect()
        self.rss0 = _status_kib("VmRSS")
        self.reset = _reset_peak()
        self.cpu0 = time.process_time()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self.t0
        cpu = time.process_time() - self.cpu0
        peak = _status_kib("VmHWM") if self.reset else resource.getrusage(
            resource.RUSAGE_SELF).ru_maxrss
        self.out[self.name] = {"seconds": wall, "cpu_seconds": cpu,
                               "rss_before_mib": self.rss0 / 1024,
                               "peak_rss_mib": peak / 1024,
                               # "process": clear_refs failed, the peak is the whole process's
                               "peak_scope": "phase" if self.reset else "process",
                               "rss_after_mib": _status_kib("VmRSS") / 1024}


def _sizes(f: float) -> dict:
    return {"num_users": int(10_000 * f), "num_items": int(1_000 * f),
            "num_entities": int(10_000 * f), "num_relations": 16, "seq_len": 20,
            "entities_per_item": 50, "entity_links_per_entity": 5, "seed": 0}


def _worker(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from kgseqgraph.data import IGNORE_INDEX, leave_one_out, training_windows
    from kgseqgraph.datasets import make_synthetic
    from kgseqgraph.evaluation import budgeted_chunk_size, evaluate_full_ranking
    from kgseqgraph.models import SASRec

    out: dict = {"factor": args.factor, "config": _sizes(args.factor)}
    phases: dict = {}
    out["phases"] = phases
    out["rss_after_import_mib"] = _status_kib("VmRSS") / 1024

    with Phase(phases, "build"):
        data = make_synthetic(**_sizes(args.factor))
    kg_edges = sum(data[et].edge_index.size(1) for et in data.edge_types
                   if et[1] not in {"interacts", "rev_interacts"})
    out["graph"] = {"users": int(data["user"].num_nodes), "items": int(data["item"].num_nodes),
                    "entities": int(data["entity"].num_nodes),
                    "interactions": int(data["user", "interacts", "item"].edge_index.size(1)),
                    "kg_triples": kg_edges // 2, "kg_edges_with_reverse": kg_edges}
    with Phase(phases, "split"):
        split = leave_one_out(data)
        windows = training_windows(split.train, args.max_len)
    out["train_windows"] = len(windows)
    out["valid_users"] = int(split.valid_targets.numel())
    n_items = split.num_items

    if args.ce_mode == "unblocked":  # the previous loss: the whole [targets, N] logits at once
        import functools

        import kgseqgraph.models.sequential as seq_mod
        from kgseqgraph.nn.losses import catalogue_cross_entropy

        seq_mod.catalogue_cross_entropy = functools.partial(catalogue_cross_entropy,
                                                            max_logit_bytes=None)

    # ---------------------------------------------------------------- SASRec training steps
    torch.manual_seed(0)
    model = SASRec.from_dataset(n_items, max_len=args.max_len, hidden_size=64)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(windows), generator=gen)
    bs = args.batch_size
    steps_per_epoch = math.ceil(len(windows) / bs)
    model.train()
    targets_seen = [0]

    def step(i: int) -> None:
        idx = perm[(i % steps_per_epoch) * bs:(i % steps_per_epoch + 1) * bs]
        batch = model.training_batch(windows.select(idx), gen)
        loss = model.loss(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        targets_seen[0] += int((batch["targets"] != IGNORE_INDEX).sum())

    step(0)  # warm-up (first-call allocations, AdamW state)
    steps = min(args.steps, steps_per_epoch) if args.steps > 0 else steps_per_epoch
    targets_seen[0] = 0
    with Phase(phases, "train"):
        for i in range(1, steps + 1):
            step(i)
    tr = phases["train"]
    tr.update({
        "steps": steps, "batch_size": bs, "steps_per_epoch": steps_per_epoch,
        "steps_per_s": steps / tr["seconds"], "cpu_seconds_per_step": tr["cpu_seconds"] / steps,
        "targets_per_step": targets_seen[0] / steps,
        "logits_full_mib": targets_seen[0] / steps * n_items * 4 / 2**20,
        "epoch_measured": steps >= steps_per_epoch,
        ("epoch_seconds" if steps >= steps_per_epoch else "epoch_seconds_extrapolated"):
            tr["seconds"] / steps * steps_per_epoch,
        "ce": args.ce_mode,
    })
    if args.ce_mode == "unblocked":
        return out

    # ---------------------------------------------------------------- full-ranking evaluation
    model.eval()
    inputs, targets = split.valid_inputs, split.valid_targets
    m = min(args.eval_users, len(inputs)) if args.eval_users > 0 else len(inputs)

    def score_fn(start: int, end: int) -> torch.Tensor:
        return model.score(inputs.select(torch.arange(start, end)))

    lo, hi = int(inputs.ptr[0]), int(inputs.ptr[m])
    exclude = (inputs.ptr[:m + 1], inputs.items[lo:hi])
    with torch.no_grad():
        score_fn(0, 2)  # warm-up (item table cache)
        with Phase(phases, "eval"):
            metrics = evaluate_full_ranking(score_fn, targets[:m], exclude, ks=(10, 20),
                                            num_items=n_items)
    ev = phases["eval"]
    ev.update({"users": m, "users_total": len(inputs), "sampled": m < len(inputs),
               "chunk_size": budgeted_chunk_size(n_items),
               "users_per_s": m / ev["seconds"], "users_per_cpu_s": m / ev["cpu_seconds"],
               "all_users_seconds_extrapolated": len(inputs) / (m / ev["seconds"]),
               "NDCG@10": metrics["NDCG@10"], "HR@10": metrics["HR@10"]})
    del model, opt

    # ---------------------------------------------------------------- KG part of KATRec
    if args.kg:
        from kgseqgraph.models import KATRec

        torch.manual_seed(0)
        with Phase(phases, "kg_build"):
            katrec = KATRec.from_dataset(split.train_graph, max_len=args.max_len,
                                         kg_recompute=args.kg_recompute,
                                         pretrain_bprmf_epochs=0)
        katrec.train()
        emb = katrec.item_embedder

        def kg_step() -> None:
            table = emb()
            table.square().mean().backward()  # any scalar: the backward pass is what is timed
            katrec.zero_grad(set_to_none=True)

        kg_step()  # warm-up (conv edge plans are cached on the first call)
        with Phase(phases, "kg_step"):
            for _ in range(args.kg_steps):
                kg_step()
        kg = phases["kg_step"]
        kg.update({"steps": args.kg_steps, "seconds_per_step": kg["seconds"] / args.kg_steps,
                   "cpu_seconds_per_step": kg["cpu_seconds"] / args.kg_steps,
                   "kg_nodes": emb.enricher.num_nodes,
                   "kg_edges": int(emb.enricher.edge_index.size(1)),
                   "kg_recompute": bool(args.kg_recompute),
                   "layers": [emb.enricher.in_channels, *emb.enricher.hidden_channels]})
    out["peak_rss_mib"] = _process_peak_kib() / 1024  # (ru_maxrss is reset with VmHWM)
    return out


# ------------------------------------------------------------------------------------ driver side
def _run(f: float, args: argparse.Namespace, kg: bool, ce_mode: str = "blocked") -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--factor", str(f),
           "--threads", str(args.threads), "--steps", str(args.steps if ce_mode == "blocked"
                                                            else 1),
           "--batch-size", str(args.batch_size), "--max-len", str(args.max_len),
           "--eval-users", str(args.eval_users), "--kg-steps", str(args.kg_steps),
           "--ce-mode", ce_mode] + (["--kg"] if kg else []) \
        + (["--kg-recompute"] if args.kg_recompute else [])
    env = dict(os.environ, CI=os.environ.get("CI", "1"), OMP_NUM_THREADS=str(args.threads))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"size {f}x ({ce_mode}) failed:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["process_seconds"] = time.perf_counter() - t0
    return res


def _label(f: float) -> str:
    return f"{f:g}x"


def _ratios(r: dict, base: dict) -> dict:
    p, q = r["phases"], base["phases"]
    out = {"data": r["graph"]["interactions"] / base["graph"]["interactions"],
           "kg_triples": r["graph"]["kg_triples"] / max(base["graph"]["kg_triples"], 1),
           "build_seconds": p["build"]["seconds"] / q["build"]["seconds"],
           "build_cpu_seconds": p["build"]["cpu_seconds"] / q["build"]["cpu_seconds"],
           "build_peak_rss": p["build"]["peak_rss_mib"] / q["build"]["peak_rss_mib"],
           "train_seconds_per_step": (p["train"]["seconds"] / p["train"]["steps"])
           / (q["train"]["seconds"] / q["train"]["steps"]),
           "epoch_seconds": _epoch(r) / _epoch(base),
           "peak_rss": r["peak_rss_mib"] / base["peak_rss_mib"]}
    if "eval" in p and "eval" in q:
        out["eval_users_per_s"] = p["eval"]["users_per_s"] / q["eval"]["users_per_s"]
    if "kg_step" in p and "kg_step" in q:
        out["kg_seconds_per_step"] = (p["kg_step"]["seconds_per_step"]
                                      / q["kg_step"]["seconds_per_step"])
    return out


def _epoch(r: dict) -> float:
    t = r["phases"]["train"]
    return t.get("epoch_seconds", t.get("epoch_seconds_extrapolated"))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=float, nargs="+", default=[1, 10, 100],
                   help="scale factors of the 1x size (10k users, 1k items, ~100k triples)")
    p.add_argument("--threads", type=int, default=1, help="torch threads in every worker")
    p.add_argument("--steps", type=int, default=None,
                   help="timed SASRec steps per size (0: a full epoch); default: a full epoch "
                        "up to 40 steps, else 3 steps, extrapolated")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--eval-users", type=int, default=10_000,
                   help="validation users evaluated (the first ones; 0: all)")
    p.add_argument("--kg-sizes", type=float, nargs="*", default=[1, 10],
                   help="sizes at which the KATRec KG step is timed (memory grows ~1 GB per "
                        "million KG edges)")
    p.add_argument("--kg-steps", type=int, default=2)
    p.add_argument("--kg-recompute", action="store_true",
                   help="KATRec(kg_recompute=True): the KG layers keep no per-edge tensors for "
                        "backward (recomputed relation projections)")
    p.add_argument("--ce-compare", action="store_true",
                   help="also one step with the unblocked cross-entropy, where it fits")
    p.add_argument("--ce-compare-max-gib", type=float, default=3.0)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--factor", type=float, help=argparse.SUPPRESS)
    p.add_argument("--kg", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ce-mode", default="blocked", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        print(json.dumps(_worker(args)))
        return

    import torch

    sizes = sorted(args.sizes)
    results: dict = {}
    steps_arg = args.steps
    for f in sizes:
        windows = int(10_000 * f)  # one window a user at seq_len 20, max_len 50
        epoch_steps = math.ceil(windows / args.batch_size)
        args.steps = steps_arg if steps_arg is not None else (
            epoch_steps if epoch_steps <= 40 else 3)
        res = _run(f, args, kg=f in args.kg_sizes)
        if args.ce_compare:
            from kgseqgraph.nn.losses import DEFAULT_MAX_LOGIT_BYTES

            logits_gib = res["phases"]["train"]["logits_full_mib"] / 1024
            if logits_gib * 2**30 <= DEFAULT_MAX_LOGIT_BYTES:
                res["ce_compare"] = {"skipped": "the logits fit the budget: the loss is the "
                                                "unblocked F.cross_entropy at this size"}
            elif logits_gib <= args.ce_compare_max_gib:
                old = _run(f, args, kg=False, ce_mode="unblocked")["phases"]["train"]
                res["ce_compare"] = {
                    "unblocked_peak_rss_mib": old["peak_rss_mib"],
                    "unblocked_step_peak_increase_mib": old["peak_rss_mib"] - old["rss_before_mib"],
                    "blocked_step_peak_increase_mib": res["phases"]["train"]["peak_rss_mib"]
                    - res["phases"]["train"]["rss_before_mib"],
                    "unblocked_seconds_per_step": old["seconds"] / old["steps"],
                    "blocked_seconds_per_step": res["phases"]["train"]["seconds"]
                    / res["phases"]["train"]["steps"]}
            else:
                res["ce_compare"] = {"skipped": f"unblocked logits would be {logits_gib:.1f} GiB"}
        results[_label(f)] = res
    base = results[_label(sizes[0])]
    for f in sizes[1:]:
        results[_label(f)][f"vs_{_label(sizes[0])}"] = _ratios(results[_label(f)], base)
    print(json.dumps({
        "benchmark": "scaling of build / SASRec training / full-ranking evaluation on the "
                     "synthetic KG",
        "device": "cpu",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "peak_rss": "per phase: VmHWM reset at the phase start; peak_rss_mib: whole worker "
                    "process (max of VmHWM over the resets)",
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
