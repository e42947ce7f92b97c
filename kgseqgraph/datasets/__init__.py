"""Dataset loaders returning the collaborative KG (:class:`~torch_geometric.data.HeteroData`).

One module a source format: :class:`MovieLens100K` (RecBole atomic files + Freebase KG),
:class:`S3Rec` (S3-Rec sequences + item attributes), :class:`KGATDataset` (KGAT
train/test + ``kg_final.txt``), :func:`from_pandas` (your own frames) and :class:`Synthetic`
(generated, with a planted KG signal). Raw files live in ``<root>/raw``; the processed graph is
cached in ``<root>/processed`` and rebuilt when the raw files change.
"""
from .base import KGDataset, MissingRawFilesError, RawFile
from .download import DownloadError, download_url, sha256sum
from .kgat import KGATDataset
from .movielens import MovieLens100K
from .pandas import from_pandas
from .s3rec import S3Rec
from .synthetic import Synthetic, SyntheticConfig, make_synthetic

__all__ = [
    "KGDataset",
    "RawFile",
    "MissingRawFilesError",
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
