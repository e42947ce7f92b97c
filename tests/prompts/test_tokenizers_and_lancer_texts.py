"""The one word-level tokenizer (digits split for item IDs) and LANCER's inputs: layout, left
padding, positions and shifted labels, by hand."""
import pytest
import torch

pytest.importorskip("transformers")

from kgseqgraph.data import IGNORE_INDEX  # noqa: E402
from kgseqgraph.prompts import (LancerTexts, build_word_tokenizer, left_pack,  # noqa: E402
                                token_table, word_vocabulary)


def test_word_tokenizer_is_deterministic_and_splits_digits():
    texts = ["The genre of 1234 is genre m.04t36.", "Heat (1995)", "heat"]
    vocab = word_vocabulary(texts, always=["<extra_id_0>"], split_digits=True)
    assert vocab[:4] == ["<pad>", "</s>", "<unk>", "<extra_id_0>"]
    assert vocab == word_vocabulary(list(reversed(texts)), always=["<extra_id_0>"],
                                    split_digits=True)
    tok = build_word_tokenizer(vocab, split_digits=True)
    words = tok.convert_ids_to_tokens(tok("the genre of 1234 is m.04t36 <extra_id_0>")["input_ids"])
    assert words == ["the", "genre", "of", "1", "2", "3", "4", "is", "m.04t36", "<extra_id_0>"]
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    whole = build_word_tokenizer(word_vocabulary(texts))
    assert whole.convert_ids_to_tokens(whole("1995")["input_ids"]) == ["1995"]
    with pytest.raises(ValueError):
        build_word_tokenizer(["a", "b"])
    table, n = token_table([[5, 6, 7], [8]], max_tokens=2, suffix=[1])
    assert table.tolist() == [[5, 6, 1], [8, 1, 0]] and n.tolist() == [3, 2]


def test_left_pack_positions_and_labels():
    ids = torch.tensor([[7, 0, 8, 9], [5, 6, 0, 0]])
    real = torch.tensor([[True, False, True, True], [True, True, False, False]])
    is_label = torch.tensor([[False, False, True, True], [True, True, False, False]])
    tb = left_pack(ids, real, is_label)
    assert tb.ids.tolist() == [[7, 8, 9], [0, 5, 6]]
    assert tb.mask.tolist() == [[True, True, True], [False, True, True]]
    assert tb.positions.tolist() == [[0, 1, 2], [0, 0, 1]]
    I = IGNORE_INDEX
    assert tb.labels.tolist() == [[8, 9, I], [I, 6, I]]    # position j predicts token j + 1


@pytest.fixture(scope="module")
def texts():
    items = ["heat", "golden eye", "babe"]
    know = ["heat is a crime film", "golden eye is a spy film", "babe is a pig"]
    vocab = word_vocabulary(items + know + ["watched :"], always=["<sep>"])
    tok = build_word_tokenizer(vocab)
    return tok, LancerTexts(tok, items, know, "watched :", "<sep>", max_item_tokens=2,
                            max_knowledge_tokens=4)


def test_lancer_reasoning_input(texts):
    tok, t = texts
    items = torch.tensor([[3, 0, 2], [3, 3, 1]])          # left-padded histories (3 = padding)
    mask = torch.tensor([[False, True, True], [False, False, True]])
    tb = t.reasoning(items, mask, torch.tensor([1, 0]))
    words = [tok.convert_ids_to_tokens(r[m].tolist()) for r, m in zip(tb.ids, tb.mask)]
    assert words[0] == ["watched", ":", "heat", "<sep>", "babe", "<sep>", "golden", "eye", "</s>"]
    assert words[1] == ["watched", ":", "golden", "eye", "<sep>", "heat", "</s>"]
    assert bool(tb.mask[:, -1].all())                      # left padding: the text ends the row
    lab = [[tok.convert_ids_to_tokens([x])[0] for x in r.tolist() if x != IGNORE_INDEX]
           for r in tb.labels]
    assert lab[0] == words[0][1:]                          # "all": every token after the first
    target_only = t.reasoning(items, mask, torch.tensor([1, 0]), lm_targets="target")
    lab = [[x for x in r.tolist() if x != IGNORE_INDEX] for r in target_only.labels]
    assert tok.convert_ids_to_tokens(lab[0]) == ["golden", "eye", "</s>"]
    assert tok.convert_ids_to_tokens(lab[1]) == ["heat", "</s>"]
    prompt = t.reasoning(items, mask)                       # inference: ends with the separator
    assert tok.convert_ids_to_tokens(prompt.ids[0, -1:].tolist()) == ["<sep>"]
    assert t.stop_ids == [tok.eos_token_id, tok.convert_tokens_to_ids("<sep>")]


def test_lancer_knowledge_input(texts):
    tok, t = texts
    kb = t.knowledge(torch.tensor([2, 0]))
    assert tok.convert_ids_to_tokens(kb.ids[0][kb.mask[0]].tolist()) == ["babe", "is", "a", "pig"]
    assert int(kb.mask[1].sum()) == 4                     # cut to max_knowledge_tokens
    assert (kb.labels[kb.mask] != IGNORE_INDEX).sum() == 6
