"""KGATDataset: a complete hand-written dataset in the KGAT format (with its quirks), the real
amazon-book train/test/lists (counts from shared/data/MANIFEST.md), the real yelp2018 and
last-fm lists, missing files and malformed input."""
from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from kgseqgraph.data import DataFormatError
from kgseqgraph.datasets import KGATDataset, MissingRawFilesError
from kgseqgraph.datasets.kgat import read_id_list, read_item_list
from kgseqgraph.testing import require_data

INTERACTS = ("user", "interacts", "item")

FILES = {
    "user_list.txt": "org_id remap_id\nA3RT 0\nB2XY 1\nC9 2\n",
    "item_list.txt": ("org_id remap_id freebase_id\n0553092626 0 m.045wq1q\n"
                      "0393316041 1 m.03_28m\n0000000003 2 m.0abc\n"),
    # quirks: an org_id with spaces and quotes, an empty org_id
    "entity_list.txt": ('org_id remap_id\nm.045wq1q 0\nm.03_28m 1\nm.0abc 2\nm.genre 3\n'
                        '"""I Love You 4\n 5\n'),
    "relation_list.txt": ("org_id remap_id\nhttp://rdf.freebase.com/ns/book.book.genre 0\n"
                          "http://rdf.freebase.com/ns/book.written_work.author 1\n"),
    "kg_final.txt": "0 0 3\n1 0 3\n2 1 4\n5 1 1\n0 1 1\n",
    "train.txt": "0 0 1\n1 2 0 2\n2 1\n",
    "test.txt": "0 2\n1\n2 0\n",
}


# Hand-written files under the published names are, to the loader, modified copies of the
# published files (other sha256, other counts): the tests load them with verify=False.
def write(root: Path, **override: str | None) -> Path:
    (root / "raw").mkdir(parents=True, exist_ok=True)
    for name, text in {**FILES, **{k.replace("__", "."): v for k, v in override.items()}}.items():
        if text is not None:
            (root / "raw" / name).write_text(text)
    return root


def test_small_full_format_exact(tmp_path):
    ds = KGATDataset(write(tmp_path), "amazon-book", download=False, verify=False)
    d = ds.data
    assert d["user"].raw_id == [0, 1, 2] and d["user"].org_id == ["A3RT", "B2XY", "C9"]
    assert d["item"].raw_id == [0, 1, 2] and d["item"].org_id[0] == "0553092626"
    assert d["item"].freebase_id == ["m.045wq1q", "m.03_28m", "m.0abc"]
    # user 0: train 0,1 then test 2; user 1: train 2,0,2 (repeat kept), no test; user 2: 1 | 0
    assert d[INTERACTS].edge_index.tolist() == [[0, 0, 0, 1, 1, 1, 2, 2],
                                                [0, 1, 2, 2, 0, 2, 1, 0]]
    assert d[INTERACTS].time.tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    assert d[INTERACTS].is_test.tolist() == [False, False, True, False, False, False, False, True]
    train, test = ds.split_masks()
    assert int(train.sum()) == 6 and int(test.sum()) == 2
    assert d["item", "rev_interacts", "user"].is_test.tolist() == d[INTERACTS].is_test.tolist()
    # KG: ids < 3 are items; entities 3, 4, 5 in order of first appearance
    assert d["entity"].raw_id == [3, 4, 5]
    assert d["entity"].org_id == ["m.genre", '"""I Love You', ""]
    assert d.relation_names == {"book_book_genre": "http://rdf.freebase.com/ns/book.book.genre",
                                "book_written_work_author":
                                    "http://rdf.freebase.com/ns/book.written_work.author"}
    assert d["item", "book_book_genre", "entity"].edge_index.tolist() == [[0, 1], [0, 0]]
    assert d["item", "book_written_work_author", "entity"].edge_index.tolist() == [[2], [1]]
    assert d["entity", "book_written_work_author", "item"].edge_index.tolist() == [[2], [1]]
    assert d["item", "book_written_work_author", "item"].edge_index.tolist() == [[0], [1]]
    assert d["entity", "rev_book_book_genre", "item"].edge_index.tolist() == [[0, 0], [0, 1]]
    r = d.build_report
    assert (r["train_interactions"], r["test_interactions"], r["repeated_user_item"]) == (6, 2, 1)
    assert r["triples"] == 5 and r["triples_item_item"] == 1


def test_small_kg_zip_placed_by_hand_is_extracted(tmp_path):
    write(tmp_path, kg_final__txt=None)
    with zipfile.ZipFile(tmp_path / "raw" / "kg_final.txt.zip", "w") as zf:
        zf.writestr("kg_final.txt", FILES["kg_final.txt"])
    d = KGATDataset(tmp_path, "yelp2018", download=False, verify=False).data
    assert d.build_report["triples"] == 5


def test_missing_kg_error_and_kg_false(tmp_path):
    write(tmp_path, kg_final__txt=None)
    with pytest.raises(MissingRawFilesError) as err:
        KGATDataset(tmp_path, "amazon-book", download=False, verify=False)
    msg = str(err.value)
    assert "- kg_final.txt or the archive kg_final.txt.zip  (from " \
           "xiangwang1223/knowledge_graph_attention_network@c03737be: " \
           "Data/amazon-book/kg_final.txt.zip" in msg
    assert "train.txt" not in msg and "kg=False" in msg
    d = KGATDataset(tmp_path, "amazon-book", kg=False, download=False, verify=False).data
    assert d["entity"].num_nodes == 0 and d[INTERACTS].num_edges == 8


def test_yelp_style_glued_item_list(tmp_path):
    p = tmp_path / "item_list.txt"
    p.write_text("org_id remap_id freebase_id\nydUqgWsF3F27 0ydUqgWsF3F27\n9abc 19abc\n"
                 "x2 2m.0z\n")
    org, remap, fb = read_item_list(p)
    assert org == ["ydUqgWsF3F27", "9abc", "x2"]
    assert remap.tolist() == [0, 1, 2] and fb == ["ydUqgWsF3F27", "9abc", "m.0z"]


@pytest.mark.parametrize("file,text,where,what", [
    ("train.txt", "0 0 1\n1 2 x\n", "train.txt, line 2", "item id must be an integer, got 'x'"),
    ("test.txt", "0 2\n1\n2 7\n", "test.txt, line 3", "item id 7 is not in item_list.txt"),
    ("train.txt", "0 0 1\n9 1\n", "train.txt, line 2", "user id 9 is not in user_list.txt"),
    ("kg_final.txt", "0 0 3\n1 0\n", "kg_final.txt, line 2", "truncated line"),
    ("kg_final.txt", "0 0 3\n1 7 3\n", "kg_final.txt, line 2", "relation 7 is not in"),
    ("kg_final.txt", "0 0 3\n1 0 m.x\n", "kg_final.txt, line 2", "must be an integer, got 'm.x'"),
    ("test.txt", "\n", "test.txt", "file is empty"),
    ("user_list.txt", "A3RT 0\nB2XY 1\n", "user_list.txt, line 1", "missing header"),
    ("user_list.txt", "org_id remap_id\nA3RT 0\nB2XY\n", "user_list.txt, line 3",
     "truncated line"),
    ("entity_list.txt", "org_id remap_id\nm.a 0\nm.b zero\n", "entity_list.txt, line 3",
     "remap_id must be an integer"),
    ("item_list.txt", "org_id remap_id freebase_id\na 0 m.a\nb 0 m.b\nc 2 m.c\n",
     "item_list.txt, line 3", "remap_id 0 listed twice"),
    ("item_list.txt", "org_id remap_id freebase_id\na 0 m.a\nb\n", "item_list.txt, line 3",
     "truncated line"),
])
def test_malformed(tmp_path, file, text, where, what):
    write(tmp_path, **{file.replace(".", "__"): text})
    with pytest.raises(DataFormatError) as err:
        KGATDataset(tmp_path, "amazon-book", download=False, verify=False)
    assert where in str(err.value) and what in str(err.value), str(err.value)


# ---------------------------------------------------------------- real files
@pytest.mark.realdata
def test_real_amazon_book_without_kg(tmp_path):
    names = ["train.txt", "test.txt", "user_list.txt", "item_list.txt", "entity_list.txt",
             "relation_list.txt"]
    src = require_data(*[f"kgat/amazon-book/{f}" for f in names]).parent
    (tmp_path / "raw").mkdir()
    for f in names:
        shutil.copy(src / f, tmp_path / "raw" / f)
    # kg_final.txt is not in the shared copy: the KG load names it, kg=False works
    with pytest.raises(MissingRawFilesError, match=r"- kg_final\.txt"):
        KGATDataset(tmp_path, "amazon-book", download=False)
    ds = KGATDataset(tmp_path, "amazon-book", kg=False, download=False)
    d = ds.data
    assert d["user"].num_nodes == 70_679 and d["item"].num_nodes == 24_915
    train, test = ds.split_masks()
    assert int(train.sum()) == 652_514 and int(test.sum()) == 193_920
    assert d[INTERACTS].num_edges == 846_434
    assert d.build_report["test_users_without_items"] == 88
    # distinct items seen in each file (MANIFEST: 24,915 and 21,832)
    ei = d[INTERACTS].edge_index
    assert ei[1][train].unique().numel() == 24_915 and ei[1][test].unique().numel() == 21_832
    # user 0: train line in order, then the test line
    first_train = [int(x) for x in (src / "train.txt").read_text().split("\n", 1)[0].split()[1:]]
    first_test = [int(x) for x in (src / "test.txt").read_text().split("\n", 1)[0].split()[1:]]
    sel = ei[0] == 0
    assert ei[1][sel].tolist() == first_train + first_test
    assert d[INTERACTS].time[sel].tolist() == list(range(len(first_train) + len(first_test)))
    assert d[INTERACTS].is_test[sel].tolist() == [False] * len(first_train) + [True] * len(first_test)
    assert d["user"].org_id[0] == "A3RTKL9KB8KLID" and d["item"].freebase_id[0] == "m.045wq1q"


@pytest.mark.realdata
@pytest.mark.parametrize("name,users,items,entities,relations,spaced", [
    ("amazon-book", 70_679, 24_915, 113_487, 39, 15),
    ("last-fm", 23_566, 48_123, 106_389, 9, 0),
    ("yelp2018", 45_919, 45_538, 136_499, 42, 1186),
])
def test_real_id_lists(name, users, items, entities, relations, spaced):
    base = require_data(f"kgat/{name}/user_list.txt", f"kgat/{name}/item_list.txt",
                        f"kgat/{name}/entity_list.txt", f"kgat/{name}/relation_list.txt").parent
    assert len(read_id_list(base / "user_list.txt")[0]) == users
    org, remap, fb = read_item_list(base / "item_list.txt")
    assert len(org) == items and remap.tolist() == list(range(items))
    e_org, e_remap = read_id_list(base / "entity_list.txt")
    assert len(e_org) == entities
    assert sum(1 for o in e_org if " " in o or o == "") == spaced
    # items are the first entities: same Freebase id (yelp2018: the business id)
    assert e_org[:items] == fb
    assert len(read_id_list(base / "relation_list.txt")[0]) == relations


@pytest.mark.realdata
def test_real_last_fm_names_missing_train_and_kg(tmp_path):
    names = ["test.txt", "user_list.txt", "item_list.txt", "entity_list.txt", "relation_list.txt"]
    src = require_data(*[f"kgat/last-fm/{f}" for f in names]).parent
    (tmp_path / "raw").mkdir()
    for f in names:
        shutil.copy(src / f, tmp_path / "raw" / f)
    with pytest.raises(MissingRawFilesError) as err:
        KGATDataset(tmp_path, "last-fm", download=False)
    msg = str(err.value)
    assert "- train.txt  (from xiangwang1223/knowledge_graph_attention_network@c03737be: " \
           "Data/last-fm/train.txt" in msg
    assert "- kg_final.txt  (from" in msg and "test.txt" not in msg
