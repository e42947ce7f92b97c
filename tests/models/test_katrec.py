"""KATRec as the paper and its authors' code wire it, its ablations, and KG-SASRec / KG-GRU4Rec.

The wiring tests run on a hand-built collaborative KG small enough to recompute every table by
hand: 3 users, 4 items, 2 entities, 2 relations."""
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from kgseqgraph.data import build_collaborative_kg, leave_one_out
from kgseqgraph.datasets import MovieLens100K, Synthetic
from kgseqgraph.evaluation import evaluate_full_ranking
from kgseqgraph.models import (KATRec, KATRecConfig, Popularity, PopularityConfig,
                               SequentialRecommender, build_model)
from kgseqgraph.nn.embed import GatedKGItemEmbedder, KGItemEmbedder
from kgseqgraph.nn.encoders.base import encode_at
from kgseqgraph.testing import require_data
from kgseqgraph.training import TrainConfig, Trainer
from kgseqgraph.training.pretrain import run_pretraining

SMALL = dict(max_len=20, kg_dim=32, kg_hidden=[16, 16],
             encoder_kwargs=dict(num_layers=1, num_heads=2))
TINY = dict(max_len=6, kg_dim=4, kg_hidden=[2, 2], kge_batch_size=8, pretrain_bprmf_epochs=0,
            encoder_kwargs=dict(num_layers=1, num_heads=2, hidden_dropout=0.0, attn_dropout=0.0),
            kg_dropout=0.0)


def _tiny_graph():
    inter = pd.DataFrame({"user": ["a", "a", "a", "a", "b", "b", "b", "c", "c", "c"],
                          "item": ["i1", "i2", "i3", "i4", "i2", "i3", "i1", "i4", "i1", "i2"],
                          "time": [1, 2, 3, 4, 1, 2, 3, 1, 2, 3]})
    triples = pd.DataFrame({"head": ["m1", "m2", "m3", "m4", "m1"],
                            "relation": ["genre", "genre", "genre", "genre", "director"],
                            "tail": ["drama", "drama", "comedy", "comedy", "d1"]})
    links = pd.DataFrame({"item": ["i1", "i2", "i3", "i4"], "entity": ["m1", "m2", "m3", "m4"]})
    return build_collaborative_kg(inter, triples, links, items=["i1", "i2", "i3", "i4"])


@pytest.fixture(scope="module")
def tiny():
    data = _tiny_graph()
    return data, leave_one_out(data)


@pytest.fixture(scope="module")
def synthetic():
    data = Synthetic(num_users=300, num_items=120, num_entities=20, num_relations=4, seq_len=15,
                     seed=0)[0]
    return data, leave_one_out(data)


def _model(split, **options):
    torch.manual_seed(0)
    return KATRec.from_dataset(split.train_graph, **{**TINY, **options})


# ------------------------------------------------------------------ the paper's wiring
def test_default_is_the_papers_model(tiny):
    _, split = tiny
    model = build_model("katrec", split.train_graph)
    cfg = model.config
    assert cfg.encoder == "bert4rec" and cfg.objective == "cloze" and cfg.wiring == "paper"
    assert cfg.kg_hidden == [32, 16, 16] and cfg.node_types == ["item", "entity", "user"]
    assert cfg.hidden_size == 64 + 32 + 16 + 16 == model.encoder.config.hidden_size
    assert cfg.prediction_head and cfg.output_fusion and cfg.connection and cfg.use_attention
    assert cfg.pretrain_bprmf_epochs > 0 and cfg.kge_filtered and cfg.kge_sampling == "head"
    emb = model.item_embedder
    assert isinstance(emb, KGItemEmbedder)
    # the collaborative KG has the users and the training interactions as relations
    assert "interacts" in emb.enricher.relation_names
    assert emb.enricher.node_counts == {"item": 4, "entity": 3, "user": 3}
    with pytest.raises(ValueError, match="kg_dim \\+ sum\\(kg_hidden\\) = 128"):
        KATRecConfig(num_items=4, hidden_size=64)


def test_input_table_is_e_star_and_the_encoder_adds_positions(tiny):
    _, split = tiny
    model = _model(split).eval()
    emb = model.item_embedder
    tables = model.item_tables()
    kg = emb.enricher()  # e* of the items, [4, 4 + 2 + 2]
    assert torch.equal(tables.input[:4], kg)
    assert torch.equal(tables.input[4], torch.zeros(8))  # padding row
    assert torch.equal(tables.input[5], emb.special[1])  # [mask]
    # e* = e0 || normalised layers; e0 of the items are the TransR table's item rows
    assert torch.equal(kg[:, :4], emb.kge.node_emb.weight[:4])
    torch.testing.assert_close(kg[:, 4:6].norm(dim=1), torch.ones(4))
    # the encoder's input is LN(e*_i + p_t): items 0, 1 at positions 0, 1
    items, mask = torch.tensor([[0, 1]]), torch.ones(1, 2, dtype=torch.bool)
    h, _ = model.encoder._input(F.embedding(items, tables.input), mask)
    pos = model.encoder.position_embedding.weight[:2]
    expected = model.encoder.input_norm(kg[:2] + pos)
    torch.testing.assert_close(h[0], expected)


def test_output_table_fuses_v_star_and_e_star_with_gelu(tiny):
    _, split = tiny
    model = _model(split).eval()
    emb = model.item_embedder
    with torch.no_grad():
        emb.output.bias.normal_()
    tables = model.item_tables()
    kg = emb.enricher()
    w, b = emb.output.weight, emb.output.bias  # [8, 16], [8]
    by_hand = F.gelu(torch.cat([kg, kg], dim=1) @ w.t() + b)  # V* = E* = e* (connection on)
    torch.testing.assert_close(tables.output, by_hand)
    sig = _model(split, output_activation="sigmoid").eval()
    t = sig.item_tables()
    kg = sig.item_embedder.enricher()
    o = sig.item_embedder.output
    torch.testing.assert_close(t.output, torch.sigmoid(torch.cat([kg, kg], 1) @ o.weight.t()
                                                       + o.bias))


def test_scores_are_the_gelu_head_times_the_fused_table_plus_the_output_bias(tiny):
    _, split = tiny
    model = _model(split).eval()
    with torch.no_grad():
        model.head.output_bias.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
        model.head.transform.bias.normal_()
    seqs = split.test_inputs
    scores = model.score(seqs)
    tables = model.item_tables()
    from kgseqgraph.data import append_mask_token

    batch = append_mask_token(seqs, model.config.max_len, model.num_items)
    last = torch.full((len(seqs),), batch.items.size(1) - 1)
    v = encode_at(model.encoder, F.embedding(batch.items, tables.input), batch.mask, last)
    head = model.head
    hv = F.layer_norm(F.gelu(v @ head.transform.weight.t() + head.transform.bias), (8,),
                      head.norm.weight, head.norm.bias, head.norm.eps)
    by_hand = hv @ tables.output.t() + torch.tensor([0.5, -1.0, 2.0, 0.0])
    torch.testing.assert_close(scores, by_hand)


def test_loss_is_cloze_plus_transr_and_reaches_every_part(tiny):
    _, split = tiny
    model = _model(split, kge_weight=0.5)
    batch = model.training_batch(split.train, torch.Generator().manual_seed(0))
    out = model.loss(batch)
    torch.testing.assert_close(out["loss"], out["rec_loss"] + 0.5 * out["kge_loss"])
    out["loss"].backward()
    emb = model.item_embedder
    for p in (emb.kge.node_emb.weight, emb.kge.rel_proj, emb.kge.rel_emb.weight, emb.special,
              emb.output.weight, emb.enricher.convs[0].lin1.weight, model.head.output_bias):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_kg_batches_draw_heads_uniformly_with_filtered_negatives(tiny):
    _, split = tiny
    model = _model(split, kge_batch_size=4000)
    batch = model._kg_batch(torch.Generator().manual_seed(0), 4000)
    head, rel, tail, ptr = model._triples()
    known = set(zip(head.tolist(), rel.tolist(), tail.tolist()))
    drawn = list(zip(batch["kg_head"].tolist(), batch["kg_relation"].tolist(),
                     batch["kg_tail"].tolist()))
    assert all(t in known for t in drawn)
    negs = zip(batch["kg_head"].tolist(), batch["kg_relation"].tolist(),
               batch["kg_neg_tail"].tolist())
    assert not any(t in known for t in negs)  # filtered: never a known triple
    # every head with triples equally likely, whatever its degree
    counts = torch.bincount(batch["kg_head"], minlength=ptr.numel() - 1).double()
    has = (ptr[1:] > ptr[:-1])
    assert has.sum() > 5 and (counts[~has] == 0).all()
    share = counts[has] / 4000
    assert float((share - 1 / int(has.sum())).abs().max()) < 0.03
    unfiltered = _model(split, kge_filtered=False, kge_sampling="triple")
    b = unfiltered._kg_batch(torch.Generator().manual_seed(0), 4000)
    assert any(t in known for t in zip(b["kg_head"].tolist(), b["kg_relation"].tolist(),
                                       b["kg_neg_tail"].tolist()))


# ------------------------------------------------------------------ ablations, one test each
def test_no_atten_uses_kgats_per_relation_means(tiny):
    _, split = tiny
    model = _model(split, use_attention=False)
    enr = model.item_embedder.enricher
    assert not enr.use_attention
    # 1 / |N_h^r|: in the training graph item i2 (node 1) has one 'genre' edge and two
    # 'rev_interacts' edges (users a and b; c's i2 is its held-out test target), item i1 (node 0)
    # one 'genre', one 'director' and one 'rev_interacts' (b's and c's i1 are held out)
    head, rel = enr.edge_index[1], enr.edge_type
    for node, expected in ((1, {("genre", 1.0), ("rev_interacts", 0.5)}),
                           (0, {("genre", 1.0), ("director", 1.0), ("rev_interacts", 1.0)})):
        sel = head == node
        weights = {(enr.relation_names[r], float(w))
                   for r, w in zip(rel[sel].tolist(), enr.fixed_weights[sel])}
        assert weights == expected
        assert int(sel.sum()) == {1: 3, 0: 3}[node]
    # without attention the TransR relations only get gradients from the TransR loss
    model.config.kge_weight = 0.0
    batch = model.training_batch(split.train, torch.Generator().manual_seed(0))
    model.loss(batch)["loss"].backward()
    assert model.item_embedder.kge.rel_proj.grad is None
    node_mean = _model(split, use_attention=False, uniform_weights="node").item_embedder.enricher
    assert node_mean.fixed_weights is None  # the plain 1/|N_h| mean of the conv


def test_level_1_has_one_propagation_layer(tiny):
    _, split = tiny
    model = _model(split, kg_hidden=[2])
    assert len(model.item_embedder.enricher.convs) == 1
    assert model.config.hidden_size == 4 + 2 == model.item_table().size(1)


def test_concat_ablation_scores_against_the_input_table(tiny):
    _, split = tiny
    model = _model(split, output_fusion=False).eval()
    tables = model.item_tables()
    assert model.item_embedder.output is None
    assert torch.equal(tables.output, tables.input[:4])


def test_connection_ablation_feeds_bert_an_id_table_and_keeps_kg_at_the_output(tiny):
    _, split = tiny
    model = _model(split, connection=False).eval()
    emb = model.item_embedder
    tables = model.item_tables()
    assert torch.equal(tables.input, emb.id())  # the encoder reads ID embeddings
    with torch.no_grad():
        emb.kge.node_emb.weight.mul_(3.0)
    model.train().eval()  # drop the eval cache
    after = model.item_tables()
    assert torch.equal(after.input, tables.input)  # the KG does not reach the input ...
    assert not torch.allclose(after.output, tables.output)  # ... but the output fusion
    kg = emb.enricher()
    by_hand = F.gelu(torch.cat([tables.input[:4], kg], 1) @ emb.output.weight.t()
                     + emb.output.bias)
    torch.testing.assert_close(after.output, by_hand)


def test_no_pretrain_and_bprmf_pretraining(tiny):
    _, split = tiny
    assert _model(split).pretraining_stages() == []  # TINY sets pretrain_bprmf_epochs=0
    model = _model(split, pretrain_bprmf_epochs=30, pretrain_batch_size=4, pretrain_lr=0.05)
    stages = model.pretraining_stages()
    assert [s.name for s in stages] == ["bprmf"]
    before = model.item_embedder.kge.node_emb.weight.detach().clone()
    losses = run_pretraining(model, seed=0)["bprmf"]
    assert len(losses) == 30 and losses[-1] < losses[0]
    after = model.item_embedder.kge.node_emb.weight.detach()
    offsets = model.item_embedder.enricher.node_offsets
    # items and users take the BPRMF rows; the entities keep their initialisation
    assert not torch.allclose(after[:4], before[:4])
    u0 = offsets["user"]
    assert not torch.allclose(after[u0:u0 + 3], before[u0:u0 + 3])
    e0 = offsets["entity"]
    assert torch.equal(after[e0:e0 + 3], before[e0:e0 + 3])
    # BPRMF learned the training interactions: each user's training item outscores the others
    user_emb, item_emb = after[u0:u0 + 3], after[:4]
    pos = split.train_graph["user", "interacts", "item"].edge_index
    scores = user_emb @ item_emb.t()
    assert (scores[pos[0], pos[1]].mean() > scores.mean())


def test_detach_kg_keeps_the_recommendation_loss_out_of_the_kg(tiny):
    _, split = tiny
    model = _model(split, detach_kg=True, kge_weight=0.0)
    batch = model.training_batch(split.train, torch.Generator())
    model.loss(batch)["loss"].backward()
    assert model.item_embedder.kge.node_emb.weight.grad is None
    assert model.item_embedder.special.grad.abs().sum() > 0


def test_gated_wiring_is_one_tied_table(tiny):
    _, split = tiny
    model = _model(split, wiring="gated", hidden_size=16, fusion="gate").eval()
    assert isinstance(model.item_embedder, GatedKGItemEmbedder)
    tables = model.item_tables()
    assert tables.input.shape == (6, 16) and torch.equal(tables.output, tables.input[:4])
    out = tables.output.detach()
    assert float(out.min()) > 0 and float(out.max()) < 1  # sigmoid gate


def test_paper_preset():
    cfg = KATRecConfig.paper(num_items=10)
    assert (cfg.kg_dim, cfg.relation_dim, cfg.kg_hidden, cfg.hidden_size) == (64, 32,
                                                                                 [32, 16, 16], 128)
    assert cfg.kg_dropout == 0.2 and cfg.kge_reg == 1e-4 and cfg.mask_prob == 0.4
    assert cfg.encoder_kwargs["inner_size"] == 256 and cfg.encoder_kwargs["hidden_dropout"] == 0.4
    train = TrainConfig(**KATRecConfig.PAPER_TRAINING)
    assert (train.lr, train.weight_decay, train.warmup_steps, train.lr_decay) == (
        1e-4, 0.01, 100, "linear")


# ------------------------------------------------------------------ leakage
def test_a_model_over_the_full_graph_is_refused(tiny):
    data, split = tiny
    leaky = KATRec.from_dataset(data, **TINY)
    with pytest.raises(ValueError, match="held-out"):
        Trainer(leaky, split, TrainConfig(epochs=1, progress=False))
    # without users in the graph and without BPRMF the interactions play no part
    KATRec.from_dataset(data, **{**TINY, "node_types": ["item", "entity"]})
    Trainer(KATRec.from_dataset(data, **{**TINY, "node_types": ["item", "entity"]}), split,
            TrainConfig(epochs=1, progress=False))


# ------------------------------------------------------------------ training, persistence
def _pop_valid_ndcg(split):
    pop = Popularity(PopularityConfig(num_items=split.num_items)).fit(split.train)
    inputs = split.valid_inputs
    return evaluate_full_ranking(lambda s, e: pop.score(inputs.select(torch.arange(s, e))),
                                 split.valid_targets, exclude=inputs)["NDCG@10"]


@pytest.mark.parametrize("name", ["katrec", "kg-sasrec", "kg-gru4rec"])
def test_short_run_beats_popularity_on_synthetic(tmp_path, synthetic, name):
    data, split = synthetic
    torch.manual_seed(0)
    enc = {} if name == "kg-gru4rec" else SMALL["encoder_kwargs"]
    model = build_model(name, split.train_graph, **{**SMALL, "encoder_kwargs": enc})
    epochs = 40 if name == "katrec" else 15
    cfg = TrainConfig(seed=0, epochs=epochs, batch_size=32, lr=3e-3, patience=None,
                      eval_every=5, output_dir=str(tmp_path / "run"), progress=False)
    trainer = Trainer(model, split, cfg)
    result = trainer.fit()
    assert result.valid["NDCG@10"] > _pop_valid_ndcg(split) + 0.02
    assert set(trainer.pretraining) == {"bprmf"}  # ran once, at the start
    reloaded = trainer.load_best_model().eval()
    model.eval()
    assert torch.equal(reloaded.score(split.test_inputs), model.score(split.test_inputs))


def test_kg_presets_are_katrec_under_causal_encoders(synthetic):
    _, split = synthetic
    for name, encoder in (("kg-sasrec", "sasrec"), ("kg-gru4rec", "gru4rec")):
        model = build_model(name, split.train_graph, max_len=10, kg_dim=8, kg_hidden=[8])
        assert model.config.encoder == encoder and model.config.objective == "next"
        assert model.encoder.is_causal and isinstance(model.item_embedder, KGItemEmbedder)
    with pytest.raises(ValueError, match="kg-sasrec uses encoder='sasrec'"):
        build_model("kg-sasrec", split.train_graph, encoder="bert4rec", objective="cloze")


def test_save_pretrained_roundtrip(tmp_path, synthetic):
    _, split = synthetic
    torch.manual_seed(0)
    model = KATRec.from_dataset(split.train_graph, **SMALL).eval()
    before = model.score(split.test_inputs)
    model.save_pretrained(tmp_path / "katrec")
    loaded = SequentialRecommender.from_pretrained(tmp_path / "katrec",
                                                   data=split.train_graph).eval()
    assert torch.equal(loaded.score(split.test_inputs), before)
    with pytest.raises(ValueError, match="needs the collaborative KG"):
        SequentialRecommender.from_pretrained(tmp_path / "katrec")


@pytest.mark.realdata
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
    model = KATRec.from_dataset(split.train_graph, **{**SMALL, "max_len": 50,
                                                      "pretrain_bprmf_epochs": 5})
    cfg = TrainConfig(seed=0, epochs=3, batch_size=64, lr=3e-3, patience=None, eval_every=3,
                      output_dir=str(tmp_path / "run"), progress=False)
    result = Trainer(model, split, cfg).fit()
    assert result.valid["NDCG@10"] > _pop_valid_ndcg(split)


@pytest.mark.parametrize("reuse_attention", [True, False])
def test_kg_recompute_gives_the_same_loss_and_gradients(synthetic, reuse_attention):
    _, split = synthetic
    batch_seqs = split.train.select(torch.arange(16))
    results = []
    for recompute in (False, True):
        torch.manual_seed(0)
        model = KATRec.from_dataset(split.train_graph, **SMALL, reuse_attention=reuse_attention,
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
    _, split = synthetic
    torch.manual_seed(0)
    model = KATRec.from_dataset(split.train_graph, **SMALL)
    model.save_pretrained(tmp_path / "m")
    assert SequentialRecommender.from_pretrained(tmp_path / "m", data=split.train_graph)
    other = Synthetic(num_users=300, num_items=120, num_entities=20, num_relations=4, seq_len=15,
                      seed=1)[0]  # same sizes, another graph: the weights would load silently
    other = leave_one_out(other).train_graph
    with pytest.raises(ValueError, match="trained on another graph"):
        SequentialRecommender.from_pretrained(tmp_path / "m", data=other)
    loaded = SequentialRecommender.from_pretrained(tmp_path / "m", data=other, check_graph=False)
    assert isinstance(loaded, KATRec)
