"""Conversion streams (issue 13): the IDX images are checked and hashed in one pass and then
read one shard at a time, and the result is byte-identical to converting the whole arrays."""

import gzip
import os
import pathlib

import numpy as np
import pytest

from shardstream.converters import convert, read_idx, synthesize, write_split
from shardstream.converters.idx import IdxImages, idx_bytes, scan_idx
from shardstream.errors import InputError


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    out = tmp_path_factory.mktemp("stream_raw")
    synthesize("fashion-mnist", str(out), num_train=2500, num_test=700, seed=3, progress=False)
    return out


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in pathlib.Path(folder).rglob("*") if p.is_file()}


def test_streamed_conversion_is_byte_identical_to_whole_arrays(raw, tmp_path):
    streamed = tmp_path / "streamed"
    manifests = convert("fashion-mnist", str(streamed), raw=str(raw), shard_size=1000,
                        progress=False)
    whole = tmp_path / "whole"
    for m in manifests:
        prefix = "train" if m.split == "train" else "t10k"
        images = read_idx(raw / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(raw / f"{prefix}-labels-idx1-ubyte.gz")
        write_split(str(whole), "fashion-mnist", m.split, images, labels, m.classes, m.source,
                    shard_size=1000, progress=False)
    got, want = _files(streamed), _files(whole)
    # train: 3 shards x 2 formats + index + manifest; test: 1 x 2 + 2
    assert sorted(got) == sorted(want) and len(got) == (3 * 2 + 2) + (1 * 2 + 2)
    assert got == want


def test_scan_checks_and_hashes_without_reading_whole(raw):
    path = raw / "train-images-idx3-ubyte.gz"
    dims, nbytes, sha = scan_idx(path)
    data = path.read_bytes()
    import hashlib

    assert dims == (2500, 28, 28) and nbytes == len(data)
    assert sha == hashlib.sha256(data).hexdigest()
    images = IdxImages(path, dims)
    whole = read_idx(path)[..., None]
    assert np.array_equal(images.read(0, 1000), whole[:1000])
    assert np.array_equal(images.read(1000, 1500), whole[1000:])
    assert np.array_equal(images.read(700, 5), whole[700:705])          # a jump back reopens
    images.close()


@pytest.mark.parametrize("damage, message", [
    (lambda d: d[:-100], "truncated|not a valid gzip"),
    (lambda d: gzip.compress(gzip.decompress(d)[:-7], mtime=0), "truncated: the header promises"),
    (lambda d: gzip.compress(gzip.decompress(d) + b"x", mtime=0), "wrong dimensions"),
    (lambda d: b"", "empty"),
    (lambda d: idx_bytes(np.zeros(3, np.uint8)), "holds labels"),
])
def test_scan_refuses_bad_files_naming_them(raw, tmp_path, damage, message):
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    bad.write_bytes(damage((raw / "train-images-idx3-ubyte.gz").read_bytes()))
    with pytest.raises(InputError, match=message) as info:
        scan_idx(bad, 2051)
    assert str(bad) in str(info.value)


def test_a_bad_raw_file_writes_nothing(raw, tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    for name in os.listdir(raw):
        (folder / name).write_bytes((raw / name).read_bytes())
    path = folder / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(InputError, match="t10k-images"):
        convert("fashion-mnist", str(tmp_path / "out"), raw=str(folder), progress=False)
    assert not (tmp_path / "out").exists()       # refused before the first shard was written


def test_image_folder_is_read_one_shard_at_a_time(tmp_path, monkeypatch):
    from PIL import Image

    from shardstream.converters import imagefolder

    rng = np.random.default_rng(0)
    folder = tmp_path / "pets"
    arrays = []
    for c in ("cat", "dog"):
        (folder / c).mkdir(parents=True)
        for i in range(13):
            a = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
            Image.fromarray(a).save(folder / c / f"{i:02d}.png")
            arrays.append(a)
    reads = []
    real = imagefolder.FolderImages.read

    def recording(self, start, count):
        reads.append((start, count))
        return real(self, start, count)

    monkeypatch.setattr(imagefolder.FolderImages, "read", recording)
    (m,) = convert("imagefolder", str(tmp_path / "out"), source=str(folder), shard_size=10,
                   progress=False)
    assert reads == [(0, 10), (10, 10), (20, 6)]          # one shard in memory at a time
    whole = tmp_path / "whole"
    write_split(str(whole), "pets", "train", np.stack(arrays), [0] * 13 + [1] * 13,
                ("cat", "dog"), m.source, shard_size=10, progress=False)
    assert _files(tmp_path / "out") == _files(whole)
