"""A fingerprint of what the models compute: losses and metrics of a few fixed-seed runs.

    python benchmarks/behaviour_hash.py                       # prints the JSON
    python benchmarks/behaviour_hash.py --check benchmarks/results/behaviour_hash.json

Trains SASRec, BERT4Rec, KATRec and KIRec for two short epochs each on the synthetic dataset (one
thread, fixed seeds, CPU) and hashes every epoch's training losses and the validation and test
metrics, rounded to 6 significant digits (so a refactoring that changes nothing but the order of
float additions somewhere still compares equal, while any change of behaviour does not). A
refactoring records the JSON before its first move and checks it after its last one; ``--check``
prints what differs and exits 1.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch

RUNS = {
    "sasrec": dict(hidden_size=32, max_len=12, encoder_kwargs=dict(num_layers=1, num_heads=2)),
    "bert4rec": dict(hidden_size=32, max_len=12, encoder_kwargs=dict(num_layers=1, num_heads=2)),
    "katrec": dict(max_len=12, kg_dim=16, kg_hidden=[8, 8], pretrain_bprmf_epochs=2,
                   encoder_kwargs=dict(num_layers=1, num_heads=2)),
    "kirec": dict(hidden_size=32, max_len=12, features=["x_attr"],
                  encoder_kwargs=dict(num_layers=1, num_heads=2)),
}


def _round(x: float) -> str:
    return f"{x:.6g}"


def run(name: str, options: dict) -> dict:
    from kgseqgraph.data import leave_one_out
    from kgseqgraph.datasets import Synthetic
    from kgseqgraph.models import build_model
    from kgseqgraph.training import TrainConfig, Trainer, seed_everything

    data = Synthetic(num_users=150, num_items=60, num_entities=12, num_relations=3, seq_len=10,
                     seed=0)[0]
    g = torch.Generator().manual_seed(0)
    data["item"].x_attr = torch.randn(60, 48, generator=g)  # KIRec's fixed item features
    split = leave_one_out(data)
    seed_everything(0)
    model = build_model(name, split.train_graph, **options)
    cfg = TrainConfig(seed=0, epochs=2, batch_size=32, lr=3e-3, patience=None, ks=(5, 10),
                      sampled_negatives=20, device="cpu", num_threads=1, progress=False)
    res = Trainer(model, split, cfg).fit()
    record = {"train": [{k: _round(v) for k, v in sorted(h["train"].items())}
                        for h in res.history],
              "valid": {k: _round(v) for k, v in sorted(res.valid.items())},
              "test": {k: _round(v) for k, v in sorted(res.test.items())}}
    record["sha256"] = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", default=None, help="a JSON written earlier: compare with it")
    p.add_argument("--out", default=None, help="write the JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = {name: run(name, opts) for name, opts in RUNS.items()}
    text = json.dumps(out, indent=1, sort_keys=True)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    if args.check:
        before = json.loads(Path(args.check).read_text())
        diff = [name for name in RUNS if before.get(name, {}).get("sha256") != out[name]["sha256"]]
        for name in diff:
            print(f"{name}: behaviour changed\n  before {before.get(name)}\n  now    {out[name]}",
                  file=sys.stderr)
        return 1 if diff else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
