import pytest
import torch

pytest.importorskip("transformers")

from kgseqgraph.data import Sequences, leave_one_out, training_windows  # noqa: E402
from kgseqgraph.datasets import Synthetic  # noqa: E402
from kgseqgraph.models.base import SequentialRecommender  # noqa: E402
from kgseqgraph.models.kp4sr import (KP4SR, KP4SRConfig, build_word_tokenizer,  # noqa: E402
                                     item_token, word_vocabulary)

TINY = dict(max_len=6, d_model=32, d_ff=64, num_layers=2, num_decoder_layers=1, num_heads=2,
            d_kv=16, dropout=0.0, prompts_per_item=2, knowledge_items=3, min_word_frequency=1)


@pytest.fixture(scope="module")
def data():
    return Synthetic(num_users=40, num_items=30, num_entities=8, num_relations=3, seq_len=8,
                     seed=1)[0]


@pytest.fixture(scope="module")
def split(data):
    return leave_one_out(data)


def make(data, **kw):
    torch.manual_seed(0)
    return KP4SR(KP4SRConfig(num_items=30, **{**TINY, **kw}), data=data)


def first_batch(model, split, n=16, seed=0):
    windows = training_windows(split.train, model.config.max_len)
    return model.training_batch(windows.select(torch.arange(n)),
                                torch.Generator().manual_seed(seed))


def test_forward_loss_score_shapes(data, split):
    model = make(data)
    batch = first_batch(model, split)
    B, T = batch["input_ids"].shape
    assert B == 16 and batch["attention_mask"].shape == (B, T, T)
    assert batch["targets"].shape == (B,)
    # the root is the personalised prompt with item tokens; its mask token is there once a row
    toks = model.tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    assert toks[0] == "user" and toks[2:4] == ["has", "watched"]
    assert toks.count("<extra_id_0>") == 1
    loss = model.loss(batch)["loss"]
    assert loss.dim() == 0 and torch.isfinite(loss)
    model.eval()
    with torch.no_grad():
        s = model.score(split.test_inputs)
    assert s.shape == (len(split.test_inputs), 30)
    # item_softmax="items": the scores are log-probabilities over the catalogue
    torch.testing.assert_close(s.exp().sum(1), torch.ones(len(s)))


def test_training_batch_targets_follow_the_prefix(data, split):
    model = make(data, train_target="last")
    windows = training_windows(split.train, model.config.max_len).select(torch.arange(4))
    batch = model.training_batch(windows, torch.Generator().manual_seed(0))
    last = windows.item_at(windows.lengths - 1)
    assert torch.equal(batch["targets"], last)
    first_hist = windows[0][:-1].tolist()[-model.config.max_len:]
    ids = batch["input_ids"][0].tolist()
    anchors = [t for t in ids if t in set(model.item_token_ids.tolist())]
    # root anchors in history order, then knowledge prompts (which mention their item token)
    assert anchors[:len(first_hist)] == model.item_token_ids[first_hist].tolist()


def test_short_training_reduces_loss(data, split):
    model = make(data)
    batch = first_batch(model, split, n=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = model.loss(batch)["loss"].item()
    for _ in range(15):
        loss = model.loss(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 1.0


def test_save_from_pretrained_roundtrip(tmp_path, data, split):
    model = make(data)
    model.eval()
    with torch.no_grad():
        before = model.score(split.test_inputs)
    model.save_pretrained(tmp_path / "m")
    for loader in (KP4SR, SequentialRecommender):
        loaded = loader.from_pretrained(tmp_path / "m", data=data).eval()
        assert type(loaded) is KP4SR
        assert loaded.config.vocab == model.config.vocab
        with torch.no_grad():
            assert torch.equal(loaded.score(split.test_inputs), before)
    with pytest.raises(ValueError, match="collaborative KG"):
        KP4SR.from_pretrained(tmp_path / "m")


def test_tree_mask_changes_outputs(data, split):
    model = make(data).eval()
    full = make(data, use_tree_mask=False).eval()
    full.load_state_dict(model.state_dict())
    b_tree = model.encode_batch(split.test_inputs)
    b_full = full.encode_batch(split.test_inputs)
    assert torch.equal(b_tree["input_ids"], b_full["input_ids"])
    assert b_full["attention_mask"][b_full["padding_mask"][:, :, None]
                                    & b_full["padding_mask"][:, None]].all()
    assert not b_tree["attention_mask"][b_tree["padding_mask"][:, :, None]
                                        & b_tree["padding_mask"][:, None]].all()
    with torch.no_grad():
        diff = (model.score(split.test_inputs) - full.score(split.test_inputs)).abs().max()
    assert diff > 1e-3


def test_generate_items_is_constrained(data, split):
    model = make(data).eval()
    seqs = split.test_inputs.select(torch.arange(3))
    items = model.generate_items(seqs, k=4)
    assert items.shape == (3, 4)
    assert ((items >= 0) & (items < 30)).all()
    assert all(len(set(r)) == 4 for r in items.tolist())
    with torch.no_grad():
        best = model.score(seqs).argmax(1)
    # the first step is an item token; the closing </s> step can only reorder near-ties
    assert (items[:, 0] == best).float().mean() >= 2 / 3


def test_title_target_scores_are_sequence_log_likelihoods(data, split):
    from transformers.modeling_outputs import BaseModelOutput

    model = make(data, target="title", score_chunk=7).eval()
    seqs = split.test_inputs.select(torch.arange(2))
    with torch.no_grad():
        s = model.score(seqs)
        assert s.shape == (2, 30)
        batch = model.encode_batch(seqs)
        enc = model.encode(batch)
        labels = model._title_labels(torch.tensor([5, 5]))
        out = model.t5(encoder_outputs=BaseModelOutput(last_hidden_state=enc),
                       attention_mask=batch["padding_mask"].long(), labels=labels)
    # T5's loss is the mean token NLL over the (equal-length) labels of both rows
    n = (labels >= 0).sum()
    torch.testing.assert_close(s[:, 5].sum(), -out.loss * n, rtol=1e-4, atol=1e-4)
    batch = first_batch(model, split, n=4)
    assert torch.isfinite(model.loss(batch)["loss"])
    items = model.generate_items(seqs, k=2)
    assert ((items >= 0) & (items < 30)).all()


def test_pretrained_checkpoint_path(tmp_path, data, split):
    tf = pytest.importorskip("transformers")
    vocab = word_vocabulary(["user has watched and will watch next . , genre creator brand"])
    tok = build_word_tokenizer(vocab)
    torch.manual_seed(1)
    cfg = tf.T5Config(vocab_size=len(vocab), d_model=16, d_ff=32, num_layers=1,
                      num_decoder_layers=1, num_heads=2, d_kv=8, dropout_rate=0.0,
                      decoder_start_token_id=0)
    ckpt = tf.T5ForConditionalGeneration(cfg)
    ckpt.save_pretrained(tmp_path / "ckpt")
    tok.save_pretrained(str(tmp_path / "ckpt"))
    model = KP4SR(KP4SRConfig(num_items=30, max_len=6, pretrained=str(tmp_path / "ckpt")),
                  data=data).eval()
    assert len(model.tokenizer) == len(vocab) + 30
    assert model.tokenizer.convert_tokens_to_ids(item_token(7)) == len(vocab) + 7
    emb = model.t5.get_input_embeddings().weight
    assert emb.shape[0] >= len(vocab) + 30
    torch.testing.assert_close(emb[:len(vocab)], ckpt.get_input_embeddings().weight)
    assert model.config.backbone_config["d_model"] == 16
    with torch.no_grad():
        before = model.score(split.test_inputs)
    model.save_pretrained(tmp_path / "m")
    loaded = KP4SR.from_pretrained(tmp_path / "m", data=data).eval()
    with torch.no_grad():
        assert torch.equal(loaded.score(split.test_inputs), before)


def test_config_and_input_errors(data):
    with pytest.raises(ValueError, match="target"):
        KP4SRConfig(num_items=30, target="ids")
    with pytest.raises(ValueError, match="root_sees"):
        KP4SRConfig(num_items=30, root_sees="everything")
    with pytest.raises(ValueError, match="history"):
        KP4SRConfig(num_items=30, prompt_template="User {user} likes {mask}")
    with pytest.raises(ValueError, match="collaborative KG"):
        KP4SR(KP4SRConfig(num_items=30))
    with pytest.raises(ValueError, match="num_items"):
        KP4SR(KP4SRConfig(num_items=31, **TINY), data=data)
    model = make(data)
    with pytest.raises(ValueError, match="at least 2"):
        model.training_batch(Sequences.from_lists([[1]], 30), torch.Generator())


def test_recommend_excludes_seen(data):
    model = make(data)
    items, _ = model.recommend([[1, 2, 3]], k=5)
    assert not set(items[0].tolist()) & {1, 2, 3}
