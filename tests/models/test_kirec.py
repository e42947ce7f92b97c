import pytest
import torch

from kgseqgraph.data import leave_one_out, training_windows
from kgseqgraph.datasets import Synthetic
from kgseqgraph.models.base import SequentialRecommender
from kgseqgraph.models.kirec import KIRec, KIRecConfig, KnowledgeFusedEmbedder

ENC = dict(num_layers=1, num_heads=2)
SMALL = dict(max_len=12, hidden_size=16, encoder_kwargs=ENC)


@pytest.fixture(scope="module")
def data():
    d = Synthetic(num_users=120, num_items=60, num_entities=12, num_relations=3, seq_len=10,
                  seed=1)[0]
    g = torch.Generator().manual_seed(0)
    d["item"].x_attr = torch.randn(60, 24, generator=g)
    d["item"].x_text = torch.randn(60, 8, generator=g)
    return d


@pytest.fixture(scope="module")
def split(data):
    return leave_one_out(data)


@pytest.mark.parametrize("fusion", ["sum", "gate", "concat"])
@pytest.mark.parametrize("reduction", ["pca", "linear"])
def test_shapes_and_padding_row(data, split, fusion, reduction):
    torch.manual_seed(0)
    model = KIRec.from_dataset(data, fusion=fusion, reduction=reduction, **SMALL)
    table = model.item_embedder()
    assert table.shape == (62, 16)
    assert torch.equal(table[60], torch.zeros(16))  # padding row stays zero
    g = torch.Generator().manual_seed(0)
    batch = model.training_batch(training_windows(split.train, 12).select(torch.arange(8)), g)
    out = model.loss(batch)
    assert out["loss"].dim() == 0 and torch.isfinite(out["loss"])
    model.eval()
    scores = model.score(split.test_inputs)
    assert scores.shape == (len(split.test_inputs), 60)


def test_features_enter_the_table_fixed_under_pca(data):
    torch.manual_seed(0)
    model = KIRec.from_dataset(data, fusion="sum", **SMALL)
    emb: KnowledgeFusedEmbedder = model.item_embedder
    assert "item_embedder.features" in model.state_dict()
    assert all(p is not emb.features for p in model.parameters())  # a buffer, never trained
    assert emb.features.std().item() == pytest.approx(0.02, rel=1e-4)  # rescaled to init_std
    v = emb.ids()
    expected = v[:60] + emb.fusion.proj(emb.features)   # sum fusion: v_i + e_i W
    assert torch.allclose(emb()[:60], expected)
    assert torch.allclose(emb()[61], v[61])              # [mask] row: e = 0
    # sum fusion with zeroed features is the plain ID table
    with torch.no_grad():
        emb.features.zero_()
    assert torch.allclose(emb(), v)


def test_text_features_are_concatenated(data):
    model = KIRec.from_dataset(data, features=["x_attr", "x_text"], reduction="linear",
                               feature_scale=0.5, **SMALL)
    assert model.config.feature_dim == 32
    emb = model.item_embedder
    assert emb.project.in_dim == 32 and emb.features.std().item() == pytest.approx(0.5, rel=1e-4)
    raw = torch.cat([data["item"].x_attr, data["item"].x_text], dim=1)
    assert torch.allclose(emb.features, raw * (0.5 / raw.std()))


def test_validation(data):
    with pytest.raises(ValueError, match="x_missing is missing"):
        KIRec.from_dataset(data, features=["x_missing"], **SMALL)
    with pytest.raises(ValueError, match="reduction"):
        KIRecConfig(num_items=60, reduction="svd")
    with pytest.raises(ValueError, match="fusion"):
        KIRecConfig(num_items=60, fusion="max")
    with pytest.raises(ValueError, match="feature_scale"):
        KIRecConfig(num_items=60, feature_scale=0.0)
    with pytest.raises(ValueError, match="needs the graph"):
        KIRec(KIRecConfig(num_items=60, **SMALL))
    with pytest.raises(ValueError, match="next"):
        KIRec(KIRecConfig(num_items=60, objective="cloze", encoder="bert4rec"), data=data)
    with pytest.raises(ValueError, match="built with 99 feature columns"):
        KIRec(KIRecConfig(num_items=60, feature_dim=99, **SMALL), data=data)


def test_save_load_roundtrip_and_factory(tmp_path, data, split):
    from kgseqgraph.models.factory import build_model

    torch.manual_seed(0)
    model = build_model("kirec", data, fusion="gate", **SMALL)
    assert isinstance(model, KIRec) and model.config.encoder == "sasrec"
    model.eval()
    before = model.score(split.test_inputs)
    model.save_pretrained(tmp_path / "m")
    loaded = SequentialRecommender.from_pretrained(tmp_path / "m", data=data)
    assert type(loaded) is KIRec and loaded.config.feature_dim == 24
    loaded.eval()
    assert torch.equal(loaded.score(split.test_inputs), before)


def test_short_training_reduces_loss(data, split):
    torch.manual_seed(0)
    model = KIRec.from_dataset(data, fusion="sum", **SMALL)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(0)
    batch = model.training_batch(training_windows(split.train, 12).select(torch.arange(32)), g)
    first = model.loss(batch)["loss"].item()
    for _ in range(25):
        loss = model.loss(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 0.5


def test_gradients_reach_ids_and_fusion_but_not_fixed_features(data, split):
    torch.manual_seed(0)
    model = KIRec.from_dataset(data, fusion="gate", **SMALL)
    g = torch.Generator().manual_seed(0)
    batch = model.training_batch(training_windows(split.train, 12).select(torch.arange(8)), g)
    model.loss(batch)["loss"].backward()
    emb = model.item_embedder
    assert emb.ids.weight.grad.abs().sum() > 0 and emb.fusion.lin.weight.grad.abs().sum() > 0
    assert emb.features.grad is None and not emb.features.requires_grad


def test_the_callers_config_is_not_changed(data):
    config = KIRecConfig(num_items=60, **SMALL)
    model = KIRec(config, data=data)
    assert config.feature_dim is None  # the model filled in its own copy
    assert model.config.feature_dim == 24 and model.config is not config
