"""Training state on disk: atomic checkpoints and the random-number-generator states they carry.

A checkpoint holds only tensors and primitive containers (dicts, lists, tuples, ints, floats,
strings, ``None``), so it loads with ``torch.load(..., weights_only=True)`` — no pickled code is
ever executed when resuming. Generator states are ``ByteTensor`` s, NumPy's MT19937 key is stored
as an int64 tensor.

Writes are atomic: the payload goes to a temporary file in the destination folder, is flushed and
``fsync`` -ed, then renamed over the destination with :func:`os.replace`. A crash (or a failing
rename) leaves either the previous complete file or the new complete file, never a partial one,
and the temporary file is removed.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.io import atomic_open, atomic_write_bytes

__all__ = [
    "CHECKPOINT_NAME",
    "model_config",
    "model_mismatch",
    "atomic_torch_save",
    "atomic_write_json",
    "load_checkpoint",
    "rng_state",
    "set_rng_state",
    "seed_everything",
]

log = logging.getLogger("kgseqgraph")

CHECKPOINT_NAME = "checkpoint.pt"


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python's :mod:`random`, NumPy's global generator and torch (CPU and every CUDA device).

    Args:
        seed: the seed (any int; NumPy receives ``seed mod 2**32``).
        deterministic: also ask torch for deterministic kernels
            (``torch.use_deterministic_algorithms(True)``, ``cudnn.benchmark = False``) —
            needed for bit-reproducible CUDA runs; CPU training is reproducible without it.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds CUDA too
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Snapshot of every RNG a training run draws from (weights-only-loadable).

    Keys: ``"torch"`` (global CPU generator), ``"cuda"`` (list, one a device, when CUDA is
    initialised), ``"python"`` (:func:`random.getstate`), ``"numpy"`` (legacy global MT19937) and
    ``"generator"`` (the given :class:`torch.Generator`).
    """
    np_state = np.random.get_state(legacy=False)
    if np_state.get("bit_generator") != "MT19937":  # pragma: no cover - numpy always uses MT here
        raise RuntimeError(f"unexpected numpy global bit generator {np_state.get('bit_generator')}")
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": _to_primitive(random.getstate()),
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Restore a snapshot of :func:`rng_state` (and ``generator``'s state when both are given)."""
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state({
        "bit_generator": "MT19937",
        "state": {"key": npst["key"].numpy().astype(np.uint32), "pos": int(npst["pos"])},
        "has_gauss": int(npst["has_gauss"]),
        "gauss": float(npst["gauss"]),
    })
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:
            log.warning("checkpoint holds %d CUDA RNG states for %d devices; CUDA RNG not "
                        "restored", len(cuda_states), torch.cuda.device_count())
    if generator is not None:
        if "generator" not in state:
            raise ValueError("the RNG snapshot holds no trainer generator state")
        generator.set_state(state["generator"])


def _to_primitive(obj: Any) -> Any:
    if isinstance(obj, tuple):
        return tuple(_to_primitive(x) for x in obj)
    if isinstance(obj, list):
        return [_to_primitive(x) for x in obj]
    return obj


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` through a temporary file + :func:`os.replace` (see module doc).

    The object is streamed to the temporary file (no second in-memory copy of the payload).
    """
    path = Path(path)
    with atomic_open(path) as fh:
        torch.save(obj, fh)
    return path


def atomic_write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented JSON atomically (non-finite floats become ``null``)."""
    path = Path(path)
    text = json.dumps(_json_safe(obj), indent=2, sort_keys=False, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())
    return path


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, (np.floating, np.integer)):
        return _json_safe(obj.item())
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return _json_safe(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    ) -> dict[str, Any]:
    """Load a checkpoint written by the trainer with ``weights_only=True``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a trainer checkpoint (no ``"format"`` key).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != "kgseqgraph.trainer/1":
        raise ValueError(f"{path} is not a kgseqgraph trainer checkpoint")
    return ckpt


def model_config(model: Any) -> Any:
    """What a checkpoint records of its model: ``model.config_dict()`` (name, config, graph
    fingerprint) when it has one."""
    fn = getattr(model, "config_dict", None)
    if callable(fn):
        return fn()
    return {"model": type(model).__name__}


def model_mismatch(model: Any, saved: Any) -> str | None:
    """Why a checkpoint's ``model_config`` does not describe ``model`` (``None`` if it does).

    Config fields the checkpoint lacks (added to the library after it was written) count as
    their defaults; fields the model class declares ``compute_only_fields`` (e.g. KATRec's
    ``kg_recompute``: same results, other memory/time trade-off) may differ; the graph
    fingerprint is compared only when both sides have one."""
    mine = model_config(model)
    if not (isinstance(mine, dict) and isinstance(saved, dict) and "config" in mine
            and "config" in saved):
        return None if mine == saved else "different model"
    if mine.get("model") != saved.get("model"):
        return f"model {saved.get('model')!r}, not {mine.get('model')!r}"
    config_class = getattr(model, "config_class", None)
    defaults: dict[str, Any] = {}
    if dataclasses.is_dataclass(config_class):
        for f in dataclasses.fields(config_class):
            if f.default is not dataclasses.MISSING:
                defaults[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                defaults[f.name] = f.default_factory()  # type: ignore[misc]
    skip = set(getattr(model, "compute_only_fields", ()))
    ours, theirs = mine["config"], {**defaults, **saved["config"]}
    diff = sorted(k for k in set(ours) | set(theirs)
                  if k not in skip and ours.get(k) != theirs.get(k))
    if diff:
        return "config " + ", ".join(f"{k}: checkpoint {theirs.get(k)!r}, now {ours.get(k)!r}"
                                     for k in diff)
    if mine.get("graph") is not None and saved.get("graph") is not None:
        from ..data.fingerprint import compare_fingerprints

        problem = compare_fingerprints(saved["graph"], mine["graph"])
        if problem is not None:
            return f"trained on another graph: {problem}"
    return None
