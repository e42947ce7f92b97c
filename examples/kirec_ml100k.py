"""KIRec-SASRec vs SASRec on MovieLens-100K (full ranking, seen items excluded, pessimistic ties).

Steps: load ML-100K → join ML-1M plots (match rate logged) → item features → train → JSON.

* ``--features x_text``: all-MiniLM-L6-v2 embedding of "title (year). Genres: …. Director: ….
  Actors: …. Plot: …" (the text-embedding stand-in for LLM attributes);
* ``--features x_attr``: SmolLM2-135M-Instruct (Q4_1 GGUF) attributes → MiniLM → ``x_attr``;
  ``--attr-items K`` extracts for the K most popular training items only (CPU budget), the
  other items get an empty attribute set;
* ``--model sasrec``: the ID-only baseline with the same encoder and training settings.

Examples::

    python examples/kirec_ml100k.py --model sasrec --epochs 20
    python examples/kirec_ml100k.py --model kirec --features x_text --epochs 20
    python examples/kirec_ml100k.py --extract-only --attr-items 100   # fills the cache
    python examples/kirec_ml100k.py --model kirec --features x_attr --attr-items 100 --epochs 20
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("KGSEQGRAPH_DATA", "/work/shared/data"))
    p.add_argument("--model", choices=["sasrec", "kirec"], default="kirec")
    p.add_argument("--features", nargs="+", default=["x_text"], choices=["x_text", "x_attr"])
    p.add_argument("--reduction", choices=["pca", "linear"], default="pca")
    p.add_argument("--fusion", choices=["sum", "gate", "concat"], default="sum")
    p.add_argument("--attr-items", type=int, default=None,
                   help="extract attributes for the K most popular training items only")
    p.add_argument("--attr-batch-size", type=int, default=16)
    p.add_argument("--attr-max-new-tokens", type=int, default=40)
    p.add_argument("--extract-only", action="store_true")
    p.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/kgseqgraph/features"))
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--output-dir", default=None)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)

    from kgseqgraph.data import leave_one_out
    from kgseqgraph.datasets.registry import load_dataset
    from kgseqgraph.features import (AttributeExtractor, ExtractionConfig, attach_attributes,
                                     attach_ml1m_plots, attach_text_embeddings, item_texts)
    from kgseqgraph.models.kirec import KIRec
    from kgseqgraph.models.sequential import SASRec
    from kgseqgraph.training import TrainConfig, run_training

    data_root = Path(args.data)
    data = load_dataset("ml-100k", data_root / "ml-100k", kg=False)
    report: dict = {"args": vars(args)}
    extra = data_root / "ml-1m-text" / "movies_extrainfos.dat"
    if extra.exists():
        join = attach_ml1m_plots(data, extra)
        report["plot_join"] = {"matched": join.matched, "items": join.num_items,
                               "match_rate": round(join.match_rate, 4),
                               "with_plot": join.with_plot}
    split = leave_one_out(data)

    need_attr = args.extract_only or (args.model == "kirec" and "x_attr" in args.features)
    if need_attr:
        items = None
        if args.attr_items:
            pop = torch.bincount(split.train.items, minlength=split.num_items)
            items = torch.argsort(pop, descending=True, stable=True)[: args.attr_items].tolist()
        extractor = AttributeExtractor.from_pretrained(
            config=ExtractionConfig(batch_size=args.attr_batch_size,
                                    max_new_tokens=args.attr_max_new_tokens),
            num_threads=args.threads)
        t0 = time.perf_counter()
        res, _ = attach_attributes(data, extractor, texts=data["item"].text,
                                   cache_dir=args.cache_dir, items=items)
        report["extraction"] = {**res.report(), "wall_seconds": round(time.perf_counter() - t0, 1),
                                "items_with_attributes": len(res.attributes) - res.num_malformed,
                                "catalogue": split.num_items}
        if args.extract_only:
            print(json.dumps(report, indent=2))
            return
    if args.model == "kirec" and "x_text" in args.features:
        attach_text_embeddings(data, cache_dir=args.cache_dir, texts=item_texts(data))

    torch.manual_seed(args.seed)
    common = dict(max_len=args.max_len, hidden_size=args.hidden,
                  encoder_kwargs=dict(num_layers=args.layers, num_heads=args.heads,
                                      hidden_dropout=args.dropout, attn_dropout=args.dropout))
    if args.model == "sasrec":
        model = SASRec.from_dataset(split.num_items, **common)
    else:
        model = KIRec.from_dataset(split.train_graph, features=args.features,
                                   reduction=args.reduction,
                                   fusion=args.fusion, **common)
    cfg = TrainConfig(seed=args.seed, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      patience=None, valid_metric="NDCG@10", exclude_history=True,
                      ties="pessimistic", output_dir=args.output_dir, device="cpu",
                      num_threads=args.threads, progress=False)
    result = run_training(model, split, cfg)
    report.update(model=type(model).__name__,
                  parameters=sum(p.numel() for p in model.parameters()),
                  best_epoch=result["best_epoch"], valid=result["valid"], test=result["test"],
                  timings=result["timings"])
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
