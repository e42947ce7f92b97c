"""Shared fixtures of the KG-layer tests."""
import pandas as pd
import pytest

from kgseqgraph.data import build_collaborative_kg
from kgseqgraph.testing import require_data


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
