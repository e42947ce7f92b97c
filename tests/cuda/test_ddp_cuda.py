"""Data-parallel training on CUDA with ``torchrun``.

* ``torchrun --nproc_per_node=<number of GPUs>`` with NCCL (``init_distributed``'s ``auto``:
  ``cpu:gloo,cuda:nccl``). With two or more GPUs the ranks train SASRec, BERT4Rec and KATRec and
  must follow the single-process trajectory on one GPU, with the sharded evaluation matching.
  With one GPU ``torchrun`` starts one process, for which the library creates no process group;
  the rank then creates an NCCL group of one itself and checks an NCCL all-reduce, the
  library's collectives over it, and a DistributedDataParallel step (gradients as without DDP).
* Two ranks sharing the GPU(s) over Gloo (NCCL refuses two ranks on one GPU): the trainer's
  multi-process path — sharded batches, DDP gradient averaging, sharded full-ranking
  evaluation — on CUDA tensors, against the single-process trajectory; runs on one GPU.

Run as a script (``python -m torch.distributed.run --nproc_per_node=P <this file> OUT MODE``) it
is the per-rank worker; rank 0 writes ``OUT/result.json``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from cudatest import build, device_under_test, on_cpu

pytestmark = pytest.mark.cuda

ENCODER = {"hidden_dropout": 0.0, "attn_dropout": 0.0, "num_layers": 1, "activation": "gelu"}
MODELS: dict[str, dict[str, Any]] = {
    "sasrec": {"hidden_size": 16, "max_len": 8, "encoder_kwargs": ENCODER},
    "bert4rec": {"hidden_size": 16, "max_len": 8, "encoder_kwargs": ENCODER, "mask_prob": 0.3},
    "katrec": {"hidden_size": 24, "max_len": 8, "encoder_kwargs": ENCODER, "mask_prob": 0.3,
               "kg_dim": 8, "kg_hidden": [8, 8], "kg_dropout": 0.0, "kge_batch_size": 32},
}
EPOCHS = 3


def _split():
    from kgseqgraph.data import leave_one_out
    from kgseqgraph.datasets.synthetic import make_synthetic

    data = make_synthetic(num_users=61, num_items=40, num_entities=12, num_relations=3,
                          seq_len=6, seed=0)
    return data, leave_one_out(data)


def train_all(out: Path, device: str) -> dict[str, Any]:
    """Fit every model of :data:`MODELS` on ``device`` (a collective call under torchrun)."""
    from kgseqgraph.training import TrainConfig, Trainer, seed_everything

    torch.set_float32_matmul_precision("highest")  # the same float32 matmuls in every process
    data, split = _split()
    res: dict[str, Any] = {}
    for name, options in MODELS.items():
        seed_everything(0)
        cfg = TrainConfig(seed=0, epochs=EPOCHS, batch_size=14, lr=1e-2, patience=None,
                          eval_every=EPOCHS, ks=(5, 10), sampled_negatives=10, device=device,
                          num_threads=1, output_dir=str(out / name), progress=False)
        trainer = Trainer(build(name, split, data, **options), split, cfg, data=data)
        before = trainer.evaluate("valid")
        result = trainer.fit()
        res[name] = {"before": before, "valid": result.valid, "test": result.test,
                     "train": [r["train"] for r in result.history],
                     "world_size": trainer.distributed.world_size,
                     "device": str(trainer.device)}
    return res


def nccl_checks() -> dict[str, Any]:
    """In an NCCL group (of any size): an all-reduce, the library's collectives, one DDP step."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from kgseqgraph.data.batching import training_windows
    from kgseqgraph.training import seed_everything
    from kgseqgraph.training.distributed import DistributedContext, wrap_loss

    rank, world = dist.get_rank(), dist.get_world_size()
    dev = torch.device("cuda", torch.cuda.current_device())
    t = torch.full((4,), float(rank + 1), device=dev)
    dist.all_reduce(t)
    out: dict[str, Any] = {"backend": str(dist.get_backend()), "world_size": world,
                           "all_reduce": t.tolist()}
    ctx = DistributedContext.current()
    part = torch.arange(3, device=dev) + 10 * rank
    out["gather_rows"] = ctx.gather_rows(part, 3 * rank, 3 * world).tolist() if world > 1 \
        else part.tolist()
    # one DDP step: the gradients of the wrapped loss equal the plain ones (same batch on every
    # rank, so the average over ranks is that batch's gradient)
    data, split = _split()
    seed_everything(0)
    model = build("katrec", split, data, **MODELS["katrec"]).to(dev)
    plain = build("katrec", split, data, **MODELS["katrec"]).to(dev)
    plain.load_state_dict(model.state_dict())
    g = torch.Generator().manual_seed(0)
    windows = training_windows(split.train, 8)
    batch = {k: v.to(dev) for k, v in
             model.training_batch(windows.select(torch.arange(14)), g).items()}
    ddp = wrap_loss(model, ctx, dev) if ctx.enabled else DistributedDataParallel(
        _Loss(model), device_ids=[dev.index])
    ddp(batch)["loss"].backward()
    plain.loss(batch)["loss"].backward()
    diffs = [float((p.grad - q.grad).abs().max()) for p, q in
             zip(model.parameters(), plain.parameters()) if p.grad is not None]
    out["ddp_max_grad_diff"] = max(diffs)
    out["ddp_grads"] = len(diffs)
    return out


class _Loss(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch):
        return self.model.loss(batch)


def worker(out: Path, mode: str) -> None:
    import torch.distributed as dist

    from kgseqgraph.training.distributed import init_distributed, is_main_process

    torch.set_num_threads(1)
    torch.set_float32_matmul_precision("highest")
    result: dict[str, Any] = {}
    if mode == "nccl":
        ctx = init_distributed()  # auto: cpu:gloo,cuda:nccl when there are several ranks
        if not ctx.enabled:  # one GPU: torchrun started one process; make the group anyway
            torch.cuda.set_device(0)
            dist.init_process_group("cpu:gloo,cuda:nccl")
        result["nccl"] = nccl_checks()
        if dist.get_world_size() > 1:
            result["train"] = train_all(out, "cuda")
    else:  # two ranks, Gloo, CUDA tensors (CPU ones in CPU mode)
        init_distributed(backend="gloo")
        result["train"] = train_all(out, device_under_test().type)
    if is_main_process():
        (out / "result.json").write_text(json.dumps(result))
    dist.destroy_process_group()


# ---------------------------------------------------------------------------------- tests
def _torchrun(nproc: int, out: Path, mode: str) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[2]),
                                                      os.environ.get("PYTHONPATH")]))}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc_per_node={nproc}", __file__, str(out), mode],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-6000:]
    return json.loads((out / "result.json").read_text())


@pytest.fixture(scope="module")
def single_gpu_run(tmp_path_factory) -> dict[str, Any]:
    if not (torch.cuda.is_available() or on_cpu()):
        pytest.skip("needs a CUDA GPU")
    return train_all(tmp_path_factory.mktemp("single"), device_under_test().type)


def _compare(single: dict[str, Any], ddp: dict[str, Any], world: int) -> None:
    _, split = _split()
    users = len(split.targets("valid"))
    for name in MODELS:
        one, many = single[name], ddp[name]
        assert one["world_size"] == 1 and many["world_size"] == world
        assert many["device"].startswith(device_under_test().type)
        for a, b in zip(one["train"], many["train"]):
            assert a.keys() == b.keys()
            for k in a:
                assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-6), (name, k, a, b)
        for stage in ("before", "valid", "test"):  # rank counters concatenated across ranks
            assert many[stage].keys() == one[stage].keys()
            for k, v in one[stage].items():
                assert many[stage][k] == pytest.approx(v, abs=2.0 / users), (name, stage, k)


def test_torchrun_nccl_on_every_gpu(tmp_path, single_gpu_run):
    if on_cpu():
        pytest.skip("CPU mode: NCCL needs GPUs")
    gpus = torch.cuda.device_count()
    res = _torchrun(gpus, tmp_path, "nccl")
    nccl = res["nccl"]
    assert "nccl" in nccl["backend"] and nccl["world_size"] == gpus
    assert nccl["all_reduce"] == [gpus * (gpus + 1) / 2] * 4
    assert nccl["gather_rows"] == [10 * r + i for r in range(gpus) for i in range(3)]
    assert nccl["ddp_grads"] > 0 and nccl["ddp_max_grad_diff"] < 1e-5
    if gpus > 1:
        _compare(single_gpu_run, res["train"], gpus)


def test_torchrun_two_ranks_on_cuda_over_gloo(tmp_path, single_gpu_run):
    res = _torchrun(2, tmp_path, "gloo")
    _compare(single_gpu_run, res["train"], 2)
    run = tmp_path / "sasrec"
    assert (run / "results.json").exists() and (run / "checkpoint.pt").exists()


if __name__ == "__main__":  # one rank of a torchrun launch above
    worker(Path(sys.argv[1]), sys.argv[2])
