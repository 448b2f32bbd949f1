"""Issue 16, the batch service with servers in this process (127.0.0.1, started and stopped
here): epochs through 1 and 2 servers are bitwise the local loaders' (torch and tf.data);
bearer token; datasets only under the root; request checks and the limit on work; the wire
format; back-pressure.  Kill and SIGTERM tests (subprocess servers): test_service_faults.py.
"""

import http.client
import json
import os
import pathlib
import shutil
import time
from urllib.parse import quote

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shardstream as ss
from shardstream.errors import InputError, ServiceError
from shardstream.server import start_app
from shardstream.service import BatchService, decode_run, make_batch_app, new_run
from shardstream.service.request import MAX_RUN_BATCHES, BadRequest, dataset_segments, manifest_sha
from shardstream.service.wire import ALIGN, WireError, aligned_buffer

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def root(loader_splits):
    """The folder holding the loader test splits npy/, png/, rgb/."""
    return str(pathlib.Path(loader_splits["npy"][0]).parent)


@pytest.fixture(scope="module")
def servers(root):
    """Two batch servers for ``root`` with TOKEN, in this process; their URLs."""
    from conftest import _LoopThread

    running = []
    for _ in range(2):
        lt = _LoopThread()
        runner, url = lt.run(start_app(make_batch_app(root, token=TOKEN, workers=2), "127.0.0.1",
                                       0, shutdown_timeout=5.0))
        running.append((lt, runner, url))
    yield [url for _, _, url in running]
    for lt, runner, _ in running:
        lt.run(runner.cleanup())
        lt.stop()


def torch_batches(location, **kw):
    return [(X.numpy().copy(), y.numpy().copy()) for X, y in ss.torch_loader(location, **kw)]


def tf_batches(location, **kw):
    return [(X.numpy(), y.numpy()) for X, y in ss.tf_dataset(location, **kw)]


def assert_same(got, want):
    assert len(got) == len(want) > 0
    for k, ((X, y), (eX, ey)) in enumerate(zip(got, want)):
        assert X.dtype == eX.dtype and y.dtype == ey.dtype, k
        assert np.array_equal(X, eX), f"batch {k}: pixels differ"
        assert np.array_equal(y, ey), f"batch {k}: labels differ"


CASES = [  # (split, loader arguments)
    ("npy", dict(batch_size=64)),
    ("rgb", dict(batch_size=37, seed=5, epoch=3, resize=(14, 20), shuffle_buffer=100)),
    ("npy", dict(batch_size=50, seed=1, epoch=2, rank=1, world_size=3, start_batch=2,
                 resize=(32, 32))),
    ("png", dict(batch_size=64, seed=2, drop_last=True, format="tar")),
    ("rgb", dict(batch_size=16, shuffle=False, rank=1, world_size=2, start_batch=3)),
]


@pytest.mark.parametrize("num_servers", [1, 2])
@pytest.mark.parametrize("name,kw", CASES)
def test_torch_epochs_through_the_service_are_the_local_ones(root, servers, name, kw,
                                                             num_servers):
    want = torch_batches(os.path.join(root, name), **kw)
    # runs of one batch, so that both servers serve runs of one epoch
    svc = BatchService(servers[:num_servers], TOKEN, run_bytes=1, in_flight=1)
    got = torch_batches(name, service=svc, **kw)
    assert_same(got, want)
    # every run was served once (which server serves which run depends on the scheduling of
    # the client's threads: on a loaded machine one server may serve them all; the split
    # between servers is tested where it is forced: tests/test_service_faults.py)
    served = [svc.stats[u]["runs"] for u in servers[:num_servers]]
    assert sum(served) == len(got), served
    # the list-of-URLs form, default run length
    assert_same(torch_batches(name, service=servers[:num_servers], token=TOKEN, **kw), want)


@pytest.mark.parametrize("num_servers", [1, 2])
@pytest.mark.parametrize("name,kw", CASES)
def test_tf_epochs_through_the_service_are_the_local_ones(root, servers, name, kw, num_servers):
    want = tf_batches(os.path.join(root, name), **kw)
    svc = BatchService(servers[:num_servers], TOKEN, run_bytes=1, in_flight=1)
    assert_same(tf_batches(name, service=svc, **kw), want)
    assert_same(tf_batches(name, service=svc, num_parallel=2, **kw), want)


def test_torch_set_epoch_and_resume_through_the_service(root, servers):
    local = ss.torch_loader(os.path.join(root, "npy"), batch_size=40, seed=3)
    remote = ss.torch_loader("npy", batch_size=40, seed=3, service=servers, token=TOKEN)
    for epoch in (0, 1):
        local.set_epoch(epoch)
        remote.set_epoch(epoch)
        assert_same([(X.numpy(), y.numpy()) for X, y in remote],
                    [(X.numpy(), y.numpy()) for X, y in local])
    # stop after 7 batches, resume in a new loader from the state
    remote.set_epoch(2)
    it = iter(remote)
    for _ in range(7):
        next(it)
    state = remote.state_dict()
    resumed = ss.torch_loader("npy", batch_size=40, seed=3, service=servers, token=TOKEN)
    resumed.load_state_dict(state)
    want = ss.torch_loader(os.path.join(root, "npy"), batch_size=40, seed=3, epoch=2,
                           start_batch=7)
    assert_same([(X.numpy(), y.numpy()) for X, y in resumed],
                [(X.numpy(), y.numpy()) for X, y in want])


def test_tf_reshuffle_each_iteration_through_the_service(root, servers):
    kw = dict(batch_size=64, seed=4, epoch=1, reshuffle_each_iteration=True)
    local = ss.tf_dataset(os.path.join(root, "npy"), **kw)
    remote = ss.tf_dataset("npy", service=servers, token=TOKEN, **kw)
    for _ in range(2):
        assert_same([(X.numpy(), y.numpy()) for X, y in remote],
                    [(X.numpy(), y.numpy()) for X, y in local])


def test_torch_batches_are_views_of_the_received_run(servers):
    svc = BatchService(servers[:1], TOKEN, run_bytes=4 * 32 * 28 * 28 * 4)
    batches = list(ss.torch_loader("npy", batch_size=32, service=svc))
    X0, X1 = batches[0][0], batches[1][0]
    # consecutive batches of one run lie next to each other in one buffer: nothing was copied
    assert X0.is_contiguous() and X0.data_ptr() % ALIGN == 0
    assert X1.data_ptr() == X0.data_ptr() + X0.nbytes
    # tf.data's chunks: views of the body, 64-byte aligned (what TensorFlow adopts uncopied)
    opts, manifest = svc.options("npy", batch_size=32)
    chunks = list(svc.chunks(opts, manifest, 0, 1, [8, 8, 8, 7, 1], 8))
    assert [c[0].shape[:2] for c in chunks] == [(8, 32)] * 3 + [(7, 32), (1, 8)]
    for X, y in chunks[:4]:
        assert X.base is not None and X.ctypes.data % ALIGN == 0 and y.dtype == np.int32


# ---------------------------------------------------------------------------------------------
# the wire format


def test_wire_round_trip_aligned_views_and_refusals():
    sizes = [3, 3, 2]
    body, x, y = new_run(7, sizes, (5, 4, 3), "nchw")
    x[:] = np.arange(x.size, dtype=np.float32).reshape(x.shape)
    y[:] = np.arange(8) * 10
    assert body[:8] == b"SSBATCH1"
    buf = aligned_buffer(len(body))
    buf[:] = np.frombuffer(body, np.uint8)
    run = decode_run(buf)
    assert (run.first, run.sizes, run.layout) == (7, sizes, "nchw")
    assert run.x.shape == (8, 3, 5, 4) and run.x.dtype == np.float32
    assert np.array_equal(run.x, x) and np.array_equal(run.y, y) and run.y.dtype == np.int64
    assert np.shares_memory(run.x, buf) and run.x.ctypes.data % ALIGN == 0
    assert run.y.ctypes.data % ALIGN == 0
    assert [len(b) for b, _ in run.batches()] == sizes
    head_len = int.from_bytes(body[8:12], "little")
    head = json.loads(bytes(body[12:12 + head_len]))
    assert [a["dtype"] for a in head["arrays"]] == ["<f4", "<i8"]
    with pytest.raises(WireError, match="bad magic"):
        decode_run(b"PICKLE!!" + bytes(body[8:]))
    with pytest.raises(WireError, match="past the end"):
        decode_run(bytes(body[:-8]))
    bad = bytes(body).replace(b'"<f4"', b'"|O8"')
    with pytest.raises(WireError, match="malformed"):
        decode_run(bad)
    with pytest.raises(WireError, match="header"):
        decode_run(bytes(body[:12]) + b"{not json" + bytes(body[21:]))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(sizes=st.lists(st.integers(1, 5), min_size=1, max_size=6),
       image=st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 3)),
       layout=st.sampled_from(["nchw", "nhwc"]), first=st.integers(0, 10**6),
       cut=st.integers(1, 10**6))
def test_wire_property_round_trip_and_any_truncation_refused(sizes, image, layout, first, cut):
    body, x, y = new_run(first, sizes, image, layout)
    x[:] = np.random.default_rng(first).random(x.shape, dtype=np.float32)
    y[:] = np.arange(len(y)) - 3
    run = decode_run(bytes(body))
    assert (run.first, run.sizes, run.layout) == (first, sizes, layout)
    assert np.array_equal(run.x, x) and np.array_equal(run.y, y)
    h, w, c = image
    assert run.x.shape[1:] == ((c, h, w) if layout == "nchw" else (h, w, c))
    with pytest.raises(WireError):
        decode_run(bytes(body)[:len(body) - 1 - cut % len(body)])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(parts=st.lists(st.sampled_from(["npy", "..", ".", "", "a", "~", "s3:", "x\\y", ".h",
                                       "/", "http:", "b.tmp", "c\x01"]), min_size=1, max_size=5))
def test_property_dataset_names_never_leave_the_root(parts):
    name = "/".join(parts)
    try:
        segments = dataset_segments(name)
    except BadRequest as exc:
        assert exc.status == 400
        return
    assert all(seg in ("npy", "a") for seg in segments)
    assert not name.startswith("/")


# ---------------------------------------------------------------------------------------------
# security and request checks, on the wire


def _call(url, method, path, body=None, token=TOKEN):
    host, port = url.rsplit("/", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    out = resp.status, resp.read()
    conn.close()
    return out


def _good(**changes):
    body = {"dataset": "npy", "batch_size": 64, "seed": 0, "epoch": 0, "start": 0, "stop": 2}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


def test_bearer_token_is_required(servers):
    url = servers[0]
    for token in (None, "wrong", TOKEN + "x"):
        status, text = _call(url, "POST", "/v1/batches", _good(), token=token)
        assert status == 401 and b"Bearer" in text
        assert _call(url, "GET", "/v1/manifest?dataset=npy", token=token)[0] == 401
    status, body = _call(url, "POST", "/v1/batches", _good())
    assert status == 200 and decode_run(body).sizes == [64, 64]
    with pytest.raises(ServiceError, match="401") as exc:
        ss.torch_loader("npy", batch_size=64, service=[url], token="wrong")
    assert url in str(exc.value)


@pytest.mark.parametrize("dataset", [
    "../npy", "npy/../../etc", "..", "/etc", "/tmp/npy", "~/npy", "s3://bucket/npy",
    "http://127.0.0.1:1/npy", "file:///etc", "C:/npy", "npy\\..\\x", ".hidden", "npy/.x",
    "", "npy\x00", 5, None])
def test_only_datasets_under_the_root(servers, dataset):
    status, text = _call(servers[0], "POST", "/v1/batches", _good(dataset=dataset))
    assert status == 400, (status, text)
    assert b"dataset" in text
    if isinstance(dataset, str):
        status, _ = _call(servers[0], "GET", "/v1/manifest?dataset=" + quote(dataset, safe=""))
        assert status == 400


def test_symlink_out_of_the_root_is_refused(root, servers, tmp_path):
    shutil.copytree(os.path.join(root, "npy"), tmp_path / "npy")   # a split outside the root
    link = pathlib.Path(root) / "escape"
    os.symlink(tmp_path, link)
    try:
        status, text = _call(servers[0], "POST", "/v1/batches", _good(dataset="escape/npy"))
        assert status == 400 and b"outside" in text
    finally:
        link.unlink()
    status, text = _call(servers[0], "POST", "/v1/batches", _good(dataset="missing/train"))
    assert status == 404 and b"missing/train" in text


def test_client_refuses_non_root_locations_before_asking(servers):
    for location in ("../npy", "s3://b/npy", "/abs/npy"):
        with pytest.raises(InputError, match="location"):
            ss.torch_loader(location, batch_size=8, service=servers, token=TOKEN)
    with pytest.raises(InputError, match="num_workers"):
        ss.torch_loader("npy", batch_size=8, service=servers, token=TOKEN, num_workers=2)
    with pytest.raises(InputError, match="cache_dir"):
        ss.tf_dataset("npy", batch_size=8, service=servers, token=TOKEN, cache_dir="/tmp/x")


@pytest.mark.parametrize("changes,status,words", [
    (dict(batch_size=0), 400, "batch_size"),
    (dict(batch_size=-3), 400, "batch_size"),
    (dict(batch_size="64"), 400, "batch_size"),
    (dict(batch_size=True), 400, "batch_size"),
    (dict(batch_size=...), 400, "batch_size"),
    (dict(resize=[0, 5]), 400, "resize"),
    (dict(resize=[5000, 5]), 400, "resize"),
    (dict(resize=[3, 4, 5]), 400, "resize"),
    (dict(world_size=0), 400, "world_size"),
    (dict(rank=2, world_size=2), 400, "rank"),
    (dict(seed=-1), 400, "seed"),
    (dict(start=2, stop=2), 400, "stop"),
    (dict(start=10, stop=20), 400, "stop=20"),        # past the epoch's 16 batches
    (dict(layout="xyz"), 400, "layout"),
    (dict(format="zip"), 400, "format"),
    (dict(shuffle="yes"), 400, "shuffle"),
    (dict(evil=1), 400, "unknown"),
    (dict(manifest="0" * 64), 409, "manifest"),
    (dict(stop=MAX_RUN_BATCHES + 1), 413, "at most"),
    (dict(batch_size=1000, stop=1, resize=[1024, 1024]), 413, "over the limit"),
])
def test_request_arguments_are_checked(servers, changes, status, words):
    got, text = _call(servers[0], "POST", "/v1/batches", _good(**changes))
    assert got == status, text
    assert words.encode() in text


def test_malformed_bodies_are_400(servers):
    assert _call(servers[0], "POST", "/v1/batches", b"{not json")[0] == 400
    assert _call(servers[0], "POST", "/v1/batches", b"[1, 2]")[0] == 400
    assert _call(servers[0], "POST", "/v1/batches", b"x" * (1 << 17))[0] == 413


def test_manifest_checksum_must_match(root, servers):
    status, text = _call(servers[0], "GET", "/v1/manifest?dataset=npy")
    assert status == 200
    manifest = ss.load_manifest(os.path.join(root, "npy"))
    assert json.loads(text) == json.loads(manifest.to_json())
    sha = manifest_sha(manifest)
    assert _call(servers[0], "POST", "/v1/batches", _good(manifest=sha))[0] == 200


# ---------------------------------------------------------------------------------------------
# back-pressure


def test_the_client_keeps_a_bounded_number_of_runs_ahead(root, servers):
    svc = BatchService(servers, TOKEN, in_flight=1, run_bytes=1)   # runs of one batch
    opts, manifest = svc.options("npy", batch_size=32)
    batches = svc.batches(opts, manifest)
    next(batches)
    time.sleep(0.5)            # a consumer slower than the servers
    received = sum(svc.stats[u]["runs"] for u in servers)
    # in_flight x servers = 2 runs ahead of the consumer, plus the one it holds
    assert received <= 3, received
    rest = list(batches)
    assert len(rest) == 31
    assert svc.stats["peak_ahead"] <= 2


# ---------------------------------------------------------------------------------------------
# a server whose root is an S3 bucket (it reads the shards itself; the trainer needs no access)


def test_server_root_in_s3(root, s3_server, tmp_path, monkeypatch):
    from conftest import _LoopThread

    bucket = s3_server.bucket("batch-root")
    # lands at <bucket>/data/<dataset>/<split>: the split's manifest names it toy/train
    ss.upload(os.path.join(root, "rgb"), bucket + "/data", progress=False,
              storage_options=s3_server.storage_options)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    lt = _LoopThread()
    app = make_batch_app(bucket + "/data", token=TOKEN, workers=1, cache_dir=str(tmp_path))
    runner, url = lt.run(start_app(app, "127.0.0.1", 0, shutdown_timeout=5.0))
    try:
        kw = dict(batch_size=30, seed=9, resize=(10, 10))
        want = torch_batches(os.path.join(root, "rgb"), **kw)
        assert_same(torch_batches("toy/train", service=[url], token=TOKEN, **kw), want)
        # a request cannot name another bucket or leave the root
        for dataset in ("s3://other/toy/train", "../data/toy/train", "/data/toy/train"):
            assert _call(url, "POST", "/v1/batches", _good(dataset=dataset))[0] == 400
        assert _call(url, "POST", "/v1/batches", _good(dataset="nothing/here"))[0] == 404
    finally:
        lt.run(runner.cleanup())
        lt.stop()


def test_runs_over_the_request_limit_are_asked_in_pieces(root, servers, monkeypatch):
    import shardstream.service.client as client

    kw = dict(batch_size=50, seed=6, resize=(16, 16))
    want = tf_batches(os.path.join(root, "npy"), **kw)
    # as if a request could hold only 3 batches: tf.data's runs of 8 come in 3 pieces, and the
    # chunks spanning two pieces are joined
    batch_bytes = 50 * (16 * 16 * 4 + 8)
    monkeypatch.setattr(client, "MAX_RUN_BYTES", 3 * batch_bytes + (1 << 16))
    svc = BatchService(servers, TOKEN)
    assert_same(tf_batches("npy", service=svc, **kw), want)
    assert sum(svc.stats[u]["runs"] for u in servers) == 8     # 20 batches: 8 + 8 + 4
    assert_same(torch_batches("npy", service=svc, **kw),
                torch_batches(os.path.join(root, "npy"), **kw))
    with pytest.raises(InputError, match="over the batch service's limit"):
        ss.torch_loader("npy", batch_size=200, resize=(16, 16), service=svc)


def test_cli_serve_batches(tmp_path, capsys):
    from shardstream.cli import build_parser, main

    assert main(["serve-batches", str(tmp_path / "missing")]) == 1
    assert "cannot serve batches from" in capsys.readouterr().err
    text = build_parser()._subparsers._group_actions[0].choices["serve-batches"].format_help()
    assert "docs/service.md" in text and "--token" in text and "--cache-memory" in text


def test_a_server_that_cannot_read_a_shard_is_replaced(root, servers, tmp_path):
    from conftest import _LoopThread

    bad_root = tmp_path / "bad"
    shutil.copytree(os.path.join(root, "npy"), bad_root / "npy")
    shard = sorted((bad_root / "npy").glob("*.parquet"))[3]
    shard.write_bytes(shard.read_bytes()[:-100])          # truncated on this server only
    lt = _LoopThread()
    runner, bad = lt.run(start_app(make_batch_app(bad_root, token=TOKEN, workers=1),
                                   "127.0.0.1", 0, shutdown_timeout=5.0))
    try:
        status, text = _call(bad, "POST", "/v1/batches", _good())
        assert status == 500 and shard.name.encode() in text
        kw = dict(batch_size=64, seed=8)
        svc = BatchService([bad, servers[0]], TOKEN, run_bytes=1, attempts=2, retry_wait=0.01)
        assert_same(torch_batches("npy", service=svc, **kw),
                    torch_batches(os.path.join(root, "npy"), **kw))
        assert svc.stats[bad]["runs"] == 0 and svc.stats[bad]["failures"] >= 1
        assert svc.stats[servers[0]]["runs"] == 16
    finally:
        lt.run(runner.cleanup())
        lt.stop()


def test_tf_dataset_fn_through_the_service(root, servers):
    import tensorflow as tf

    ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
                                     num_replicas_in_sync=2)
    local = ss.tf_dataset_fn(os.path.join(root, "npy"), global_batch_size=64, seed=2)(ctx)
    remote = ss.tf_dataset_fn("npy", global_batch_size=64, seed=2, service=servers,
                              token=TOKEN)(ctx)
    assert_same([(X.numpy(), y.numpy()) for X, y in remote],
                [(X.numpy(), y.numpy()) for X, y in local])


def test_tf_chunks_are_aligned_views_of_the_received_run(servers):
    # what tf.data's numpy_function receives: (k, b, h, w, C) views of the response body,
    # 64-byte aligned (tf.data adopts such an array without a copy, as for the local chunks)
    svc = BatchService(servers[:1], TOKEN)
    opts, manifest = svc.options("npy", batch_size=32, seed=1)
    from shardstream.loaders.tf_loader import chunk_sizes

    plan = opts.plan(manifest)
    total = plan.num_batches
    sizes = np.full(total, 32)
    sizes[-1] = plan.num_ids - (total - 1) * 32
    chunks = list(svc.chunks(opts, manifest, 0, 1, chunk_sizes(sizes), 8))
    assert sum(len(X) for X, _ in chunks) == total
    for X, y in chunks:
        assert X.ctypes.data % ALIGN == 0 and not X.flags.owndata
        assert X.dtype == np.float32 and y.dtype == np.int32
    X0 = chunks[0][0]
    assert X0.base is not None and np.shares_memory(X0, X0.base)
