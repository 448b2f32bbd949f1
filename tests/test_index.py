"""The manifest's columnar index (index.npy): written by convert, read instead of the JSON's
shard list, always checked against manifest.json; old conversions without it still load."""

import os
import pickle

import numpy as np
import pytest

from shardstream.converters import write_split
from shardstream.errors import ManifestError
from shardstream.shards.index import INDEX_NAME, index_bytes, parse_index
from shardstream.shards.manifest import (
    MANIFEST_NAME,
    Manifest,
    ShardInfo,
    ShardTable,
    load_manifest,
)
from shardstream.shards.verify import verify
from shardstream.storage.upload import upload


def make_split(root, n=50, shard_size=8, seed=0, **kw):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 4, 3, 1), dtype=np.uint8)
    labels = rng.integers(0, 3, n)
    m = write_split(str(root), "toy", "train", images, labels, ("a", "b", "c"),
                    {"synthetic": True, "seed": seed}, shard_size=shard_size, progress=False, **kw)
    return root / "toy" / "train", m


def test_convert_writes_an_index_that_loads_as_the_manifest(tmp_path):
    folder, written = make_split(tmp_path)
    assert (folder / INDEX_NAME).is_file()
    via_index = load_manifest(str(folder))
    via_json = load_manifest(str(folder), use_index=False)
    assert isinstance(via_index.shards["tar"], ShardTable)
    assert isinstance(via_json.shards["tar"], tuple)
    assert via_index == via_json == written
    for fmt in ("tar", "parquet"):
        assert list(via_index.shards[fmt]) == list(written.shards[fmt])
        assert via_index.shards[fmt][-1] == written.shards[fmt][-1]
        assert via_index.shards[fmt][1:3] == written.shards[fmt][1:3]
    assert np.array_equal(via_index.shard_sizes, [8] * 6 + [2])
    assert np.array_equal(via_index.offsets, via_json.offsets)
    again = pickle.loads(pickle.dumps(via_index))
    assert again == via_index and again.shards["parquet"] == via_index.shards["parquet"]
    assert verify(str(folder)) == []


def test_index_bytes_are_deterministic_and_numpy_readable(tmp_path):
    folder, m = make_split(tmp_path)
    data = (folder / INDEX_NAME).read_bytes()
    assert index_bytes(m, (folder / MANIFEST_NAME).read_bytes()) == data
    with open(folder / INDEX_NAME, "rb") as f:
        table = np.load(f, allow_pickle=False)  # a plain structured array first
    assert table.size == 14 and table["name"][0] == b"train-000000.tar"
    assert table["num_samples"].tolist() == [8] * 6 + [2] + [8] * 6 + [2]
    assert bytes(table["sha256"][7]).hex() == m.shards["parquet"][0].sha256


def test_a_conversion_without_index_still_loads(tmp_path):
    folder, written = make_split(tmp_path)
    os.remove(folder / INDEX_NAME)
    m = load_manifest(str(folder))
    assert m == written and isinstance(m.shards["tar"], tuple)
    assert verify(str(folder)) == []


def test_an_index_of_another_manifest_is_refused_naming_both(tmp_path):
    a, _ = make_split(tmp_path / "a", seed=0)
    b, _ = make_split(tmp_path / "b", seed=1)
    (a / INDEX_NAME).write_bytes((b / INDEX_NAME).read_bytes())
    with pytest.raises(ManifestError, match=f"{INDEX_NAME}.*not written for.*{MANIFEST_NAME}.*"
                                            f"delete"):
        load_manifest(str(a))
    problems = verify(str(a))
    assert any(p.startswith(f"{INDEX_NAME}: was not written for") for p in problems)
    assert any("field 'source' disagrees" in p for p in problems)


def test_a_damaged_index_is_a_manifest_error(tmp_path):
    folder, _ = make_split(tmp_path)
    data = (folder / INDEX_NAME).read_bytes()
    (folder / INDEX_NAME).write_bytes(data[:200])
    with pytest.raises(ManifestError, match=f"index .*{INDEX_NAME} is damaged"):
        load_manifest(str(folder))
    assert [p for p in verify(str(folder)) if p.startswith(INDEX_NAME)]


@pytest.mark.parametrize("column,value,match", [
    ("num_samples", 0, r"shards.tar\[3\].*count <= 0"),
    ("num_samples", 9, "hold 51 samples in all"),
    ("name", b"../x.tar", r"shards.tar\[3\].name.*plain file name"),
    ("name", b"other-3.parquet", r"shards.tar\[3\].name.*ending in .tar"),
    ("name", b"train-000004.tar", "same shard name twice"),
])
def test_an_index_table_is_validated_like_the_json(tmp_path, column, value, match):
    folder, m = make_split(tmp_path)
    text = (folder / MANIFEST_NAME).read_bytes()
    meta, table = parse_index(index_bytes(m, text), "x")
    table = table.copy()
    table[column][3] = value
    with pytest.raises(ManifestError, match=match):
        Manifest.from_index(meta, table, "x")


def test_upload_copies_the_index_and_removes_a_stale_one(tmp_path):
    folder, m = make_split(tmp_path / "src")
    dest = tmp_path / "dest"
    upload(str(folder), str(dest), progress=False)
    target = dest / "toy" / "train"
    assert (target / INDEX_NAME).read_bytes() == (folder / INDEX_NAME).read_bytes()
    assert load_manifest(str(target)) == m
    os.remove(folder / INDEX_NAME)   # e.g. re-converted by an older shardstream
    upload(str(folder), str(dest), progress=False)
    assert not (target / INDEX_NAME).exists() and load_manifest(str(target)) == m


def test_shard_table_equality():
    infos = (ShardInfo("a.tar", 3, 10, "0" * 64), ShardInfo("b.tar", 4, 11, "f" * 64))
    table = ShardTable(np.array([b"a.tar", b"b.tar"]), np.array([3, 4]), np.array([10, 11]),
                       np.array([[0] * 32, [255] * 32], np.uint8))
    assert table == infos and infos == table and list(table) == list(infos)
    assert table != infos[:1] and len(table) == 2
