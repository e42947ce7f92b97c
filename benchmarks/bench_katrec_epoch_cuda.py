"""A KATRec training epoch on Yelp on one GPU against the 1-thread CPU epoch.

GPU: ``Trainer.fit`` for one epoch on ``--device`` (after a few warm-up steps that compile the
Triton kernels), reporting the epoch's training time (``history[0]["train_seconds"]``) and the
full-ranking validation time. CPU: the trainer's step (``training_batch`` -> ``loss`` ->
``backward`` -> gradient clipping -> AdamW) on **one thread**, timed over ``--cpu-steps`` steps
after a warm-up step and **extrapolated** to the epoch's number of steps (a full 1-thread epoch
takes minutes; the extrapolation is labelled as such in the output). Model and budget as in
docs/results.md's Yelp rows: KATRec's default widths (TransR 64 + KG layers 32/16/16), max_len
50, 2 layers / 2 heads, batch 256, lr 2e-3, no pre-training stage.

Without the Yelp files under ``--data`` a synthetic graph of Yelp's size stands in (30,431
users, 20,033 items, 1,001 entities), labelled ``"dataset": "synthetic (Yelp-sized)"``.

    python benchmarks/bench_katrec_epoch_cuda.py --data $KGSEQGRAPH_DATA --out epoch.json
    python benchmarks/bench_katrec_epoch_cuda.py --device cpu --synthetic-small   # smoke run
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kgseqgraph.data import leave_one_out  # noqa: E402
from kgseqgraph.data.batching import training_windows  # noqa: E402
from kgseqgraph.models.base import MODEL_REGISTRY  # noqa: E402
from kgseqgraph.models.factory import build_model  # noqa: E402
from kgseqgraph.training import TrainConfig, Trainer  # noqa: E402


def load(args) -> tuple[object, str]:
    if args.synthetic_small:
        from kgseqgraph.datasets.synthetic import make_synthetic

        return make_synthetic(num_users=300, num_items=200, num_entities=30, num_relations=1,
                              seq_len=12, seed=0), "synthetic (small smoke run)"
    s3 = args.data / "s3rec" if args.data else None
    if s3 and (s3 / "Yelp.txt").exists() and (s3 / "Yelp_item2attributes.json").exists():
        from kgseqgraph.datasets.registry import load_dataset

        return load_dataset("yelp", s3), "yelp (S3-Rec files)"
    from kgseqgraph.datasets.synthetic import make_synthetic

    return make_synthetic(num_users=30431, num_items=20033, num_entities=1001, num_relations=1,
                          seq_len=10, seed=0), "synthetic (Yelp-sized)"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path(os.environ["KGSEQGRAPH_DATA"])
                   if os.environ.get("KGSEQGRAPH_DATA") else None)
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--hidden", type=int, default=None,
                   help="hidden_size (default: KATRec's own default)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup-steps", type=int, default=3)
    p.add_argument("--cpu-steps", type=int, default=3, help="timed 1-thread CPU steps")
    p.add_argument("--skip-cpu", action="store_true")
    p.add_argument("--synthetic-small", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch.cuda.is_available() is False")

    t0 = time.perf_counter()
    data, label = load(args)
    split = leave_one_out(data)
    load_s = time.perf_counter() - t0
    torch.manual_seed(0)
    options = {"max_len": args.max_len, "encoder_kwargs": {"num_layers": 2, "num_heads": 2}}
    if args.hidden is not None:
        options["hidden_size"] = args.hidden
    fields = {f.name for f in dataclasses.fields(MODEL_REGISTRY["katrec"].config_class)}
    if "pretrain_bprmf_epochs" in fields:  # time the epoch, not a pre-training stage
        options["pretrain_bprmf_epochs"] = 0
    # the graph a model trained on this split may be built from, where the library has it
    model = build_model("katrec", getattr(split, "train_graph", data), **options)
    initial = copy.deepcopy(model)
    windows = training_windows(split.train, args.max_len)
    cfg = TrainConfig(seed=0, epochs=1, batch_size=args.batch_size, lr=args.lr, patience=None,
                      ks=(10,), device=str(device), progress=False)
    report: dict = {"benchmark": "KATRec epoch: one GPU vs one CPU thread",
                    "dataset": label, "hidden_size": model.config.hidden_size, "users": len(split.targets("valid")),
                    "items": split.num_items, "windows": len(windows),
                    "batch_size": args.batch_size, "load_seconds": load_s,
                    "device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda,
                    "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
                    else "cpu"}

    # ---- the device epoch (Trainer.fit, one epoch), after warm-up steps
    trainer = Trainer(model, split, cfg, data=data)
    report["steps_per_epoch"] = trainer.steps_per_epoch
    g = torch.Generator().manual_seed(1)
    tw = time.perf_counter()
    for _ in range(args.warmup_steps):  # Triton compilation, cuBLAS / allocator warm-up
        idx = torch.randint(len(windows), (args.batch_size,), generator=g)
        batch = model.training_batch(windows.select(idx), g)
        trainer.model.loss({k: v.to(device) for k, v in batch.items()})["loss"].backward()
    trainer.model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    report["warmup_seconds"] = time.perf_counter() - tw
    result = trainer.fit()
    rec = result.history[0]
    report["device_epoch"] = {"train_seconds": rec["train_seconds"],
                              "eval_seconds_full_ranking_valid": rec["eval_seconds"],
                              "samples_per_second": rec["samples_per_second"],
                              "train_loss": rec["train"]["loss"],
                              "valid_NDCG@10": rec["valid"].get("NDCG@10")}
    if device.type == "cuda":
        report["device_epoch"]["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20

    # ---- the 1-thread CPU epoch, extrapolated from a few steps of the trainer's step
    if not args.skip_cpu:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            cpu = initial.to("cpu").train()
            params = [q for q in cpu.parameters() if q.requires_grad]
            opt = torch.optim.AdamW(params, lr=args.lr)
            gen = torch.Generator().manual_seed(2)
            perm = torch.randperm(len(windows), generator=gen)

            def step(i: int) -> None:
                idx = perm[(i * args.batch_size) % len(windows):][:args.batch_size]
                batch = cpu.training_batch(windows.select(idx), gen)
                loss = cpu.loss(batch)["loss"]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()

            step(0)  # warm-up
            tc = time.perf_counter()
            for i in range(1, args.cpu_steps + 1):
                step(i)
            per_step = (time.perf_counter() - tc) / args.cpu_steps
        finally:
            torch.set_num_threads(threads)
        cpu_epoch = per_step * report["steps_per_epoch"]
        report["cpu_1_thread"] = {
            "seconds_per_step": per_step, "steps_timed": args.cpu_steps,
            "epoch_seconds_extrapolated": cpu_epoch,
            "note": f"extrapolated: {args.cpu_steps} timed steps x {report['steps_per_epoch']} "
                    "steps an epoch (not a measured full epoch)"}
        report["speedup_device_vs_1_thread_cpu"] = cpu_epoch / rec["train_seconds"]
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
