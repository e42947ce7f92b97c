"""Prompts built from the collaborative KG: KP4SR knowledge prompts, the knowledge tree and its
tree attention mask (and LANCER's prompt modules, in :mod:`kgseqgraph.prompts.lancer`, imported
on first use)."""
from __future__ import annotations

from typing import Any

from .knowledge import (ATTRIBUTE_TEMPLATES, DEFAULT_TEMPLATES, FREEBASE_FILM_TEMPLATES,
                        FREEBASE_INVERSES, FREEBASE_TYPE_WORDS, EntityNames, KnowledgePrompts,
                        fallback_template, knowledge_prompts, load_templates, render_template,
                        resolve_templates, validate_template)
from .tree import (KnowledgeTree, PersonalizedPrompt, TreeBatch, TreeTokens,
                   additive_attention_mask, build_tree_tokens, collate_trees, tree_attention_mask)

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
    "fallback_template",
    "resolve_templates",
    "EntityNames",
    "KnowledgePrompts",
    "knowledge_prompts",
    # knowledge tree
    "PersonalizedPrompt",
    "KnowledgeTree",
    "TreeTokens",
    "TreeBatch",
    "build_tree_tokens",
    "collate_trees",
    "tree_attention_mask",
    "additive_attention_mask",
]

_LAZY = {"lancer"}


def __getattr__(name: str) -> Any:
    # LANCER's module is written separately and needs optional dependencies: import on demand.
    if name in _LAZY:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
