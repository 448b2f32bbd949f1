"""Shared test fixtures.

Small synthetic datasets, made once per test session.  The stand-in Fashion-MNIST here has
1,000 training and 250 test images; converted with 128 samples per shard that is 8 training
shards, the last one short (1000 = 7 * 128 + 104), which exercises every edge of the plan.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import pytest  # noqa: E402

SMALL_TRAIN = 1000
SMALL_TEST = 250
SMALL_SHARD = 128


@pytest.fixture(scope="session")
def fmnist_raw(tmp_path_factory):
    """Folder holding the four raw IDX .gz files of a small stand-in Fashion-MNIST."""
    from shardstream.converters.synth import synthesize

    out = tmp_path_factory.mktemp("raw")
    synthesize("fashion-mnist", str(out), num_train=SMALL_TRAIN, num_test=SMALL_TEST, seed=0,
               progress=False)
    return out


def _small_conversion(raw, tmp_path_factory, encoding):
    from shardstream.converters.convert import convert

    root = tmp_path_factory.mktemp(f"shards_{encoding}")
    convert("fashion-mnist", str(root), raw=str(raw), shard_size=SMALL_SHARD, encoding=encoding,
            progress=False)
    return root


@pytest.fixture(scope="session")
def fmnist_shards(fmnist_raw, tmp_path_factory):
    """Root of a conversion (npy encoding, tar + parquet): ``root / "fashion-mnist" / "train"``."""
    return _small_conversion(fmnist_raw, tmp_path_factory, "npy")


@pytest.fixture(scope="session")
def fmnist_png_shards(fmnist_raw, tmp_path_factory):
    """Like ``fmnist_shards`` but with PNG-encoded images."""
    return _small_conversion(fmnist_raw, tmp_path_factory, "png")


@pytest.fixture(scope="session")
def train_split(fmnist_shards):
    """Location string of the small npy training split."""
    return str(fmnist_shards / "fashion-mnist" / "train")


# ---------------------------------------------------------------------------------------------
# remote endpoints (issue 4): a moto S3 server, an aiohttp file server with Range support, and a
# fault-injecting proxy.  All bind 127.0.0.1 only and are stopped by their fixtures.


class _LoopThread:
    """An asyncio event loop running in a daemon thread (for the aiohttp test servers)."""

    def __init__(self):
        import asyncio
        import threading

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class HttpFileServer:
    """Serves the files under ``root`` at ``.url`` (GET/HEAD with Range, via aiohttp's
    FileResponse).  ``.requests`` counts GET requests per path; ``token`` requires
    ``Authorization: Bearer <token>`` (401 otherwise)."""

    def __init__(self, root, token=None):
        import collections
        import pathlib

        from aiohttp import web

        self.root = pathlib.Path(root).resolve()
        self.token = token
        self.requests = collections.Counter()
        self.head_requests = collections.Counter()
        self._lt = _LoopThread()

        async def handle(request):
            if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
                return web.Response(status=401, text="token required")
            rel = request.match_info["tail"]
            (self.requests if request.method == "GET" else self.head_requests)[rel] += 1
            path = (self.root / rel).resolve()
            if self.root not in path.parents and path != self.root:
                return web.Response(status=404)
            if path.is_dir():
                links = "".join(f'<a href="{p.name}{"/" if p.is_dir() else ""}">{p.name}</a>\n'
                                for p in sorted(path.iterdir()))
                return web.Response(text=f"<html><body>{links}</body></html>",
                                    content_type="text/html")
            if not path.is_file():
                return web.Response(status=404, text="not found")
            return web.FileResponse(path)

        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", handle)
        app.router.add_route("HEAD", "/{tail:.*}", handle)

        async def start():
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            return site._server.sockets[0].getsockname()[1]

        self.port = self._lt.run(start())
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self):
        self._lt.run(self._runner.cleanup())
        self._lt.stop()


class FaultProxy:
    """A reverse proxy on 127.0.0.1 in front of ``target`` (an http://host:port URL) that can
    misbehave on GET requests whose path contains ``match``:

    - ``"drop"``: sends the headers and half the body, then closes the connection;
    - ``"error"``: answers 503 (or ``status``) without contacting the target;
    - ``"slow"``: sends the body in small pieces with ``delay`` seconds between them;
    - ``"corrupt"``: flips one byte in the middle of the body;
    - ``"deny"``: answers 403;
    - ``"stall"``: says nothing for ``delay`` seconds (a connection that hangs), then closes it.

    ``set_fault(kind, times, match, ..., methods=("GET",), body=None)`` arms it for the next
    ``times`` matching requests (None = every one) of those methods; ``body``: the text of an
    ``"error"`` answer (e.g. S3's XML for ``SlowDown``).  ``.requests`` counts all requests per
    path, ``.faults`` those faulted.
    """

    def __init__(self, target):
        import asyncio
        import collections

        import aiohttp
        from aiohttp import web

        self.target = target.rstrip("/")
        self.requests = collections.Counter()
        self.requests_by_method = collections.Counter()
        self.faults = 0
        self.set_fault(None)
        self._lt = _LoopThread()

        async def handle(request):
            path = request.path_qs
            self.requests[request.path] += 1
            self.requests_by_method[request.method] += 1
            fault = None
            if (self.kind and request.method in self.methods and self.match in request.path
                    and (self.times is None or self.times > 0)):
                fault = self.kind
                if self.times is not None:
                    self.times -= 1
                self.faults += 1
            if fault == "error":
                await request.read()
                return web.Response(status=self.status, text=self.body or "injected failure",
                                    content_type="application/xml" if self.body else "text/plain")
            if fault == "stall":
                await asyncio.sleep(self.delay)
                request.transport.close()
                return web.Response(status=500)
            if fault == "deny":
                return web.Response(status=403, text="injected denial")
            headers = {k: v for k, v in request.headers.items()
                       if k.lower() not in ("host", "content-length", "transfer-encoding")}
            body = await request.read()
            if fault == "slow" and request.method != "GET":     # a slow upload: wait first
                await asyncio.sleep(self.delay)
            async with self._session.request(request.method, self.target + path, headers=headers,
                                             data=body or None, allow_redirects=False) as up:
                data = await up.read()
                out_headers = {k: v for k, v in up.headers.items()
                               if k.lower() not in ("content-length", "transfer-encoding",
                                                    "content-encoding", "connection")}
                status = up.status
            if fault == "corrupt" and data:
                mid = len(data) // 2
                data = data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1:]
            if fault in ("drop", "slow") and request.method == "GET":
                resp = web.StreamResponse(status=status, headers=out_headers)
                resp.content_length = len(data)
                await resp.prepare(request)
                if fault == "drop":
                    await resp.write(data[: len(data) // 2])
                    request.transport.close()
                    return resp
                step = max(1, len(data) // 8)
                for start in range(0, len(data), step):
                    await resp.write(data[start:start + step])
                    await asyncio.sleep(self.delay)
                await resp.write_eof()
                return resp
            if request.method == "HEAD":
                resp = web.StreamResponse(status=status, headers=out_headers)
                if up.headers.get("Content-Length") is not None:
                    resp.content_length = int(up.headers["Content-Length"])
                await resp.prepare(request)
                return resp
            return web.Response(status=status, body=data, headers=out_headers)

        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", handle)

        async def start():
            self._session = aiohttp.ClientSession(auto_decompress=False)
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            return site._server.sockets[0].getsockname()[1]

        self.port = self._lt.run(start())
        self.url = f"http://127.0.0.1:{self.port}"

    def set_fault(self, kind, times=None, match="", status=503, delay=0.05, methods=("GET",),
                  body=None):
        """Arm a fault (see the class doc); ``set_fault(None)`` disarms."""
        self.kind, self.times, self.match = kind, times, match
        self.status, self.delay, self.methods, self.body = status, delay, methods, body

    def close(self):
        async def stop():
            await self._session.close()
            await self._runner.cleanup()

        self._lt.run(stop())
        self._lt.stop()


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on 127.0.0.1 (free port), with fake credentials in the environment.

    Yields an object with ``.endpoint`` (``http://127.0.0.1:PORT``), ``.storage_options``
    (``{"endpoint_url": endpoint}``) and ``.bucket(name)`` creating a bucket (idempotent) and
    returning ``"s3://name"``.  Tests that need the endpoint in the environment (the CLI) set
    ``AWS_ENDPOINT_URL`` themselves with ``monkeypatch``.
    """
    import logging

    from moto.server import ThreadedMotoServer

    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()

    class S3:
        endpoint = f"http://127.0.0.1:{port}"
        storage_options = {"endpoint_url": endpoint}

        @staticmethod
        def bucket(name):
            import boto3

            client = boto3.client("s3", endpoint_url=S3.endpoint, region_name="us-east-1")
            try:
                client.create_bucket(Bucket=name)
            except client.exceptions.BucketAlreadyOwnedByYou:
                pass
            return f"s3://{name}"

    try:
        yield S3
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def http_serve():
    """Factory: ``http_serve(root, token=None)`` -> a running :class:`HttpFileServer`; all are
    stopped after the test."""
    servers = []

    def make(root, token=None):
        srv = HttpFileServer(root, token=token)
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.close()


@pytest.fixture
def fault_proxy():
    """Factory: ``fault_proxy(target_url)`` -> a running :class:`FaultProxy`; all are stopped
    after the test."""
    proxies = []

    def make(target):
        proxy = FaultProxy(target)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()


@pytest.fixture
def shard_server():
    """Factory: ``shard_server(root, token=None, quiet=True)`` -> base URL
    (``http://127.0.0.1:PORT``, no trailing slash) of a running ``shardstream serve`` server
    (:mod:`shardstream.server`) for ``root``, on 127.0.0.1 and a free port, in its own
    event loop thread.  Every server started is stopped after the test."""
    from shardstream.server import make_app, start_app

    running = []

    def make(root, token=None, quiet=True):
        lt = _LoopThread()
        try:
            runner, url = lt.run(start_app(make_app(root, token=token, quiet=quiet),
                                           "127.0.0.1", 0, shutdown_timeout=5.0))
        except BaseException:
            lt.stop()
            raise
        running.append((lt, runner))
        return url

    yield make
    for lt, runner in running:
        lt.run(runner.cleanup())
        lt.stop()


# ---------------------------------------------------------------------------------------------
# hand-made splits (issue 2 formats): shards written directly with formats.write_shard, so the
# format tests do not depend on the converters.


def write_test_split(folder, *, n=50, shard_size=16, shape=(6, 5, 1), encoding="npy",
                     formats=("tar", "parquet"), classes=("zero", "one", "two"), seed=0,
                     split="train", dataset="toy"):
    """Write a split of ``n`` random (H, W, C) = ``shape`` uint8 images with labels into
    ``folder`` (shards of ``shard_size`` + manifest.json) and return ``(manifest, images,
    labels)``.  Images have structure (a dark border, a bright blob) so PNG compresses."""
    import hashlib
    import io
    import pathlib

    import numpy as np

    from shardstream.shards import shard_name, write_shard
    from shardstream.shards.manifest import Manifest, ShardInfo

    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n,) + tuple(shape), dtype=np.uint8)
    images[:, 0] = 0
    labels = rng.integers(0, len(classes), n)
    shards = {}
    for fmt in formats:
        infos = []
        for index, start in enumerate(range(0, n, shard_size)):
            stop = min(start + shard_size, n)
            buf = io.BytesIO()
            write_shard(fmt, buf, start, images[start:stop], labels[start:stop], encoding, classes)
            data = buf.getvalue()
            name = shard_name(split, index, fmt)
            (folder / name).write_bytes(data)
            infos.append(ShardInfo(name, stop - start, len(data), hashlib.sha256(data).hexdigest()))
        shards[fmt] = tuple(infos)
    manifest = Manifest(dataset=dataset, split=split, num_samples=n, image_shape=tuple(shape),
                        encoding=encoding, classes=tuple(classes),
                        label_counts=tuple(np.bincount(labels, minlength=len(classes)).tolist()),
                        shards=shards,
                        source={"synthetic": True, "generator": "tests", "seed": seed})
    (folder / "manifest.json").write_text(manifest.to_json())
    return manifest, images, labels


@pytest.fixture
def make_split(tmp_path):
    """Factory: ``make_split(name="split", **kw)`` writes a hand-made split under ``tmp_path``
    with :func:`write_test_split` and returns ``(location, manifest, images, labels)``."""

    def make(name="split", **kw):
        folder = tmp_path / name
        manifest, images, labels = write_test_split(folder, **kw)
        return str(folder), manifest, images, labels

    return make


# ---------------------------------------------------------------------------------------------
# loader tests (issue 3): small hand-made splits, independent of the converters.


@pytest.fixture(scope="session")
def loader_splits(tmp_path_factory):
    """Splits for the loader tests, written once per session with :func:`write_test_split`:
    ``{"npy": ..., "png": ..., "rgb": ...}``, each ``(location, images, labels)``.  ``npy``
    and ``png``: the same 1,000 (28, 28, 1) images in 8 shards of 128 (the last 104), tar +
    parquet; ``rgb``: 300 (9, 7, 3) images in shards of 64.  Every image is distinct."""
    root = tmp_path_factory.mktemp("loader_splits")
    out = {}
    for name, kw in (("npy", dict(n=1000, shard_size=128, shape=(28, 28, 1), encoding="npy")),
                     ("png", dict(n=1000, shard_size=128, shape=(28, 28, 1), encoding="png")),
                     ("rgb", dict(n=300, shard_size=64, shape=(9, 7, 3), encoding="npy",
                                  seed=1))):
        _, images, labels = write_test_split(root / name, classes=tuple("abcdefghij"), **kw)
        out[name] = (str(root / name), images, labels)
    return out


@pytest.fixture(scope="session", autouse=True)
def _private_cache_dir(tmp_path_factory):
    """The shard cache (and its ``checked/`` markers) of every test and every process a test
    starts goes to a folder of this session, not the user's cache."""
    folder = str(tmp_path_factory.mktemp("shardstream-cache"))
    old = os.environ.get("SHARDSTREAM_CACHE_DIR")
    os.environ["SHARDSTREAM_CACHE_DIR"] = folder
    yield folder
    if old is None:
        os.environ.pop("SHARDSTREAM_CACHE_DIR", None)
    else:
        os.environ["SHARDSTREAM_CACHE_DIR"] = old


# Property tests run derandomized (every run, CI included, draws the same examples), so a
# failure reproduces; examples are not stored between runs.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("shardstream", derandomize=True, database=None)
_hypothesis_settings.load_profile("shardstream")

# ---------------------------------------------------------------------------------------------
# CIFAR (issue 15): a small stand-in archive (500 train in five batches of 100, 100 test) and
# its conversion (npy, 128 samples per shard: 4 training shards, the last one short).

CIFAR_TRAIN = 500
CIFAR_TEST = 100


@pytest.fixture(scope="session")
def cifar10_raw(tmp_path_factory):
    """Folder holding a stand-in ``cifar-10-python.tar.gz`` (and the synthetic marker)."""
    from shardstream.converters.synth import synthesize

    out = tmp_path_factory.mktemp("cifar_raw")
    synthesize("cifar-10", str(out), num_train=CIFAR_TRAIN, num_test=CIFAR_TEST, seed=0,
               progress=False)
    return out


@pytest.fixture(scope="session")
def cifar10_shards(cifar10_raw, tmp_path_factory):
    """Root of the conversion of ``cifar10_raw``: ``root / "cifar-10" / "train"``."""
    from shardstream.converters.convert import convert

    root = tmp_path_factory.mktemp("cifar_shards")
    convert("cifar-10", str(root), raw=str(cifar10_raw), shard_size=SMALL_SHARD, progress=False)
    return root


def cifar_archive_arrays(archive, folder="cifar-10-batches-py", label_key=b"labels"):
    """``{member: (images uint8 (n, 32, 32, 3), labels int64 (n,))}`` of a CIFAR archive, read
    the way users' scripts read it: ``tarfile`` + stock ``pickle.load(..., encoding="bytes")``
    (test data only: a stock unpickler runs whatever the pickle names)."""
    import pickle
    import tarfile
    import warnings

    import numpy as np

    out = {}
    with tarfile.open(archive) as tar, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy.core is numpy._core's deprecated alias
        for member in tar.getmembers():
            if member.isfile() and member.name.startswith(folder + "/"):
                d = pickle.loads(tar.extractfile(member).read(), encoding="bytes")
                if b"data" in d:
                    images = d[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
                    out[member.name.split("/")[-1]] = (images,
                                                       np.asarray(d[label_key], np.int64))
                else:
                    out[member.name.split("/")[-1]] = d
    return out
