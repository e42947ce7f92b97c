r"""Multi-process data-parallel training: the process group a ``torchrun`` launch describes.

``torchrun --nproc_per_node=P …`` starts :math:`W` processes (``WORLD_SIZE``), each with a global
``RANK`` and a ``LOCAL_RANK`` on its machine. :func:`init_distributed` joins them into one
:mod:`torch.distributed` process group and returns a :class:`DistributedContext` (rank, world
size, the rank's device, small collectives); outside ``torchrun`` it returns the single-process
context and every helper is a no-op, so the :class:`~kgseqgraph.training.Trainer` has one code
path.

Backends: ``"auto"`` picks ``"cpu:gloo,cuda:nccl"`` when CUDA is available (NCCL for GPU tensors,
Gloo for CPU tensors such as evaluation counters) and ``"gloo"`` otherwise. Each rank uses GPU
``LOCAL_RANK`` (:func:`torch.cuda.set_device`).

What the trainer does with it (see ``docs/distributed.md``): the model's loss runs inside
:func:`wrap_loss`'s :class:`~torch.nn.parallel.DistributedDataParallel` (gradients averaged over
the ranks), each rank computes the loss of its rows of the global batch, the KG enrichment (part
of the model's forward) is recomputed on every rank, evaluation users are split in contiguous
blocks (:meth:`DistributedContext.shard_range`) whose integer rank counters are concatenated
exactly (:meth:`DistributedContext.gather_rows`), and only rank 0 writes files.
"""
from __future__ import annotations

import atexit
import datetime
import inspect
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["DistributedContext", "init_distributed", "destroy_distributed", "is_main_process",
           "wrap_loss"]

log = logging.getLogger("kgseqgraph")

_ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a (possibly single-process) data-parallel run.

    Attributes:
        rank: global rank ``0 … world_size - 1``.
        world_size: number of processes :math:`W`.
        local_rank: rank on this machine (selects the GPU).
        backend: the process group's backend (``None`` for a single process).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {self.rank}, "
                             f"world_size {self.world_size}")

    @property
    def enabled(self) -> bool:
        """More than one process (collectives do something)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and writes files."""
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        """``cuda:<local_rank>`` when CUDA is available, else ``cpu``."""
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank % torch.cuda.device_count())
        return torch.device("cpu")

    # ------------------------------------------------------------------ collectives
    def barrier(self) -> None:
        """Wait for every rank (no-op for a single process)."""
        if self.enabled:
            dist.barrier()

    def _collective_device(self, tensor: Tensor) -> torch.device:
        """Gloo reduces CPU tensors; an NCCL-only group needs them on this rank's GPU."""
        backend = str(self.backend or "")
        if tensor.device.type == "cpu" and "gloo" not in backend:
            return self.device
        return tensor.device

    def all_reduce_sum(self, tensor: Tensor) -> Tensor:
        """Element-wise sum over the ranks (a new tensor on ``tensor``'s device; the input is
        returned unchanged for a single process)."""
        if not self.enabled:
            return tensor
        out = tensor.detach().to(self._collective_device(tensor), copy=True).contiguous()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out.to(tensor.device)

    def all_reduce_mean(self, tensor: Tensor) -> Tensor:
        """Element-wise mean over the ranks (floating tensors)."""
        if not self.enabled:
            return tensor
        return self.all_reduce_sum(tensor) / self.world_size

    def shard_range(self, n: int) -> tuple[int, int]:
        """This rank's contiguous block ``[start, end)`` of ``n`` items; blocks follow rank order
        and their sizes differ by at most one (the first ``n mod W`` ranks get one more)."""
        base, extra = divmod(int(n), self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + int(self.rank < extra)

    def gather_rows(self, part: Tensor, start: int, total: int) -> Tensor:
        """Concatenate the ranks' blocks of a ``[total, …]`` tensor: this rank holds rows
        ``start … start + len(part) - 1`` (its :meth:`shard_range`).

        Implemented as a sum of zero-filled copies, so it is exact for integer tensors (and for
        floating ones: :math:`x + 0 = x`). Returns ``part`` itself for a single process.
        """
        if not self.enabled:
            return part
        full = part.new_zeros((total, *part.shape[1:]))
        full[start:start + part.size(0)] = part
        return self.all_reduce_sum(full)

    def check_same(self, **values: Any) -> None:
        """Raise ``ValueError`` unless every rank passes the same (picklable) ``values`` — e.g.
        the seed and the number of training windows, which must agree for the ranks to shuffle
        and shard identically."""
        if not self.enabled:
            return
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, values)
        bad = {r: v for r, v in enumerate(gathered) if v != gathered[0]}
        if bad:
            raise ValueError(f"the ranks disagree: rank 0 has {gathered[0]}, "
                             + ", ".join(f"rank {r} has {v}" for r, v in bad.items()))

    @contextmanager
    def main_process_first(self) -> Iterator[None]:
        """Run the block on rank 0 first, then on the other ranks (e.g. downloading or
        processing a dataset into a shared cache once)."""
        if not self.is_main:
            self.barrier()
        try:
            yield
        finally:
            if self.is_main:
                self.barrier()

    # ------------------------------------------------------------------ constructors
    @classmethod
    def current(cls) -> DistributedContext:
        """The context of the already initialised default process group (single-process when
        there is none)."""
        if not (dist.is_available() and dist.is_initialized()):
            return cls()
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return cls(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local,
                   backend=str(dist.get_backend()))


def _auto_backend() -> str:
    if torch.cuda.is_available() and dist.is_nccl_available():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


def init_distributed(backend: str = "auto",
                     timeout: datetime.timedelta | None = None) -> DistributedContext:
    """Join the process group that ``torchrun`` describes in the environment.

    Idempotent: with a default process group already initialised (by an earlier call, or by the
    caller) its context is returned. Without ``torchrun`` (``WORLD_SIZE`` unset or ``1``) nothing
    is initialised and the single-process context is returned.

    Args:
        backend: ``"auto"`` (``"cpu:gloo,cuda:nccl"`` with CUDA, else ``"gloo"``), or any
            :func:`torch.distributed.init_process_group` backend string.
        timeout: collective timeout (torch's default when ``None``).

    Returns:
        The :class:`DistributedContext`. The group is destroyed at interpreter exit (or earlier
        with :func:`destroy_distributed`).
    """
    if dist.is_available() and dist.is_initialized():
        return DistributedContext.current()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    missing = [k for k in _ENV_KEYS + ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={world_size} but {', '.join(missing)} unset: launch with "
                           "torchrun (python -m torch.distributed.run)")
    if not dist.is_available():  # pragma: no cover - every supported build has it
        raise RuntimeError("this torch build has no torch.distributed")
    backend = _auto_backend() if backend == "auto" else backend
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available() and "nccl" in backend:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    kwargs: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    dist.init_process_group(backend=backend, **kwargs)
    atexit.register(destroy_distributed)
    ctx = DistributedContext.current()
    log.info("rank %d/%d (local %d) joined the %s process group", ctx.rank, ctx.world_size,
             ctx.local_rank, backend)
    return ctx


def destroy_distributed() -> None:
    """Tear the default process group down (no-op when there is none)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main_process() -> bool:
    """``True`` unless an initialised process group says this is not rank 0."""
    return DistributedContext.current().is_main


class _LossForward(nn.Module):
    """``forward(batch) = model.loss(batch)``: the module DistributedDataParallel wraps, so the
    loss is computed inside DDP's forward and its backward all-reduces the gradients."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return self.model.loss(batch)


def wrap_loss(model: nn.Module, ctx: DistributedContext,
              device: torch.device) -> Callable[[dict[str, Tensor]], dict[str, Tensor]]:
    """The callable the trainer computes ``model.loss(batch)`` with.

    A single process gets ``model.loss`` itself. With several ranks it is a
    :class:`~torch.nn.parallel.DistributedDataParallel` around a module whose ``forward`` is
    ``model.loss``: construction broadcasts rank 0's parameters and buffers, and every backward
    averages the gradients over the ranks. ``static_graph=True`` because the set of parameters a
    model uses is fixed for a run (it also lets models leave some parameters unused, e.g.
    KATRec with ``connect=False``, without ``find_unused_parameters``'s per-step graph search);
    buffers are not re-broadcast every step (``broadcast_buffers=False``): ours are constants
    derived from the data (KG indices), identical on every rank.
    """
    if not ctx.enabled:
        return model.loss  # type: ignore[return-value]
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index if device.index is not None else ctx.local_rank] \
        if device.type == "cuda" else None
    # torch >= 2.13 renames broadcast_buffers=False (no per-forward buffer broadcast)
    params = inspect.signature(DistributedDataParallel).parameters
    no_buffer_sync = {"forward_sync_buffers" if "forward_sync_buffers" in params
                      else "broadcast_buffers": False}
    return DistributedDataParallel(_LossForward(model), device_ids=device_ids,
                                   static_graph=True, **no_buffer_sync)
