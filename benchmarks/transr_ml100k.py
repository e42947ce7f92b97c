"""Train TransR on the ML-100K Freebase KG and report filtered link prediction (MRR, Hits@k)
next to the exact figures of a random scorer. CPU, a few minutes.

    python benchmarks/transr_ml100k.py --data $KGSEQGRAPH_DATA/ml-100k --seed 0

The model of the epoch with the best valid MRR is kept (early stopping, ``--patience``); test is
evaluated once on it.

Prints one JSON object (also written to ``--out`` when given).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch

from kgseqgraph.data import build_collaborative_kg
from kgseqgraph.nn.kge import TransE, TransR, kg_triples
from kgseqgraph.training.kge import KGETrainConfig, run_link_prediction


def load_ml100k(root: Path):
    """The collaborative KG of RecBole's ML-100K atomic files (``.inter``, ``.kg``, ``.link``)."""
    inter = pd.read_csv(root / "ml-100k.inter", sep="\t", header=0,
                        names=["user", "item", "rating", "time"], dtype={"user": str, "item": str})
    kg = pd.read_csv(root / "ml-100k.kg", sep="\t", header=0, names=["head", "relation", "tail"],
                     dtype=str)
    link = pd.read_csv(root / "ml-100k.link", sep="\t", header=0, names=["item", "entity"],
                       dtype=str)
    return build_collaborative_kg(inter, kg, link, items=sorted(inter["item"].unique(), key=int))


def main(argv: list[str] | None = None) -> dict:
    default = Path(os.environ.get("KGSEQGRAPH_DATA", "../shared/data")) / "ml-100k"
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=default, help="folder with ml-100k.{inter,kg,link}")
    p.add_argument("--model", choices=["transr", "transe"], default="transr")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--relation-dim", type=int, default=64)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--reg", type=float, default=1e-5)
    p.add_argument("--patience", type=int, default=2,
                   help="stop after this many epochs without a better valid MRR")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    t0 = time.perf_counter()
    data = load_ml100k(args.data)
    tr = kg_triples(data)
    if args.model == "transr":
        model = TransR(tr.num_nodes, tr.num_relations, args.dim, args.relation_dim,
                       reg_weight=args.reg)
    else:
        model = TransE(tr.num_nodes, tr.num_relations, args.dim, reg_weight=args.reg)
    cfg = KGETrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    res = run_link_prediction(model, data, cfg, split_seed=args.seed, patience=args.patience)
    out = asdict(res)
    out["graph"] = {"nodes": tr.num_nodes, "relations": tr.num_relations,
                    "triples": int(tr.head.numel())}
    out["command"] = ("python benchmarks/transr_ml100k.py "
                      + " ".join(sys.argv[1:] if argv is None else argv))
    out["torch_threads"] = torch.get_num_threads()
    out["total_seconds"] = time.perf_counter() - t0
    out["mrr_over_random"] = res.test["mrr"] / res.random_test["mrr"]
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return out


if __name__ == "__main__":
    main()
