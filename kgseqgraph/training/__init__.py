"""Training: the :class:`Trainer` loop, its :class:`TrainConfig`, the optimiser schedule,
checkpoints, run files and curves, the one pre-training path and KGE link prediction.

Example:
    >>> from kgseqgraph.training import TrainConfig, run_training
    >>> result = run_training(model, split, TrainConfig(epochs=50, output_dir="runs/x"))
    ... # doctest: +SKIP
"""
from .checkpoint import (atomic_torch_save, atomic_write_json, load_checkpoint, rng_state,
                         seed_everything, set_rng_state)
from .config import TrainConfig
from .curves import plot_training_curve
from .distributed import DistributedContext, destroy_distributed, init_distributed
from .kge import KGETrainConfig, run_link_prediction, train_kge
from .pretrain import run_pretraining, run_stage
from .run_files import RunFolder
from .schedule import LinearSchedule, build_optimizer
from .trainer import Trainer, TrainResult, resolve_device, run_training

__all__ = [
    "TrainConfig",
    "Trainer",
    "TrainResult",
    "LinearSchedule",
    "build_optimizer",
    "RunFolder",
    "run_pretraining",
    "run_stage",
    "KGETrainConfig",
    "train_kge",
    "run_link_prediction",
    "run_training",
    "seed_everything",
    "resolve_device",
    "rng_state",
    "set_rng_state",
    "atomic_torch_save",
    "atomic_write_json",
    "load_checkpoint",
    "plot_training_curve",
    "DistributedContext",
    "init_distributed",
    "destroy_distributed",
]
