"""Dataset loaders returning the collaborative KG (:class:`~torch_geometric.data.HeteroData`).

One module a source format: :class:`MovieLens100K` (RecBole atomic files + Freebase KG),
:class:`S3Rec` (S3-Rec sequences + item attributes), :class:`KGATDataset` (KGAT
train/test + ``kg_final.txt``), :func:`from_pandas` (your own frames) and :class:`Synthetic`
(generated, with a planted KG signal); :func:`load_dataset` loads any of them by name. Raw files
live in ``<root>/raw`` or directly in ``<root>``; the processed graph is cached (in
``<root>/processed``, or under ``$KGSEQGRAPH_CACHE`` for a folder holding the files directly),
rebuilt when the raw files change, and checked against the dataset card.
"""
from .base import (DataIntegrityError, KGDataset, MissingRawFilesError, ModifiedRawFileWarning,
                   RawFile)
from .download import DownloadError, download_url, sha256sum
from .kgat import KGATDataset
from .movielens import MovieLens100K
from .pandas import from_pandas
from .registry import DATASETS, dataset_names, load_dataset
from .s3rec import S3Rec
from .synthetic import Synthetic, SyntheticConfig, make_synthetic

__all__ = [
    "KGDataset",
    "RawFile",
    "MissingRawFilesError",
    "DataIntegrityError",
    "ModifiedRawFileWarning",
    "load_dataset",
    "dataset_names",
    "DATASETS",
    "DownloadError",
    "download_url",
    "sha256sum",
    "MovieLens100K",
    "S3Rec",
    "KGATDataset",
    "from_pandas",
    "Synthetic",
    "SyntheticConfig",
    "make_synthetic",
]
