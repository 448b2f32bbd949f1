"""A shard file that changed after it was written is caught before a wrong batch comes out
(issue 13): local shards and cached copies are checked against the manifest's sha256 at the first
use of each file version, and the answer is remembered per machine."""

import os
import pathlib
import shutil

import numpy as np
import pytest

import shardstream as ss
from shardstream.errors import ShardError
from shardstream.storage import checked
from shardstream.storage.cache import ShardFetcher


def _flip_one_pixel(path):
    """Change one byte inside the pixel data of the last sample, keeping the file's size."""
    data = bytearray(pathlib.Path(path).read_bytes())
    pos = len(data) - 2048 - 10 if path.endswith(".tar") else len(data) // 2
    data[pos] ^= 0xFF
    pathlib.Path(path).write_bytes(bytes(data))


@pytest.fixture
def split(make_split):
    location, manifest, images, labels = make_split("s", n=64, shard_size=16, shape=(6, 5, 1))
    return location, manifest


def _epoch_torch(location, **kw):
    return [(X.numpy(), y.numpy()) for X, y in ss.torch_loader(location, batch_size=8,
                                                                 shuffle=False, format="tar",
                                                                 **kw)]


@pytest.fixture
def counted_hashing(monkeypatch):
    calls = []
    real = checked.file_sha256

    def counting(path):
        calls.append(os.path.basename(path))
        return real(path)

    monkeypatch.setattr(checked, "file_sha256", counting)
    return calls


def test_a_changed_local_shard_stops_the_epoch_before_a_wrong_batch(split, tmp_path):
    location, manifest = split
    pristine = _epoch_torch(location)
    _flip_one_pixel(os.path.join(location, "train-000002.tar"))
    got = []
    with pytest.raises(ShardError, match=r"train-000002\.tar.*changed after it was written.*"
                                         r"re-run the conversion"):
        for batch in ss.torch_loader(location, batch_size=8, shuffle=False, format="tar"):
            got.append((batch[0].numpy(), batch[1].numpy()))
    assert len(got) == 4                    # shards 0 and 1: 32 samples, 4 correct batches
    for (x, y), (px, py) in zip(got, pristine):
        assert np.array_equal(x, px) and np.array_equal(y, py)
    # tf.data says the same
    with pytest.raises(Exception, match=r"train-000002\.tar.*changed after it was written"):
        for _ in ss.tf_dataset(location, batch_size=8, shuffle=False, format="tar"):
            pass


def test_each_file_version_is_read_once_per_machine(split, counted_hashing, tmp_path):
    location, manifest = split
    first = _epoch_torch(location)
    assert sorted(counted_hashing) == [f"train-{i:06d}.tar" for i in range(4)]
    counted_hashing.clear()
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(first, _epoch_torch(location)))
    assert counted_hashing == []            # a second epoch: one stat per shard, no reading
    # another process (a new memo) finds the markers of this machine
    fetcher = ShardFetcher(location, manifest, "tar")
    assert fetcher.local_file(1).endswith("train-000001.tar") and counted_hashing == []
    # a shard written again (same bytes, new version) is read again, once
    path = os.path.join(location, "train-000001.tar")
    shutil.copyfile(path, path + ".copy")
    os.replace(path + ".copy", path)
    _epoch_torch(location)
    assert counted_hashing == ["train-000001.tar"]


def test_a_change_after_the_check_is_caught_at_the_next_use(split):
    location, manifest = split
    _epoch_torch(location)                  # every shard checked and remembered
    path = os.path.join(location, "train-000003.tar")
    stat = os.stat(path)
    _flip_one_pixel(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))   # even with the old mtime back
    with pytest.raises(ShardError, match=r"train-000003\.tar"):
        _epoch_torch(location)


def test_check_shards_false_trusts_the_files(split, counted_hashing):
    location, manifest = split
    _flip_one_pixel(os.path.join(location, "train-000000.tar"))
    batches = _epoch_torch(location, check_shards=False)
    assert len(batches) == 8 and counted_hashing == []


def test_a_changed_cache_entry_is_fetched_again(split, shard_server, tmp_path, counted_hashing):
    location, manifest = split
    root = pathlib.Path(location).parent
    url = shard_server(str(root)) + "/s"
    cache = tmp_path / "cache"
    pristine = _epoch_torch(location, check_shards=False)
    assert len(_epoch_torch(url, cache_dir=str(cache))) == 8
    assert counted_hashing == []            # downloads are hashed in memory, then remembered
    cached = [p for p in (cache / "shards").iterdir() if p.name.endswith("train-000001.tar")]
    _flip_one_pixel(str(cached[0]))
    again = _epoch_torch(url, cache_dir=str(cache))
    assert counted_hashing == [cached[0].name]
    for (x, y), (px, py) in zip(again, pristine):
        assert np.array_equal(x, px) and np.array_equal(y, py)
    assert checked.file_sha256(str(cached[0])) == manifest.shards["tar"][1].sha256
