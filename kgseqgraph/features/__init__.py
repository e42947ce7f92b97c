"""Item node features: text assembly and sentence embeddings (``x_text``), LLM-extracted
attributes (``x_attr``) and their reduction to the encoder width.

Heavy dependencies (sentence-transformers, transformers) are imported only when a function that
needs them runs.
"""
from .attributes import (DEFAULT_SCHEMA, AttributeCache, AttributeExtractor, ExtractionConfig,
                         ExtractionResult, attach_attributes, build_prompt, default_llm_path,
                         extract_json_object, parse_attributes, render_attributes)
from .reduction import LinearProjection, pca_reduce
from .text import (DEFAULT_TEXT_MODEL, PlotJoinReport, attach_ml1m_plots, attach_text_embeddings,
                   default_text_model_path, encode_texts, item_texts, join_ml1m_plots,
                   normalize_title, read_ml1m_extrainfos, texts_hash)

__all__ = [
    "DEFAULT_TEXT_MODEL",
    "default_text_model_path",
    "PlotJoinReport",
    "read_ml1m_extrainfos",
    "normalize_title",
    "join_ml1m_plots",
    "attach_ml1m_plots",
    "item_texts",
    "texts_hash",
    "encode_texts",
    "attach_text_embeddings",
    "DEFAULT_SCHEMA",
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
    "pca_reduce",
    "LinearProjection",
]
