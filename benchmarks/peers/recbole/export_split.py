"""Write our exact ML-100K leave-one-out split as RecBole atomic files (runs in OUR venv).

    python benchmarks/peers/recbole/export_split.py [--root $KGSEQGRAPH_DATA/ml-100k]
        [--out benchmarks/peers/recbole/work]

Writes ``OUT/kgsg-ml100k/kgsg-ml100k.inter`` (``user_id:token item_id:token timestamp:float``)
and ``OUT/kgsg-ml100k/expected_split.json``.

* The dataset is named ``kgsg-ml100k``, not ``ml-100k``: for that name RecBole may use its bundled
  copy and its ``ml-100k.yaml`` (which normalises float fields) instead of our file.
* Tokens are the raw MovieLens ids (``data['user'].raw_id``, ``data['item'].raw_id``).
* ``timestamp`` is each interaction's **rank inside its user's sequence** (0, 1, 2, ...), taken
  from :func:`kgseqgraph.data.sequences.user_sequences` (stable sort by time, then row order).
  ML-100K has many equal timestamps within a user (several ratings in the same second); writing
  the rank removes every tie, so RecBole's sort by ``(user, timestamp)`` cannot reorder them and
  its ``LS: valid_and_test`` split reproduces our targets exactly.
* ``expected_split.json`` holds our split's views as raw tokens (per evaluated user: training
  sequence, valid input/target, test input/target); ``run_recbole.py`` checks RecBole's built
  datasets against it before it trains and refuses to run on any difference.

The file is re-read here and the split rebuilt from it, so the export itself is checked too.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import torch

from kgseqgraph.data.sequences import Sequences, user_sequences
from kgseqgraph.data.splits import leave_one_out
from kgseqgraph.datasets.registry import load_dataset

HERE = Path(__file__).resolve().parent
DATASET = "kgsg-ml100k"


def _views(split, user_tokens: list[str], item_tokens: list[str]) -> dict:
    """Our split as raw tokens, keyed by user token."""
    tok = lambda seq: [item_tokens[i] for i in seq.tolist()]  # noqa: E731
    out = {}
    ev_users = split.valid_inputs.users.tolist()
    assert ev_users == split.test_inputs.users.tolist()
    train_of = {int(u): split.train[k] for k, u in enumerate(split.train.users.tolist())}
    for k, u in enumerate(ev_users):
        out[user_tokens[u]] = {
            "train": tok(train_of[u]),
            "valid_input": tok(split.valid_inputs[k]),
            "valid_target": item_tokens[int(split.valid_targets[k])],
            "test_input": tok(split.test_inputs[k]),
            "test_target": item_tokens[int(split.test_targets[k])],
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=None,
                    help="ML-100K folder (default $KGSEQGRAPH_DATA/ml-100k)")
    ap.add_argument("--out", default=str(HERE / "work"))
    args = ap.parse_args()

    data = load_dataset("ml-100k", args.root, kg=False)
    seqs = user_sequences(data)
    split = leave_one_out(seqs)
    user_tokens = [str(int(x)) for x in data["user"].raw_id]
    item_tokens = [str(int(x)) for x in data["item"].raw_id]

    folder = Path(args.out) / DATASET
    folder.mkdir(parents=True, exist_ok=True)
    inter = folder / f"{DATASET}.inter"
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for k, u in enumerate(seqs.users.tolist()):
        for rank, i in enumerate(seqs[k].tolist()):
            lines.append(f"{user_tokens[u]}\t{item_tokens[i]}\t{rank}")
    inter.write_text("\n".join(lines) + "\n")

    # --- check: rebuild the split from the file we wrote (rank order) and compare
    rows = [ln.split("\t") for ln in inter.read_text().splitlines()[1:]]
    u_index = {t: n for n, t in enumerate(user_tokens)}
    i_index = {t: n for n, t in enumerate(item_tokens)}
    per_user: dict[int, list[tuple[int, int]]] = {}
    for ut, it, ts in rows:
        per_user.setdefault(u_index[ut], []).append((int(float(ts)), i_index[it]))
    lists = [[i for _, i in sorted(per_user.get(u, []))] for u in range(len(user_tokens))]
    back = Sequences.from_lists(lists, len(item_tokens))
    split_back = leave_one_out(back)
    ours = _views(split, user_tokens, item_tokens)
    if _views(split_back, user_tokens, item_tokens) != ours:
        raise SystemExit("the written .inter file does not reproduce our split")

    n_train = sum(len(v["train"]) for v in ours.values())
    expected = {
        "dataset": DATASET,
        "source": "kgseqgraph ml-100k loader (kg=False), user_sequences + leave_one_out "
                  "(min_length=3, short_users='train')",
        "split_report": split.report,
        "num_users": len(user_tokens),
        "num_items": len(item_tokens),
        "num_interactions": len(rows),
        "evaluated_users": len(ours),
        "train_interactions": n_train,
        # RecBole's training examples: every prefix of every training sequence (>= 1 item)
        "recbole_train_examples": sum(max(len(v["train"]) - 1, 0) for v in ours.values()),
        "inter_sha256": hashlib.sha256(inter.read_bytes()).hexdigest(),
        "users": ours,
    }
    (folder / "expected_split.json").write_text(json.dumps(expected))
    print(json.dumps({k: v for k, v in expected.items() if k != "users"}, indent=2))
    print(f"wrote {inter} and {folder / 'expected_split.json'}")


if __name__ == "__main__":
    os.environ.setdefault("KGSEQGRAPH_DATA", "/work/shared/data")
    torch.set_num_threads(1)
    main()
