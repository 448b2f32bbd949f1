"""Shard formats (issue 2): exact round trips, determinism, the tar/Parquet layout, and interop
with stock webdataset, pyarrow, pandas and Hugging Face datasets."""

import io
import os
import tarfile

import numpy as np
import pytest

from shardstream import shards
from shardstream.errors import InputError
from shardstream.shards.imagecodec import decode_pngs
from shardstream.shards.manifest import load_manifest

COMBOS = [(fmt, enc, c) for fmt in ("tar", "parquet") for enc in ("npy", "png") for c in (1, 3)]


def test_names_and_keys():
    assert shards.shard_name("train", 3, "tar") == "train-000003.tar"
    assert shards.shard_name("test", 12, "parquet") == "test-000012.parquet"
    assert shards.sample_key(0) == "000000000"
    assert shards.sample_key(123456) == "000123456"
    assert shards.key_digits(98, 3).tobytes() == b"000000098000000099000000100"
    with pytest.raises(InputError, match="unknown shard format 'zip'"):
        shards.shard_name("train", 0, "zip")


@pytest.mark.parametrize("fmt,enc,c", COMBOS)
def test_round_trip_exact(make_split, fmt, enc, c):
    """Every shard reads back with exactly the pixels and labels written (also shards that do
    not start at sample 0, and the short last shard)."""
    location, manifest, images, labels = make_split(n=37, shard_size=16, shape=(6, 5, c),
                                                    encoding=enc, formats=(fmt,))
    assert list(manifest.shard_sizes) == [16, 16, 5]
    got_x, got_y = [], []
    for s, info in enumerate(manifest.shards[fmt]):
        with open(os.path.join(location, info.name), "rb") as f:
            data = f.read()
        x, y = shards.read_shard(fmt, data, manifest, s)
        assert x.dtype == np.uint8 and x.shape == (info.num_samples, 6, 5, c)
        assert y.dtype == np.int64
        # read_shard's images are the caller's own (writable; the loaders' read path may hand
        # out read-only views of the shard's bytes instead, read_shard never does)
        assert x.flags.writeable
        # the two-step form (read payloads, decode) gives the same
        payloads, y2 = shards.read_payloads(fmt, memoryview(data), manifest, s)
        assert np.array_equal(shards.decode_payloads(payloads, manifest, s), x)
        assert np.array_equal(y2, y)
        got_x.append(x)
        got_y.append(y)
    assert np.array_equal(np.concatenate(got_x), images)
    assert np.array_equal(np.concatenate(got_y), labels)


@pytest.mark.parametrize("fmt,enc,c", COMBOS)
def test_deterministic_bytes(fmt, enc, c):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (9, 7, 4, c), dtype=np.uint8)
    labels = rng.integers(0, 3, 9)
    outs = []
    for _ in range(2):
        buf = io.BytesIO()
        shards.write_shard(fmt, buf, 20, images, labels, enc, ("a", "b", "c"))
        outs.append(buf.getvalue())
    assert outs[0] == outs[1]


def test_tar_layout_ustar_no_pax(make_split):
    location, manifest, images, labels = make_split(n=5, shard_size=5, encoding="npy",
                                                    formats=("tar",))
    path = os.path.join(location, "train-000000.tar")
    raw = open(path, "rb").read()
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == [f"00000000{i}.{e}" for i in range(5)
                                         for e in ("cls", "npy")]
    for m in members:
        assert m.isreg() and m.mtime == 0 and m.mode == 0o444
        assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "shardstream", "shardstream")
        assert m.pax_headers == {}
        header = raw[m.offset:m.offset + 512]
        assert header[257:265] == b"ustar\x0000"
        assert header[156:157] == b"0"  # a regular file, never 'x' / 'g' (PAX)
    with tarfile.open(path) as tar:
        assert tar.extractfile("000000002.cls").read() == str(labels[2]).encode()
        arr = np.load(io.BytesIO(tar.extractfile("000000002.npy").read()), allow_pickle=False)
    assert arr.dtype == np.uint8 and np.array_equal(arr, images[2])


@pytest.mark.parametrize("enc,c", [("npy", 1), ("png", 1), ("png", 3)])
def test_stock_webdataset_reads_tar(make_split, enc, c):
    import webdataset as wds

    location, manifest, images, labels = make_split(n=20, shard_size=8, shape=(6, 5, c),
                                                    encoding=enc, formats=("tar",))
    urls = [os.path.join(location, s.name) for s in manifest.shards["tar"]]
    decoder = {1: "l8", 3: "rgb8"}[c]
    ds = wds.WebDataset(urls, shardshuffle=False).decode(decoder).to_tuple("__key__", enc, "cls")
    got = list(ds)
    assert [k for k, _, _ in got] == [shards.sample_key(i) for i in range(20)]
    x = np.stack([np.asarray(im).reshape(6, 5, c) for _, im, _ in got])
    assert x.dtype == np.uint8 and np.array_equal(x, images)
    assert np.array_equal([y for _, _, y in got], labels)


@pytest.mark.parametrize("enc,c", [("npy", 1), ("png", 3)])
def test_pyarrow_and_pandas_read_parquet(make_split, enc, c):
    import json

    import pandas as pd
    import pyarrow.parquet as pq
    from PIL import Image

    location, manifest, images, labels = make_split(n=20, shard_size=8, shape=(6, 5, c),
                                                    encoding=enc, formats=("parquet",))
    files = [os.path.join(location, s.name) for s in manifest.shards["parquet"]]
    table = pq.read_table(files[1])
    assert table.column_names == ["key", "image", "label"]
    assert table.column("key").to_pylist() == [shards.sample_key(i) for i in range(8, 16)]
    assert table.column("label").to_pylist() == labels[8:16].tolist()
    meta = json.loads(table.schema.metadata[b"shardstream"])
    assert meta == {"image_shape": [6, 5, c], "encoding": enc, "first_id": 8}
    assert pq.ParquetFile(files[1]).metadata.num_row_groups == 1
    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    assert df["label"].tolist() == labels.tolist()
    if enc == "npy":
        x = np.stack([np.frombuffer(b, np.uint8).reshape(6, 5, c) for b in df["image"]])
    else:
        assert table.column("image").to_pylist()[0]["path"] == "000000008.png"
        x = np.stack([np.asarray(Image.open(io.BytesIO(d["bytes"]))).reshape(6, 5, c)
                      for d in df["image"]])
    assert np.array_equal(x, images)


def test_hf_datasets_sees_image_and_classlabel(make_split, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    location, manifest, images, labels = make_split(n=12, shard_size=5, shape=(6, 5, 1),
                                                    encoding="png", formats=("parquet",))
    files = [os.path.join(location, s.name) for s in manifest.shards["parquet"]]
    ds = datasets.load_dataset("parquet", data_files=files, split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert isinstance(ds.features["image"], datasets.Image)
    assert isinstance(ds.features["label"], datasets.ClassLabel)
    assert ds.features["label"].names == ["zero", "one", "two"]
    assert ds["label"] == labels.tolist()
    assert ds[7]["key"] == "000000007"
    assert np.array_equal(np.asarray(ds[7]["image"]).reshape(6, 5, 1), images[7])


def test_load_manifest_of_written_split(make_split):
    location, manifest, _, _ = make_split(n=10, shard_size=4)
    assert load_manifest(location) == manifest
    assert list(load_manifest(location).offsets) == [0, 4, 8, 10]


@pytest.mark.parametrize("images,labels,enc,message", [
    (np.zeros((2, 4, 4, 1), np.float32), [0, 1], "npy", "must be uint8"),
    (np.zeros((2, 4, 4), np.uint8), [0, 1], "npy", "must be uint8 \\(n, H, W, C\\)"),
    (np.zeros((2, 4, 4, 1), np.uint8), [0, 3], "npy", "labels must lie in \\[0, 3\\)"),
    (np.zeros((2, 4, 4, 1), np.uint8), [0], "npy", "labels must be integers of shape \\(2,\\)"),
    (np.zeros((2, 4, 4, 2), np.uint8), [0, 1], "png", "png encoding needs 1 or 3 channels"),
    (np.zeros((2, 4, 4, 1), np.uint8), [0, 1], "jpg", "unknown encoding 'jpg'"),
    (np.zeros((0, 4, 4, 1), np.uint8), np.zeros(0, int), "npy", "at least one sample"),
])
@pytest.mark.parametrize("fmt", ["tar", "parquet"])
def test_write_shard_bad_input(fmt, images, labels, enc, message):
    with pytest.raises(InputError, match=message):
        shards.write_shard(fmt, io.BytesIO(), 0, images, np.asarray(labels), enc, ("a", "b", "c"))


@pytest.mark.parametrize("enc,c,num_classes", [("npy", 1, 3), ("npy", 3, 120), ("png", 1, 3),
                                               ("png", 3, 1200)])
def test_tar_fast_path_matches_member_reader(enc, c, num_classes):
    """Shards as write_tar writes them take the vectorised path (the loader's speed depends on
    it), and it gives exactly what the member-by-member reader gives; labels of 1..4 digits."""
    from shardstream.shards import tarshard

    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (30, 7, 4, c), dtype=np.uint8)
    labels = rng.integers(0, num_classes, 30)
    labels[:2] = [0, num_classes - 1]
    buf = io.BytesIO()
    shards.write_shard("tar", buf, 123_456_700, images, labels, enc, [str(i) for i in
                                                                       range(num_classes)])
    view = memoryview(buf.getvalue())
    if enc == "npy":
        fast = tarshard._read_uniform_npy(view, 123_456_700, 30, (7, 4, c))
    else:
        fast = tarshard._read_scanned(view, 123_456_700, 30, "png")
    assert fast is not None
    slow = tarshard._read_members(view, "t.tar", 123_456_700, 30, (7, 4, c), enc)
    assert np.array_equal(fast[1], labels) and np.array_equal(slow[1], labels)
    if enc == "npy":
        assert np.array_equal(fast[0], images) and np.array_equal(slow[0], images)
    else:
        assert [bytes(p) for p in fast[0]] == [bytes(p) for p in slow[0]]
        assert np.array_equal(decode_pngs(fast[0], (7, 4, c), "t.tar", 0), images)


def test_tar_keys_crossing_a_billion():
    """Keys grow to 10 digits at sample 10**9; such a shard still reads (member by member)."""
    from shardstream.shards.tarshard import read_tar

    images = np.arange(4 * 6, dtype=np.uint8).reshape(4, 2, 3, 1)
    buf = io.BytesIO()
    shards.write_shard("tar", buf, 10**9 - 2, images, [0, 1, 0, 1], "npy", ("a", "b"))
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
        assert tar.getnames()[-2:] == ["1000000001.cls", "1000000001.npy"]
    x, y = read_tar(buf.getvalue(), "t.tar", 10**9 - 2, 4, (2, 3, 1), "npy")
    assert np.array_equal(x, images) and y.tolist() == [0, 1, 0, 1]
