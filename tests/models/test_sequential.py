import pytest
import torch

from kgseqgraph.data import Sequences, leave_one_out, training_windows
from kgseqgraph.datasets import Synthetic
from kgseqgraph.models import (BERT4Rec, GRU4Rec, Popularity, PopularityConfig, SASRec,
                               SequentialConfig, SequentialModel, SequentialRecommender)

SMALL = dict(max_len=12, hidden_size=16)
ENC = {"sasrec": dict(num_layers=1, num_heads=2), "bert4rec": dict(num_layers=1, num_heads=2),
       "gru4rec": dict()}


@pytest.fixture(scope="module")
def split():
    data = Synthetic(num_users=120, num_items=60, num_entities=12, num_relations=3, seq_len=10,
                     seed=1)[0]
    return leave_one_out(data)


@pytest.mark.parametrize("cls", [SASRec, BERT4Rec, GRU4Rec])
def test_save_pretrained_roundtrip_gives_identical_scores(tmp_path, split, cls):
    torch.manual_seed(0)
    model = cls.from_dataset(split.num_items, encoder_kwargs=ENC[cls.model_name], **SMALL)
    model.eval()
    before = model.score(split.test_inputs)
    model.save_pretrained(tmp_path / "m")
    loaded = SequentialRecommender.from_pretrained(tmp_path / "m")
    assert type(loaded) is cls
    loaded.eval()
    assert torch.equal(loaded.score(split.test_inputs), before)


@pytest.mark.parametrize("cls", [SASRec, BERT4Rec, GRU4Rec])
def test_short_training_reduces_loss(split, cls):
    torch.manual_seed(0)
    model = cls.from_dataset(split.num_items, encoder_kwargs=ENC[cls.model_name], **SMALL)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    windows = training_windows(split.train, SMALL["max_len"])
    g = torch.Generator().manual_seed(0)
    batch = model.training_batch(windows.select(torch.arange(64)), g)
    first = model.loss(batch)["loss"].item()
    for _ in range(40):
        loss = model.loss(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 0.5


def test_recommend_excludes_seen_items(split):
    torch.manual_seed(0)
    model = SASRec.from_dataset(split.num_items, encoder_kwargs=ENC["sasrec"], **SMALL)
    seqs = [[1, 2, 3], [4]]
    items, scores = model.recommend(seqs, k=split.num_items - 3)
    assert not set(items[0].tolist()) & {1, 2, 3}
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    kept, _ = model.recommend(seqs, k=split.num_items, exclude_seen=False)
    assert set(kept[0].tolist()) == set(range(split.num_items))


def test_next_objective_needs_causal_encoder():
    with pytest.raises(ValueError, match="causal"):
        SequentialModel(SequentialConfig(num_items=10, encoder="bert4rec", objective="next"))
    with pytest.raises(ValueError, match="sasrec"):
        SASRec(SequentialConfig(num_items=10, encoder="gru4rec"))


def test_training_batch_targets_are_real_next_items(split):
    model = SASRec.from_dataset(split.num_items, encoder_kwargs=ENC["sasrec"], **SMALL)
    seqs = Sequences.from_lists([[5, 6, 7]], split.num_items)
    batch = model.training_batch(seqs, torch.Generator())
    tgt = batch["targets"][batch["targets"] >= 0].tolist()
    assert tgt == [6, 7]
    bert = BERT4Rec.from_dataset(split.num_items, encoder_kwargs=ENC["bert4rec"], **SMALL)
    b = bert.training_batch(seqs, torch.Generator().manual_seed(3))
    masked = b["items"] == split.num_items + 1
    assert masked.any() and torch.equal(b["targets"][masked],
                                        torch.tensor([5, 6, 7])[masked[0, -3:]])


def test_popularity_scores_training_counts(split):
    pop = Popularity(PopularityConfig(num_items=split.num_items)).fit(split.train)
    counts = torch.bincount(split.train.items, minlength=split.num_items).float()
    assert torch.equal(pop.score(split.test_inputs)[0], counts)


def test_prediction_head_scores_and_loss_follow_the_bert4rec_formula(tmp_path, split):
    """logits = LN(GELU(h W + b)) T^T + b_O, in the loss (through the folded bias) and in score."""
    import torch.nn.functional as F

    from kgseqgraph.data import IGNORE_INDEX
    from kgseqgraph.models import PredictionHead

    torch.manual_seed(0)
    model = BERT4Rec.from_dataset(split.num_items, encoder_kwargs=ENC["bert4rec"],
                                  prediction_head=True, **SMALL)
    assert isinstance(model.head, PredictionHead)
    with torch.no_grad():  # off the zero init, so the bias matters
        model.head.output_bias.normal_()
        model.head.transform.bias.normal_()
    model.eval()
    head = model.head
    table = model.item_table()
    hidden = model.sequence_representation(split.test_inputs, table)  # head applied
    manual = hidden @ table[: split.num_items].t() + head.output_bias
    torch.testing.assert_close(model.score(split.test_inputs), manual)
    # the loss on a batch equals cross-entropy of the formula
    windows = training_windows(split.train, SMALL["max_len"])
    batch = model.training_batch(windows.select(torch.arange(16)), torch.Generator().manual_seed(0))
    h = model.encode(batch["items"], batch["mask"], table)
    sel = batch["targets"] != IGNORE_INDEX
    logits = head(h[sel]) @ table[: split.num_items].t() + head.output_bias
    expected = F.cross_entropy(logits, batch["targets"][sel])
    torch.testing.assert_close(model.loss(batch)["loss"], expected)
    # gradients reach the head, its bias and the item table
    model.train()
    model.loss(batch)["loss"].backward()
    assert head.output_bias.grad.abs().sum() > 0 and head.transform.weight.grad.abs().sum() > 0
    # saved and loaded with the head
    model.eval()
    model.save_pretrained(tmp_path / "m")
    loaded = SequentialRecommender.from_pretrained(tmp_path / "m").eval()
    assert loaded.config.prediction_head and loaded.head is not None
    assert torch.equal(loaded.score(split.test_inputs), model.score(split.test_inputs))


def test_label_smoothing_in_the_model_loss(split):
    """``label_smoothing`` turns the loss into torch's label-smoothed cross-entropy of the same
    logits (prediction head and output bias included); 0 keeps the plain loss; bad values fail."""
    import torch.nn.functional as F

    from kgseqgraph.data import IGNORE_INDEX

    torch.manual_seed(0)
    model = BERT4Rec.from_dataset(split.num_items, encoder_kwargs=ENC["bert4rec"],
                                  prediction_head=True, label_smoothing=0.2, **SMALL)
    with torch.no_grad():
        model.head.output_bias.normal_()
    model.eval()  # no dropout: the same logits twice
    table = model.item_table()
    windows = training_windows(split.train, SMALL["max_len"])
    batch = model.training_batch(windows.select(torch.arange(16)), torch.Generator().manual_seed(0))
    h = model.encode(batch["items"], batch["mask"], table)
    sel = batch["targets"] != IGNORE_INDEX
    logits = model.head(h[sel]) @ table[: split.num_items].t() + model.head.output_bias
    smoothed = F.cross_entropy(logits, batch["targets"][sel], label_smoothing=0.2)
    torch.testing.assert_close(model.loss(batch)["loss"], smoothed)
    model.config.label_smoothing = 0.0
    torch.testing.assert_close(model.loss(batch)["loss"],
                               F.cross_entropy(logits, batch["targets"][sel]))
    with pytest.raises(ValueError, match="label_smoothing"):
        SequentialConfig(num_items=10, label_smoothing=-0.1)


def test_without_prediction_head_there_is_no_head_parameter(split):
    model = BERT4Rec.from_dataset(split.num_items, encoder_kwargs=ENC["bert4rec"], **SMALL)
    assert model.head is None
    assert not any(n.startswith("head.") for n, _ in model.named_parameters())


def test_last_item_random_prefix_masks_the_end_of_a_random_prefix(split):
    """Rows drawn for last-item masking become a prefix of their window (2 items up to all of
    it) whose last item is the only target; the other rows are ordinary cloze rows."""
    from kgseqgraph.data import IGNORE_INDEX as IGNORE

    n = split.num_items
    mask_id, pad = n + 1, n
    model = BERT4Rec.from_dataset(n, encoder_kwargs=ENC["bert4rec"], last_item_mask_prob=0.5,
                                  last_item_random_prefix=True, **SMALL)
    windows = [list(range(i, i + 10)) for i in range(0, 40, 2)] * 10  # 200 rows of 10 items
    seqs = Sequences.from_lists(windows, n)
    b = model.training_batch(seqs, torch.Generator().manual_seed(0))
    items, targets, mask = b["items"], b["targets"], b["mask"]
    assert items.shape == (200, SMALL["max_len"])
    prefix_lengths = []
    n_last = 0
    for r, window in enumerate(windows):
        real = items[r][mask[r]].tolist()
        tgt = targets[r][mask[r]].tolist()
        if len(real) < len(window) or (real[-1] == mask_id and tgt.count(IGNORE) == len(tgt) - 1
                                       and all(x != mask_id for x in real[:-1])):
            # a last-item row: window prefix, last item masked and the only target
            k = len(real)
            assert real[:-1] == window[:k - 1] and real[-1] == mask_id
            assert tgt[:-1] == [IGNORE] * (k - 1) and tgt[-1] == window[k - 1]
            prefix_lengths.append(k)
            n_last += 1
        else:  # an ordinary cloze row over the whole window
            assert len(real) == len(window)
            for x, t, w in zip(real, tgt, window):
                assert (x == mask_id and t == w) or (x == w and t == IGNORE)
        assert (items[r][~mask[r]] == pad).all()
    assert 60 < n_last < 140  # about half the rows
    assert min(prefix_lengths) == 2 and max(prefix_lengths) == 10  # spread over all lengths
    assert len(set(prefix_lengths)) == 9
