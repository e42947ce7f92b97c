"""The one pre-training path: stages a model asks for, run once at the start of a fresh run."""
import torch

from kgseqgraph.data import leave_one_out
from kgseqgraph.datasets import Synthetic
from kgseqgraph.models import KATRec, PretrainStage
from kgseqgraph.training import TrainConfig, Trainer
from kgseqgraph.training.pretrain import run_pretraining, run_stage


def _stage(target, epochs=5):
    w = torch.nn.Parameter(torch.zeros(3))

    def sample(g):
        return {"x": target + 0.01 * torch.randn(3, generator=g)}

    done = []
    stage = PretrainStage("fit", [w], sample, lambda b: (w - b["x"]).pow(2).sum(), epochs=epochs,
                          steps_per_epoch=20, lr=0.1, finish=lambda: done.append(True))
    return stage, w, done


def test_run_stage_minimises_reproducibly_and_finishes():
    target = torch.tensor([1.0, -2.0, 0.5])
    stage, w, done = _stage(target)
    losses = run_stage(stage, seed=3)
    assert len(losses) == 5 and losses[-1] < losses[0] / 10 and done == [True]
    torch.testing.assert_close(w.detach(), target, atol=0.05, rtol=0)
    stage2, w2, _ = _stage(target)
    assert run_stage(stage2, seed=3) == losses and torch.equal(w2, w)


def test_trainer_pretrains_fresh_runs_only(tmp_path):
    data = Synthetic(num_users=120, num_items=60, num_entities=10, num_relations=3, seq_len=10,
                     seed=0)[0]
    split = leave_one_out(data)
    opts = dict(max_len=8, kg_dim=8, kg_hidden=[8], pretrain_bprmf_epochs=2,
                pretrain_kge_epochs=1, encoder_kwargs=dict(num_layers=1, num_heads=2))
    torch.manual_seed(0)
    model = KATRec.from_dataset(split.train_graph, **opts)
    assert [s.name for s in model.pretraining_stages()] == ["bprmf", "transr"]
    cfg = TrainConfig(epochs=2, batch_size=32, output_dir=str(tmp_path / "run"), progress=False)

    class Stop(Exception):
        pass

    def stop(trainer, record):
        raise Stop  # a run killed after its first epoch (its checkpoint is on disk)

    trainer = Trainer(model, split, cfg, callbacks=[stop])
    try:
        trainer.fit()
    except Stop:
        pass
    assert list(trainer.pretraining) == ["bprmf", "transr"]
    assert len(trainer.pretraining["bprmf"]) == 2
    # resuming pre-trains nothing again: the checkpoint holds the pre-trained weights
    torch.manual_seed(0)
    again = Trainer(KATRec.from_dataset(split.train_graph, **opts), split, cfg, resume=True)
    before = again.model.item_embedder.kge.node_emb.weight.detach().clone()
    called = []
    again.model.pretraining_stages = lambda: called.append(1) or []
    again.fit()
    assert called == [] and again.pretraining == trainer.pretraining
    assert not torch.equal(before, again.model.item_embedder.kge.node_emb.weight)
    import json
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["pretraining"] == trainer.pretraining


def test_models_without_stages_run_none():
    from kgseqgraph.models import SASRec

    assert run_pretraining(SASRec.from_dataset(10, max_len=5)) == {}
