"""Full ranking plus labelled sampled metrics: one model pass (the evaluator) vs two.

With ``sampled_negatives`` set, :class:`~kgseqgraph.evaluation.Evaluator` reports the full-ranking
metrics and the ``sampled-<n>/…`` ones. It scores every user once: each chunk of full-catalogue
scores also gives that chunk's ``[target, negatives]`` candidate scores. The baseline is what the
evaluator did before: the full-ranking pass, then a second pass of ``model.score`` over the same
users for the sampled candidates (``full_ranking_counts`` then ``sampled_counts`` with the same
score function, the memory budget's chunks).

Both routes run in the same process on the same model (SASRec at the accuracy benchmark's width,
random weights, seed 0: the cost of a pass does not depend on training) and the validation users
of a real dataset; their rank counts must be identical. Times are CPU seconds (``process_time``),
best of ``--repeats``, 1 thread. Prints ONE JSON object (``--out`` also writes it):
``speedup`` = two-pass / one-pass CPU seconds.

Usage::

    python benchmarks/bench_eval_sampled.py --dataset yelp --out benchmarks/results/speed/eval_sampled_yelp.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="yelp")
    ap.add_argument("--root", default=None,
                    help="dataset folder (default $KGSEQGRAPH_DATA/<the dataset's sub-folder>)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--negatives", type=int, default=100)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import torch

    import accuracy as A
    from kgseqgraph.data import leave_one_out
    from kgseqgraph.evaluation import Evaluator
    from kgseqgraph.evaluation.evaluator import sequence_slice
    from kgseqgraph.evaluation.full_ranking import full_ranking_counts
    from kgseqgraph.evaluation.sampled import sampled_counts
    from kgseqgraph.models.factory import build_model

    state = A.code_state()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = A.load_graph(args.dataset, args.root)
    split = leave_one_out(data)
    torch.manual_seed(0)
    model = build_model("sasrec", split.train_graph, hidden_size=64, max_len=50,
                        encoder_kwargs={"num_layers": 2, "num_heads": 2}).eval()
    inputs, targets = split.inputs("valid"), split.targets("valid")
    ev = Evaluator(ks=(5, 10, 20), sampled_negatives=args.negatives)
    negatives = ev.negatives("valid", split.num_items, inputs, targets)
    exclude = (inputs.ptr, inputs.items)

    def two_pass():
        def score_fn(lo, hi):
            return model.score(sequence_slice(inputs, lo, hi))
        full = full_ranking_counts(score_fn, targets, exclude, num_items=split.num_items)
        sampled = sampled_counts(score_fn, targets, negatives, num_items=split.num_items)
        return {"full": full, ev.sampled_protocol: sampled}

    def one_pass():
        return ev.counts(model, inputs, targets, stage="valid")

    times: dict[str, list[float]] = {"one_pass": [], "two_pass": []}
    outputs = {}
    with torch.no_grad():
        for _ in range(args.repeats):
            for name, fn in (("two_pass", two_pass), ("one_pass", one_pass)):
                t = time.process_time()
                outputs[name] = fn()
                times[name].append(time.process_time() - t)
    identical = all(torch.equal(outputs["one_pass"][k].greater, outputs["two_pass"][k].greater)
                    and torch.equal(outputs["one_pass"][k].ties, outputs["two_pass"][k].ties)
                    for k in outputs["two_pass"])
    best = {k: min(v) for k, v in times.items()}
    result = {
        "benchmark": "bench_eval_sampled",
        "command": "python " + " ".join([os.path.relpath(__file__, Path.cwd()),
                                         *(sys.argv[1:] if argv is None else argv)]),
        **state,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "machine": {"processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "threads": 1,
                    "loadavg_at_end": list(os.getloadavg())},
        "dataset": args.dataset, "users": int(targets.numel()), "items": int(split.num_items),
        "negatives": args.negatives, "repeats": args.repeats,
        "cpu_seconds": times, "best_cpu_seconds": best,
        "speedup": best["two_pass"] / best["one_pass"],
        "identical_counts": identical,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        A.write_result(result, Path(args.out))  # atomic (tmp file + os.replace)
    if not identical:
        raise SystemExit("the two routes gave different rank counts")
    return result


if __name__ == "__main__":
    main()
