"""Tokenizers of the text recommenders: one deterministic word-level tokenizer built from the
texts of a graph (no download; the same texts give the same ids), a pretrained tokenizer loader,
and token tables (each text's ids as rows of a padded tensor).

Word-level pre-tokens (lower-cased): ``<…>`` special tokens, Freebase mids (``m.04t36``), words,
single punctuation marks and — with ``split_digits`` — single digits, so a number such as an item
ID ``1234`` is the four tokens ``1 2 3 4`` and can be generated token by token (KP4SR).
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["SPECIAL_TOKENS", "word_vocabulary", "build_word_tokenizer", "load_tokenizer",
           "encode_texts", "token_table"]

#: Special tokens of the word-level tokenizer (T5's ids for pad, eos, unk).
SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")


def _pattern(split_digits: bool) -> str:
    word = r"\d|[^\W\d]+" if split_digits else r"\w+"
    return rf"<[^<>\s]+>|[a-z]\.[0-9a-z_]+|{word}|[^\w\s]"


def word_vocabulary(texts: Iterable[str], min_frequency: int = 1, always: Sequence[str] = (),
                    split_digits: bool = False) -> list[str]:
    """Vocabulary of :func:`build_word_tokenizer`: :data:`SPECIAL_TOKENS`, then ``always`` (in
    order), then every pre-token of ``texts`` seen at least ``min_frequency`` times (most
    frequent first, ties alphabetical)."""
    pat = re.compile(_pattern(split_digits))
    counts: Counter[str] = Counter()
    for t in texts:
        counts.update(pat.findall(str(t).lower()))
    vocab = list(SPECIAL_TOKENS)
    seen = set(vocab)
    for w in always:
        w = w.lower()
        if w not in seen:
            vocab.append(w)
            seen.add(w)
    for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if c >= min_frequency and w not in seen:
            vocab.append(w)
            seen.add(w)
    return vocab


def build_word_tokenizer(vocab: Sequence[str], split_digits: bool = False) -> Any:
    """A ``transformers.PreTrainedTokenizerFast`` over a ``tokenizers`` ``WordLevel`` model with
    the given vocabulary (ids in list order; it must start with :data:`SPECIAL_TOKENS`); pad
    ``<pad>``, end-of-sequence ``</s>``, unknown ``<unk>``. Use the same ``split_digits`` as for
    :func:`word_vocabulary`."""
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    if tuple(vocab[:len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
        raise ValueError(f"vocab must start with {list(SPECIAL_TOKENS)}")
    if len(set(vocab)) != len(vocab):
        raise ValueError("vocab lists a token twice")
    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Split(Regex(_pattern(split_digits)), behavior="isolated")])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>")


def load_tokenizer(name_or_path: str, gguf_file: str | None = None) -> Any:
    """``AutoTokenizer.from_pretrained`` (with ``gguf_file``); a missing pad token becomes the
    end-of-sequence token."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name_or_path, **({"gguf_file": gguf_file} if gguf_file
                                                         else {}))
    if tok.eos_token_id is None:
        raise ValueError(f"tokenizer {name_or_path!r} has no end-of-sequence token")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def encode_texts(tokenizer: Any, texts: Sequence[str], prefix: str = "") -> list[list[int]]:
    """Token ids of each text (no special tokens added), ``prefix`` prepended to each."""
    if not len(texts):
        return []
    enc = tokenizer([prefix + str(t) for t in texts], add_special_tokens=False)["input_ids"]
    return [list(x) for x in enc]


def token_table(rows: Sequence[Sequence[int]], max_tokens: int | None = None,
                suffix: Sequence[int] = ()) -> tuple[Tensor, Tensor]:
    """Each row cut to ``max_tokens`` and followed by ``suffix``, right-padded with 0 into
    ``[M, W]``, with the lengths ``[M]``."""
    rows = [list(r[:max_tokens] if max_tokens is not None else r) + list(suffix) for r in rows]
    width = max([len(r) for r in rows] + [1])
    table = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        table[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return table, torch.tensor([len(r) for r in rows], dtype=torch.long)
