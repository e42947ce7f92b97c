"""The accuracy benchmark's settings: budgets, the tuning grid, model option sets, variants.

This module is the one place to change them; ``benchmarks/accuracy.py`` and
``benchmarks/make_tables.py`` read everything from here, and every result JSON records the
resolved values (``config``, ``budget``, ``grid``), so a changed setting never goes unnoticed.

How a run's options are put together (later entries win):

* model options: ``max_len`` of the dataset → :data:`MODELS` [model] →
  :data:`DATASETS` [dataset]``["model_options"]`` [model] → the grid point (``dropout`` is
  mapped onto the encoder's dropout fields by :data:`DROPOUT_FIELDS`; other non-training keys
  are model options) → :data:`VARIANTS` [model][variant] → ``--set KEY=JSON``;
* training options (:class:`~kgseqgraph.training.TrainConfig` fields): :data:`PROTOCOL_TRAIN`
  → :data:`DATASETS` [dataset]``["budget"]`` → the grid point's training keys (``lr``,
  ``batch_size``, ``weight_decay``…) → ``--epochs`` / ``--patience`` → ``--train KEY=JSON``.

Every model of a dataset gets the same :data:`GRID` (or the dataset's own ``"grid"``) and the
same budget; the point with the best validation NDCG@10 on seed 0 is used for every seed and
every variant of that model.
"""
from __future__ import annotations

from typing import Any

#: Where result JSONs live (relative to the repository root).
RESULTS_DIR = "benchmarks/results/accuracy"

#: The files ``make_tables.py`` rewrites from the results (relative to the repository root):
#: markdown files with generated blocks, and the popularity-bucket figure.
GENERATED_DOCS = ("docs/results.md", "README.md", "docs/explain.md")
BUCKETS_PNG = "docs/popularity_buckets.png"

#: Seeds of the final runs (seed 0 also runs the tuning grid).
SEEDS = (0, 1, 2)

#: The evaluation protocol, identical for every run (TrainConfig fields).
PROTOCOL_TRAIN: dict[str, Any] = {
    "ks": [5, 10, 20],
    "valid_metric": "NDCG@10",
    "exclude_history": True,
    "ties": "pessimistic",
    "sampled_negatives": 100,
    "sampled_strategy": "uniform",
    "eval_every": 1,
}

#: What ``PROTOCOL_TRAIN`` means, written into every JSON.
PROTOCOL_TEXT: dict[str, str] = {
    "split": "chronological leave-one-out (last item test, second last valid, users with "
             ">= 3 interactions evaluated)",
    "ranking": "full ranking over the whole catalogue",
    "history": "each user's input items excluded from its ranking (the target never)",
    "ties": "pessimistic (an item scored equal to the target ranks above it)",
    "selection": "weights of the epoch with the best validation NDCG@10; test evaluated once "
                 "with them; grid point chosen by validation NDCG@10 on seed 0, never by test",
    "sampled": "sampled-100/... keys: the target against 100 uniform negatives outside the "
               "user's history, drawn once per stage from the seed (a labelled extra, not the "
               "protocol)",
    "popularity_buckets": "test users split into quintiles of their target's training "
                          "frequency (edges: quantiles of those counts over the test users)",
}

#: The tuning grid shared by every model of a dataset (unless the dataset sets ``"grid"``).
#: Keys that are TrainConfig fields are training options; ``dropout`` goes to the encoder's
#: dropout fields (:data:`DROPOUT_FIELDS`); any other key is a model option.
GRID: dict[str, list[Any]] = {
    "lr": [1e-3, 2e-3],
    "dropout": [0.2, 0.5],
}

#: Per dataset: loader keywords, ``max_len``, the training budget, and optionally its own
#: ``grid`` and per-model option overrides (``model_options``).
DATASETS: dict[str, dict[str, Any]] = {
    "ml-100k": {
        "description": "MovieLens-100K with its Freebase KG (RecBole atomic files, KB4Rec links)",
        "load": {},
        "max_len": 50,
        "budget": {"epochs": 60, "patience": 10, "batch_size": 64},
    },
    "yelp": {
        "description": "Yelp (S3-Rec files), item attributes as the KG (has_attribute)",
        "load": {},
        "max_len": 50,
        "budget": {"epochs": 40, "patience": 8, "batch_size": 256},
    },
    "beauty": {
        "description": "Amazon Beauty (S3-Rec files), item attributes as the KG (has_attribute)",
        "load": {},
        "max_len": 50,
        "budget": {"epochs": 60, "patience": 10, "batch_size": 256},
    },
    # a tiny graph for the tests and smoke runs (never in the docs tables)
    "synthetic": {
        "description": "embedded synthetic dataset (tests and smoke runs only)",
        "load": {"num_users": 200, "num_items": 300, "num_entities": 20, "seq_len": 12},
        "max_len": 10,
        "budget": {"epochs": 2, "patience": None, "batch_size": 64},
        "grid": {"lr": [1e-3, 3e-3], "dropout": [0.2]},
        "model_options": {
            "sasrec": {"hidden_size": 16, "encoder_kwargs": {"num_layers": 1, "num_heads": 1}},
            "bert4rec": {"hidden_size": 16, "encoder_kwargs": {"num_layers": 1, "num_heads": 1}},
            "gru4rec": {"hidden_size": 16},
            "katrec": {"kg_dim": 8, "relation_dim": None, "kg_hidden": [8],
                       "pretrain_bprmf_epochs": 1, "kge_batch_size": 64,
                       "encoder_kwargs": {"num_layers": 1, "num_heads": 1, "inner_size": 32}},
            "kg-sasrec": {"kg_dim": 8, "relation_dim": None, "kg_hidden": [8],
                          "pretrain_bprmf_epochs": 1, "kge_batch_size": 64,
                          "encoder_kwargs": {"num_layers": 1, "num_heads": 1}},
            "kg-gru4rec": {"kg_dim": 8, "relation_dim": None, "kg_hidden": [8],
                           "pretrain_bprmf_epochs": 1, "kge_batch_size": 64},
        },
    },
}

#: Datasets in the order the tables list them (``synthetic`` is never tabulated).
TABLE_DATASETS = ("ml-100k", "yelp", "beauty")

_TRANSFORMER = {"num_layers": 2, "num_heads": 2}
#: KATRec's KG part with its paper's proportions (TransR entity space, relation space = half of
#: it, propagation widths halving, message dropout 0.2, L2 1e-4) at the ID models' width: TransR
#: 32, relation space 16, propagation 16/8/8, so every encoder of the table is 64 wide
#: (KATRecConfig.paper() is the same at 64 + 32/16/16 = 128: the ``paperdims`` variant).
_KG_PART = {"kg_dim": 32, "relation_dim": 16, "kg_hidden": [16, 8, 8], "kg_dropout": 0.2,
            "kge_reg": 1e-4, "bprmf_reg": 1e-5, "kge_batch_size": 1024}

#: Base option set per model (before the dataset's overrides, the grid point and variants).
#: KG models derive their width from kg_dim + sum(kg_hidden): never give them hidden_size.
MODELS: dict[str, dict[str, Any]] = {
    "pop": {},
    "sasrec": {"hidden_size": 64, "encoder_kwargs": dict(_TRANSFORMER)},
    # BERT4Rec as its paper: the prediction head (dense + GELU + layer norm, per-item bias)
    "bert4rec": {"hidden_size": 64, "prediction_head": True,
                 "encoder_kwargs": dict(_TRANSFORMER)},
    "gru4rec": {"hidden_size": 64, "encoder_kwargs": {"num_layers": 1}},
    # paper wiring (BERT4Rec encoder reading e*, output fusion, GELU head, cloze + TransR,
    # BPRMF pre-training); the same masking (0.2) and FFN (4 x 64) as BERT4Rec
    "katrec": {**_KG_PART, "mask_prob": 0.2,
               "encoder_kwargs": {**_TRANSFORMER, "initializer_range": 0.02}},
    "kg-sasrec": {**_KG_PART, "encoder_kwargs": dict(_TRANSFORMER)},
    "kg-gru4rec": {**_KG_PART, "encoder_kwargs": {"num_layers": 1}},
    # KIRec-text: the item's text (title, year, genres, ML-1M plot/director/actors) through
    # all-MiniLM-L6-v2, PCA to 64, summed with the ID embedding
    "kirec": {"hidden_size": 64, "features": ["x_text"], "reduction": "pca", "fusion": "sum",
              "encoder_kwargs": dict(_TRANSFORMER)},
}

#: Display names in tables.
MODEL_LABELS: dict[str, str] = {
    "pop": "popularity", "sasrec": "SASRec", "bert4rec": "BERT4Rec", "gru4rec": "GRU4Rec",
    "katrec": "KATRec", "kg-sasrec": "KG-SASRec", "kg-gru4rec": "KG-GRU4Rec",
    "kirec": "KIRec-text",
}

#: Models that do not train (no grid, no epochs).
UNTRAINED = frozenset({"pop"})

#: Encoder dropout fields a grid ``dropout`` value is written to, by encoder name.
DROPOUT_FIELDS: dict[str, tuple[str, ...]] = {
    "sasrec": ("hidden_dropout", "attn_dropout"),
    "bert4rec": ("hidden_dropout", "attn_dropout"),
    "gru4rec": ("dropout",),
}

#: Named option sets (``--variant NAME``): a variant runs with its base model's chosen grid point.
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "katrec": {
        "noatten": {"use_attention": False},
        "level1": {"kg_hidden": [32]},  # one layer: 32 + 32, the same width
        # the paper's dimensions: TransR 64, relation space 32, propagation 32/16/16 (width 128)
        "paperdims": {"kg_dim": 64, "relation_dim": 32, "kg_hidden": [32, 16, 16]},
        "concat": {"output_fusion": False},
        "connection": {"connection": False},
        "nopretrain": {"pretrain_bprmf_epochs": 0},
        # what the literature tries before giving up on a missed target (not the paper's)
        "ls0.1": {"label_smoothing": 0.1},
    },
    "bert4rec": {"ls0.1": {"label_smoothing": 0.1}},
}

#: What the literature tries before giving up on a missed target (``--plan tries``), run on
#: both sides of the KATRec-vs-BERT4Rec target alike: named option sets of :data:`VARIANTS`
#: (``MODEL_TRIES``) and training-side tries, ad-hoc variants run as ``--variant NAME`` plus
#: these ``accuracy.py`` arguments (``TRAINING_TRIES``). ``make_tables`` lists them
#: (``variants:<dataset>`` blocks) against each model's tuned runs of the same seeds.
TRY_MODELS = ("bert4rec", "katrec")
MODEL_TRIES = ("ls0.1",)
TRAINING_TRIES: dict[str, list[str]] = {
    "warmup": ["--train", "warmup_ratio=0.1"],  # linear warm-up over 10 % of the steps
}

#: What each sweep runs: models per dataset (final runs: every seed of :data:`SEEDS`).
SWEEP: dict[str, list[str]] = {
    "ml-100k": ["pop", "sasrec", "bert4rec", "gru4rec", "katrec", "kg-sasrec", "kirec"],
    "yelp": ["pop", "sasrec", "bert4rec", "gru4rec", "katrec", "kg-sasrec"],
    "beauty": ["pop", "sasrec", "bert4rec", "gru4rec", "katrec", "kg-sasrec"],
}

#: The paper's ablations of KATRec (a subset of its variants).
KATREC_ABLATIONS = ("noatten", "level1", "concat", "connection", "nopretrain")

#: Ablation tables: dataset → base model (its ablation variants, every seed).
ABLATIONS: dict[str, str] = {"yelp": "katrec", "ml-100k": "katrec"}


def ablation_variants(model: str) -> tuple[str, ...]:
    """The variants of ``model`` its ablation table lists (every other variant is an extra)."""
    return KATREC_ABLATIONS if model == "katrec" else tuple(VARIANTS.get(model, {}))

#: Models that read the knowledge graph or item knowledge (the "knowledge models" of the targets).
KNOWLEDGE_MODELS = ("katrec", "kg-sasrec", "kg-gru4rec", "kirec")

#: The accuracy targets (test NDCG@10, mean over seeds, full ranking): ``(name, model, reference,
#: gain, datasets)`` — ``model`` ≥ ``reference`` × (1 + gain) on at least ``datasets`` of the
#: tabulated datasets (``None``: all of them). ``model`` ``"best-knowledge"`` is the knowledge
#: model with the best mean *validation* NDCG@10 on the dataset (chosen on validation, never test).
TARGETS: tuple[tuple[str, str, str, float, int | None], ...] = (
    ("KATRec ≥ BERT4Rec + 3 % on every dataset", "katrec", "bert4rec", 0.03, None),
    ("best knowledge model ≥ SASRec + 3 % on at least two datasets", "best-knowledge", "sasrec",
     0.03, 2),
)

#: Models drawn in docs/popularity_buckets.png (SASRec against the knowledge models).
BUCKET_PLOT_MODELS = ("sasrec", "katrec", "kg-sasrec", "kg-gru4rec", "kirec")

#: A run is "not converged" when its best epoch lies in the last 20 % of its budget (and it did
#: not stop early).
CONVERGED_FRACTION = 0.8

#: Number of popularity buckets (quintiles).
NUM_BUCKETS = 5


def model_order(name: str) -> tuple[int, str]:
    """Sort key of model names: :data:`MODELS` order, then alphabetical."""
    keys = list(MODELS)
    return (keys.index(name), name) if name in keys else (len(keys), name)
