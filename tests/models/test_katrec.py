import pytest
import torch

from kgseqgraph.data import leave_one_out
from kgseqgraph.datasets import MovieLens100K, Synthetic
from kgseqgraph.evaluation import evaluate_full_ranking
from kgseqgraph.models import KATRec, Popularity, PopularityConfig, SequentialRecommender
from kgseqgraph.testing import require_data
from kgseqgraph.training import TrainConfig, Trainer

SMALL = dict(max_len=20, hidden_size=32, kg_dim=32,
             encoder_kwargs=dict(num_layers=1, num_heads=2))


@pytest.fixture(scope="module")
def synthetic():
    data = Synthetic(num_users=300, num_items=120, num_entities=20, num_relations=4, seq_len=15,
                     seed=0)[0]
    return data, leave_one_out(data)


def _pop_valid_ndcg(split):
    pop = Popularity(PopularityConfig(num_items=split.num_items)).fit(split.train)
    inputs = split.valid_inputs
    return evaluate_full_ranking(lambda s, e: pop.score(inputs.select(torch.arange(s, e))),
                                 split.valid_targets, exclude=inputs)["NDCG@10"]


def test_katrec_loss_has_both_terms_and_grads_reach_kg(synthetic):
    data, split = synthetic
    torch.manual_seed(0)
    model = KATRec.from_dataset(data, **SMALL)
    batch = model.training_batch(split.train.select(torch.arange(16)), torch.Generator().manual_seed(0))
    out = model.loss(batch)
    assert set(out) >= {"loss", "rec_loss", "kge_loss"}
    out["loss"].backward()
    emb = model.item_embedder
    assert emb.kge.node_emb.weight.grad.abs().sum() > 0
    assert emb.kge.rel_proj.grad.abs().sum() > 0
    assert emb.enricher.convs[1].lin_bi1.weight.grad is not None if hasattr(
        emb.enricher.convs[1], "lin_bi1") else True


def test_no_connection_ablation_keeps_rec_loss_out_of_the_kg(synthetic):
    data, split = synthetic
    model = KATRec.from_dataset(data, connect=False, kge_weight=0.0, **SMALL)
    batch = model.training_batch(split.train.select(torch.arange(16)), torch.Generator())
    model.loss(batch)["loss"].backward()
    assert model.item_embedder.kge.node_emb.weight.grad is None
    assert model.item_embedder.id.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("options", [dict(use_attention=False), dict(kg_hidden=[32]),
                                     dict(fusion="concat"), dict(pretrain_kge_epochs=1)])
def test_ablations_build_and_score(synthetic, options):
    data, split = synthetic
    model = KATRec.from_dataset(data, **{**SMALL, **options})
    if options.get("pretrain_kge_epochs"):
        losses = model.pretrain_kge(batch_size=256)
        assert len(losses) == 1
    model.eval()
    assert model.score(split.test_inputs).shape == (len(split.test_inputs), split.num_items)


def test_save_pretrained_roundtrip(tmp_path, synthetic):
    data, split = synthetic
    torch.manual_seed(0)
    model = KATRec.from_dataset(data, **SMALL).eval()
    before = model.score(split.test_inputs)
    model.save_pretrained(tmp_path / "katrec")
    loaded = SequentialRecommender.from_pretrained(tmp_path / "katrec", data=data).eval()
    assert torch.equal(loaded.score(split.test_inputs), before)
    with pytest.raises(ValueError, match="needs the collaborative KG"):
        SequentialRecommender.from_pretrained(tmp_path / "katrec")


def test_short_katrec_run_beats_popularity_on_synthetic(tmp_path, synthetic):
    data, split = synthetic
    torch.manual_seed(0)
    model = KATRec.from_dataset(data, **SMALL)
    # the cloze objective learns slowly on short sequences: 80 small epochs (~10 s on one thread)
    cfg = TrainConfig(seed=0, epochs=80, batch_size=32, lr=3e-3, patience=None, eval_every=10,
                      output_dir=str(tmp_path / "run"))
    result = Trainer(model, split, cfg, data=data).fit()
    assert result.valid["NDCG@10"] > _pop_valid_ndcg(split) + 0.02


def test_katrec_learns_on_ml100k(tmp_path):
    raw = require_data("ml-100k/ml-100k.inter", "ml-100k/ml-100k.kg", "ml-100k/ml-100k.link",
                       "ml-100k/ml-100k.item")
    import shutil
    (tmp_path / "ml" / "raw").mkdir(parents=True)
    for f in raw.parent.iterdir():
        shutil.copy(f, tmp_path / "ml" / "raw" / f.name)
    data = MovieLens100K(tmp_path / "ml")[0]
    split = leave_one_out(data)
    torch.manual_seed(0)
    model = KATRec.from_dataset(data, **{**SMALL, "max_len": 50})
    # measured: valid NDCG@10 0.052 after 8 epochs (BERT4Rec alone 0.047, popularity 0.034)
    cfg = TrainConfig(seed=0, epochs=8, batch_size=64, lr=3e-3, patience=None, eval_every=4,
                      output_dir=str(tmp_path / "run"))
    result = Trainer(model, split, cfg, data=data).fit()
    assert result.valid["NDCG@10"] > _pop_valid_ndcg(split)


@pytest.mark.parametrize("reuse_attention", [True, False])
def test_kg_recompute_gives_the_same_loss_and_gradients(synthetic, reuse_attention):
    data, split = synthetic
    batch_seqs = split.train.select(torch.arange(16))
    results = []
    for recompute in (False, True):
        torch.manual_seed(0)
        model = KATRec.from_dataset(data, **SMALL, reuse_attention=reuse_attention,
                                    kg_recompute=recompute).double()
        model.eval()  # no dropout: both runs see the same function
        batch = model.training_batch(batch_seqs, torch.Generator().manual_seed(0))
        loss = model.loss(batch)["loss"]
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                        if p.grad is not None}))
    (la, ga), (lb, gb) = results
    torch.testing.assert_close(la, lb)
    assert ga.keys() == gb.keys() and len(ga) > 10
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], msg=name)
    assert any(c.recompute_scores for c in model.item_embedder.enricher.convs)


def test_from_pretrained_refuses_another_graph(tmp_path, synthetic):
    data, _ = synthetic
    torch.manual_seed(0)
    model = KATRec.from_dataset(data, **SMALL)
    model.save_pretrained(tmp_path / "m")
    assert SequentialRecommender.from_pretrained(tmp_path / "m", data=data) is not None
    other = Synthetic(num_users=300, num_items=120, num_entities=20, num_relations=4, seq_len=15,
                      seed=1)[0]  # same sizes, another graph: the weights would load silently
    with pytest.raises(ValueError, match="trained on another graph"):
        SequentialRecommender.from_pretrained(tmp_path / "m", data=other)
    loaded = SequentialRecommender.from_pretrained(tmp_path / "m", data=other, check_graph=False)
    assert isinstance(loaded, KATRec)
