"""The collaborative KG (HeteroData) builder, its views, sequences, splits and batching."""
from .errors import LINE_COLUMN, DataFormatError, DataWarning
from .graph import (INTERACTS, BuildReport, build_collaborative_kg, kg_edge_types,
                    sanitize_relation, warn_build_report)
from .ids import ItemIdMap, Recommendation, item_id_map
from .views import RelationalGraph, relational_view, sample_neighbors, sample_relation_tails
from .sequences import Sequences, user_sequences
from .splits import ColdItemSplit, LeaveOneOutSplit, cold_item_split, leave_one_out
from .catalogue import append_items, first_items, reorder_items
from .batching import (IGNORE_INDEX, SequenceBatch, append_mask_token, cloze_mask, mask_id,
                       pad_sequences, padding_id, random_cut, shifted_targets,
                       training_windows)
from .describe import describe, format_description
from .fingerprint import compare_fingerprints, graph_fingerprint

__all__ = [
    "LINE_COLUMN",
    "DataFormatError",
    "DataWarning",
    "INTERACTS",
    "BuildReport",
    "build_collaborative_kg",
    "kg_edge_types",
    "sanitize_relation",
    "warn_build_report",
    "ItemIdMap",
    "Recommendation",
    "item_id_map",
    "RelationalGraph",
    "relational_view",
    "sample_neighbors",
    "sample_relation_tails",
    "Sequences",
    "user_sequences",
    "LeaveOneOutSplit",
    "leave_one_out",
    "ColdItemSplit",
    "cold_item_split",
    "append_items",
    "first_items",
    "reorder_items",
    "IGNORE_INDEX",
    "SequenceBatch",
    "append_mask_token",
    "cloze_mask",
    "mask_id",
    "pad_sequences",
    "padding_id",
    "random_cut",
    "shifted_targets",
    "training_windows",
    "describe",
    "format_description",
    "graph_fingerprint",
    "compare_fingerprints",
]
