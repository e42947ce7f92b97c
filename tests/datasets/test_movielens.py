"""MovieLens100K: the real RecBole files (counts from shared/data/MANIFEST.md), small
hand-written files in the same format, and malformed input."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from kgseqgraph.data import DataFormatError, sanitize_relation
from kgseqgraph.datasets import MissingRawFilesError, MovieLens100K
from kgseqgraph.testing import require_data

FILES = ["ml-100k.inter", "ml-100k.item", "ml-100k.user", "ml-100k.kg", "ml-100k.link"]
INTERACTS = ("user", "interacts", "item")


# ---------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def real(tmp_path_factory):
    src = require_data(*[f"ml-100k/{f}" for f in FILES]).parent
    root = tmp_path_factory.mktemp("ml100k")
    (root / "raw").mkdir()
    for f in FILES:
        shutil.copy(src / f, root / "raw" / f)
    return MovieLens100K(root, download=False)


def _tsv_rows(path: Path) -> list[list[str]]:
    return [ln.split("\t") for ln in path.read_text(encoding="utf-8").splitlines()[1:]]


@pytest.mark.realdata
def test_real_counts(real):
    d = real.data
    assert d["user"].num_nodes == 943
    assert d["item"].num_nodes == 1682
    assert d[INTERACTS].num_edges == 100_000
    assert d["item", "rev_interacts", "user"].num_edges == 100_000
    assert len(d.relation_names) == 24
    rels = {et[1] for et in d.edge_types if "interacts" not in et[1]}
    forward = {r for r in rels if not r.startswith("rev_")}
    assert len(forward) == 24 and {f"rev_{r}" for r in forward} <= rels
    assert len(rels) >= 24 + 24
    kg_edges = sum(d[et].num_edges for et in d.edge_types
                   if "interacts" not in et[1] and not et[1].startswith("rev_"))
    assert kg_edges == 91_631 == d.build_report["triples"]
    linked = sum(1 for e in d["item"].entity_raw_id if e)
    assert linked == 1598 == d.build_report["linked_items"]
    # 34,628 KG entities, of which the 1,598 linked mids are item nodes
    assert d["entity"].num_nodes == 34_628 - 1598
    assert d["item"].raw_id == list(range(1, 1683)) and d["user"].raw_id == list(range(1, 944))
    assert d["user"].age.shape == (943,) and len(d["user"].occupation) == 943


@pytest.mark.realdata
def test_real_ids_line_up(real):
    d, raw = real.data, real.raw_dir
    # first interaction line "196 242 3 881250949"
    u, i, r, t = _tsv_rows(raw / "ml-100k.inter")[0]
    ei, time, rating = d[INTERACTS].edge_index, d[INTERACTS].time, d[INTERACTS].rating
    hit = (ei[0] == d["user"].raw_id.index(int(u))) & (ei[1] == d["item"].raw_id.index(int(i))) \
        & (time == int(float(t)))
    assert int(hit.sum()) == 1 and float(rating[hit]) == float(r)
    # item 1 is Toy Story; its Freebase mid comes from the .link file
    toy = d["item"].raw_id.index(1)
    assert toy == 0
    assert d["item"].text[toy] == "Toy Story (1995). Genres: Animation, Children's, Comedy"
    assert d["item"].title[toy] == "Toy Story" and int(d["item"].year[toy]) == 1995
    mid = dict((int(a), b) for a, b in _tsv_rows(raw / "ml-100k.link"))[1]
    assert d["item"].entity_raw_id[toy] == mid
    # every .kg triple whose head is Toy Story's mid starts at item node 0
    triples = [row for row in _tsv_rows(raw / "ml-100k.kg") if row[0] == mid]
    assert triples
    ent = {e: k for k, e in enumerate(d["entity"].raw_id)}
    item_of_mid = {e: k for k, e in enumerate(d["item"].entity_raw_id) if e}
    for h, rel, tail in triples:
        s = sanitize_relation(rel)
        assert d.relation_names[s] == rel
        if tail in item_of_mid:
            e = d["item", s, "item"].edge_index
            target = item_of_mid[tail]
        else:
            e = d["item", s, "entity"].edge_index
            target = ent[tail]
        assert bool(((e[0] == toy) & (e[1] == target)).any()), (rel, tail)


@pytest.mark.realdata
def test_real_cache_reused(real, monkeypatch):
    def boom(self):
        raise AssertionError("process() must not run when the cache is current")

    monkeypatch.setattr(MovieLens100K, "process", boom)
    again = MovieLens100K(real.root, download=False)
    assert again.from_cache
    assert torch.equal(again.data[INTERACTS].edge_index, real.data[INTERACTS].edge_index)
    assert again.data["item"].text == real.data["item"].text


# ---------------------------------------------------------------- small files, same format
INTER = ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
         "7\t20\t4\t300\n7\t10\t5\t100\n3\t10\t2\t200\n")
ITEM = ("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "10\tToy Story\t1995\tAnimation Children's Comedy\n20\tunkonwn\tunkonwn\tunknown\n"
        "30\tNever Rated\t1990\tDrama\n")
KG = ("head_id:token\trelation_id:token\ttail_id:token\n"
      "m.toy\tfilm.film.genre\tm.anim\nm.gen\tfilm.director.film\tm.toy\nm.toy\tfilm.film.sequel\tm.two\n")
LINK = "item_id:token\tentity_id:token\n10\tm.toy\n20\tm.two\n"
USER = "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n3\t30\tF\tartist\t12345\n"


# Hand-written files under the published names are, to the loader, modified copies of the
# published files (other sha256, other counts): the tests load them with verify=False.
def write_small(root: Path, **override: str) -> Path:
    texts = {"ml-100k.inter": INTER, "ml-100k.item": ITEM, "ml-100k.kg": KG,
             "ml-100k.link": LINK, "ml-100k.user": USER}
    texts.update({f"ml-100k.{k}": v for k, v in override.items()})
    (root / "raw").mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        if text is not None:
            (root / "raw" / name).write_text(text)
    return root


def test_small_graph_exact(tmp_path):
    d = MovieLens100K(write_small(tmp_path), download=False, verify=False).data
    assert d["user"].raw_id == [3, 7] and d["item"].raw_id == [10, 20, 30]
    # sorted by user node, then time: (3,10,200), (7,10,100), (7,20,300)
    assert d[INTERACTS].edge_index.tolist() == [[0, 1, 1], [0, 0, 1]]
    assert d[INTERACTS].time.tolist() == [200, 100, 300]
    assert d[INTERACTS].rating.tolist() == [2.0, 5.0, 4.0]
    assert d["item"].text == ["Toy Story (1995). Genres: Animation, Children's, Comedy",
                              "unkonwn", "Never Rated (1990). Genres: Drama"]
    assert d["item"].year.tolist() == [1995, -1, 1990]
    assert d["item"].entity_raw_id == ["m.toy", "m.two", ""]
    assert d["entity"].raw_id == ["m.anim", "m.gen"]
    assert d["item", "film_film_genre", "entity"].edge_index.tolist() == [[0], [0]]
    assert d["entity", "film_director_film", "item"].edge_index.tolist() == [[1], [0]]
    assert d["item", "film_film_sequel", "item"].edge_index.tolist() == [[0], [1]]
    assert d["item", "rev_film_film_sequel", "item"].edge_index.tolist() == [[1], [0]]
    # user features: user 3 known, user 7 not
    assert d["user"].age.tolist() == [30, -1] and d["user"].gender == ["F", ""]
    assert d.build_report["users_without_features"] == 1


def test_small_without_kg_or_user_file(tmp_path):
    write_small(tmp_path, kg=None, link=None, user=None)
    d = MovieLens100K(tmp_path, kg=False, download=False, verify=False).data
    assert d["entity"].num_nodes == 0 and d.relation_names == {}
    assert not hasattr(d["user"], "age")
    assert d[INTERACTS].num_edges == 3


@pytest.mark.parametrize("file,text,where,what", [
    ("inter", INTER + "9\t10\t3\n", "ml-100k.inter, line 5", "truncated line"),
    ("inter", INTER.replace("3\t10\t2", "3\tabc\t2"), "ml-100k.inter, line 4",
     "item_id must be an integer, got 'abc'"),
    ("inter", INTER.replace("4\t300", "4\tsoon"), "ml-100k.inter, line 2",
     "timestamp must be a finite number"),
    ("link", LINK + "99\tm.nope\n", "ml-100k.link, line 4", "links item 99 is not an item"),
    ("kg", KG + "m.x\tfilm.film.genre\n", "ml-100k.kg, line 5", "truncated line"),
    ("inter", "", "ml-100k.inter", "file is empty"),
    ("item", "item_id:token\tmovie_title:token_seq\n", "ml-100k.item", "no data lines"),
    ("inter", INTER.replace("item_id:token", "movie:token"), "ml-100k.inter, line 1",
     "header lacks column(s) ['item_id']"),
    ("link", LINK.replace("entity_id:token", "freebase:token"), "ml-100k.link, line 1",
     "header lacks column(s) ['entity_id']"),
    ("item", ITEM + "10\tDup\t1999\tDrama\n", "ml-100k.item, line 5", "item_id 10 listed twice"),
])
def test_malformed_input_names_file_and_line(tmp_path, file, text, where, what):
    write_small(tmp_path, **{file: text})
    with pytest.raises(DataFormatError) as err:
        MovieLens100K(tmp_path, download=False, verify=False)
    msg = str(err.value)
    assert where in msg and what in msg, msg
    assert err.value.source.endswith(f"ml-100k.{file}")


def test_missing_files_offline_error(tmp_path):
    """An empty root: the loader tries the public URLs (no network here → fails fast) and names
    every file to place in root/raw. With network it downloads and the checksums must match."""
    try:
        ds = MovieLens100K(tmp_path, timeout=5, progress=False)
    except MissingRawFilesError as err:
        msg = str(err)
        for f in ["ml-100k.inter", "ml-100k.item", "ml-100k.kg", "ml-100k.link"]:
            assert f"- {f}  (from RUCAIBox/RecBole@774080f7: recbole/dataset_example/ml-100k/{f}" \
                in msg
        assert "https://raw.githubusercontent.com/RUCAIBox/RecBole/774080f7e87322dfd20f1edc1a35aa69aac03fb7/" \
               "recbole/dataset_example/ml-100k/ml-100k.inter" in msg
        assert "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff" in msg
        assert f"Place these files in {tmp_path / 'raw'}/" in msg
        assert "- ml-100k.user" not in msg  # optional
    else:  # pragma: no cover - only with network access
        sha = hashlib.sha256((ds.raw_dir / "ml-100k.inter").read_bytes()).hexdigest()
        assert sha == "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff"


def test_small_cache_rebuilt_when_raw_changes(tmp_path):
    write_small(tmp_path)
    assert not MovieLens100K(tmp_path, download=False, verify=False).from_cache
    assert MovieLens100K(tmp_path, download=False, verify=False).from_cache
    (tmp_path / "raw" / "ml-100k.inter").write_text(INTER + "3\t30\t1\t400\n")
    ds = MovieLens100K(tmp_path, download=False, verify=False)
    assert not ds.from_cache and ds.data[INTERACTS].num_edges == 4
    # kg=False is its own processed file, next to the KG one
    assert not MovieLens100K(tmp_path, kg=False, download=False, verify=False).from_cache
    assert MovieLens100K(tmp_path, download=False, verify=False).from_cache


# ---------------------------------------------------------------- issue 16: first hour
@pytest.mark.realdata
def test_flat_folder_loads_as_in_the_readme(tmp_path, monkeypatch):
    """``MovieLens100K(<folder holding ml-100k.inter …>)`` (the README's quick tour) loads the
    real files in place, writes nothing into that folder and caches under $KGSEQGRAPH_CACHE."""
    src = require_data(*[f"ml-100k/{f}" for f in FILES]).parent
    before = sorted(p.name for p in src.iterdir())
    monkeypatch.setenv("KGSEQGRAPH_CACHE", str(tmp_path))
    ds = MovieLens100K(src)
    d = ds[0]
    assert ds.flat and d["user"].num_nodes == 943 and d[INTERACTS].num_edges == 100_000
    assert sorted(p.name for p in src.iterdir()) == before  # no raw/, no processed/
    assert d.dataset_info["root"] == str(src.resolve()) and d.dataset_info["name"] == "ml-100k"
    assert d.dataset_info["raw_files"]["ml-100k.inter"] == \
        "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff"
    assert d[INTERACTS].time.dtype == torch.int64  # integer-valued float column: unchanged
    assert MovieLens100K(src).from_cache


@pytest.mark.realdata
def test_inter_cut_at_a_line_boundary_is_an_error(tmp_path):
    """The old loader read a half file as a 50,175-interaction dataset (one log WARNING)."""
    from kgseqgraph.datasets import DataIntegrityError, ModifiedRawFileWarning

    src = require_data(*[f"ml-100k/{f}" for f in FILES]).parent
    root = tmp_path / "ml"
    root.mkdir()
    for f in FILES:
        shutil.copy(src / f, root / f)
    data = (root / "ml-100k.inter").read_bytes()
    cut = data[: data.index(b"\n", len(data) // 2) + 1]
    (root / "ml-100k.inter").write_bytes(cut)
    rows = cut.count(b"\n") - 1
    with pytest.raises(DataIntegrityError) as err:
        MovieLens100K(root, download=False)
    msg = str(err.value)
    assert "ml-100k.inter" in msg and f"rows expected 100,000, found {rows:,}" in msg
    assert "datasets/ml-100k.md" in msg and "verify=False" in msg
    with pytest.warns(ModifiedRawFileWarning, match=f"found {rows:,}"):
        d = MovieLens100K(root, download=False, verify=False).data
    assert d[INTERACTS].num_edges == rows


def test_fractional_timestamps_keep_their_order(tmp_path):
    """Float times were rounded to integers: 0.3, 0.1, 0.2 all became 0 and row order replaced
    chronology."""
    inter = ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
             "7\t10\t4\t0.3\n7\t20\t5\t0.1\n7\t30\t2\t0.2\n")
    write_small(tmp_path, inter=inter)
    d = MovieLens100K(tmp_path, download=False, verify=False).data
    assert d[INTERACTS].time.dtype == torch.float64
    assert d[INTERACTS].time.tolist() == [0.1, 0.2, 0.3]
    assert [d["item"].raw_id[i] for i in d[INTERACTS].edge_index[1].tolist()] == [20, 30, 10]
