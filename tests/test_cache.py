"""The shard cache (shards/cache.py): verified whole-shard downloads, one per machine, LRU
eviction under cache_limit, safe sharing between processes, clear errors when caching fails.

These tests use blobs of random bytes as "shards" (the fetcher only looks at names, sizes and
sha256s); streaming real shards from remote locations is in test_s3.py / test_http_faults.py.
"""

import errno
import hashlib
import multiprocessing
import os
import time
from types import SimpleNamespace

import pytest

from shardstream import storage
from shardstream.errors import InputError, NotFoundError, ShardError, StorageError
from shardstream.storage.cache import ShardFetcher
from shardstream.units import parse_size

SHARD_BYTES = 50_000
NUM_SHARDS = 6
FORK = multiprocessing.get_context("fork")


def _fake_split(folder, n=NUM_SHARDS, nbytes=SHARD_BYTES, seed=0):
    """Write n random blobs as shards into folder; return a manifest-like object."""
    import numpy as np

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    infos = []
    for i in range(n):
        data = rng.integers(0, 256, nbytes, dtype=np.uint8).tobytes()
        name = f"train-{i:06d}.tar"
        (folder / name).write_bytes(data)
        infos.append(SimpleNamespace(name=name, num_samples=10, bytes=len(data),
                                     sha256=hashlib.sha256(data).hexdigest()))
    return SimpleNamespace(shards={"tar": tuple(infos)})


@pytest.fixture
def remote_split(tmp_path, http_serve):
    """(server, split URL, manifest, local folder) of a fake split served over HTTP."""
    manifest = _fake_split(tmp_path / "srv" / "ds" / "train")
    srv = http_serve(tmp_path / "srv")
    return srv, srv.url + "/ds/train", manifest, tmp_path / "srv" / "ds" / "train"


def _cached_files(cache_dir):
    return sorted(os.listdir(os.path.join(cache_dir, "shards")))


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def test_parse_size():
    assert parse_size("2GB") == 2_000_000_000
    assert parse_size("1.5 GiB") == 3 * 2**29
    assert parse_size(1234) == 1234 and parse_size(None) is None
    for bad in ("lots", "-1GB", 0, "2 parsecs", True):
        with pytest.raises(InputError, match="cache_limit"):
            parse_size(bad)


def test_local_split_is_read_in_place(tmp_path):
    manifest = _fake_split(tmp_path / "train", n=2)
    for loc in (str(tmp_path / "train"), f"file://{tmp_path}/train"):
        f = ShardFetcher(loc, manifest, "tar", cache_dir=str(tmp_path / "never"))
        assert f.local_file(1) == str(tmp_path / "train" / "train-000001.tar")
        f.prefetch([0, 1])
        f.release(0)
        # nothing is copied: the cache folder holds only the markers of the checked shards
        assert not (tmp_path / "never" / "shards").exists()
        assert len(os.listdir(tmp_path / "never" / "checked")) == 1


def test_remote_shard_downloaded_once_verified_and_reused(remote_split, tmp_path):
    srv, url, manifest, folder = remote_split
    cache_dir = str(tmp_path / "cache")
    f = ShardFetcher(url, manifest, "tar", cache_dir=cache_dir)
    path = f.local_file(2)
    assert path.startswith(cache_dir)
    assert _read(path) == (folder / "train-000002.tar").read_bytes()
    f.release(2)
    # a second fetcher (another epoch, another process) reuses the verified file
    g = ShardFetcher(url, manifest, "tar", cache_dir=cache_dir)
    assert g.local_file(2) == path
    assert srv.requests["ds/train/train-000002.tar"] == 1
    # no temp files, nothing but the one shard
    assert len(_cached_files(cache_dir)) == 1


def test_cache_dir_from_environment(remote_split, tmp_path, monkeypatch):
    srv, url, manifest, _ = remote_split
    monkeypatch.setenv("SHARDSTREAM_CACHE_DIR", str(tmp_path / "envcache"))
    f = ShardFetcher(url, manifest, "tar")
    assert f.local_file(0).startswith(str(tmp_path / "envcache"))


def test_changed_dataset_never_reuses_stale_bytes(remote_split, tmp_path):
    srv, url, manifest, folder = remote_split
    cache_dir = str(tmp_path / "cache")
    old = ShardFetcher(url, manifest, "tar", cache_dir=cache_dir).local_file(0)
    # the shard is replaced at the remote location together with its manifest
    new_manifest = _fake_split(folder, n=1, seed=99)
    new = ShardFetcher(url, new_manifest, "tar", cache_dir=cache_dir).local_file(0)
    assert new != old
    assert _read(new) == (folder / "train-000000.tar").read_bytes()


def test_prefetch_downloads_in_the_background(remote_split, tmp_path):
    srv, url, manifest, _ = remote_split
    f = ShardFetcher(url, manifest, "tar", cache_dir=str(tmp_path / "c"))
    f.prefetch([1, 2, 3])
    f.prefetch([2, 3, 4])        # overlapping requests are not fetched twice
    deadline = time.time() + 20
    while len(_cached_files(tmp_path / "c")) < 4 and time.time() < deadline:
        time.sleep(0.02)
    # the four shards arrived without anyone asking for them, each downloaded once
    assert len(_cached_files(tmp_path / "c")) == 4
    assert [srv.requests[f"ds/train/train-{i:06d}.tar"] for i in range(6)] == [0, 1, 1, 1, 1, 0]
    for i in (1, 2, 3, 4):
        f.local_file(i)
        f.release(i)
        assert srv.requests[f"ds/train/train-{i:06d}.tar"] == 1
    f.close()


def test_cache_limit_smaller_than_a_shard_is_an_error(remote_split, tmp_path):
    _, url, manifest, _ = remote_split
    with pytest.raises(InputError, match=r"cache_limit.*smaller than shard train-00000\d\.tar"):
        ShardFetcher(url, manifest, "tar", cache_dir=str(tmp_path / "c"),
                     cache_limit=SHARD_BYTES - 1)


def test_lru_eviction_under_cache_limit(remote_split, tmp_path):
    srv, url, manifest, _ = remote_split
    cache_dir = str(tmp_path / "c")
    f = ShardFetcher(url, manifest, "tar", cache_dir=cache_dir, cache_limit=3 * SHARD_BYTES)
    for i in range(5):
        f.local_file(i)
        f.release(i)
        time.sleep(0.01)                          # distinct mtimes
        total = sum(os.path.getsize(os.path.join(cache_dir, "shards", n))
                    for n in _cached_files(cache_dir))
        assert total <= 3 * SHARD_BYTES
    names = sorted(n.rsplit("-", 1)[1] for n in _cached_files(cache_dir))
    assert names == ["000002.tar", "000003.tar", "000004.tar"]   # the three most recent
    # using shard 2 makes it recent: fetching 5 evicts 3, the least recently used
    f.local_file(2)
    f.release(2)
    time.sleep(0.01)
    f.local_file(5)
    f.release(5)
    names = sorted(n.rsplit("-", 1)[1] for n in _cached_files(cache_dir))
    assert names == ["000002.tar", "000004.tar", "000005.tar"]
    assert srv.requests["ds/train/train-000002.tar"] == 1


def test_shards_in_use_are_never_evicted(remote_split, tmp_path):
    _, url, manifest, folder = remote_split
    cache_dir = str(tmp_path / "c")
    user = ShardFetcher(url, manifest, "tar", cache_dir=cache_dir, cache_limit=2 * SHARD_BYTES)
    held = user.local_file(0)                     # in use, not released
    other = ShardFetcher(url, manifest, "tar", cache_dir=cache_dir, cache_limit=2 * SHARD_BYTES)
    for i in range(1, 4):
        other.local_file(i)
        other.release(i)
    assert os.path.exists(held)
    assert _read(held) == (folder / "train-000000.tar").read_bytes()
    user.release(0)
    other.local_file(4)
    assert not os.path.exists(held)               # released: now it may go


def test_sha256_mismatch_fetched_once_more_then_shard_error(remote_split, tmp_path, fault_proxy):
    srv, url, manifest, _ = remote_split
    proxy = fault_proxy(srv.url)
    purl = proxy.url + "/ds/train"
    cache_dir = str(tmp_path / "c")
    # one corrupted response: the second fetch is good
    proxy.set_fault("corrupt", times=1, match="train-000001")
    f = ShardFetcher(purl, manifest, "tar", cache_dir=cache_dir)
    assert hashlib.sha256(_read(f.local_file(1))).hexdigest() == manifest.shards["tar"][1].sha256
    assert proxy.requests["/ds/train/train-000001.tar"] == 2
    # always corrupted: exactly two fetches, then a ShardError naming shard and URL
    proxy.set_fault("corrupt", times=None, match="train-000003")
    with pytest.raises(ShardError, match=r"train-000003\.tar.*127\.0\.0\.1.*sha256"):
        f.local_file(3)
    assert proxy.requests["/ds/train/train-000003.tar"] == 2
    assert not any("000003" in n for n in _cached_files(cache_dir))
    assert not any(n.startswith(".") for n in _cached_files(cache_dir))


def test_missing_shard_is_not_found_without_retries(remote_split, tmp_path, fault_proxy):
    srv, url, manifest, folder = remote_split
    (folder / "train-000004.tar").unlink()
    proxy = fault_proxy(srv.url)
    f = ShardFetcher(proxy.url + "/ds/train", manifest, "tar", cache_dir=str(tmp_path / "c"))
    with pytest.raises(NotFoundError, match="train-000004.tar.*404"):
        f.local_file(4)
    assert proxy.requests["/ds/train/train-000004.tar"] == 1


def test_read_only_cache_dir_is_a_clear_error(remote_split, tmp_path, monkeypatch):
    _, url, manifest, _ = remote_split
    f = ShardFetcher(url, manifest, "tar", cache_dir=str(tmp_path / "c"))

    def denied(*args, **kwargs):      # simulated: tests may run as root
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(storage.local.tempfile, "mkstemp", denied)
    with pytest.raises(StorageError, match=r"train-000000\.tar.*permission denied.*cache_dir"):
        f.local_file(0)
    assert _cached_files(tmp_path / "c") == []


def test_disk_full_while_caching_leaves_no_partial_file(remote_split, tmp_path, monkeypatch):
    _, url, manifest, _ = remote_split
    cache_dir = tmp_path / "c"
    f = ShardFetcher(url, manifest, "tar", cache_dir=str(cache_dir))
    real_fdopen = os.fdopen

    class HalfWriter:                   # writes half the bytes, then the disk is full
        def __init__(self, fd, mode):
            self.f = real_fdopen(fd, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(bytes(data[: len(data) // 2]))
            self.f.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage.os, "fdopen", HalfWriter)
    with pytest.raises(StorageError, match=r"train-000000\.tar.*no space left"):
        f.local_file(0)
    monkeypatch.setattr(storage.os, "fdopen", real_fdopen)
    assert _cached_files(cache_dir) == []          # neither the final name nor a temp file
    assert _read(f.local_file(0)) == _read(os.path.join(str(tmp_path), "srv/ds/train",
                                                        "train-000000.tar"))


def _fetch_all(url, manifest, cache_dir, limit, barrier, out, order):
    f = ShardFetcher(url, manifest, "tar", cache_dir=cache_dir, cache_limit=limit)
    barrier.wait()
    ok = 0
    for i in order:
        path = f.local_file(i)
        if hashlib.sha256(_read(path)).hexdigest() == manifest.shards["tar"][i].sha256:
            ok += 1
        f.release(i)
    out.put(ok)


def test_one_download_per_shard_with_concurrent_processes(remote_split, tmp_path):
    srv, url, manifest, _ = remote_split
    barrier, out = FORK.Barrier(2), FORK.Queue()
    procs = [FORK.Process(target=_fetch_all, args=(url, manifest, str(tmp_path / "c"), None,
                                                    barrier, out, range(NUM_SHARDS)))
             for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert results == [NUM_SHARDS, NUM_SHARDS]
    assert [srv.requests[f"ds/train/train-{i:06d}.tar"] for i in range(NUM_SHARDS)] == [1] * 6


def test_concurrent_readers_with_eviction(remote_split, tmp_path):
    """Issue 7 item 4: several processes stream the same cache dir while it evicts."""
    import numpy as np

    srv, url, manifest, _ = remote_split
    nproc, epochs = 4, 3
    barrier, out = FORK.Barrier(nproc), FORK.Queue()
    orders = [np.random.default_rng(k).permutation(NUM_SHARDS).tolist() * epochs
              for k in range(nproc)]
    procs = [FORK.Process(target=_fetch_all, args=(url, manifest, str(tmp_path / "c"),
                                                    2 * SHARD_BYTES, barrier, out, orders[k]))
             for k in range(nproc)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert results == [NUM_SHARDS * epochs] * nproc          # every shard read correct
    assert sum(srv.requests.values()) > NUM_SHARDS            # eviction did happen
    files = _cached_files(tmp_path / "c")
    assert len(files) <= 2 and not any(n.startswith(".") for n in files)


def _use_inherited(fetcher, out):
    path = fetcher.local_file(1)
    out.put(hashlib.sha256(_read(path)).hexdigest())
    fetcher.release(1)


def test_fetcher_survives_fork(remote_split, tmp_path):
    srv, url, manifest, _ = remote_split
    f = ShardFetcher(url, manifest, "tar", cache_dir=str(tmp_path / "c"))
    f.local_file(0)                  # the parent holds a pin and an HTTP session
    f.prefetch([2])
    out = FORK.Queue()
    p = FORK.Process(target=_use_inherited, args=(f, out))
    p.start()
    assert out.get(timeout=60) == manifest.shards["tar"][1].sha256
    p.join(30)
    assert p.exitcode == 0
    assert os.path.exists(f.cache_path(0))
    f.close()


def test_token_is_sent_for_http_and_refused_for_s3(tmp_path, http_serve, monkeypatch):
    monkeypatch.delenv("SHARDSTREAM_TOKEN", raising=False)
    manifest = _fake_split(tmp_path / "srv" / "train", n=1)
    srv = http_serve(tmp_path / "srv", token="abc")
    f = ShardFetcher(srv.url + "/train", manifest, "tar", cache_dir=str(tmp_path / "c"),
                     token="abc")
    assert _read(f.local_file(0)) == (tmp_path / "srv" / "train" / "train-000000.tar").read_bytes()
    with pytest.raises(InputError, match="HTTP bearer token"):
        ShardFetcher("s3://bucket/train", manifest, "tar", token="abc")
