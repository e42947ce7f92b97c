"""LANCER: a tiny random GPT-2 (n_embd=32, 2 layers, 2 heads) over a word-level tokenizer built
from a hand-made catalogue of eight titles; plus a tiny Llama (grouped-query attention) and the
ML-100K graph when ``$KGSEQGRAPH_DATA`` is set."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch_geometric.data import HeteroData

from kgseqgraph.data.sequences import Sequences
from kgseqgraph.models.base import SequentialRecommender
from kgseqgraph.models.lancer import (LANCER, LANCERConfig, build_word_tokenizer, knowledge_texts,
                                      max_pooled_embeddings)

pytest.importorskip("transformers")


TITLES = ["toy story", "golden eye", "four rooms", "get shorty", "copy cat", "twelve monkeys",
          "babe", "dead man walking"]
GENRES = ["animation", "action", "comedy", "comedy", "thriller", "drama", "drama", "drama"]
N = len(TITLES)


def make_graph() -> HeteroData:
    d = HeteroData()
    d["user"].num_nodes = 3
    d["item"].num_nodes = N
    d["item"].title = list(TITLES)
    d["item"].text = [f"{t} (1995). Genres: {g}" for t, g in zip(TITLES, GENRES)]
    d["entity"].num_nodes = 3
    d["item", "genre", "entity"].edge_index = torch.tensor([[0, 1, 2, 3, 4, 5], [0, 1, 2, 2, 1, 0]])
    d["entity", "rev_genre", "item"].edge_index = torch.tensor([[0, 1, 2, 2, 1, 0],
                                                                [0, 1, 2, 3, 4, 5]])
    d["item", "film_film_sequel", "item"].edge_index = torch.tensor([[1], [5]])
    d.relation_names = {"genre": "genre", "film_film_sequel": "film.film.sequel"}
    return d


def make_model(**kw) -> LANCER:
    cfg = LANCERConfig(num_items=N, max_len=4, hidden_size=32, num_layers=2, num_heads=2,
                       num_knowledge_tokens=3, knowledge_hidden=16, attn_implementation="eager",
                       **kw)
    return LANCER(cfg, data=make_graph())


SEQS = Sequences.from_lists([[0, 1], [2], [4, 5, 6, 7, 3]], N)
TRAIN = Sequences.from_lists([[0, 1], [2, 6], [4, 5, 6, 7, 3]], N)


def test_score_shape_and_modes():
    model = make_model().eval()
    with torch.no_grad():
        s = model.score(SEQS)
    assert s.shape == (3, N) and torch.isfinite(s).all()
    # cosine / temperature: bounded by 1 / tau
    assert s.abs().max() <= 1 / model.config.temperature + 1e-4
    for mode in ("likelihood", "generate"):
        m = make_model(score_mode=mode).eval()
        assert m.score(SEQS).shape == (3, N)


def test_likelihood_scores_match_full_forward():
    """Packed, cached item scoring equals one full forward pass per (user, item) pair."""
    model = make_model(use_knowledge_prompt=True).eval()
    fast = model.likelihood_scores(SEQS, chunk_items=3)
    items, mask = model._batch(SEQS)
    ref = torch.empty(3, N)
    with torch.no_grad():
        for i in range(N):
            a = model._assemble(items, mask, torch.full((3,), i))
            hidden = model._run(a["embeds"], a["mask"], a["positions"])
            logp = torch.log_softmax(model.lm.get_output_embeddings()(hidden), -1)
            lab = a["labels"]
            sel = lab != -100
            tok = torch.where(sel, lab, torch.zeros_like(lab))
            ref[:, i] = (logp.gather(-1, tok.unsqueeze(-1)).squeeze(-1) * sel).sum(1)
    assert torch.allclose(fast, ref, atol=1e-4), (fast - ref).abs().max()
    norm = model.likelihood_scores(SEQS, chunk_items=5, length_normalize=True)
    assert torch.allclose(norm * model.target_len.float(), ref, atol=1e-4)


def test_knowledge_prompt_changes_scores_and_gets_gradients():
    model = make_model().eval()
    with torch.no_grad():
        with_prefix = model.score(SEQS)
        saved = model.knowledge
        model.knowledge = None
        without = model.score(SEQS)
        model.knowledge = saved
    assert not torch.allclose(with_prefix, without, atol=1e-4)
    model.train()
    batch = model.training_batch(TRAIN, torch.Generator().manual_seed(0))
    model.loss(batch)["loss"].backward()
    assert model.knowledge.tokens.grad.abs().sum() > 0
    assert model.reasoning.q.weight.grad.abs().sum() > 0
    assert model.entity.weight.grad.abs().sum() > 0


def test_text_to_item_mapping_exact_titles():
    model = make_model()
    assert model.texts_to_items(TITLES).tolist() == list(range(N))
    sims = model.match_texts(["GOLDEN   Eye"])  # normalised by the tokenizer
    assert sims.argmax().item() == 1
    assert torch.allclose(sims[0, 1], torch.tensor(1.0), atol=1e-6)


def test_max_pooled_embeddings_by_hand():
    table = torch.tensor([[1.0, -1.0], [3.0, 0.0], [-2.0, 5.0]])
    ids = torch.tensor([[1, 2, 0], [0, 0, 0]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    out = max_pooled_embeddings(ids, mask, table)
    assert out.tolist() == [[3.0, 5.0], [0.0, 0.0]]


def test_training_batch_cuts():
    seqs = Sequences.from_lists([[0, 1, 2, 3], [4, 5]], N)
    last = make_model(cut="last").training_batch(seqs, torch.Generator().manual_seed(0))
    assert last["targets"].tolist() == [3, 5]
    assert last["items"][0].tolist() == [N, 0, 1, 2]  # left padding with the padding id N
    assert last["mask"].sum(1).tolist() == [3, 1]
    rnd = make_model(cut="random")
    seen = set()
    for s in range(20):
        b = rnd.training_batch(seqs, torch.Generator().manual_seed(s))
        n = int(b["mask"][0].sum())
        assert b["targets"][0].item() == n  # history 0..n-1, target item n
        seen.add(n)
        assert b["targets"][1].item() == 5
    assert seen == {1, 2, 3}
    with pytest.raises(ValueError, match=">= 2 items"):
        rnd.training_batch(Sequences.from_lists([[1]], N), torch.Generator())


def test_short_training_lowers_loss():
    torch.manual_seed(0)
    model = make_model(cut="last")
    batch = model.training_batch(TRAIN, torch.Generator().manual_seed(0))
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(40):
        out = model.loss(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = float(out["loss"].detach()) if first is None else first
    last = float(model.loss(batch)["loss"].detach())
    assert last < 0.5 * first
    model.eval()
    with torch.no_grad():
        top = model.score(TRAIN.truncate(TRAIN.lengths - 1)).argmax(1)
    assert top.tolist() == batch["targets"].tolist()


def test_knowledge_pretraining_lowers_lm_loss_and_freezes_backbone():
    model = make_model()
    texts = knowledge_texts(make_graph())
    assert "golden eye film film sequel twelve monkeys." in texts
    before = {k: v.clone() for k, v in model.lm.state_dict().items()}
    losses = model.pretrain_knowledge(epochs=15, lr=1e-2, batch_size=9)
    assert losses[-1] < losses[0]
    for k, v in model.lm.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.requires_grad for p in model.lm.parameters())


def test_save_from_pretrained_round_trip(tmp_path):
    model = make_model()
    batch = model.training_batch(TRAIN, torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        loss = model.loss(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(tmp_path / "m")
    again = SequentialRecommender.from_pretrained(tmp_path / "m", data=make_graph()).eval()
    assert isinstance(again, LANCER)
    with torch.no_grad():
        assert torch.equal(model.score(SEQS), again.score(SEQS))
    assert torch.equal(model.likelihood_scores(SEQS), again.likelihood_scores(SEQS))
    with pytest.raises(ValueError, match="data="):
        LANCER.from_pretrained(tmp_path / "m")


def test_pretrained_backbone_from_path(tmp_path):
    """A tiny GPT-2 saved with ``save_pretrained`` loads through ``pretrained=`` and gives the
    same scores as the model it came from."""
    model = make_model().eval()
    model.lm.save_pretrained(tmp_path / "lm")
    cfg = dataclasses.replace(model.config, pretrained=str(tmp_path / "lm"))
    other = LANCER(cfg, data=make_graph()).eval()
    assert torch.equal(other.lm.get_input_embeddings().weight, model.token_table)
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.allclose(other.score(SEQS), model.score(SEQS))


def test_llama_backbone_with_grouped_query_attention():
    tok = build_word_tokenizer(TITLES)  # only to size nothing: the word vocabulary is rebuilt
    assert tok.convert_tokens_to_ids("[EOS]") == 3
    model = make_model(backbone_config={
        "model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 256})
    assert model.knowledge.prefix().shape == (2, 2, 2, 3, 8)
    model.eval()
    fast = model.likelihood_scores(SEQS, chunk_items=4)
    with torch.no_grad():
        s = model.score(SEQS)
        saved, model.knowledge = model.knowledge, None
        s0 = model.score(SEQS)
        model.knowledge = saved
    assert s.shape == (3, N) and not torch.allclose(s, s0, atol=1e-4)
    assert torch.isfinite(fast).all()


def test_config_validation():
    with pytest.raises(ValueError, match="score_mode"):
        LANCERConfig(num_items=3, score_mode="beam")
    with pytest.raises(ValueError, match="pretrained"):
        LANCERConfig(num_items=3, tokenizer="pretrained")
    with pytest.raises(ValueError, match="items"):
        LANCER(LANCERConfig(num_items=N + 1), data=make_graph())
    with pytest.raises(ValueError, match="graph"):
        LANCER(LANCERConfig(num_items=N))


def test_trainer_runs_lancer():
    from kgseqgraph.data.splits import leave_one_out
    from kgseqgraph.training import TrainConfig, run_training

    seqs = Sequences.from_lists([[0, 1, 2, 3, 4], [5, 6, 7, 0], [1, 3, 5, 7, 2, 4]], N)
    split = leave_one_out(seqs)
    result = run_training(make_model(), split, TrainConfig(epochs=2, batch_size=2, device="cpu",
                                                           progress=False, patience=None,
                                                           ks=(1, 5), valid_metric="HR@5"),
                          data=make_graph())
    assert 0.0 <= result["test"]["HR@5"] <= 1.0


@pytest.mark.realdata
def test_ml100k_graph_builds_and_scores():
    from kgseqgraph.datasets.registry import load_dataset
    from kgseqgraph.testing import require_data

    root = require_data("ml-100k", "ml-100k/ml-100k.inter", "ml-100k/ml-100k.item")
    data = load_dataset("ml-100k", root)
    cfg = LANCERConfig(num_items=int(data["item"].num_nodes), max_len=5, hidden_size=16,
                       num_layers=1, num_heads=2, num_knowledge_tokens=2, knowledge_hidden=8)
    model = LANCER(cfg, data=data).eval()
    assert model.title_tokens.size(0) == 1682
    seqs = Sequences.from_lists([[0, 1, 2], [49]], 1682)
    with torch.no_grad():
        assert model.score(seqs).shape == (2, 1682)
    assert model.texts_to_items(["Toy Story"]).item() == 0
