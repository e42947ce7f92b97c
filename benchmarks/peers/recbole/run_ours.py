"""Train one of our models on ML-100K with RecBole's settings and record times (OUR venv).

    python benchmarks/peers/recbole/run_ours.py --model sasrec --epochs 60 --patience 10 \
        --threads 1 --out benchmarks/peers/recbole/results/ours_sasrec.json

Same data as the RecBole runs: our loader + :func:`~kgseqgraph.data.leave_one_out` is the split
``export_split.py`` wrote (checked there and in ``run_recbole.py``); the exported file's sha256 is
recorded beside the result when ``work/kgsg-ml100k/expected_split.json`` exists.

``--preset recbole`` (default) matches RecBole 1.2.1's model and optimiser settings:

* SASRec: post-LN blocks, GELU, FFN 256, dropout 0.5/0.5, LN eps 1e-12 (RecBole's SASRec);
* BERT4Rec: post-LN, GELU, FFN 256, dropout 0.2/0.2, mask probability 0.2, half of the training
  sequences with only their last item masked (RecBole's ``ft_ratio=0.5``) after being cut to a
  random prefix (``last_item_random_prefix``: RecBole trains on every prefix, so its masked
  last items fall at every position of a history), and the prediction
  head of the paper and of RecBole (``prediction_head=True``: dense + GELU + layer norm on the
  encoder output, per-item output bias);
* GRU4Rec: embedding 64, GRU state 128, 2 layers, embedding dropout 0.3;
* Adam (AdamW with weight decay 0 is Adam), constant learning rate, no gradient clipping;
* seen items stay in the ranking (``exclude_history=False``: RecBole's ``repeatable=True``),
  HR/NDCG/MRR at 10, model selection on validation NDCG@10.

``--preset default`` keeps the common hyper-parameters (embedding 64, 2 layers, 2 heads, max
length 50, batch 256, lr 1e-3) but uses our library's defaults otherwise (paper SASRec: pre-LN,
ReLU, FFN 64, dropout 0.2; BERT4Rec dropout 0.1, no last-item masking; GRU state 64; AdamW with
linear decay to 0 and gradient clipping at 1.0).

Per epoch the trainer's own ``train_seconds``/``eval_seconds`` are kept, plus ``wall_seconds``:
time since the start of :meth:`Trainer.fit` when the epoch (training + validation) ended. No
checkpoints or curves are written (``output_dir=None``), as the RecBole loop saves none either.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent

COMMON = dict(hidden_size=64, max_len=50)
PRESETS = {
    "recbole": {
        "sasrec": dict(encoder_kwargs=dict(num_layers=2, num_heads=2, inner_size=256,
                                           hidden_dropout=0.5, attn_dropout=0.5,
                                           activation="gelu", norm_first=False,
                                           layer_norm_eps=1e-12)),
        "bert4rec": dict(encoder_kwargs=dict(num_layers=2, num_heads=2, inner_size=256,
                                             hidden_dropout=0.2, attn_dropout=0.2,
                                             activation="gelu", norm_first=False,
                                             layer_norm_eps=1e-12),
                         mask_prob=0.2, last_item_mask_prob=0.5, last_item_random_prefix=True,
                         prediction_head=True),
        "gru4rec": dict(encoder_kwargs=dict(rnn_hidden_size=128, num_layers=2, dropout=0.3)),
    },
    "default": {
        "sasrec": dict(encoder_kwargs=dict(num_layers=2, num_heads=2)),
        "bert4rec": dict(encoder_kwargs=dict(num_layers=2, num_heads=2)),
        "gru4rec": dict(encoder_kwargs=dict(num_layers=2)),
    },
}
TRAIN = {
    "recbole": dict(weight_decay=0.0, warmup_ratio=0.0, lr_decay="constant", grad_clip=None),
    "default": dict(),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, choices=["sasrec", "bert4rec", "gru4rec"])
    ap.add_argument("--preset", default="recbole", choices=sorted(PRESETS))
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--root", default=None,
                    help="ML-100K folder (default $KGSEQGRAPH_DATA/ml-100k)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    os.environ.setdefault("KGSEQGRAPH_DATA", "/work/shared/data")
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    load_start = list(os.getloadavg())

    import kgseqgraph
    from kgseqgraph.data import leave_one_out
    from kgseqgraph.datasets.registry import load_dataset
    from kgseqgraph.models import build_model
    from kgseqgraph.training import TrainConfig, Trainer
    from kgseqgraph.training.trainer import seed_everything
    from kgseqgraph.utils import versions

    data = load_dataset("ml-100k", args.root, kg=False)
    split = leave_one_out(data)
    seed_everything(args.seed)
    options = {**COMMON, **PRESETS[args.preset][args.model]}
    model = build_model(args.model, split.train_graph, **options)
    config = TrainConfig(seed=args.seed, epochs=args.epochs, batch_size=args.batch_size,
                         lr=args.lr, patience=args.patience, exclude_history=False, ks=(10,),
                         valid_metric="NDCG@10", output_dir=None, num_threads=args.threads,
                         progress=False, device="cpu", **TRAIN[args.preset])
    wall: list[float] = []
    cpu: list[float] = []
    t_fit = [0.0, 0.0]

    def on_epoch(trainer, record):
        wall.append(time.perf_counter() - t_fit[0])
        cpu.append(time.process_time() - t_fit[1])
        v = record["valid"] or {}
        print(json.dumps({"epoch": record["epoch"], "loss": record["train"].get("loss"),
                          "train_seconds": record["train_seconds"],
                          "eval_seconds": record["eval_seconds"],
                          "NDCG@10": v.get("NDCG@10"), "wall_seconds": wall[-1]}), flush=True)

    trainer = Trainer(model, split, config, data=data, callbacks=[on_epoch])
    setup_seconds = time.perf_counter() - t_start
    # CPU seconds of training/validation (process time; robust to other jobs on the machine)
    cpu_eval: list[float] = []
    evaluate = trainer.evaluate

    def timed_evaluate(stage="valid"):
        c0 = time.process_time()
        out = evaluate(stage)
        cpu_eval.append(time.process_time() - c0)
        return out

    trainer.evaluate = timed_evaluate
    t_fit[0], t_fit[1] = time.perf_counter(), time.process_time()
    result = trainer.fit()

    history = []
    prev = 0.0
    for rec, w, c, ce in zip(result.history, wall, cpu, cpu_eval):
        history.append({"epoch": rec["epoch"], "loss": rec["train"].get("loss"),
                        "train_seconds": rec["train_seconds"], "eval_seconds": rec["eval_seconds"],
                        "valid": rec["valid"], "wall_seconds": w,
                        "train_cpu_seconds": c - prev - ce, "eval_cpu_seconds": ce,
                        "cpu_seconds": c, "improved": rec["improved"]})
        prev = c
    valid_eval = sum(r["eval_seconds"] for r in result.history)
    test_seconds = result.timings["eval_seconds"] - valid_eval
    expected = HERE / "work" / "kgsg-ml100k" / "expected_split.json"
    sha = json.loads(expected.read_text())["inter_sha256"] if expected.exists() else None
    n_targets = int(sum(int(l) - 1 for l in trainer.windows.lengths.tolist()))
    out = {
        "library": "kgseqgraph",
        "model": args.model,
        "preset": args.preset,
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "machine": {"cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
                    "platform": platform.platform(), "processor": platform.processor(),
                    "loadavg_start": load_start, "loadavg_end": list(os.getloadavg())},
        "epoch_definition": f"one pass over the training windows ({len(trainer.windows)} windows "
                            f"of <= {COMMON['max_len'] + 1} items, every position a target: "
                            f"{n_targets} targets, {trainer.steps_per_epoch} steps of "
                            f"{args.batch_size})",
        "train_examples_per_epoch": len(trainer.windows),
        "train_targets_per_epoch": n_targets,
        "steps_per_epoch": trainer.steps_per_epoch,
        "model_options": options,
        "train_config": config.to_dict(),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "inter_sha256": sha,
        "split_report": split.report,
        "epochs_budget": args.epochs,
        "patience": args.patience,
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        "best_epoch": result.best_epoch,
        "best_valid": result.valid,
        "test": result.test,
        "setup_seconds": setup_seconds,
        "seconds_per_epoch_median": statistics.median(r["train_seconds"] for r in history),
        "valid_eval_seconds_median": statistics.median(r["eval_seconds"] for r in history),
        "test_eval_seconds": test_seconds,
        "test_eval_cpu_seconds": cpu_eval[-1],
        "cpu_seconds_per_epoch_median": statistics.median(r["train_cpu_seconds"] for r in history),
        "valid_eval_cpu_seconds_median": statistics.median(r["eval_cpu_seconds"] for r in history),
        "time_to_best_cpu_seconds": history[result.best_epoch - 1]["cpu_seconds"],
        "eval_users": int(split.test_targets.numel()),
        "time_to_best_seconds": history[result.best_epoch - 1]["wall_seconds"],
        "train_total_seconds": history[-1]["wall_seconds"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "kgseqgraph_version": kgseqgraph.__version__,
        "history": history,
    }
    text = json.dumps(out, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
