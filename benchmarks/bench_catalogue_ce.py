"""CPU training step: the catalogue cross-entropy in cache-sized blocks vs in one pass.

    python benchmarks/bench_catalogue_ce.py [--dataset yelp] [--models sasrec,bert4rec]
        [--steps 5] [--rounds 3] [--threads 1] [--out benchmarks/results/speed/catalogue_ce_yelp.json]

``catalogue_cross_entropy`` processes CPU logits in blocks of ``DEFAULT_CPU_BLOCK_BYTES``
(``kgseqgraph/nn/losses.py``). The baseline of the same run is the one-pass path the library used
before (``cpu_block_bytes=None``: ``F.cross_entropy`` over all ``[targets, items]`` logits, the
path GPUs keep). Each model is built with the accuracy sweep's options for the dataset
(``benchmarks/accuracy_config.py``, the first grid point) and trained on real batches of the
sweep's size; the two paths alternate ``--rounds`` times over the same batches, ``--steps`` optimiser
steps each, and the best seconds a step of each path are compared (``speedup`` = one-pass /
blocked). Before timing, the two paths' losses on one batch are compared (``loss_rel_diff``).
Prints one JSON object (``--out`` also writes it, atomically).
"""
from __future__ import annotations

import argparse
import functools
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy as A  # noqa: E402
import accuracy_config as C  # noqa: E402

import kgseqgraph.models.sequential as sequential  # noqa: E402
from kgseqgraph.data import IGNORE_INDEX, leave_one_out, training_windows  # noqa: E402
from kgseqgraph.models import build_model  # noqa: E402
from kgseqgraph.nn.losses import DEFAULT_CPU_BLOCK_BYTES, catalogue_cross_entropy  # noqa: E402

PATHS = {
    "one_pass": functools.partial(catalogue_cross_entropy, cpu_block_bytes=None),
    "blocked": catalogue_cross_entropy,
}


def bench_model(name: str, dataset: str, split, steps: int, rounds: int) -> dict:
    first_point = A.grid_points(A.grid_of(dataset, name))[0][1]
    spec = A.resolve(dataset, name, 0, point=first_point, out_dir=A.REPO / C.RESULTS_DIR)
    torch.manual_seed(0)
    model = build_model(spec.model, split.train_graph, **spec.model_options)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    windows = training_windows(split.train, spec.model_options.get("max_len", 50))
    g = torch.Generator().manual_seed(0)
    batch_size = spec.train_options["batch_size"]
    batches = [model.training_batch(
        windows.select(torch.randint(len(windows), (batch_size,), generator=g)), g)
        for _ in range(steps)]
    model.train()

    def loss_of(batch: dict) -> torch.Tensor:
        return model.loss(batch)["loss"]

    losses, best = {}, {path: float("inf") for path in PATHS}
    try:
        for path, fn in PATHS.items():
            sequential.catalogue_cross_entropy = fn
            torch.manual_seed(1)  # the same dropout masks on both paths
            with torch.no_grad():
                losses[path] = float(loss_of(batches[0]))
        for _ in range(rounds):
            for path, fn in PATHS.items():
                sequential.catalogue_cross_entropy = fn
                t0 = time.perf_counter()
                for batch in batches:
                    loss = loss_of(batch)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                best[path] = min(best[path], (time.perf_counter() - t0) / steps)
    finally:
        sequential.catalogue_cross_entropy = catalogue_cross_entropy
    targets = sum(int((b["targets"] != IGNORE_INDEX).sum()) for b in batches) / steps
    return {"batch_size": batch_size, "targets_per_batch": targets,
            "num_items": int(split.num_items),
            "seconds_per_step": {k: round(v, 4) for k, v in best.items()},
            "speedup": round(best["one_pass"] / best["blocked"], 3),
            "loss_rel_diff": abs(losses["blocked"] - losses["one_pass"]) / abs(losses["one_pass"])}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="yelp", choices=sorted(set(C.DATASETS)))
    p.add_argument("--root", default=None)
    p.add_argument("--models", default="sasrec,bert4rec")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    split = leave_one_out(A.load_graph(args.dataset, args.root))
    rows = {m: bench_model(m, args.dataset, split, args.steps, args.rounds)
            for m in args.models.split(",")}
    result = {
        "benchmark": "catalogue_ce_cpu_blocks", "dataset": args.dataset,
        "baseline": "one_pass (cpu_block_bytes=None: F.cross_entropy over all logits)",
        "cpu_block_bytes": DEFAULT_CPU_BLOCK_BYTES, "steps": args.steps, "rounds": args.rounds,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "machine": platform.machine(),
        "command": "python benchmarks/bench_catalogue_ce.py " + " ".join(argv or sys.argv[1:]),
        **A.git_state(), "models": rows}
    print(json.dumps(result, indent=2))
    if args.out:
        A.write_result(result, Path(args.out))


if __name__ == "__main__":
    main()
