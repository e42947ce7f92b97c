"""Training and evaluation throughput of SASRec, BERT4Rec and KATRec on ML-100K.

    python benchmarks/bench_train.py --root $KGSEQGRAPH_DATA/ml-100k [--steps 20] [--threads 2]

For each model: training samples/s (windows of up to max_len + 1 items per second, and target
positions per second) over ``--steps`` optimiser steps after a warm-up step, and full-ranking
evaluation users/s over every test user (history excluded). SASRec is the baseline of the same
run: every row carries its ratio to SASRec, so machine noise cancels. Prints one JSON object.

``--compare-full-window`` also times evaluation with every position of the last transformer
block computed (the path before ``output_positions``: encode the whole window, read one column),
interleaved with the default path over ``--eval-repeats`` rounds, and reports the best time of
each and their ratio (``eval_speedup_vs_full_window``).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import platform
import time

import torch

from kgseqgraph.data import IGNORE_INDEX, leave_one_out, training_windows
from kgseqgraph.datasets.registry import load_dataset
from kgseqgraph.evaluation import evaluate_full_ranking
from kgseqgraph.models import build_model
from kgseqgraph.nn.encoders import SequenceEncoder


@contextlib.contextmanager
def full_window_encoder(encoder):
    """Within the block, ``encoder`` computes every position of every block even when only one
    output position per row is asked for (the generic encode-then-gather path)."""
    encoder._encode_at = functools.partial(SequenceEncoder._encode_at, encoder)
    try:
        yield
    finally:
        del encoder._encode_at


def bench_model(name: str, data, split, steps: int, batch_size: int, max_len: int,
                compare_full_window: bool = False, eval_repeats: int = 3) -> dict:
    torch.manual_seed(0)
    width = {} if name == "katrec" else {"hidden_size": 64}  # KATRec: kg_dim + sum(kg_hidden)
    model = build_model(name, split.train_graph, max_len=max_len, **width)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    windows = training_windows(split.train, max_len)
    g = torch.Generator().manual_seed(0)
    model.train()

    def step() -> int:
        idx = torch.randint(len(windows), (batch_size,), generator=g)
        batch = model.training_batch(windows.select(idx), g)
        loss = model.loss(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        return int((batch["targets"] != IGNORE_INDEX).sum())

    step()  # warm-up
    targets = 0
    t0 = time.perf_counter()
    for _ in range(steps):
        targets += step()
    train_s = time.perf_counter() - t0

    model.eval()
    inputs = split.test_inputs

    def evaluate() -> tuple[float, dict]:
        t0 = time.perf_counter()
        with torch.no_grad():
            metrics = evaluate_full_ranking(
                lambda s, e: model.score(inputs.select(torch.arange(s, e))),
                split.test_targets, exclude=inputs, chunk_size=512)
        return time.perf_counter() - t0, metrics

    eval_s, metrics = evaluate()
    row = {"train_samples_per_s": steps * batch_size / train_s,
           "train_targets_per_s": targets / train_s,
           "seconds_per_step": train_s / steps,
           "eval_users_per_s": len(inputs) / eval_s,
           "eval_seconds": eval_s,
           "untrained_test_NDCG@10": metrics["NDCG@10"]}
    if compare_full_window and isinstance(model.encoder, SequenceEncoder):
        fast, full = [eval_s], []
        for _ in range(eval_repeats):
            with full_window_encoder(model.encoder):
                t, full_metrics = evaluate()
            full.append(t)
            fast.append(evaluate()[0])
        row.update({"eval_seconds_best": min(fast),
                    "eval_seconds_full_window_best": min(full),
                    "eval_speedup_vs_full_window": min(full) / min(fast),
                    "full_window_test_NDCG@10": full_metrics["NDCG@10"]})
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=None, help="ML-100K folder (default $KGSEQGRAPH_DATA/ml-100k)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--models", default="sasrec,bert4rec,katrec")
    p.add_argument("--compare-full-window", action="store_true",
                   help="also time evaluation computing every position of the last block")
    p.add_argument("--eval-repeats", type=int, default=3)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset("ml-100k", args.root)
    split = leave_one_out(data)
    rows = {m: bench_model(m, data, split, args.steps, args.batch_size, args.max_len,
                           args.compare_full_window, args.eval_repeats)
            for m in args.models.split(",")}
    base = rows.get("sasrec")
    if base:
        for row in rows.values():
            row["train_samples_ratio_vs_sasrec"] = row["train_samples_per_s"] / base["train_samples_per_s"]
            row["eval_users_ratio_vs_sasrec"] = row["eval_users_per_s"] / base["eval_users_per_s"]
    print(json.dumps({"benchmark": "train_eval_throughput", "dataset": "ml-100k",
                      "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "machine": platform.machine(), "steps": args.steps,
                      "batch_size": args.batch_size, "max_len": args.max_len, "models": rows},
                     indent=2))


if __name__ == "__main__":
    main()
