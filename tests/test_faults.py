"""Faults not exercised elsewhere (issue 13): a connection that stalls past the read timeout (HTTP
and S3), S3 5xx and throttling through a fault proxy in front of moto, an upload killed with
SIGKILL and run again, a downloader killed in the middle of a shard.  Every server and process
is started and stopped here, on 127.0.0.1."""

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from shardstream import storage
from shardstream.errors import StorageError
from shardstream.storage.cache import ShardFetcher

FAST = {"retry_wait": 0.01}
SLOW_DOWN = ("<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
             "<Message>Please reduce your request rate.</Message></Error>")


@pytest.fixture
def served_blob(tmp_path, http_serve):
    (tmp_path / "d").mkdir()
    data = os.urandom(100_000)
    (tmp_path / "d" / "blob.bin").write_bytes(data)
    return http_serve(tmp_path), data


def test_http_connection_that_stalls_past_the_timeout(served_blob, fault_proxy):
    srv, data = served_blob
    proxy = fault_proxy(srv.url)
    url = proxy.url + "/d/blob.bin"
    proxy.set_fault("stall", times=1, delay=20)
    assert storage.read_bytes(url, {**FAST, "timeout": 0.5, "retries": 2}) == data
    assert proxy.faults == 1
    proxy.set_fault("stall", delay=20)
    with pytest.raises(StorageError, match=r"blob\.bin failed after 2 attempt\(s\).*Timeout"):
        storage.read_bytes(url, {**FAST, "timeout": 0.5, "retries": 1})


@pytest.fixture
def s3_proxy(s3_server, fault_proxy):
    """(bucket location, storage options through the proxy, the proxy)."""
    bucket = s3_server.bucket("faults")
    proxy = fault_proxy(s3_server.endpoint)
    return bucket, {"endpoint_url": proxy.url, **FAST}, proxy


def test_s3_connection_that_stalls_past_the_timeout(s3_proxy):
    bucket, opts, proxy = s3_proxy
    storage.write_bytes(bucket + "/stall.bin", b"abc" * 1000, opts)
    proxy.set_fault("stall", times=1, delay=20, methods=("GET", "HEAD"))
    assert storage.read_bytes(bucket + "/stall.bin", {**opts, "timeout": 1, "retries": 2}) \
        == b"abc" * 1000
    proxy.set_fault("stall", delay=20, methods=("GET", "HEAD"))
    with pytest.raises(StorageError, match=r"stall\.bin failed after 2 attempt\(s\)"):
        storage.read_bytes(bucket + "/stall.bin", {**opts, "timeout": 1, "retries": 1})


@pytest.mark.parametrize("status, body", [(503, SLOW_DOWN), (500, "internal error")])
def test_s3_5xx_and_throttling_are_retried(s3_proxy, status, body):
    bucket, opts, proxy = s3_proxy
    # writes: the first two PUTs fail, the third lands
    proxy.set_fault("error", times=2, status=status, body=body, methods=("PUT",))
    storage.write_bytes(bucket + "/x.bin", b"payload", opts)
    assert proxy.faults == 2
    # reads: every GET and HEAD of the next three fails, then it works
    proxy.set_fault("error", times=3, status=status, body=body, methods=("GET", "HEAD"))
    assert storage.read_bytes(bucket + "/x.bin", opts) == b"payload"
    assert proxy.faults == 5
    # a store that never recovers: bounded, and the message names the object
    proxy.set_fault("error", status=status, body=body, methods=("GET", "HEAD"))
    with pytest.raises(StorageError, match=r"s3://faults/x\.bin failed after 3 attempt\(s\)"):
        storage.read_bytes(bucket + "/x.bin", {**opts, "retries": 2})


def _objects(bucket_loc, prefix, opts):
    """{key under prefix: bytes} of every object, listed through boto3 (not shardstream)."""
    import boto3

    client = boto3.client("s3", endpoint_url=opts["endpoint_url"], region_name="us-east-1")
    bucket = bucket_loc[len("s3://"):]
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return out


def test_upload_killed_and_run_again(s3_server, fault_proxy, make_split, tmp_path):
    location, manifest, _, _ = make_split("up", n=200, shard_size=20)
    bucket = s3_server.bucket("killed-upload")
    proxy = fault_proxy(s3_server.endpoint)
    proxy.set_fault("slow", delay=0.05, methods=("PUT",))      # slow enough to be caught
    env = {**os.environ, "AWS_ENDPOINT_URL": proxy.url}
    cmd = [sys.executable, "-m", "shardstream.cli", "upload", location, bucket + "/ds",
           "--jobs", "1", "-q"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while proxy.requests_by_method.get("PUT", 0) < 3 and time.time() < deadline:
            time.sleep(0.02)
        assert proxy.requests_by_method.get("PUT", 0) >= 3
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    opts = {"endpoint_url": s3_server.endpoint}
    prefix = "ds/toy/train/"
    partial = _objects(bucket, prefix, opts)
    assert prefix + "manifest.json" not in partial               # never read as a dataset
    assert 0 < len(partial) < 20
    done = subprocess.run(cmd, env={**os.environ, "AWS_ENDPOINT_URL": s3_server.endpoint},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    local = {prefix + p.name: p.read_bytes() for p in pathlib.Path(location).iterdir()}
    assert _objects(bucket, prefix, opts) == local                # identical, no orphans


def test_downloader_killed_mid_shard_leaves_no_temp_behind(make_split, http_serve, fault_proxy,
                                                           tmp_path):
    location, manifest, _, _ = make_split("dl", n=40, shard_size=40, shape=(64, 64, 3))
    srv = http_serve(pathlib.Path(location).parent)
    proxy = fault_proxy(srv.url)
    proxy.set_fault("slow", delay=2.0)                              # 8 pieces, 2 s apart
    cache = tmp_path / "cache"
    url = proxy.url + "/dl"
    script = textwrap.dedent(f"""
        from shardstream.shards import load_manifest
        from shardstream.storage.cache import ShardFetcher
        m = load_manifest({url!r})
        ShardFetcher({url!r}, m, "tar", cache_dir={str(cache)!r}).local_file(0)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 60
        temps = []
        while not temps and time.time() < deadline:
            shards = cache / "shards"
            temps = [p for p in shards.iterdir() if p.name.endswith(".tmp")] \
                if shards.exists() else []
            time.sleep(0.05)
        assert temps, "the download never started"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    assert all(p.exists() for p in temps)                         # the dead process's temp
    proxy.set_fault(None)
    fetcher = ShardFetcher(url, manifest, "tar", cache_dir=str(cache))
    assert not any(p.exists() for p in temps)                     # cleaned by the next run
    data = pathlib.Path(fetcher.local_file(0)).read_bytes()
    assert data == (pathlib.Path(location) / "train-000000.tar").read_bytes()
    assert np.array_equal(sorted(p.name for p in (cache / "shards").iterdir()),
                          [os.path.basename(fetcher.local_file(0))])


def test_cli_timeout_retries_and_token(make_split, shard_server, fault_proxy, capsys):
    from shardstream import cli

    location, manifest, _, _ = make_split("cli", n=30, shard_size=10)
    url = shard_server(str(pathlib.Path(location).parent), token="tok") + "/cli"
    assert cli.main(["info", url, "--retries", "0"]) == 1
    assert "401" in capsys.readouterr().err
    assert cli.main(["info", url, "--token", "tok", "--json"]) == 0
    assert '"num_samples": 30' in capsys.readouterr().out
    assert cli.main(["verify", url, "--token", "tok", "-q"]) == 0
    proxy = fault_proxy(url.rsplit("/", 1)[0])
    proxy.set_fault("stall", delay=20)
    assert cli.main(["info", proxy.url + "/cli", "--token", "tok", "--timeout", "0.5",
                     "--retries", "1"]) == 1
    assert "failed after 2 attempt(s)" in capsys.readouterr().err
