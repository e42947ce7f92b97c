"""Text of the text-based recommenders: tokenizers, KP4SR's knowledge prompts and knowledge tree,
LANCER's inputs. Tensor layers (prefix keys/values, tree masks, decoding) live in
:mod:`kgseqgraph.nn`."""
from __future__ import annotations

from .knowledge import (ATTRIBUTE_TEMPLATES, DEFAULT_TEMPLATES, FREEBASE_FILM_TEMPLATES,
                        FREEBASE_INVERSES, FREEBASE_TYPE_WORDS, EntityNames, KnowledgePrompts,
                        fallback_template, knowledge_prompts, load_templates, render_template,
                        render_triples, resolve_templates, validate_template)
from .lancer import LancerTexts, TextBatch, item_texts, left_pack
from .tokenizers import (SPECIAL_TOKENS, build_word_tokenizer, encode_texts, load_tokenizer,
                         token_table, word_vocabulary)
from .tree import (EVAL_TEMPLATE, TRAIN_TEMPLATES, PersonalizedPrompt, TreeBatch, TreeTokens,
                   collate_trees, layout_tree, render_tree)

__all__ = [
    # knowledge prompts
    "FREEBASE_FILM_TEMPLATES",
    "FREEBASE_INVERSES",
    "FREEBASE_TYPE_WORDS",
    "ATTRIBUTE_TEMPLATES",
    "DEFAULT_TEMPLATES",
    "load_templates",
    "validate_template",
    "render_template",
    "render_triples",
    "fallback_template",
    "resolve_templates",
    "EntityNames",
    "KnowledgePrompts",
    "knowledge_prompts",
    # knowledge tree
    "TRAIN_TEMPLATES",
    "EVAL_TEMPLATE",
    "PersonalizedPrompt",
    "TreeTokens",
    "TreeBatch",
    "layout_tree",
    "collate_trees",
    "render_tree",
    # tokenizers
    "SPECIAL_TOKENS",
    "word_vocabulary",
    "build_word_tokenizer",
    "load_tokenizer",
    "encode_texts",
    "token_table",
    # LANCER
    "LancerTexts",
    "TextBatch",
    "left_pack",
    "item_texts",
]
