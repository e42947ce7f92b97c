"""S3Rec: the real Yelp and Beauty files (counts from shared/data/MANIFEST.md), hand-written
files in the same format, and malformed input."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kgseqgraph.data import DataFormatError
from kgseqgraph.datasets import MissingRawFilesError, S3Rec
from kgseqgraph.testing import require_data

INTERACTS = ("user", "interacts", "item")
HAS = ("item", "has_attribute", "entity")


def _sequence(d, user_raw):
    """Items (raw ids) and times of one user, in edge order."""
    u = d["user"].raw_id.index(user_raw)
    ei, t = d[INTERACTS].edge_index, d[INTERACTS].time
    sel = ei[0] == u
    return [d["item"].raw_id[i] for i in ei[1][sel].tolist()], t[sel].tolist()


@pytest.fixture(scope="module")
def real_root(tmp_path_factory):
    files = ["Yelp.txt", "Yelp_item2attributes.json", "Beauty.txt", "Beauty_item2attributes.json"]
    src = require_data(*[f"s3rec/{f}" for f in files]).parent
    root = tmp_path_factory.mktemp("s3rec")
    (root / "raw").mkdir()
    for f in files:
        shutil.copy(src / f, root / "raw" / f)
    return root


@pytest.mark.realdata
@pytest.mark.parametrize("name,users,items,inter,attrs", [
    ("Yelp", 30_431, 20_033, 316_354, 1_001),
    ("Beauty", 22_363, 12_101, 198_502, 637),
])
def test_real_counts(real_root, name, users, items, inter, attrs):
    ds = S3Rec(real_root, name, download=False)
    d = ds.data
    assert d["user"].num_nodes == users and d["item"].num_nodes == items
    assert d[INTERACTS].num_edges == inter
    assert d["entity"].num_nodes == attrs
    assert d.relation_names == {"has_attribute": "has_attribute"}
    # independent: the distinct (item, attribute) pairs of the JSON file
    obj = json.loads((ds.raw_dir / f"{name}_item2attributes.json").read_text())
    pairs = {(int(k), a) for k, v in obj.items() for a in v}
    assert d[HAS].num_edges == len(pairs) == d["entity", "rev_has_attribute", "item"].num_edges
    # first line of the sequence file, in order, time = position
    first = [int(x) for x in (ds.raw_dir / f"{name}.txt").read_text().split("\n", 1)[0].split()]
    items_, times = _sequence(d, first[0])
    assert items_ == first[1:] and times == list(range(len(first) - 1))
    # item -> attribute edges of that user's first item match the JSON
    it = first[1]
    node = d["item"].raw_id.index(it)
    ei = d[HAS].edge_index
    got = sorted(d["entity"].raw_id[e] for e in ei[1][ei[0] == node].tolist())
    assert got == sorted(set(obj[str(it)]))
    assert d["item"].text[node] == "attributes: " + ", ".join(map(str, obj[str(it)]))


SEQ = "1 1 2 3 2\n2 4 1\n"
ATTR = {"1": [10, 11], "2": [11], "3": [], "4": [12]}


# Hand-written files under the published names are, to the loader, modified copies of the
# published files (other sha256, other counts): the tests load them with verify=False.
def write(root: Path, seq: str | None = SEQ, attr: str | None = None, name: str = "Beauty"):
    (root / "raw").mkdir(parents=True, exist_ok=True)
    if seq is not None:
        (root / "raw" / f"{name}.txt").write_text(seq)
    text = json.dumps(ATTR) if attr is None else attr
    (root / "raw" / f"{name}_item2attributes.json").write_text(text)
    return root


def test_small_exact_with_repeats(tmp_path):
    d = S3Rec(write(tmp_path), "beauty", download=False, verify=False).data
    assert d["user"].raw_id == [1, 2] and d["item"].raw_id == [1, 2, 3, 4]
    # user 1 consumed item 2 twice: both kept, at positions 1 and 3
    assert d[INTERACTS].edge_index.tolist() == [[0, 0, 0, 0, 1, 1], [0, 1, 2, 1, 3, 0]]
    assert d[INTERACTS].time.tolist() == [0, 1, 2, 3, 0, 1]
    assert d["entity"].raw_id == [10, 11, 12]
    assert d[HAS].edge_index.tolist() == [[0, 0, 1, 3], [0, 1, 1, 2]]
    assert d["item"].text == ["attributes: 10, 11", "attributes: 11", "", "attributes: 12"]
    assert d.build_report["items_without_attributes"] == 1


def test_small_without_kg_and_name_check(tmp_path):
    write(tmp_path)
    d = S3Rec(tmp_path, "Beauty", kg=False, download=False, verify=False).data
    assert d["entity"].num_nodes == 0 and d["item"].raw_id == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="unknown S3-Rec dataset 'Books'"):
        S3Rec(tmp_path, "Books")


@pytest.mark.parametrize("seq,attr,where,what", [
    ("1 1 2\n2\n", None, "Beauty.txt, line 2", "truncated line"),
    ("1 1 2\n2 4 x\n", None, "Beauty.txt, line 2", "item id must be an integer, got 'x'"),
    ("1 1 2\nu2 4\n", None, "Beauty.txt, line 2", "user id must be an integer, got 'u2'"),
    ("1 1 2\n1 4\n", None, "Beauty.txt, line 2", "user 1 has a second line"),
    ("", None, "Beauty.txt", "file is empty"),
    (SEQ, "", "Beauty_item2attributes.json", "file is empty"),
    (SEQ, '{"1": [10],\n "2": [11,]}', "Beauty_item2attributes.json, line 2", "invalid JSON"),
    (SEQ, '{"a": [10]}', "Beauty_item2attributes.json", "item id key 'a' is not an integer"),
    (SEQ, '{"1": ["x"]}', "Beauty_item2attributes.json", "expected a list of integer attribute"),
    (SEQ, "[1, 2]", "Beauty_item2attributes.json", "expected a JSON object"),
])
def test_malformed(tmp_path, seq, attr, where, what):
    write(tmp_path, seq, attr)
    with pytest.raises(DataFormatError) as err:
        S3Rec(tmp_path, "Beauty", download=False, verify=False)
    assert where in str(err.value) and what in str(err.value), str(err.value)


def test_missing_files_named(tmp_path):
    with pytest.raises(MissingRawFilesError) as err:
        S3Rec(tmp_path, "Toys_and_Games", download=False)
    msg = str(err.value)
    assert "- Toys_and_Games.txt  (from RUCAIBox/CIKM2020-S3Rec@2a81540a: data/Toys_and_Games.txt" \
        in msg
    assert "- Toys_and_Games_item2attributes.json" in msg


@pytest.mark.realdata
def test_yelp_cut_mid_line_is_an_error(tmp_path):
    """A Yelp.txt cut mid-line loaded item "6" for "6354" without a word (issue 16)."""
    from kgseqgraph.datasets import DataIntegrityError

    src = require_data("s3rec/Yelp.txt", "s3rec/Yelp_item2attributes.json").parent
    root = tmp_path / "s3"
    root.mkdir()
    shutil.copy(src / "Yelp_item2attributes.json", root)
    data = (src / "Yelp.txt").read_bytes()
    cut = data[: data.index(b"\n", len(data) // 3) - 3]  # inside the last item id of a line
    (root / "Yelp.txt").write_bytes(cut)
    with pytest.raises(DataIntegrityError) as err:
        S3Rec(root, "Yelp", download=False)
    msg = str(err.value)
    assert "Yelp.txt" in msg and "interactions expected 316,354, found" in msg
    assert "users expected 30,431, found" in msg
