"""Suite-wide settings: one torch thread.

The suite runs many small models; on a 2-core machine torch's intra-op threads spin and
contend (tiny ops were measured 10-50x slower with 2 threads under load), and one thread also
makes results independent of the machine's core count.
"""
import pandas as pd
import pytest
import torch

from kgseqgraph.data import build_collaborative_kg
from kgseqgraph.testing import require_data

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Every test starts on one thread, whatever an earlier test (or a ``TrainConfig`` with
    ``num_threads``) set."""
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def ml100k_graph():
    """The ML-100K collaborative KG (Freebase triples), built once from the shared raw files."""
    kg_path = require_data("ml-100k/ml-100k.kg")
    d = kg_path.parent
    inter = pd.read_csv(d / "ml-100k.inter", sep="\t", header=0,
                        names=["user", "item", "rating", "time"], dtype={"user": str, "item": str})
    kg = pd.read_csv(kg_path, sep="\t", header=0, names=["head", "relation", "tail"], dtype=str)
    link = pd.read_csv(d / "ml-100k.link", sep="\t", header=0, names=["item", "entity"], dtype=str)
    return build_collaborative_kg(inter, kg, link, items=sorted(inter["item"].unique(), key=int))
