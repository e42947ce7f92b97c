"""Train one RecBole 1.2.1 model on our exported split and record times (runs in RecBole's venv).

    benchmarks/peers/recbole/.venv/bin/python benchmarks/peers/recbole/run_recbole.py \
        --model SASRec --epochs 8 --patience 5 --threads 1 \
        --out benchmarks/peers/recbole/results/recbole_sasrec.json

Needs ``export_split.py`` to have written ``work/kgsg-ml100k`` first. Before training, RecBole's
built train/valid/test datasets are checked against ``expected_split.json`` (our split): every
validation and test input (last 50 items) and target, and every training example, must be equal,
or the run stops. Then a plain epoch loop calls RecBole's own ``Trainer._train_epoch`` and
``Trainer._valid_epoch`` (so nothing of RecBole's training or evaluation code is replaced) and
records per epoch: training seconds, validation seconds, validation HR/NDCG/MRR@10 and the
cumulative wall time; model selection on validation NDCG@10 with a strict improvement and
early stopping after ``--patience`` evaluations without one (the same rule as our trainer). The
best weights are then tested once. Peak memory is ``ru_maxrss`` of this process.

Settings that make RecBole the peer at its best and comparable with ours:

* ``torch.autograd.set_detect_anomaly(False)`` after import (RecBole's SINE module switches it on
  for the whole process, 1.5-3x slower; metrics are identical);
* ``torch.set_num_threads(--threads)`` (1 by default, as our runs);
* no filtering, no de-duplication, no normalisation (the data are exactly ours);
* ``repeatable=True`` (RecBole's sequential default: seen items stay in the ranking), full sort,
  all 943 validation users in one evaluation batch.
"""
from __future__ import annotations

import os

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # RecBole pickles its Config

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
DATASET = "kgsg-ml100k"

# identical hyper-parameters on both sides (see README.md); RecBole names
COMMON = dict(hidden_size=64, n_layers=2, n_heads=2, MAX_ITEM_LIST_LENGTH=50,
              train_batch_size=256, learning_rate=1e-3, learner="adam", weight_decay=0.0,
              clip_grad_norm=None, loss_type="CE", train_neg_sample_args=None)
MODEL_PARAMS = {
    # RecBole 1.2.1 model defaults, written out so that they are visible and fixed
    "SASRec": dict(inner_size=256, hidden_dropout_prob=0.5, attn_dropout_prob=0.5,
                   hidden_act="gelu", layer_norm_eps=1e-12, initializer_range=0.02),
    "BERT4Rec": dict(inner_size=256, hidden_dropout_prob=0.2, attn_dropout_prob=0.2,
                     hidden_act="gelu", layer_norm_eps=1e-12, initializer_range=0.02,
                     mask_ratio=0.2, ft_ratio=0.5, transform="mask_itemseq"),
    # GRU4Rec: embedding 64, GRU state 128 (RecBole's default), 2 layers (the setting)
    "GRU4Rec": dict(embedding_size=64, hidden_size=128, num_layers=2, dropout_prob=0.3),
}
NO_FILTERING = dict(rm_dup_inter=None, val_interval=None, filter_inter_by_user_or_item=False,
                    user_inter_num_interval=None, item_inter_num_interval=None,
                    normalize_all=False, normalize_field=None)


def recbole_config(model: str, args: argparse.Namespace, work: Path) -> dict:
    cfg = dict(
        data_path=str(work), checkpoint_dir=str(work / "saved"), seed=args.seed,
        reproducibility=True, use_gpu=False, show_progress=False, save_dataset=False,
        save_dataloaders=False, worker=0, log_wandb=False, state="INFO",
        USER_ID_FIELD="user_id", ITEM_ID_FIELD="item_id", TIME_FIELD="timestamp",
        load_col={"inter": ["user_id", "item_id", "timestamp"]},
        eval_args={"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user",
                   "mode": "full"},
        repeatable=True, metrics=["Hit", "NDCG", "MRR"], topk=[10], valid_metric="NDCG@10",
        valid_metric_bigger=True, metric_decimal_place=10, eval_batch_size=4096, eval_step=1,
        epochs=args.epochs, stopping_step=args.patience,
        **NO_FILTERING, **COMMON)
    cfg.update(MODEL_PARAMS[model])
    cfg["train_batch_size"], cfg["learning_rate"] = args.batch_size, args.lr
    return cfg


def verify_split(train_ds, valid_ds, test_ds, expected: dict, max_len: int) -> dict:
    """Compare RecBole's built datasets with our split (raw tokens). Raises on any difference."""
    tok = train_ds.field2id_token["item_id"]
    utok = train_ds.field2id_token["user_id"]
    users = expected["users"]
    problems: list[str] = []

    def rows(ds):
        f = ds.inter_feat
        u = f["user_id"].tolist()
        t = f["item_id"].tolist()
        lst = f["item_id_list"].tolist()
        ln = f["item_length"].tolist()
        for uu, tt, ll, n in zip(u, t, lst, ln):
            yield utok[uu], [tok[i] for i in ll[:n]], tok[tt]

    for name, ds in (("valid", valid_ds), ("test", test_ds)):
        seen = set()
        for u, inp, tgt in rows(ds):
            if u in seen:
                problems.append(f"{name}: user {u} twice")
            seen.add(u)
            want = users.get(u)
            if want is None:
                problems.append(f"{name}: unknown user {u}")
            elif want[f"{name}_target"] != tgt or want[f"{name}_input"][-max_len:] != inp:
                problems.append(f"{name}: user {u} differs")
        if seen != set(users):
            problems.append(f"{name}: {len(set(users) - seen)} of our users missing")
    got: dict[str, list] = {}
    for u, inp, tgt in rows(train_ds):
        got.setdefault(u, []).append((tuple(inp), tgt))
    n_train = 0
    for u, want in users.items():
        tr = want["train"]
        exp = sorted((tuple(tr[:t][-max_len:]), tr[t]) for t in range(1, len(tr)))
        n_train += len(exp)
        if sorted(got.get(u, [])) != exp:
            problems.append(f"train: user {u} differs")
    if set(got) - set(users):
        problems.append("train: users that we do not have")
    n_items = len(tok) - 1  # minus [PAD]
    if n_items != expected["num_items"] or len(utok) - 1 != expected["num_users"]:
        problems.append(f"catalogue: RecBole {n_items} items / {len(utok) - 1} users, ours "
                        f"{expected['num_items']} / {expected['num_users']}")
    if problems:
        raise SystemExit("RecBole's split differs from ours:\n  " + "\n  ".join(problems[:20]))
    return {"identical": True, "users_checked": len(users), "train_examples": len(train_ds),
            "expected_train_examples": n_train, "valid_rows": len(valid_ds),
            "test_rows": len(test_ds), "items": n_items}


def _metrics(result: dict) -> dict:
    names = {"hit": "HR", "ndcg": "NDCG", "mrr": "MRR"}
    out = {}
    for k, v in result.items():
        n, _, cut = k.partition("@")
        out[f"{names.get(n, n)}@{cut}"] = float(v)
    return out


def _jsonable(v):
    try:
        json.dumps(v)
        return v
    except TypeError:
        return str(v)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, choices=sorted(MODEL_PARAMS))
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=2020)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--work", default=str(HERE / "work"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--verify-only", action="store_true",
                    help="build RecBole's split, check it against ours, and exit")
    args = ap.parse_args()
    work = Path(args.work).resolve()
    out_path = Path(args.out).resolve() if args.out else None  # before the chdir below
    expected = json.loads((work / DATASET / "expected_split.json").read_text())
    os.chdir(work)  # RecBole writes ./log and ./log_tensorboard relative to the cwd
    t_start = time.perf_counter()
    load_start = list(os.getloadavg())

    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    cfg_dict = recbole_config(args.model, args, work)
    config = Config(model=args.model, dataset=DATASET, config_dict=cfg_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    torch.set_num_threads(args.threads)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    check = verify_split(train_data._dataset, valid_data._dataset, test_data._dataset, expected,
                         config["MAX_ITEM_LIST_LENGTH"])
    print(json.dumps({"split_check": check}), flush=True)
    if args.verify_only:
        return
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    torch.autograd.set_detect_anomaly(False)  # imported model modules switched it on
    torch.set_num_threads(args.threads)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.eval_collector.data_collect(train_data)
    setup_seconds = time.perf_counter() - t_start

    history, best, best_epoch, best_state, bad = [], -float("inf"), 0, None, 0
    wall = 0.0
    t_train0 = time.perf_counter()
    c_train0 = time.process_time()
    for epoch in range(args.epochs):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = trainer._train_epoch(train_data, epoch, show_progress=False)
        t1, c1 = time.perf_counter(), time.process_time()
        _, valid_result = trainer._valid_epoch(valid_data, show_progress=False)
        t2, c2 = time.perf_counter(), time.process_time()
        valid = _metrics(valid_result)
        wall = t2 - t_train0
        improved = valid["NDCG@10"] > best
        if improved:
            best, best_epoch, bad = valid["NDCG@10"], epoch + 1, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
        rec = {"epoch": epoch + 1, "loss": float(sum(loss) if isinstance(loss, tuple) else loss),
               "train_seconds": t1 - t0, "eval_seconds": t2 - t1, "valid": valid,
               "wall_seconds": wall, "train_cpu_seconds": c1 - c0, "eval_cpu_seconds": c2 - c1,
               "cpu_seconds": c2 - c_train0, "improved": improved}
        history.append(rec)
        print(json.dumps(rec), flush=True)
        if bad >= args.patience:
            break
    model.load_state_dict(best_state)
    t0, c0 = time.perf_counter(), time.process_time()
    test_result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    test_seconds, test_cpu = time.perf_counter() - t0, time.process_time() - c0
    test = _metrics(test_result)

    import numpy
    import pandas
    train_secs = [r["train_seconds"] for r in history]
    eval_secs = [r["eval_seconds"] for r in history]
    out = {
        "library": "recbole",
        "model": args.model,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"recbole": recbole.__version__, "torch": torch.__version__,
                     "numpy": numpy.__version__, "pandas": pandas.__version__,
                     "python": platform.python_version()},
        "machine": {"cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
                    "platform": platform.platform(), "processor": platform.processor(),
                    "loadavg_start": load_start, "loadavg_end": list(os.getloadavg())},
        "epoch_definition": "one pass over every prefix of every training sequence "
                            f"({len(train_data._dataset)} examples, one target each, "
                            f"{len(train_data)} steps of {args.batch_size})",
        "train_examples_per_epoch": len(train_data._dataset),
        "steps_per_epoch": len(train_data),
        "config": {k: cfg_dict[k] for k in sorted(cfg_dict) if k not in ("data_path",
                                                                          "checkpoint_dir")},
        "recbole_effective_config": {k: _jsonable(config[k]) for k in sorted(cfg_dict)
                                     if k not in ("data_path", "checkpoint_dir")},
        "anomaly_detection": torch.is_anomaly_enabled(),
        "split_check": check,
        "inter_sha256": expected["inter_sha256"],
        "epochs_budget": args.epochs,
        "patience": args.patience,
        "epochs_run": len(history),
        "stopped_early": bad >= args.patience,
        "best_epoch": best_epoch,
        "best_valid": history[best_epoch - 1]["valid"],
        "test": test,
        "setup_seconds": setup_seconds,
        "seconds_per_epoch_median": statistics.median(train_secs),
        "valid_eval_seconds_median": statistics.median(eval_secs),
        "test_eval_seconds": test_seconds,
        "test_eval_cpu_seconds": test_cpu,
        "cpu_seconds_per_epoch_median": statistics.median(r["train_cpu_seconds"] for r in history),
        "valid_eval_cpu_seconds_median": statistics.median(r["eval_cpu_seconds"] for r in history),
        "time_to_best_cpu_seconds": history[best_epoch - 1]["cpu_seconds"],
        "eval_users": len(test_data._dataset),
        "time_to_best_seconds": history[best_epoch - 1]["wall_seconds"],
        "train_total_seconds": wall,
        "peak_rss_mb": peak_rss_mb(),
        "history": history,
    }
    text = json.dumps(out, indent=2)
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
