"""The one storage layer (shardstream/storage/): one location syntax for local paths, file://,
http(s):// and s3://, atomic local writes, clear errors, bounded retries."""

import errno
import io
import os

import pytest

from shardstream import storage
from shardstream.errors import InputError, NotFoundError, StorageError

FAST = {"retry_wait": 0.01}


# -- location syntax -------------------------------------------------------------------------


def test_join_keeps_the_syntax_of_the_location(tmp_path):
    assert storage.join("s3://b/data/", "fashion-mnist", "train") == "s3://b/data/fashion-mnist/train"
    assert storage.join("https://h:1/x", "a.tar") == "https://h:1/x/a.tar"
    assert storage.join(str(tmp_path), "a", "b") == os.path.join(str(tmp_path), "a", "b")
    assert storage.join(f"file://{tmp_path}", "a") == f"file://{tmp_path}/a"


def test_local_path_only_for_local_locations(tmp_path):
    assert storage.local_path(str(tmp_path)) == str(tmp_path)
    assert storage.local_path(f"file://{tmp_path}/x") == f"{tmp_path}/x"
    assert storage.local_path("s3://b/k") is None
    assert storage.local_path("http://127.0.0.1:1/k") is None


@pytest.mark.parametrize("bad", ["gs://bucket/x", "ftp://host/x", "s3://", 42])
def test_unsupported_locations_are_input_errors(bad):
    with pytest.raises(InputError, match="location"):
        storage.read_bytes(bad)


def test_unknown_storage_option_is_named():
    with pytest.raises(InputError, match="endpoint"):
        storage.read_bytes("s3://b/k", {"endpoint": "http://x"})
    with pytest.raises(InputError, match="retries"):
        storage.read_bytes("http://127.0.0.1:1/k", {"retries": -1})


# -- local ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["", "file://"])
def test_local_round_trip(tmp_path, scheme):
    root = scheme + str(tmp_path)
    loc = storage.join(root, "a", "b.bin")
    storage.write_bytes(loc, b"xyz" * 1000)
    assert storage.read_bytes(loc) == b"xyz" * 1000
    assert storage.size(loc) == 3000
    assert storage.exists(loc) and not storage.exists(storage.join(root, "nope"))
    assert storage.listdir(storage.join(root, "a")) == ["b.bin"]
    storage.remove(loc)
    assert not storage.exists(loc)
    with pytest.raises(NotFoundError, match="b.bin"):
        storage.read_bytes(loc)
    with pytest.raises(NotFoundError, match="nope"):
        storage.listdir(storage.join(root, "nope"))


def test_local_write_is_atomic_when_the_disk_is_full(tmp_path, monkeypatch):
    loc = str(tmp_path / "shard.tar")
    storage.write_bytes(loc, b"old contents")

    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StorageError, match="no space left.*shard.tar|shard.tar.*no space left"):
        storage.write_bytes(loc, b"new contents")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert storage.read_bytes(loc) == b"old contents"
    assert os.listdir(tmp_path) == ["shard.tar"]        # no temp file left behind


def test_local_write_permission_denied_is_clear(tmp_path, monkeypatch):
    # simulated (tests may run as root, where chmod does not stop writes)
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(storage.local.tempfile, "mkstemp", denied)
    with pytest.raises(StorageError, match="x.bin: permission denied"):
        storage.write_bytes(str(tmp_path / "x.bin"), b"1")
    assert os.listdir(tmp_path) == []


# -- s3 (moto server) ----------------------------------------------------------------------


def test_s3_round_trip_and_listing(s3_server):
    root = s3_server.bucket("storage-rt")
    opts = s3_server.storage_options
    loc = storage.join(root, "data", "x", "a.bin")
    payload = os.urandom(300_000)
    storage.write_bytes(loc, payload, opts)
    assert storage.read_bytes(loc, opts) == payload
    assert storage.size(loc, opts) == len(payload)
    assert storage.exists(loc, opts)
    assert storage.exists(storage.join(root, "data"), opts)
    assert not storage.exists(storage.join(root, "data", "nope"), opts)
    assert storage.listdir(storage.join(root, "data"), opts) == ["x"]
    assert storage.listdir(storage.join(root, "data", "x"), opts) == ["a.bin"]
    storage.remove(loc, opts)
    assert not storage.exists(loc, opts)


def test_s3_endpoint_from_the_environment(s3_server, monkeypatch):
    root = s3_server.bucket("storage-env")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    storage.write_bytes(root + "/k", b"via env")
    assert storage.read_bytes(root + "/k") == b"via env"
    assert storage.s3_settings()["endpoint_override"] == s3_server.endpoint


def test_s3_endpoint_from_the_aws_config_profile(s3_server, monkeypatch, tmp_path):
    root = s3_server.bucket("storage-profile")
    config = tmp_path / "config"
    config.write_text(f"[profile local]\nendpoint_url = {s3_server.endpoint}\nregion = eu-west-1\n")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_PROFILE", "local")
    settings = storage.s3_settings()
    assert settings["endpoint_override"] == s3_server.endpoint
    assert settings["region"] == "eu-west-1"
    storage.write_bytes(root + "/k", b"via profile")
    assert storage.read_bytes(root + "/k") == b"via profile"


def test_s3_storage_options_map_onto_pyarrow():
    kw = storage.s3_settings({"endpoint_url": "http://h:9000", "key": "K", "secret": "S",
                              "session_token": "T", "region": "eu-central-1", "anon": True,
                              "timeout": 5})
    assert kw == {"endpoint_override": "http://h:9000", "access_key": "K", "secret_key": "S",
                  "session_token": "T", "region": "eu-central-1", "anonymous": True,
                  "connect_timeout": 5.0, "request_timeout": 5.0}


@pytest.mark.parametrize("where", ["s3://storage-missing/k", "BUCKET/missing-key"])
def test_s3_missing_is_not_found_at_once(s3_server, where):
    where = where.replace("BUCKET", s3_server.bucket("storage-nf"))
    with pytest.raises(NotFoundError, match=r"(?s)" + where.split("//")[1] + ".*endpoint"):
        storage.read_bytes(where, s3_server.storage_options)


def test_s3_unreachable_endpoint_retries_then_names_the_url():
    with pytest.raises(StorageError, match=r"s3://b/k failed after 3 attempt") as info:
        storage.read_bytes("s3://b/k", {"endpoint_url": "http://127.0.0.1:1", "retries": 2,
                                        **FAST})
    assert not isinstance(info.value, NotFoundError)


# -- http ------------------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path, http_serve):
    (tmp_path / "d").mkdir()
    payload = os.urandom(200_000)
    (tmp_path / "d" / "a.bin").write_bytes(payload)
    return http_serve(tmp_path), payload


def test_http_read_size_exists_listdir(served):
    srv, payload = served
    loc = srv.url + "/d/a.bin"
    assert storage.read_bytes(loc) == payload
    assert storage.size(loc) == len(payload)
    assert storage.exists(loc) and not storage.exists(srv.url + "/d/nope")
    assert storage.listdir(srv.url + "/d") == ["a.bin"]
    with pytest.raises(StorageError, match="read-only"):
        storage.write_bytes(loc, b"x")


def test_http_bearer_token(tmp_path, http_serve, monkeypatch):
    (tmp_path / "f").write_bytes(b"secret bytes")
    srv = http_serve(tmp_path, token="t0k")
    monkeypatch.delenv("SHARDSTREAM_TOKEN", raising=False)
    with pytest.raises(NotFoundError, match="401.*token"):
        storage.read_bytes(srv.url + "/f")
    assert srv.requests["f"] == 0               # refused before the handler counted it
    assert storage.read_bytes(srv.url + "/f", {"token": "t0k"}) == b"secret bytes"
    monkeypatch.setenv("SHARDSTREAM_TOKEN", "t0k")
    # the variable is for the locations a user names (with_token binds it to their origin);
    # a bare storage call sends nothing it was not given
    assert storage.read_bytes(srv.url + "/f", storage.with_token(srv.url)) == b"secret bytes"
    with pytest.raises(NotFoundError, match="401"):
        storage.read_bytes(srv.url + "/f")


@pytest.mark.parametrize("kind", ["drop", "error", "slow"])
def test_http_transient_faults_are_retried(served, fault_proxy, kind):
    srv, payload = served
    proxy = fault_proxy(srv.url)
    proxy.set_fault(kind, times=2, match="a.bin", delay=0.02)
    assert storage.read_bytes(proxy.url + "/d/a.bin", FAST) == payload
    if kind == "slow":          # slow is not a failure: one request, complete
        assert proxy.faults == 1 and proxy.requests["/d/a.bin"] == 1
    else:                       # two failed attempts, then the good one
        assert proxy.faults == 2 and proxy.requests["/d/a.bin"] == 3


def test_http_retries_are_bounded_and_configurable(served, fault_proxy):
    srv, _ = served
    proxy = fault_proxy(srv.url)
    proxy.set_fault("error", times=None, match="a.bin")
    with pytest.raises(StorageError, match=r"a.bin failed after 4 attempt.*503"):
        storage.read_bytes(proxy.url + "/d/a.bin", {"retries": 3, **FAST})
    assert proxy.requests["/d/a.bin"] == 4


@pytest.mark.parametrize("kind", ["deny", "missing"])
def test_http_403_404_fail_at_once(served, fault_proxy, kind):
    srv, _ = served
    proxy = fault_proxy(srv.url)
    name = "a.bin" if kind == "deny" else "nope.bin"
    proxy.set_fault("deny" if kind == "deny" else None, match="a.bin")
    with pytest.raises(NotFoundError, match=rf"{name}.*(403|404).*token"):
        storage.read_bytes(proxy.url + "/d/" + name)
    assert proxy.requests["/d/" + name] == 1      # no retry storm


def test_forked_child_leaves_the_parents_http_connections_alone(tmp_path, shard_server):
    """A forked child (a DataLoader worker) builds its own HTTP client; dropping its copy of the
    parent's must not break the parent's pooled keep-alive connection (it did: the parent's
    next request hung until the read timeout).  No retries and a short timeout, so a broken
    connection fails this test instead of being retried."""
    import gc

    (tmp_path / "a.bin").write_bytes(os.urandom(200_000))
    url = shard_server(str(tmp_path)) + "/a.bin"   # aiohttp server: keep-alive connections
    opts = {"timeout": 5, "retries": 0}
    want = storage.read_bytes(url, opts)        # the parent now has a pooled connection
    pid = os.fork()
    if pid == 0:  # the child: use storage (new client), drop the parent's copy, exit
        code = 1
        try:
            code = 0 if storage.read_bytes(url, opts) == want else 2
            gc.collect()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    for _ in range(3):
        assert storage.read_bytes(url, opts) == want


# -- one dispatch, one module per backend ----------------------------------------------------


@pytest.mark.parametrize("kind", ["local", "http", "s3"])
def test_open_read_streams_every_backend(kind, tmp_path, served, s3_server):
    data = bytes(range(256)) * 4000                          # ~1 MB, several reads
    if kind == "local":
        where = str(tmp_path / "blob.bin")
        storage.write_bytes(where, data)
        opts = None
    elif kind == "http":
        srv, _ = served
        (tmp_path / "d" / "blob.bin").write_bytes(data)
        where, opts = srv.url + "/d/blob.bin", None
    else:
        where = s3_server.bucket("storage-stream") + "/blob.bin"
        opts = s3_server.storage_options
        storage.write_bytes(where, data, opts)
    with storage.open_read(where, opts) as f:
        parts = []
        while chunk := f.read(65536):
            parts.append(bytes(chunk))
    assert b"".join(parts) == data
    with pytest.raises(NotFoundError, match="blob-missing.bin"):
        storage.open_read(where.replace("blob.bin", "blob-missing.bin"), opts)


def test_a_backend_is_one_module(monkeypatch):
    # A new scheme needs one module with NAME, SCHEMES, OPTION_KEYS, to_path and the
    # operations; every public operation then dispatches to it.
    import types

    from shardstream.storage import location

    blobs = {}
    mem = types.ModuleType("mem")
    mem.NAME, mem.SCHEMES, mem.OPTION_KEYS = "mem", ("mem",), ("retries",)
    mem.to_path = lambda loc: loc[len("mem://"):]
    mem.read = lambda loc, path, opts: blobs[path]
    mem.open_read = lambda loc, path, opts: io.BytesIO(blobs[path])
    mem.write = lambda loc, path, data, opts: blobs.__setitem__(path, bytes(data))
    mem.size = lambda loc, path, opts: len(blobs[path])
    mem.exists = lambda loc, path, opts: any(k == path or k.startswith(path + "/") for k in blobs)
    mem.listdir = lambda loc, path, opts: sorted({k[len(path) + 1:].split("/")[0]
                                                  for k in blobs if k.startswith(path + "/")})
    mem.remove = lambda loc, path, opts: blobs.pop(path)
    monkeypatch.setattr(location, "_BY_SCHEME", {**location._BY_SCHEME, "mem": mem})

    storage.write_bytes("mem://b/x/one", b"1")
    storage.write_bytes(storage.join("mem://b/x", "two"), b"22")
    assert storage.read_bytes("mem://b/x/two") == b"22"
    assert storage.open_read("mem://b/x/one").read() == b"1"
    assert storage.size("mem://b/x/two") == 2
    assert storage.exists("mem://b/x") and not storage.exists("mem://b/y")
    assert storage.listdir("mem://b/x") == ["one", "two"]
    assert storage.is_remote("mem://b/x") and storage.local_path("mem://b/x") is None
    storage.remove("mem://b/x/one")
    assert storage.listdir("mem://b/x") == ["two"]
    with pytest.raises(InputError, match="unknown key.*'token'.*known for mem: retries"):
        storage.read_bytes("mem://b/x/two", {"token": "t"})
