"""The dataset base class: processed cache, rebuild rules, atomic writes, downloads."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch_geometric.data import HeteroData

from kgseqgraph.data import LINE_COLUMN, DataFormatError
from kgseqgraph.datasets import (DownloadError, KGDataset, MissingRawFilesError, RawFile,
                                 download_url, from_pandas, sha256sum)
from kgseqgraph.datasets.base import read_lines, split_rows, to_int

TOY = "u1,a,1\nu1,b,2\nu2,a,5\n"


class Toy(KGDataset):
    """user,item,time CSV lines -> graph; counts its process() calls."""

    calls = 0
    files = [RawFile("toy.csv")]

    def __init__(self, root, *, tag: str = "x", **kw):
        self.tag = tag
        super().__init__(root, **kw)

    @property
    def raw_files(self):
        return self.files

    def params(self):
        return {"tag": self.tag}

    @property
    def processed_file_names(self):
        return [f"toy_{self.tag}.pt"]

    def process(self) -> HeteroData:
        type(self).calls += 1
        path = self.raw_path("toy.csv")
        rows, lines = split_rows(read_lines(path, "user,item,time"), path, sep=",", min_fields=3,
                                 max_fields=3, expected="user,item,time")
        frame = pd.DataFrame({"user": [r[0] for r in rows], "item": [r[1] for r in rows],
                              "time": to_int([r[2] for r in rows], lines, path, "time"),
                              LINE_COLUMN: lines})
        data = from_pandas(frame, sources={"interactions": str(path)})
        data.tag = self.tag
        return data


@pytest.fixture
def toy_root(tmp_path: Path) -> Path:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "toy.csv").write_text(TOY)
    Toy.calls = 0
    return tmp_path


def test_dataset_protocol_and_graph_attributes(toy_root):
    ds = Toy(toy_root)
    assert len(ds) == 1 and ds[0] is ds.data and ds[-1] is ds.data
    with pytest.raises(IndexError):
        ds[1]
    d = ds.data
    assert d["user"].raw_id == ["u1", "u2"] and d["item"].raw_id == ["a", "b"]
    assert d["user", "interacts", "item"].edge_index.tolist() == [[0, 0, 1], [0, 1, 0]]
    assert d.tag == "x"  # graph-level attributes survive (InMemoryDataset would drop them)
    assert d.build_report["interactions"] == 3
    assert "Toy(user=2, item=2" in repr(ds)


def test_cache_reused_then_identical(toy_root):
    first = Toy(toy_root)
    assert Toy.calls == 1 and not first.from_cache
    second = Toy(toy_root)
    assert Toy.calls == 1 and second.from_cache
    a, b = first.data, second.data
    assert a.to_dict().keys() == b.to_dict().keys()
    for et in a.edge_types:
        assert torch.equal(a[et].edge_index, b[et].edge_index)
        assert torch.equal(a[et].time, b[et].time)
    assert a.build_report == b.build_report and a.tag == b.tag
    assert a["user"].raw_id == b["user"].raw_id


def test_processed_file_is_weights_only_dict_and_written_atomically(toy_root):
    ds = Toy(toy_root)
    path = ds.processed_paths[0]
    obj = torch.load(path, weights_only=True)
    assert set(obj) == {"key", "data"}
    meta = json.loads(ds.meta_path.read_text())
    assert meta["key"] == obj["key"]
    raw = toy_root / "raw" / "toy.csv"
    assert meta["raw"]["toy.csv"]["sha256"] == hashlib.sha256(raw.read_bytes()).hexdigest()
    assert meta["raw"]["toy.csv"]["size"] == len(TOY)
    assert HeteroData.from_dict(obj["data"])["user"].num_nodes == 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["toy_x.meta.json", "toy_x.pt"]


def test_rebuilt_when_raw_changes_not_when_only_touched(toy_root):
    Toy(toy_root)
    raw = toy_root / "raw" / "toy.csv"
    st = raw.stat()
    os.utime(raw, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # same bytes, new mtime
    assert Toy(toy_root).from_cache and Toy.calls == 1
    # same size, different content: only the hash can tell
    raw.write_text(TOY.replace("u2,a,5", "u2,b,5"))
    ds = Toy(toy_root)
    assert Toy.calls == 2 and not ds.from_cache
    assert ds.data["user", "interacts", "item"].edge_index.tolist() == [[0, 0, 1], [0, 1, 1]]
    raw.write_text(TOY + "u3,c,7\n")
    assert Toy(toy_root).data["user"].num_nodes == 3 and Toy.calls == 3
    assert Toy(toy_root).from_cache and Toy.calls == 3


def test_rebuilt_on_version_params_force_and_corruption(toy_root, monkeypatch):
    Toy(toy_root)
    assert Toy(toy_root, force_reload=True).from_cache is False and Toy.calls == 2
    monkeypatch.setattr(Toy, "processing_version", 2)
    assert not Toy(toy_root).from_cache and Toy.calls == 3
    assert Toy(toy_root).from_cache
    other = Toy(toy_root, tag="y")  # other params: own processed file
    assert not other.from_cache and other.data.tag == "y"
    assert Toy(toy_root).from_cache and Toy(toy_root).data.tag == "x"
    Toy(toy_root).processed_paths[0].write_bytes(b"not a torch file")
    assert not Toy(toy_root).from_cache
    assert Toy(toy_root).from_cache


def test_optional_file_appearing_invalidates_cache(toy_root, monkeypatch):
    monkeypatch.setattr(Toy, "files", [RawFile("toy.csv"), RawFile("extra.txt", optional=True)])
    Toy(toy_root)
    assert Toy(toy_root).from_cache
    (toy_root / "raw" / "extra.txt").write_text("x")
    assert not Toy(toy_root).from_cache


def test_missing_raw_files_without_download_names_files_and_sources(tmp_path, monkeypatch):
    monkeypatch.setattr(Toy, "files", [
        RawFile("toy.csv", url="https://example.org/toy.csv", sha256="ab" * 32,
                source="owner/repo@1234abcd: data/toy.csv"),
        RawFile("notes.txt", optional=True)])
    with pytest.raises(MissingRawFilesError) as err:
        Toy(tmp_path / "empty", download=False)
    msg = str(err.value)
    assert "toy.csv" in msg and "owner/repo@1234abcd: data/toy.csv" in msg
    assert "https://example.org/toy.csv" in msg and "ab" * 32 in msg
    assert f"Place these files in {tmp_path / 'empty' / 'raw'}/" in msg
    assert "notes.txt" not in msg  # optional files are not demanded


def test_unreachable_download_fails_fast_and_names_files(tmp_path, monkeypatch):
    # Port 9 on localhost (discard) is closed: the connection is refused at once, network or not.
    monkeypatch.setattr(Toy, "files", [RawFile("toy.csv", url="http://127.0.0.1:9/toy.csv",
                                               source="somewhere")])
    with pytest.raises(MissingRawFilesError) as err:
        Toy(tmp_path, timeout=2)
    msg = str(err.value)
    assert "toy.csv" in msg and "download failed" in msg and "127.0.0.1:9" in msg
    # no partial file left behind, and not even the raw/ folder the download created
    assert not (tmp_path / "raw").exists() and list(tmp_path.iterdir()) == []


def test_download_from_file_url_checks_sha256(tmp_path, monkeypatch):
    src = tmp_path / "src.csv"
    src.write_text(TOY)
    good = hashlib.sha256(TOY.encode()).hexdigest()
    assert sha256sum(src) == good
    out = download_url(src.as_uri(), tmp_path / "dl" / "a.csv", sha256=good, progress=False)
    assert out.read_text() == TOY
    with pytest.raises(DownloadError, match="does not match"):
        download_url(src.as_uri(), tmp_path / "dl" / "b.csv", sha256="0" * 64, progress=False)
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["a.csv"]
    # the dataset downloads what is missing, then processes it
    monkeypatch.setattr(Toy, "files", [RawFile("toy.csv", url=src.as_uri(), sha256=good)])
    ds = Toy(tmp_path / "root")
    assert (tmp_path / "root" / "raw" / "toy.csv").read_text() == TOY
    assert ds.data["user"].num_nodes == 2


def test_reader_errors_name_file_and_line(tmp_path):
    p = tmp_path / "toy.csv"
    p.write_text("u1,a,1\n\nu1,b\n")
    with pytest.raises(DataFormatError, match=r"toy\.csv, line 3: truncated line"):
        split_rows(read_lines(p, "x"), p, sep=",", min_fields=3, expected="user,item,time")
    p.write_text("  \n\n")
    with pytest.raises(DataFormatError, match=r"toy\.csv: file is empty"):
        read_lines(p, "user,item,time lines")
    import numpy as np
    with pytest.raises(DataFormatError, match=r"toy\.csv, line 8: time must be an integer, got '1.5'"):
        to_int(["3", "1.5"], np.array([7, 8]), p, "time")


def test_download_zip_member(tmp_path, monkeypatch):
    import zipfile
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("folder/toy.csv", TOY)
    good = hashlib.sha256(TOY.encode()).hexdigest()
    monkeypatch.setattr(Toy, "files", [RawFile("toy.csv", url=archive.as_uri(), sha256=good,
                                               archive_member="toy.csv")])
    ds = Toy(tmp_path / "root")
    assert ds.data["user"].num_nodes == 2
    assert sorted(p.name for p in (tmp_path / "root" / "raw").iterdir()) == ["toy.csv"]
    # wrong digest of the extracted member: nothing kept, the error names the file
    monkeypatch.setattr(Toy, "files", [RawFile("toy.csv", url=archive.as_uri(), sha256="0" * 64,
                                               archive_member="toy.csv")])
    with pytest.raises(MissingRawFilesError, match="wrong sha256"):
        Toy(tmp_path / "other")
    assert not (tmp_path / "other").exists()  # nothing kept, no empty folders either


# ---------------------------------------------------------------- layouts (issue 16, item 1)
def test_flat_layout_reads_files_in_root_and_caches_outside(tmp_path, monkeypatch):
    """Raw files directly in root load (the old loader demanded root/raw, failed with 'missing'
    and left an empty raw/ behind); the folder is only read, the cache lives in
    $KGSEQGRAPH_CACHE."""
    monkeypatch.setenv("KGSEQGRAPH_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "flat"
    root.mkdir()
    (root / "toy.csv").write_text(TOY)
    Toy.calls = 0
    ds = Toy(root, download=False)
    assert ds.flat and ds.raw_dir == root and ds.data["user"].num_nodes == 2
    assert sorted(p.name for p in root.iterdir()) == ["toy.csv"]  # nothing written into root
    assert ds.processed_dir.is_relative_to(tmp_path / "cache") and ds.processed_paths[0].exists()
    again = Toy(root, download=False)
    assert again.from_cache and Toy.calls == 1
    # an empty raw/ (left by older versions) does not hide the files
    (root / "raw").mkdir()
    assert Toy(root, download=False).flat
    # a raw/ that holds the files wins
    (root / "raw" / "toy.csv").write_text(TOY + "u3,c,7\n")
    ds = Toy(root, download=False)
    assert not ds.flat and ds.data["user"].num_nodes == 3


def test_missing_files_leave_no_folders_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(Toy, "files", [RawFile("toy.csv", url="http://127.0.0.1:9/toy.csv")])
    root = tmp_path / "new" / "ml"
    with pytest.raises(MissingRawFilesError, match=r"toy\.csv"):
        Toy(root, timeout=2)
    assert list(tmp_path.iterdir()) == []  # neither root nor root/raw was left behind


# ---------------------------------------------------------------- integrity (issue 16, item 2)
class Counted(Toy):
    """Toy whose card says toy.csv has TOY's sha256 and 3 rows, 2 users."""

    files = [RawFile("toy.csv", sha256=hashlib.sha256(TOY.encode()).hexdigest(),
                     url="https://example.org/toy.csv", expected={"rows": 3, "users": 2})]

    def process(self) -> HeteroData:
        data = super().process()
        self.record_counts("toy.csv", rows=data.build_report["interactions"],
                           users=data["user"].num_nodes)
        return data


def test_cut_raw_file_is_an_error_naming_file_expected_and_found(toy_root):
    from kgseqgraph.datasets import DataIntegrityError, ModifiedRawFileWarning

    assert Counted(toy_root).data["user"].num_nodes == 2  # the published file: silent
    raw = toy_root / "raw" / "toy.csv"
    raw.write_text(TOY.rsplit("u2", 1)[0])  # cut at a line boundary: a smaller "dataset"
    with pytest.raises(DataIntegrityError) as err:
        Counted(toy_root)
    msg = str(err.value)
    assert str(raw) in msg and "not the published file" in msg
    assert "rows expected 3, found 2" in msg and "users expected 2, found 1" in msg
    assert "verify=False" in msg and "--no-verify" in msg and "https://example.org/toy.csv" in msg
    # an explicit verify=False loads the modified copy, warning through `warnings`
    with pytest.warns(ModifiedRawFileWarning, match=r"toy\.csv.*verify=False.*rows expected 3"):
        ds = Counted(toy_root, verify=False)
    assert ds.data["user"].num_nodes == 1 and not ds.from_cache
    # ... and again from the cache: the check does not vanish once the graph is cached
    with pytest.warns(ModifiedRawFileWarning):
        assert Counted(toy_root, verify=False).from_cache
    with pytest.raises(DataIntegrityError, match="rows expected 3, found 2"):
        Counted(toy_root)


def test_modified_file_with_the_cards_counts_loads_with_a_warning(toy_root):
    from kgseqgraph.datasets import ModifiedRawFileWarning

    (toy_root / "raw" / "toy.csv").write_text(TOY.replace("u2,a,5", "u2,b,5"))
    with pytest.warns(ModifiedRawFileWarning, match="counts match the card"):
        ds = Counted(toy_root)
    assert ds.data["user", "interacts", "item"].num_edges == 3


def test_dataset_info_names_root_and_raw_checksums(toy_root):
    info = Toy(toy_root).data.dataset_info
    assert info["root"] == str(toy_root.resolve()) and info["layout"] == "raw/"
    assert info["raw_files"] == {"toy.csv": hashlib.sha256(TOY.encode()).hexdigest()}
    assert info["load_kwargs"] == {"tag": "x"} and info["name"] == "Toy"
    assert Toy(toy_root).data.dataset_info == info  # the same from the cache
