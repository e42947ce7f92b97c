import json

import pandas as pd
import pytest
import torch

from kgseqgraph.data import (LINE_COLUMN, DataFormatError, build_collaborative_kg, relational_view,
                             sanitize_relation)


def _inter():
    return pd.DataFrame({"user": ["u1", "u1", "u2", "u2", "u1"],
                         "item": ["a", "b", "b", "c", "c"],
                         "time": [10, 20, 5, 5, 15]})


def _triples():
    return pd.DataFrame({"head": ["m.a", "m.b", "m.x", "m.a", "m.a"],
                         "relation": ["film.film.genre", "film.film.genre", "film.genre.sub",
                                      "film.film.sequel", "film.film.genre"],
                         "tail": ["m.x", "m.x", "m.y", "m.b", "m.x"]})


def _links():
    return pd.DataFrame({"item": ["a", "b"], "entity": ["m.a", "m.b"]})


def test_sanitize_relation():
    assert sanitize_relation("film.film.genre") == "film_film_genre"
    assert sanitize_relation("http://rdf.freebase.com/ns/type.object.type") == "type_object_type"
    assert sanitize_relation("3d.thing") == "r_3d_thing"


def test_layout_and_counts():
    data = build_collaborative_kg(_inter(), _triples(), _links(), item_text={"a": "A film"})
    assert data["user"].num_nodes == 2 and data["item"].num_nodes == 3
    assert data["user"].raw_id == ["u1", "u2"] and data["item"].raw_id == ["a", "b", "c"]
    # linked KG heads became item nodes; m.x, m.y remain entities
    assert data["entity"].raw_id == ["m.x", "m.y"]
    ei = data["user", "interacts", "item"].edge_index
    # sorted by user then time: u1: a(10), c(15), b(20); u2: b(5), c(5) in input order
    assert ei.tolist() == [[0, 0, 0, 1, 1], [0, 2, 1, 1, 2]]
    assert data["user", "interacts", "item"].time.tolist() == [10, 15, 20, 5, 5]
    assert torch.equal(data["item", "rev_interacts", "user"].edge_index, ei.flip(0))
    g = data["item", "film_film_genre", "entity"].edge_index
    assert g.tolist() == [[0, 1], [0, 0]]  # duplicate (m.a genre m.x) dropped
    assert data["entity", "rev_film_film_genre", "item"].edge_index.tolist() == [[0, 0], [0, 1]]
    assert data["item", "film_film_sequel", "item"].edge_index.tolist() == [[0], [1]]
    assert data["entity", "film_genre_sub", "entity"].edge_index.tolist() == [[0], [1]]
    assert data.relation_names["film_film_genre"] == "film.film.genre"
    assert data.build_report["triples_duplicate_dropped"] == 1
    assert data.build_report["triples_item_item"] == 1
    assert data["item"].text == ["A film", "", ""]
    assert data.build_report["items_without_text"] == 2


def test_relational_view_is_sorted_by_head_with_items_first():
    data = build_collaborative_kg(_inter(), _triples(), _links())
    v = relational_view(data)
    assert v.node_offsets == {"item": 0, "entity": 3} and v.num_nodes == 5
    assert torch.all(v.head[1:] >= v.head[:-1])
    assert v.ptr[-1] == v.num_edges == 2 * 4  # 4 unique triples, both directions
    for h in range(v.num_nodes):
        assert torch.all(v.head[v.ptr[h]:v.ptr[h + 1]] == h)
    names = v.relation_names
    # each triple has its reverse
    fwd = {(int(h), names[int(r)], int(t)) for h, r, t in zip(v.head, v.relation, v.tail)}
    for h, r, t in list(fwd):
        if not r.startswith("rev_"):
            assert (t, "rev_" + r, h) in fwd
    with_users = relational_view(data, node_types=("item", "entity", "user"))
    assert "interacts" in with_users.relation_names and with_users.num_nodes == 7


def test_missing_column_names_source():
    bad = _inter().drop(columns=["time"])
    with pytest.raises(DataFormatError, match=r"my\.inter.*missing column.*time"):
        build_collaborative_kg(bad, sources={"interactions": "my.inter"})


def test_bad_time_names_line():
    inter = _inter()
    inter["time"] = inter["time"].astype(object)
    inter.loc[3, "time"] = "yesterday"
    inter[LINE_COLUMN] = range(2, 7)
    with pytest.raises(DataFormatError, match=r"x\.inter, line 5: .*'yesterday'"):
        build_collaborative_kg(inter, sources={"interactions": "x.inter"})


def test_unknown_link_item_is_an_error_or_counted():
    links = pd.DataFrame({"item": ["a", "zz"], "entity": ["m.a", "m.z"], LINE_COLUMN: [2, 3]})
    with pytest.raises(DataFormatError, match=r"f\.link, line 3: .*'zz'"):
        build_collaborative_kg(_inter(), _triples(), links, sources={"links": "f.link"})
    data = build_collaborative_kg(_inter(), _triples(), links, unknown_links="drop")
    assert data.build_report["links_unknown_item_dropped"] == 1


def test_empty_and_null_inputs():
    with pytest.raises(DataFormatError, match="empty"):
        build_collaborative_kg(_inter().iloc[:0])
    inter = _inter()
    inter.loc[2, "item"] = None
    with pytest.raises(DataFormatError, match=r"row 2.*empty value in column 'item'"):
        build_collaborative_kg(inter)


def test_ambiguous_entity_link_counted():
    links = pd.DataFrame({"item": ["a", "b"], "entity": ["m.a", "m.a"]})
    data = build_collaborative_kg(_inter(), _triples(), links)
    assert data.build_report["links_entity_to_several_items"] == 1


def test_duplicate_interactions_counted():
    inter = pd.concat([_inter(), _inter().iloc[:1]])
    data = build_collaborative_kg(inter)
    assert data.build_report["interactions_duplicate_kept"] == 1
    data = build_collaborative_kg(inter, drop_duplicate_interactions=True)
    assert data.build_report["interactions_duplicate_dropped"] == 1
    assert data["user", "interacts", "item"].edge_index.size(1) == 5


def test_datetime_time_and_hashable_ids():
    inter = pd.DataFrame({"user": [(1, 2), (1, 2), 7], "item": [3.5, 4.5, 3.5],
                          "time": pd.to_datetime(["2020-01-02", "2020-01-01", "2020-01-03"])})
    data = build_collaborative_kg(inter)
    assert data["user"].raw_id == [(1, 2), 7]
    # the user's sequence is time-ordered: 4.5 (Jan 1) before 3.5 (Jan 2)
    assert data["user", "interacts", "item"].edge_index[1].tolist() == [1, 0, 0]
    assert data["user", "interacts", "item"].time[0].item() == 1577836800


# ---------------------------------------------------------------- issue 16: no silent data loss
def test_fractional_times_are_kept_not_rounded():
    inter = pd.DataFrame({"user": ["u"] * 3, "item": ["a", "b", "c"], "time": [0.3, 0.1, 0.2]})
    ev = build_collaborative_kg(inter)["user", "interacts", "item"]
    assert ev.time.dtype == torch.float64 and ev.time.tolist() == [0.1, 0.2, 0.3]
    assert ev.edge_index[1].tolist() == [1, 2, 0]  # chronology, not row order
    # whole numbers (e.g. RecBole's timestamp:float columns) stay int64, as before
    whole = inter.assign(time=[3.0, 1.0, 2.0])
    assert build_collaborative_kg(whole)["user", "interacts", "item"].time.dtype == torch.int64


def test_timezone_aware_and_subsecond_datetimes():
    t = pd.to_datetime(["2020-01-01 01:00", "2020-01-01 00:30"]).tz_localize("Europe/Paris")
    inter = pd.DataFrame({"user": ["u", "u"], "item": ["a", "b"], "time": t})
    ev = build_collaborative_kg(inter)["user", "interacts", "item"]
    # 00:30 and 01:00 in Paris are 23:30 and 00:00 UTC
    assert ev.time.tolist() == [1577835000, 1577836800] and ev.edge_index[1].tolist() == [1, 0]
    # datetimes in several zones (an object column)
    mixed = pd.Series([pd.Timestamp("2020-01-01 00:00", tz="UTC"),
                       pd.Timestamp("2020-01-01 00:30", tz="Asia/Tokyo")], dtype=object)
    ev = build_collaborative_kg(inter.assign(time=mixed))["user", "interacts", "item"]
    assert ev.edge_index[1].tolist() == [1, 0]  # Tokyo 00:30 is the day before in UTC
    # a nanosecond apart: float64 seconds cannot tell them apart, the order still can
    ns = pd.to_datetime([1_600_000_000_000_000_001, 1_600_000_000_000_000_000])
    ev = build_collaborative_kg(inter.assign(time=ns))["user", "interacts", "item"]
    assert ev.time.dtype == torch.float64 and ev.edge_index[1].tolist() == [1, 0]


def test_duplicate_interactions_are_reported_visibly():
    from kgseqgraph.data import DataWarning

    inter = pd.concat([_inter(), _inter().iloc[:1]])
    with pytest.warns(DataWarning, match=r"1 interaction rows repeating .* kept"):
        data = build_collaborative_kg(inter, sources={"interactions": "my.inter"})
    assert data.build_report["interactions_duplicate_kept"] == 1
    # also when the repeats are not adjacent after sorting (same user and time, other items)
    inter = pd.DataFrame({"user": ["u"] * 3, "item": ["a", "b", "a"], "time": [1, 1, 1]})
    with pytest.warns(DataWarning):
        assert build_collaborative_kg(inter).build_report["interactions_duplicate_kept"] == 1


def test_link_to_an_entity_absent_from_the_kg_is_reported():
    from kgseqgraph.data import DataWarning

    links = pd.DataFrame({"item": ["a", "b", "c"], "entity": ["m.a", "m.b", "m.nowhere"]})
    with pytest.warns(DataWarning, match=r"1 links to an entity that no triple mentions"):
        data = build_collaborative_kg(_inter(), _triples(), links)
    assert data.build_report["links_entity_not_in_kg"] == 1


def test_empty_relation_name_names_the_row():
    triples = _triples()
    triples.loc[2, "relation"] = "  "
    triples[LINE_COLUMN] = range(2, 7)
    with pytest.raises(DataFormatError, match=r"x\.kg, line 4: relation name '  ' has no"):
        build_collaborative_kg(_inter(), triples, _links(), sources={"triples": "x.kg"})
    triples = _triples()
    triples.loc[0, "relation"] = "rev_genre"
    with pytest.raises(DataFormatError, match=r"triples \(row 0\): relation 'rev_genre' uses a"):
        build_collaborative_kg(_inter(), triples, _links())


# ---------------------------------------------------------------- raw ids (issue 16, item 4)
def test_item_id_map_translates_raw_ids_and_titles():
    from kgseqgraph.data import ItemIdMap, Sequences, item_id_map

    data = build_collaborative_kg(_inter(), _triples(), _links())
    ids = item_id_map(data)
    assert ids.raw_ids == ["a", "b", "c"] and ids.titles is None and ids.title(0) is None
    assert ids.encode(["c", "a"]) == [2, 0] and ids.decode(torch.tensor([1, 2])) == ["b", "c"]
    with pytest.raises(KeyError, match=r"unknown item id\(s\) \['zz'\].*3 items"):
        ids.encode(["a", "zz"])
    data["item"].title = ["Alpha", "", "Gamma"]
    ids = ItemIdMap.from_graph(data)
    assert ids.title(0) == "Alpha" and ids.title(1) is None
    assert ItemIdMap.from_dict(json.loads(json.dumps(ids.to_dict()))).raw_ids == ids.raw_ids
    # integer raw ids also match their string form (ids typed on a command line)
    nums = ItemIdMap([10, 20, 30])
    assert nums.encode(["30", 10]) == [2, 0]

    # a real recommender on node indices: popularity (c: 2 interactions, b: 2, a: 1)
    from kgseqgraph.models import Popularity, PopularityConfig

    pop = Popularity(PopularityConfig(num_items=3)).fit(
        Sequences.from_lists([[0, 1, 2], [1, 2]], 3))
    recs = ids.recommend(pop, [["b"]], k=2)
    assert [(r.rank, r.raw_id, r.title) for r in recs[0]] == [(1, "c", "Gamma"),
                                                              (2, "a", "Alpha")]
    assert recs[0][0].score > recs[0][1].score


def test_edge_columns_follow_their_edges_through_the_sort_and_the_deduplication():
    inter = pd.DataFrame({"user": ["a", "b", "a", "a", "b"], "item": [1, 2, 3, 1, 2],
                          "time": [5, 1, 2, 5, 9], "flag": [True, False, True, False, True],
                          "w": [0.5, 1.5, 2.5, 3.5, 4.5]})
    data = build_collaborative_kg(inter, edge_columns=["flag", "w"],
                                  drop_duplicate_interactions=True)
    store = data["user", "interacts", "item"]
    # a: (3, t2, w 2.5), (1, t5, w 0.5) [its repeat (1, t5, w 3.5) dropped]; b: (2, t1), (2, t9)
    assert store.edge_index.tolist() == [[0, 0, 1, 1], [2, 0, 1, 1]]
    assert store.w.tolist() == [2.5, 0.5, 1.5, 4.5]
    assert store.flag.tolist() == [True, True, False, True]
    assert torch.equal(data["item", "rev_interacts", "user"].w, store.w)
    with pytest.raises(DataFormatError, match="missing column 'nope'"):
        build_collaborative_kg(inter, edge_columns=["nope"])
    with pytest.raises(DataFormatError, match="numeric or boolean"):
        build_collaborative_kg(inter.assign(s=["x"] * 5), edge_columns=["s"])
