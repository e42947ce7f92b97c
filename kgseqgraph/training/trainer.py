r"""The trainer: one loop for every :class:`~kgseqgraph.models.base.SequentialRecommender`.

Each epoch the training sequences of the split are cut into windows of at most ``max_len + 1``
items (:func:`~kgseqgraph.data.batching.training_windows`), shuffled with the trainer's seeded
:class:`torch.Generator`, and fed ``batch_size`` windows at a time through

.. code-block:: text

    model.on_train_step_start()
    batch  = model.training_batch(windows, generator)
    losses = model.loss(batch)            # dict; losses["loss"] is minimised
    losses["loss"].backward(); clip_grad_norm_; AdamW.step(); LambdaLR.step()

The trainer never branches on the model's name. Model selection uses the validation split only:
every ``eval_every`` epochs the model ranks the whole catalogue for each validation user
(:func:`~kgseqgraph.evaluation.full_ranking.evaluate_full_ranking`, the user's history excluded
unless ``exclude_history=False``), the weights with the best ``valid_metric`` are kept, and
training stops after ``patience`` evaluations without a strict improvement

.. math::
    m_e > \max_{e' < e} m_{e'} .

At the end the best weights are reloaded and the test split is evaluated once.

After every epoch the full training state (weights, optimiser, scheduler, best weights, patience
counter, history and every RNG state) is written atomically to ``output_dir/checkpoint.pt``, so a
killed run resumed with ``resume=True`` ends with exactly the metrics of an uninterrupted run on
the CPU.

Launched by ``torchrun`` with several processes (:mod:`kgseqgraph.training.distributed`), every
rank draws the same global batch and keeps its rows (``model.shard_batch``), the loss runs inside
DistributedDataParallel, the validation and test users are split between the ranks and their rank
counters gathered exactly, and only rank 0 writes files. See ``docs/distributed.md``.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data.batching import training_windows
from ..data.sequences import Sequences
from ..data.splits import LeaveOneOutSplit
from ..evaluation.evaluator import Evaluator
from ..utils.provenance import versions
from .checkpoint import (atomic_torch_save, load_checkpoint, model_config, model_mismatch,
                         rng_state, seed_everything, set_rng_state)
from .config import RESUME_COMPATIBLE_FIELDS, TrainConfig
from .distributed import DistributedContext, init_distributed, wrap_loss
from .leakage import check_no_leak
from .pretrain import run_pretraining
from .run_files import RunFolder, dataset_info
from .schedule import LinearSchedule, build_optimizer

__all__ = ["Trainer", "TrainResult", "LinearSchedule", "run_training", "resolve_device",
           "EpochCallback"]

log = logging.getLogger("kgseqgraph")

CHECKPOINT_FORMAT = "kgseqgraph.trainer/1"

EpochCallback = Callable[["Trainer", dict[str, Any]], None]
"""``callback(trainer, record)`` run after each epoch, once its checkpoint is on disk. An exception
raised by a callback aborts :meth:`Trainer.fit` (the checkpoint of that epoch is kept)."""


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` → ``cuda`` when available, else ``cpu``; anything else is passed to
    :class:`torch.device` (an unavailable CUDA device raises ``ValueError``)."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available")
    return dev


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns.

    Attributes:
        best_epoch: epoch whose weights were kept (best ``valid_metric``).
        valid: validation metrics at ``best_epoch``.
        test: test metrics of the best weights (evaluated once, at the end).
        history: per-epoch records (see :meth:`Trainer.fit`).
        timings: ``train_seconds``, ``eval_seconds``, ``total_seconds``, ``train_samples``,
            ``samples_per_second`` (training windows a second).
        epochs_run: epochs trained (fewer than ``config.epochs`` after early stopping).
        stopped_early: whether patience ran out.
        output_dir: where the run's files are (``None``: in memory only).
    """

    best_epoch: int
    valid: dict[str, float]
    test: dict[str, float]
    history: list[dict[str, Any]]
    timings: dict[str, float]
    epochs_run: int
    stopped_early: bool
    output_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Trainer:
    """Train a :class:`~kgseqgraph.models.base.SequentialRecommender` on a leave-one-out split.

    Args:
        model: the model (moved to ``config.device``).
        split: a :class:`~kgseqgraph.data.splits.LeaveOneOutSplit`; ``split.train`` feeds training,
            ``valid_*`` model selection, ``test_*`` the final report.
        config: a :class:`~kgseqgraph.training.config.TrainConfig` (defaults when ``None``).
        data: the graph the model was built from, passed to ``from_pretrained`` by
            :meth:`load_best_model` (graph models need it to be rebuilt); not used for
            training. Default: the split's ``train_graph`` (the only graph a model trained on
            this split may be built from — a graph model built over held-out interactions is
            refused).
        resume: ``True`` continues from ``output_dir/checkpoint.pt`` (which must exist);
            ``"auto"`` resumes when it exists and starts afresh otherwise; ``False`` starts afresh
            (an existing checkpoint is overwritten after the first epoch).
        callbacks: ``callback(trainer, record)`` after each epoch (see :data:`EpochCallback`); in
            a multi-process run they run on every rank (``trainer.distributed.is_main`` tells
            rank 0).
        distributed: the process group
            (:class:`~kgseqgraph.training.distributed.DistributedContext`); ``None`` joins the
            one ``torchrun`` describes (:func:`~kgseqgraph.training.distributed.init_distributed`),
            the single-process context outside ``torchrun``. With ``world_size`` :math:`W > 1`,
            ``config.batch_size`` is the *global* batch (each rank computes
            ``batch_size / W`` windows of it), :meth:`fit`, :meth:`evaluate` and :meth:`test`
            are collective (every rank calls them) and only rank 0 writes files.

    Example:
        >>> trainer = Trainer(SASRec.from_dataset(split.num_items, max_len=50), split,
        ...                   TrainConfig(epochs=100, output_dir="runs/sasrec"))  # doctest: +SKIP
        >>> result = trainer.fit()  # doctest: +SKIP
        >>> result.test["NDCG@10"]  # doctest: +SKIP
    """

    def __init__(self, model: torch.nn.Module, split: LeaveOneOutSplit,
                 config: TrainConfig | None = None, data: Any = None,
                 resume: bool | str = False, callbacks: Iterable[EpochCallback] = (),
                 distributed: DistributedContext | None = None) -> None:
        config = TrainConfig() if config is None else config
        if not isinstance(config, TrainConfig):
            raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
        if resume not in (True, False, "auto"):
            raise ValueError(f"resume must be True, False or 'auto', got {resume!r}")
        for name in ("training_batch", "loss", "score"):
            if not callable(getattr(model, name, None)):
                raise ValueError(f"model must implement {name}() (a SequentialRecommender), got "
                                 f"{type(model).__name__}")
        model_items = getattr(model, "num_items", None)
        if model_items is not None and int(model_items) != split.num_items:
            raise ValueError(f"the model scores {model_items} items but the split has "
                             f"{split.num_items}")
        self.config = config
        self.split = split
        if data is None and getattr(split, "graph", None) is not None:
            data = split.train_graph
        check_no_leak(model, split)
        self.data = data
        self.callbacks = list(callbacks)
        self.output_dir = Path(config.output_dir) if config.output_dir is not None else None
        self.run_folder = RunFolder(self.output_dir) if self.output_dir is not None else None
        model_max_len = getattr(getattr(model, "config", None), "max_len", None)
        if config.max_len is not None and model_max_len is not None \
                and int(config.max_len) != int(model_max_len):
            raise ValueError(f"TrainConfig.max_len={config.max_len} does not match the model's "
                             f"config.max_len={model_max_len}")
        self.max_len = int(config.max_len if config.max_len is not None else model_max_len or 0)
        if self.max_len < 1:
            raise ValueError("the training window length is unknown: set TrainConfig.max_len or "
                             "give the model a config.max_len")
        if config.num_threads is not None:
            torch.set_num_threads(config.num_threads)
        self.distributed = init_distributed() if distributed is None else distributed
        world = self.distributed.world_size
        if config.batch_size % world:
            raise ValueError(f"batch_size={config.batch_size} is the global batch of {world} "
                             f"processes and must be a multiple of {world} (each process "
                             f"computes batch_size / {world} windows)")
        self.device = resolve_device(config.device)
        if self.distributed.enabled and self.device.type == "cuda" and self.device.index is None:
            self.device = self.distributed.device  # one GPU a process: cuda:<LOCAL_RANK>
        self.model = model.to(self.device)
        self.progress = config.progress_enabled and self.distributed.is_main
        self.evaluator = Evaluator(ks=config.ks, ties=config.ties,
                                   exclude_history=config.exclude_history,
                                   sampled_negatives=config.sampled_negatives,
                                   sampled_strategy=config.sampled_strategy,
                                   chunk_size=config.eval_chunk_size, progress=self.progress,
                                   seed=config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        self._loss_fn: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None

        self.windows: Sequences = training_windows(split.train, self.max_len)
        self.steps_per_epoch = math.ceil(len(self.windows) / config.batch_size)
        last = len(self.windows) - (self.steps_per_epoch - 1) * config.batch_size
        if self.distributed.enabled and 0 < last < world:
            # the epoch's last batch would leave a process without rows: skip it
            self.steps_per_epoch -= 1
        if config.max_steps_per_epoch is not None:
            self.steps_per_epoch = min(self.steps_per_epoch, config.max_steps_per_epoch)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.optimizer, self.scheduler = build_optimizer(self.model, config, self.total_steps)

        # training state (everything below goes into the checkpoint)
        self.epoch = 0
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self.best_metric = -math.inf
        self.best_epoch = 0
        self.best_valid: dict[str, float] | None = None
        self.best_state: dict[str, Tensor] | None = None
        self.bad_evals = 0
        self.stopped_early = False
        self.timings = {"train_seconds": 0.0, "eval_seconds": 0.0, "train_samples": 0}
        self.test_metrics: dict[str, float] | None = None
        self.pretraining: dict[str, list[float]] = {}
        self._restored = False
        if resume:
            self._resume(required=resume is True)
        elif self.checkpoint_path is not None and self.checkpoint_path.exists() \
                and self.distributed.is_main:
            log.warning("%s exists and resume=False: a fresh run will overwrite it",
                        self.checkpoint_path)

    @property
    def checkpoint_path(self) -> Path | None:
        return self.run_folder.checkpoint if self.run_folder is not None else None

    # ------------------------------------------------------------------ training
    def fit(self, resume: bool | str | None = None) -> TrainResult:
        """Train until ``config.epochs`` or early stopping, then test the best weights once.

        Args:
            resume: as the constructor's ``resume`` (``None``: whatever the constructor did).

        Each epoch appends a record to :attr:`history`::

            {"epoch": e, "step": s, "train": {<every loss key>: mean over the epoch's batches},
             "valid": {<metric>: value} or None, "lr": last learning rate used,
             "train_seconds": …, "eval_seconds": …, "samples": windows seen,
             "samples_per_second": …, "best_epoch": …, "improved": bool}

        Returns:
            A :class:`TrainResult`.
        """
        cfg = self.config
        if resume and not self._restored:
            if resume not in (True, "auto"):
                raise ValueError(f"resume must be True, False, 'auto' or None, got {resume!r}")
            self._resume(required=resume is True)
        if self.optimizer is None:
            raise ValueError(f"{type(self.model).__name__} has no trainable parameters; nothing "
                             "to fit (use Trainer.evaluate / Trainer.test to score it)")
        if len(self.windows) == 0:
            raise ValueError("no training windows: every training sequence has fewer than 2 items")
        if len(self.split.targets("valid")) == 0:
            raise ValueError("the split has no validation users; model selection needs some")
        if self.steps_per_epoch < 1:
            raise ValueError(f"{len(self.windows)} training windows for "
                             f"{self.distributed.world_size} processes: no full step to take")
        # the ranks shuffle and shard identically only if they agree on these
        self.distributed.check_same(seed=cfg.seed, batch_size=cfg.batch_size,
                                    windows=len(self.windows), epoch=self.epoch,
                                    steps_per_epoch=self.steps_per_epoch)
        if self.epoch == 0 and not self._restored:
            seed_everything(cfg.seed, cfg.deterministic)
            self.generator.manual_seed(cfg.seed)
            self.pretraining = run_pretraining(self.model, cfg.seed, self.device)
            self.model.on_fit_start(cfg.seed)
        elif self.epoch > 0 and self.distributed.is_main:
            log.info("continuing at epoch %d/%d (best %s %.5f at epoch %d)", self.epoch + 1,
                     cfg.epochs, cfg.valid_metric, self.best_metric, self.best_epoch)
        if self._loss_fn is None:  # after on_fit_start: DDP starts from rank 0's weights
            self._loss_fn = wrap_loss(self.model, self.distributed, self.device)

        while self.epoch < cfg.epochs and not self.stopped_early:
            epoch = self.epoch + 1
            record = self._train_epoch(epoch)
            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                self._validate(epoch, record)
            record["best_epoch"] = self.best_epoch
            self.history.append(record)
            self.epoch = epoch
            self._log_epoch(record)
            self._write_epoch_files()
            self.distributed.barrier()  # rank 0's checkpoint is on disk before any callback
            for callback in self.callbacks:
                callback(self, record)
        if self.stopped_early and self.distributed.is_main:
            log.info("early stopping after epoch %d: no %s improvement in %d evaluations "
                     "(best %.5f at epoch %d)", self.epoch, cfg.valid_metric, self.bad_evals,
                     self.best_metric, self.best_epoch)
        return self._finish()

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        cfg = self.config
        model, optimizer, scheduler = self.model, self.optimizer, self.scheduler
        model.train()
        bs = cfg.batch_size
        dist = self.distributed
        loss_fn = self._loss_fn  # set by fit() before the first epoch
        if dist.enabled:
            # dropout differs between ranks; derived from (seed, epoch, rank), so a resumed run
            # draws the same masks. Order and batch randomness come from self.generator, the
            # same on every rank.
            torch.manual_seed(_rank_seed(cfg.seed, epoch, dist.rank))
        perm = torch.randperm(len(self.windows), generator=self.generator)
        params = [p for g in optimizer.param_groups for p in g["params"]]
        sums: dict[str, Tensor] = {}
        samples = 0
        lr = optimizer.param_groups[0]["lr"]
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch}/{cfg.epochs}",
                       unit="step", leave=False)
        t0 = time.perf_counter()
        try:
            for step in range(self.steps_per_epoch):
                idx = perm[step * bs:(step + 1) * bs]
                model.on_train_step_start()
                batch = model.training_batch(self.windows.select(idx), self.generator)
                if dist.enabled:  # every rank built the global batch; keep this rank's part
                    batch = model.shard_batch(batch, dist.rank, dist.world_size)
                batch = _to_device(batch, self.device)
                losses = loss_fn(batch)
                if "loss" not in losses:
                    raise ValueError(f"{type(model).__name__}.loss() must return a dict with a "
                                     f"'loss' entry, got keys {sorted(losses)}")
                optimizer.zero_grad(set_to_none=True)
                losses["loss"].backward()
                if cfg.grad_clip:
                    norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    losses = {**losses, "grad_norm": norm}
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                scheduler.step()
                for k, v in losses.items():
                    v = torch.as_tensor(v).detach().float().mean()
                    sums[k] = sums[k] + v if k in sums else v
                samples += int(idx.numel())
                self.global_step += 1
                if bar is not None:
                    bar.update(1)
                    if step % 20 == 0:  # detached: float() of a grad tensor warns
                        bar.set_postfix(loss=f"{float(losses['loss'].detach()):.4f}")
        finally:
            if bar is not None:
                bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - t0
        n = max(self.steps_per_epoch, 1)
        if dist.enabled and sums:  # the mean of the ranks' shares is the global batch's loss
            keys = list(sums)  # the same order on every rank
            mean = dist.all_reduce_mean(torch.stack([sums[k].float() for k in keys]))
            sums = dict(zip(keys, mean.unbind()))
        train = {k: float(v.cpu()) / n for k, v in sums.items()}
        if not math.isfinite(train.get("loss", 0.0)):
            raise FloatingPointError(f"training loss is {train['loss']} in epoch {epoch}; lower "
                                     "the learning rate or enable grad_clip")
        self.timings["train_seconds"] += seconds
        self.timings["train_samples"] += samples
        return {"epoch": epoch, "step": self.global_step, "train": train, "valid": None,
                "lr": float(lr), "train_seconds": seconds, "eval_seconds": 0.0,
                "samples": samples, "samples_per_second": samples / max(seconds, 1e-12),
                "improved": False}

    def _validate(self, epoch: int, record: dict[str, Any]) -> None:
        cfg = self.config
        t0 = time.perf_counter()
        valid = self.evaluate("valid")
        record["eval_seconds"] = time.perf_counter() - t0
        record["valid"] = valid
        if cfg.valid_metric not in valid:
            raise ValueError(f"valid_metric {cfg.valid_metric!r} is not among the evaluation keys "
                             f"{sorted(valid)}")
        value = valid[cfg.valid_metric]
        if value > self.best_metric:  # NaN never improves
            self.best_metric = float(value)
            self.best_epoch = epoch
            self.best_valid = dict(valid)
            self.best_state = {k: v.detach().to("cpu", copy=True)
                               for k, v in self.model.state_dict().items()}
            self.bad_evals = 0
            record["improved"] = True
        else:
            self.bad_evals += 1
            if cfg.patience is not None and self.bad_evals >= cfg.patience:
                self.stopped_early = True

    def epoch_summary(self, r: dict[str, Any]) -> str:
        """One line for an epoch record: loss, validation metric (and the best so far), learning
        rate and the epoch's time (training + validation)."""
        cfg = self.config
        msg = f"epoch {r['epoch']}/{cfg.epochs}  loss {r['train'].get('loss', float('nan')):.4f}"
        if r["valid"] is not None:
            msg += (f"  valid {cfg.valid_metric} {r['valid'][cfg.valid_metric]:.4f} (best "
                    f"{self.best_metric:.4f} @ {r.get('best_epoch', self.best_epoch)})")
        msg += (f"  lr {r['lr']:.2e}  {r['train_seconds'] + r.get('eval_seconds', 0.0):.1f}s")
        return msg

    def _log_epoch(self, r: dict[str, Any]) -> None:
        if not self.distributed.is_main:
            return
        log.info(self.epoch_summary(r))

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, stage: str = "valid", return_per_user: bool = False,
                 ) -> dict[str, float] | tuple[dict[str, float], dict[str, Tensor]]:
        """Metrics of the current weights on ``stage`` (``"valid"`` or ``"test"``), by the
        library's one :class:`~kgseqgraph.evaluation.Evaluator` (:attr:`evaluator`): full
        ranking over the catalogue (each user's input items excluded when
        ``config.exclude_history``, ties by ``config.ties``), plus the labelled
        ``"sampled-<n>/…"`` metrics with ``config.sampled_negatives`` (negatives drawn once per
        stage from a seed derived from ``config.seed`` and reused at every validation).

        With several processes each rank scores a contiguous block of users; the blocks' integer
        rank counters are concatenated on every rank before the metrics are computed, so every
        rank returns exactly the single-process metrics (a collective: call it on every rank).
        """
        popularity = None
        if self.config.sampled_strategy == "popularity":
            popularity = torch.bincount(self.split.train.items,
                                        minlength=self.split.num_items).double()
        inputs = self.split.inputs(stage)
        return self.evaluator.evaluate(
            self.model, inputs, self.split.targets(stage), stage=stage, popularity=popularity,
            shard=self.distributed.shard_range(len(inputs)), gather=self._gather_counts,
            return_per_user=return_per_user)

    def _gather_counts(self, block: Any, start: int, end: int, total: int) -> Any:
        """Rank counts of all ``total`` users from this rank's block ``[start, end)``."""
        from ..evaluation.metrics import RankCounts

        if not self.distributed.enabled:
            return block
        gather = self.distributed.gather_rows
        return RankCounts(gather(block.greater, start, total), gather(block.ties, start, total))

    def test(self, load_best: bool = True) -> dict[str, float]:
        """Evaluate the test split (with the best validation weights when ``load_best`` and a
        best state is known). :meth:`fit` calls this once at the end."""
        if load_best and self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        t0 = time.perf_counter()
        metrics = self.evaluate("test")
        self.timings["eval_seconds"] += time.perf_counter() - t0
        self.test_metrics = metrics
        return metrics

    # ------------------------------------------------------------------ end of run
    def _finish(self) -> TrainResult:
        cfg = self.config
        if self.best_state is None:
            log.warning("no validation improvement was ever recorded (NaN metrics?); testing the "
                        "last weights")
        test = self.test(load_best=True)
        timings = self._timings()
        result = TrainResult(best_epoch=self.best_epoch, valid=dict(self.best_valid or {}),
                             test=test, history=list(self.history), timings=timings,
                             epochs_run=self.epoch, stopped_early=self.stopped_early,
                             output_dir=str(self.output_dir) if self.output_dir else None)
        if not self.distributed.is_main:
            self.distributed.barrier()  # return once rank 0 has written the run's files
            return result
        log.info("best epoch %d: valid %s %.5f, test %s %.5f", self.best_epoch, cfg.valid_metric,
                 (self.best_valid or {}).get(cfg.valid_metric, float("nan")), cfg.valid_metric,
                 test.get(cfg.valid_metric, float("nan")))
        try:
            if self.run_folder is not None:
                self.run_folder.write_final(self.model, self.data, self._results_dict(result))
        finally:
            self.distributed.barrier()
        return result

    def _timings(self) -> dict[str, float]:
        t = dict(self.timings)
        t["eval_seconds"] = t["eval_seconds"] + sum(r["eval_seconds"] for r in self.history)
        t["total_seconds"] = t["train_seconds"] + t["eval_seconds"]
        t["samples_per_second"] = t["train_samples"] / max(t["train_seconds"], 1e-12)
        return t

    def _results_dict(self, result: TrainResult) -> dict[str, Any]:
        return {
            "dataset": dataset_info(self.data),
            "config": self.config.to_dict(),
            "model": model_config(self.model),
            "num_parameters": sum(p.numel() for p in self.model.parameters()),
            "best_epoch": result.best_epoch,
            "valid_metric": self.config.valid_metric,
            "valid": result.valid,
            "test": result.test,
            "epochs_run": result.epochs_run,
            "stopped_early": result.stopped_early,
            "pretraining": dict(self.pretraining),
            "timings": result.timings,
            "split": dict(getattr(self.split, "report", {}) or {}),
            "train_windows": len(self.windows),
            "device": str(self.device),
            "world_size": self.distributed.world_size,
            "versions": versions(),
            "files": RunFolder.FILES,
        }

    def load_best_model(self, map_location: str | torch.device = "cpu") -> torch.nn.Module:
        """Reload ``output_dir/best_model`` with the model class's ``from_pretrained``."""
        if self.output_dir is None:
            raise ValueError("no output_dir: the best model was not saved to disk")
        return type(self.model).from_pretrained(self.run_folder.best_model, data=self.data,
                                                map_location=map_location)

    # ------------------------------------------------------------------ files & checkpoints
    def _write_epoch_files(self) -> None:
        if self.run_folder is None or not self.distributed.is_main:
            return
        self.save_checkpoint()
        self.run_folder.write_epoch(self.history, self.config.valid_metric, self.best_epoch,
                                    self.best_valid, title=type(self.model).__name__)

    def state_dict(self) -> dict[str, Any]:
        """The full training state (what :meth:`save_checkpoint` writes)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "global_step": self.global_step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "best_valid": self.best_valid,
            "best_state": self.best_state,
            "bad_evals": self.bad_evals,
            "stopped_early": self.stopped_early,
            "history": self.history,
            "timings": dict(self.timings),
            "pretraining": dict(self.pretraining),
            "rng": rng_state(self.generator),
            "config": self.config.to_dict(),
            "model_config": model_config(self.model),
            "versions": versions(),
        }

    def save_checkpoint(self, path: str | Path | None = None) -> Path:
        """Write :meth:`state_dict` atomically (default ``output_dir/checkpoint.pt``)."""
        path = Path(path) if path is not None else self.checkpoint_path
        if path is None:
            raise ValueError("no output_dir and no path given: nowhere to write the checkpoint")
        return atomic_torch_save(self.state_dict(), path)

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (checks that config and model match the checkpoint)."""
        diff = {k: v for k, v in self.config.diff(ckpt["config"]).items()
                if k not in RESUME_COMPATIBLE_FIELDS}
        if diff:
            raise ValueError("the checkpoint was written with a different TrainConfig: "
                             + ", ".join(f"{k}: now {a!r}, checkpoint {b!r}"
                                         for k, (a, b) in sorted(diff.items())))
        problem = model_mismatch(self.model, ckpt["model_config"])
        if problem is not None:
            raise ValueError(f"the checkpoint holds a different model ({problem}): "
                             f"{ckpt['model_config']} (this one: {model_config(self.model)})")
        self.model.load_state_dict(ckpt["model"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
        self.epoch = int(ckpt["epoch"])
        self.global_step = int(ckpt["global_step"])
        self.best_metric = float(ckpt["best_metric"])
        self.best_epoch = int(ckpt["best_epoch"])
        self.best_valid = ckpt["best_valid"]
        self.best_state = ckpt["best_state"]
        self.bad_evals = int(ckpt["bad_evals"])
        self.stopped_early = bool(ckpt["stopped_early"])
        self.history = list(ckpt["history"])
        self.timings = dict(ckpt["timings"])
        self.pretraining = dict(ckpt.get("pretraining", {}))
        set_rng_state(ckpt["rng"], self.generator)
        self._restored = True

    def _resume(self, required: bool) -> None:
        path = self.checkpoint_path
        if path is None:
            raise ValueError("resume needs config.output_dir (where checkpoint.pt lives)")
        if not path.is_file():
            if required:
                raise FileNotFoundError(f"resume=True but there is no checkpoint at {path}")
            log.info("no checkpoint at %s: starting a fresh run", path)
            return
        self.load_state_dict(load_checkpoint(path))
        log.info("resumed from %s at epoch %d", path, self.epoch)


# ---------------------------------------------------------------------------------------------
def _rank_seed(seed: int, epoch: int, rank: int) -> int:
    """A seed for ``rank``'s global RNG in ``epoch``, independent across ranks and epochs."""
    return int(np.random.SeedSequence([seed % 2**64, epoch, rank]).generate_state(1)[0])


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    if hasattr(batch, "to") and callable(batch.to):
        return batch.to(device)
    return batch


def run_training(model: torch.nn.Module, split: LeaveOneOutSplit, config: TrainConfig,
                 data: Any = None, resume: bool | str = False,
                 callbacks: Iterable[EpochCallback] = ()) -> dict[str, Any]:
    """Train, select on valid, test once; returns :meth:`TrainResult.to_dict` (what the CLI
    prints). See :class:`Trainer`."""
    trainer = Trainer(model, split, config, data=data, resume=resume, callbacks=callbacks)
    return trainer.fit().to_dict()
