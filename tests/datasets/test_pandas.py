"""from_pandas: a thin wrapper of build_collaborative_kg."""
from __future__ import annotations

import pandas as pd
import pytest

from kgseqgraph.data import DataFormatError
from kgseqgraph.datasets import from_pandas

INTERACTS = ("user", "interacts", "item")


def test_from_pandas_exact():
    inter = pd.DataFrame({"user": ["u1", "u2", "u1"], "item": ["a", "b", "b"],
                          "time": [5, 1, 2], "rating": [1.0, 2.0, 3.0]})
    kg = pd.DataFrame({"head": ["m.a", "m.g"], "relation": ["film.film.genre", "x.related"],
                       "tail": ["m.g", "m.b"]})
    links = pd.DataFrame({"item": ["a", "b"], "entity": ["m.a", "m.b"]})
    d = from_pandas(inter, kg, links, {"a": "A film", "b": "B film"})
    assert d["user"].raw_id == ["u1", "u2"] and d["item"].raw_id == ["a", "b"]
    # u1: b at 2, a at 5
    assert d[INTERACTS].edge_index.tolist() == [[0, 0, 1], [1, 0, 1]]
    assert d[INTERACTS].rating.tolist() == [3.0, 1.0, 2.0]
    assert d["item", "film_film_genre", "entity"].edge_index.tolist() == [[0], [0]]
    assert d["entity", "x_related", "item"].edge_index.tolist() == [[0], [1]]
    assert d["item"].text == ["A film", "B film"]


def test_order_as_time():
    inter = pd.DataFrame({"user": [1, 2, 1, 1], "item": [10, 10, 30, 20]})
    d = from_pandas(inter, order_as_time=True)
    assert d[INTERACTS].time.tolist() == [0, 1, 2, 0]
    assert [d["item"].raw_id[i] for i in d[INTERACTS].edge_index[1].tolist()] == [10, 30, 20, 10]
    with pytest.raises(ValueError, match="already has a 'time' column"):
        from_pandas(inter.assign(time=1), order_as_time=True)


def test_errors_pass_through():
    with pytest.raises(DataFormatError, match="missing column"):
        from_pandas(pd.DataFrame({"user": [1], "item": [2]}))
    inter = pd.DataFrame({"user": [1], "item": [2], "time": [0]})
    with pytest.raises(DataFormatError, match="links item"):
        from_pandas(inter, links=pd.DataFrame({"item": [3], "entity": ["m.x"]}))
    d = from_pandas(inter, links=pd.DataFrame({"item": [3], "entity": ["m.x"]}),
                    unknown_links="drop")
    assert d.build_report["links_unknown_item_dropped"] == 1
