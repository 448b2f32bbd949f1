"""S3 end to end against a real S3 endpoint (moto's server on 127.0.0.1): convert straight into
a bucket, verify it, stream from it with torch and tf.data and get exactly the local batches
(issue 4 items 3 and 4)."""

import pathlib

import numpy as np
import pytest
from conftest import SMALL_SHARD

import shardstream as ss
from shardstream import storage
from shardstream.cli import main
from shardstream.errors import ShardError
from shardstream.shards.verify import verify

BATCH = 64
SEED = 7


@pytest.fixture(scope="module")
def s3_converted(s3_server, fmnist_raw):
    """``s3://convert-it/datasets``, written by ``shardstream convert`` with the endpoint taken
    from AWS_ENDPOINT_URL the way a user would set it."""
    bucket = s3_server.bucket("convert-it")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
        rc = main(["convert", "fashion-mnist", bucket + "/datasets", "--raw", str(fmnist_raw),
                   "--shard-size", str(SMALL_SHARD), "--encoding", "npy", "-q"])
    assert rc == 0
    return bucket + "/datasets"


def torch_batches(location, num_workers, **kw):
    loader = ss.torch_loader(location, batch_size=BATCH, seed=SEED, num_workers=num_workers,
                             format="tar", resize=(20, 20), **kw)
    return [(x.numpy(), y.numpy()) for x, y in loader]


def tf_batches(location, num_workers, **kw):
    ds = ss.tf_dataset(location, batch_size=BATCH, seed=SEED, num_parallel=max(1, num_workers),
                       format="tar", resize=(20, 20), **kw)
    return [(x.numpy(), y.numpy()) for x, y in ds]


def assert_same(got, want):
    assert len(got) == len(want)
    for (gx, gy), (wx, wy) in zip(got, want):
        assert np.array_equal(gx, wx) and np.array_equal(gy, wy)


def test_convert_into_s3_is_byte_identical_to_local(s3_converted, fmnist_shards, s3_server):
    opts = s3_server.storage_options
    local = pathlib.Path(fmnist_shards)
    files = sorted(p for p in local.rglob("*") if p.is_file())
    assert files
    for p in files:
        rel = p.relative_to(local).as_posix()
        assert storage.read_bytes(f"{s3_converted}/{rel}", opts) == p.read_bytes(), rel
    assert storage.listdir(s3_converted + "/fashion-mnist", opts) == ["test", "train"]


def test_verify_s3(s3_converted, s3_server, monkeypatch, capsys):
    opts = s3_server.storage_options
    train = s3_converted + "/fashion-mnist/train"
    assert verify(train, storage_options=opts) == []
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    assert main(["verify", train, "-q"]) == 0
    assert main(["info", train, "--json"]) == 0
    assert '"num_samples": 1000' in capsys.readouterr().out
    # a damaged copy of the split is named by verify
    bucket = s3_server.bucket("verify-damaged")
    for name in storage.listdir(train, opts):
        data = storage.read_bytes(f"{train}/{name}", opts)
        if name == "train-000002.tar":
            data = data[:-10] + b"0123456789"
        storage.write_bytes(f"{bucket}/fashion-mnist/train/{name}", data, opts)
    problems = verify(bucket + "/fashion-mnist/train", storage_options=opts)
    assert any("train-000002.tar" in p for p in problems)
    assert main(["verify", bucket + "/fashion-mnist/train", "-q"]) == 1
    captured = capsys.readouterr()
    assert "train-000002.tar" in captured.out + captured.err


@pytest.fixture(scope="module")
def local_torch(train_split):
    return torch_batches(train_split, 0)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_torch_from_s3_equals_local(s3_converted, s3_server, local_torch, num_workers, tmp_path):
    got = torch_batches(s3_converted + "/fashion-mnist/train", num_workers,
                        storage_options=s3_server.storage_options, cache_dir=str(tmp_path))
    assert_same(got, local_torch)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_tf_from_s3_equals_local(s3_converted, s3_server, train_split, num_workers, tmp_path):
    want = tf_batches(train_split, 0)
    got = tf_batches(s3_converted + "/fashion-mnist/train", num_workers,
                     storage_options=s3_server.storage_options, cache_dir=str(tmp_path))
    assert_same(got, want)


def test_s3_connection_dropped_mid_shard(s3_converted, s3_server, local_torch, fault_proxy,
                                         tmp_path):
    proxy = fault_proxy(s3_server.endpoint)
    proxy.set_fault("drop", times=3, match="train-00000")
    got = torch_batches(s3_converted + "/fashion-mnist/train", 0,
                        storage_options={"endpoint_url": proxy.url, "retry_wait": 0.01},
                        cache_dir=str(tmp_path))
    assert proxy.faults == 3
    assert_same(got, local_torch)


def test_s3_corrupted_shard_is_a_shard_error(s3_converted, s3_server, fault_proxy, tmp_path):
    proxy = fault_proxy(s3_server.endpoint)
    proxy.set_fault("corrupt", times=None, match="train-000001.tar")
    with pytest.raises(ShardError, match=r"train-000001\.tar.*s3://convert-it"):
        torch_batches(s3_converted + "/fashion-mnist/train", 0,
                      storage_options={"endpoint_url": proxy.url}, cache_dir=str(tmp_path),
                      shuffle=False)
    cached = list((tmp_path / "shards").iterdir())
    assert not any("train-000001" in p.name for p in cached)
