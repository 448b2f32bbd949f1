"""The trainer's side of the batch service: :class:`BatchService`.

A batch is a pure function of (manifest, loader arguments, seed, epoch, rank, batch index), so
any server can compute any run of batches and the client keeps all the state: it splits the
rank's epoch into runs, asks the servers for them (at most ``in_flight`` runs per server at a
time, and never more than ``in_flight x servers`` runs ahead of the consumer: back-pressure,
bounded memory), and hands them out in plan order.  A server that fails (connection refused or
reset, timeout, 5xx, a truncated body) has its runs re-asked from the others; after ``attempts``
failures in a row a server is given up for the epoch, and when every server is given up the
consumer gets a :class:`ServiceError` naming them -- never a short epoch.  A 4xx answer (bad
token, bad argument, unknown dataset) is the same on every server: it is raised at once.

Bodies are received (``readinto``) into 64-byte-aligned buffers, and batches are views of them
(:mod:`.wire`): the adapters wrap them with ``torch.from_numpy`` / hand them to tf.data
without a copy.  Uses the standard library's ``http.client``, one keep-alive connection per
fetching thread.
"""

from __future__ import annotations

import heapq
import http.client
import json
import threading
from urllib.parse import quote, urlsplit

import numpy as np

from .. import config
from ..errors import InputError, ServiceError
from ..loaders.execute import worker_batches
from ..loaders.options import loader_options
from ..shards.manifest import Manifest
from .request import MAX_RUN_BATCHES, BadRequest, dataset_segments, manifest_sha
from .wire import CONTENT_TYPE, WireError, aligned_buffer, decode_run

#: default bytes of images per requested run (the run length adapts to the batch's size)
RUN_BYTES = 4 << 20


class _Transient(Exception):
    """This server failed this time; ask another."""


class _Server:
    def __init__(self, url: str):
        if not isinstance(url, str):
            raise InputError(f"service={url!r}: each server must be a URL string like "
                             f"'http://host:9100'")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
            raise InputError(f"service server {url!r}: must be http://host:port or "
                             f"https://host:port (a `shardstream serve-batches` server)")
        self.url = url.rstrip("/")
        self.scheme, self.host, self.port = parts.scheme, parts.hostname, parts.port
        self.path = parts.path.rstrip("/")

    def connect(self, timeout):
        cls = (http.client.HTTPSConnection if self.scheme == "https"
               else http.client.HTTPConnection)
        return cls(self.host, self.port, timeout=timeout)


class BatchService:
    """Clients of ``shardstream serve-batches`` servers (``servers``: a URL or a list of them).

    ``token``: the servers' bearer token (default ``$SHARDSTREAM_TOKEN``); ``in_flight``: runs
    requested from one server at once, per epoch being read; ``run_bytes``: image bytes per
    run; ``attempts`` / ``retry_wait`` / ``timeout``: a server is given up after ``attempts``
    failures in a row, waiting ``retry_wait`` s doubled each time (at most
    ``config.MAX_RETRY_WAIT``) between them; ``timeout`` s per request.  ``stats``: per server
    URL, ``{"runs": received, "failures": ...}`` and ``"peak_ahead"``: most runs requested or
    held ahead of the consumer at once."""

    def __init__(self, servers, token=None, *, in_flight=2, run_bytes=RUN_BYTES,
                 attempts=config.DEFAULT_RETRIES, retry_wait=config.DEFAULT_RETRY_WAIT,
                 timeout=config.DEFAULT_TIMEOUT):
        if isinstance(servers, str):
            servers = [servers]
        if not isinstance(servers, (list, tuple)) or not servers:
            raise InputError(f"service={servers!r}: give a list of batch server URLs, e.g. "
                             f"['http://in1:9100', 'http://in2:9100']")
        self.servers = [_Server(s) for s in servers]
        for name, v in (("in_flight", in_flight), ("run_bytes", run_bytes),
                        ("attempts", attempts)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"{name}={v!r}: must be an integer >= 1")
        self.in_flight, self.run_bytes, self.attempts = in_flight, run_bytes, attempts
        self.retry_wait, self.timeout = float(retry_wait), float(timeout)
        token = config.token() if token is None else token
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.stats = {s.url: {"runs": 0, "failures": 0} for s in self.servers}
        self.stats["peak_ahead"] = 0
        self.lock = threading.Lock()

    @classmethod
    def of(cls, service, token=None) -> BatchService:
        """``service`` itself when it is a BatchService, else ``BatchService(service, token)``."""
        if isinstance(service, BatchService):
            if token is not None:
                raise InputError("token=...: pass the token to BatchService(..., token=...) "
                                 "when service= is a BatchService")
            return service
        return cls(service, token)

    def _wait(self, fails: int) -> float:
        return min(self.retry_wait * 2 ** (fails - 1), config.MAX_RETRY_WAIT)

    # -- one request ------------------------------------------------------------------------

    def request(self, server: _Server, holder: list, method: str, path: str, body=None):
        """(status, body) of one request on the connection in ``holder[0]`` (made or remade
        there); a 200 body is read into an aligned uint8 buffer, others as text.  _Transient
        for a connection failure, a timeout or a truncated body."""
        for again in (False, True):
            reused = holder[0] is not None
            if holder[0] is None:
                holder[0] = server.connect(self.timeout)
            conn = holder[0]
            try:
                conn.request(method, server.path + path, body=body, headers=self.headers)
                resp = conn.getresponse()
                if resp.status != 200:
                    return resp.status, resp.read(1 << 16).decode("utf-8", "replace").strip()
                length = resp.getheader("Content-Length")
                if length is None:
                    raise _Transient(f"{server.url}: a response without Content-Length")
                buf = aligned_buffer(int(length))
                view, got = memoryview(buf), 0
                while got < len(buf):
                    n = resp.readinto(view[got:])
                    if not n:
                        raise _Transient(f"{server.url}: the response ended after {got} of "
                                         f"{len(buf)} bytes")
                    got += n
                return 200, buf
            except (OSError, http.client.HTTPException, _Transient) as exc:
                conn.close()
                holder[0] = None
                if reused and not again and not isinstance(exc, _Transient):
                    continue    # a kept-alive connection the server had closed: once more
                raise exc if isinstance(exc, _Transient) else _Transient(
                    f"{server.url}: {type(exc).__name__}: {exc}") from None
        raise AssertionError("unreachable")

    def _refused(self, server: _Server, status: int, text: str) -> Exception:
        """The error for a non-200 answer: 4xx -> ServiceError (the same on every server);
        5xx -> _Transient (ask another)."""
        if 400 <= status < 500:
            hint = " (give the servers' token: token=... or $SHARDSTREAM_TOKEN)" if (
                status == 401) else ""
            return ServiceError(f"batch server {server.url} refused the request: {text}{hint}")
        return _Transient(f"{server.url}: HTTP {status}: {text[:200]}")

    # -- the manifest ---------------------------------------------------------------------------

    def manifest(self, dataset: str) -> Manifest:
        """The manifest of ``dataset`` (a name under the servers' root), from the first server
        that answers; ServiceError naming every server when none does after ``attempts``
        rounds."""
        path = "/v1/manifest?dataset=" + quote(dataset, safe="/")
        errors = {}
        for attempt in range(1, self.attempts + 1):
            for server in self.servers:
                holder = [None]
                try:
                    status, body = self.request(server, holder, "GET", path)
                except _Transient as exc:
                    errors[server.url] = str(exc)
                    continue
                finally:
                    if holder[0] is not None:
                        holder[0].close()
                if status != 200:
                    err = self._refused(server, status, body)
                    if isinstance(err, ServiceError):
                        raise err
                    errors[server.url] = str(err)
                    continue
                return Manifest.from_json(bytes(body).decode("utf-8"),
                                          f"{server.url}{path}")
            if attempt < self.attempts:
                threading.Event().wait(self._wait(attempt))
        raise _all_failed(self.servers, errors, self.attempts)

    def options(self, location, *, token=None, storage_options=None, cache_dir=None,
                cache_limit=None, **kw):
        """(LoaderOptions, Manifest) for the dataset ``location`` (a name under the servers'
        root) with the loader arguments ``kw``, checked as the local loaders check them
        (:func:`loader_options`); the manifest comes from a server.  ``token`` is the one this
        client was made with; storage options and the shard cache are the servers' concern."""
        for name, v in (("storage_options", storage_options), ("cache_dir", cache_dir),
                        ("cache_limit", cache_limit)):
            if v is not None:
                raise InputError(f"{name}={v!r} with service=: the batch servers read the shards "
                                 f"and keep their cache; leave {name} out")
        try:
            dataset_segments(location)
        except BadRequest as exc:
            raise InputError(f"location with service=: {exc}") from None
        return loader_options(location, manifest=self.manifest(location), **kw)

    # -- runs ---------------------------------------------------------------------------------

    def run_batches(self, opts, manifest) -> int:
        """Batches per run: as many full batches as fit in ``run_bytes`` (at least one)."""
        h, w, c = opts.image_size(manifest)
        per_batch = opts.batch_size * h * w * c * 4
        return max(1, min(MAX_RUN_BATCHES, self.run_bytes // per_batch))

    def runs(self, opts, manifest, ranges, layout: str):
        """Iterator of the :class:`~.wire.Run` of each ``(start, stop)`` in ``ranges`` (batch
        indices of the rank's epoch), in order."""
        spec = {"dataset": opts.location, "manifest": manifest_sha(manifest),
                "batch_size": opts.batch_size, "shuffle": opts.shuffle,
                "shuffle_buffer": opts.shuffle_buffer, "shard_shuffle": opts.shard_shuffle,
                "seed": opts.seed, "epoch": opts.epoch, "drop_last": opts.drop_last,
                "rank": opts.rank, "world_size": opts.world_size, "format": opts.format,
                "resize": None if opts.resize is None else list(opts.resize), "layout": layout}
        return iter(_Fetch(self, spec, list(ranges)))

    def batches(self, opts, manifest, layout: str = "nchw"):
        """``(x, y)`` for every batch of the rank's epoch from ``opts.start_batch``: x float32
        (b, C, h, w) (``"nchw"``) or (b, h, w, C), y int64 (b,); contiguous views of the
        received bodies."""
        total = opts.start_batch + opts.plan(manifest).num_batches
        step = self.run_batches(opts, manifest)
        ranges = [(a, min(a + step, total)) for a in range(opts.start_batch, total, step)]
        for run in self.runs(opts, manifest, ranges, layout):
            yield from run.batches()

    def chunks(self, opts, manifest, stream: int, num_streams: int, chunks, group: int):
        """tf.data's chunks of stream ``stream`` of ``num_streams`` (runs of ``group`` batches
        dealt round-robin, as ``tf_loader._chunks``): X float32 (k, b, h, w, C) (a view of the
        received body), y int32 (k, b), one per entry k of ``chunks``."""
        total = opts.plan(manifest).num_batches
        first = opts.start_batch
        runs = np.unique(worker_batches(total, stream, num_streams, group) // group)
        ranges = [(first + int(r) * group, first + min(int(r) * group + group, total))
                  for r in runs]
        sizes = iter(chunks)
        for run in self.runs(opts, manifest, ranges, "nhwc"):
            done = start = 0
            while done < len(run.sizes):
                k, b = next(sizes), run.sizes[done]
                X = run.x[start:start + k * b].reshape(k, b, *run.x.shape[1:])
                yield X, run.y[start:start + k * b].astype(np.int32).reshape(k, b)
                done, start = done + k, start + k * b


def _all_failed(servers, errors: dict, attempts: int) -> ServiceError:
    detail = "; ".join(f"{s.url}: {errors.get(s.url, 'no answer')}" for s in servers)
    return ServiceError(f"no batch server answered after {attempts} attempts each ({detail}); "
                        f"start `shardstream serve-batches` on them again or pass other servers "
                        f"in service=")


class _Fetch:
    """One in-order stream of runs (one epoch of one consumer): ``in_flight`` threads per
    server, each with its own connection, take the lowest run not yet asked for (or one to
    re-ask) as long as it is fewer than ``in_flight x servers`` runs ahead of the consumer."""

    def __init__(self, service: BatchService, spec: dict, ranges: list):
        self.service, self.spec, self.ranges = service, spec, ranges
        self.window = service.in_flight * len(service.servers)
        self.cond = threading.Condition()
        self.next = self.consumed = self.done = 0
        self.retry, self.results, self.errors = [], {}, {}
        self.error = None
        self.closed = False
        threads = [threading.Thread(target=self._worker, args=(s,), daemon=True,
                                    name="shardstream-service")
                   for _ in range(service.in_flight) for s in service.servers]
        self.alive = len(threads)
        for t in threads:
            t.start()

    def _take(self):
        with self.cond:
            while True:
                if self.closed or self.error is not None or self.done == len(self.ranges):
                    return None
                if self.retry:
                    return heapq.heappop(self.retry)
                if self.next < len(self.ranges) and self.next < self.consumed + self.window:
                    self.next += 1
                    with self.service.lock:
                        stats = self.service.stats
                        stats["peak_ahead"] = max(stats["peak_ahead"], self.next - self.consumed)
                    return self.next - 1
                self.cond.wait()

    def _get(self, server: _Server, holder: list, i: int):
        start, stop = self.ranges[i]
        body = json.dumps({**self.spec, "start": start, "stop": stop}).encode()
        status, data = self.service.request(server, holder, "POST", "/v1/batches", body)
        if status != 200:
            raise self.service._refused(server, status, data)
        try:
            run = decode_run(data)
        except WireError as exc:
            raise _Transient(f"{server.url}: {exc} (is it a {CONTENT_TYPE} server?)") from None
        if run.first != start or len(run.sizes) != stop - start or run.layout != self.spec[
                "layout"]:
            raise _Transient(f"{server.url}: answered batches {run.first}.. "
                             f"({len(run.sizes)}) for {start} .. {stop - 1}")
        return run

    def _worker(self, server: _Server) -> None:
        holder, fails, svc = [None], 0, self.service
        try:
            while (i := self._take()) is not None:
                try:
                    run = self._get(server, holder, i)
                except ServiceError as exc:
                    with self.cond:
                        self.error = exc
                        self.cond.notify_all()
                    return
                except _Transient as exc:
                    fails += 1
                    with self.cond:
                        heapq.heappush(self.retry, i)
                        self.errors[server.url] = str(exc)
                        with svc.lock:
                            svc.stats[server.url]["failures"] += 1
                        self.cond.notify_all()
                        if fails >= svc.attempts:
                            return
                        self.cond.wait_for(lambda: self.closed, timeout=svc._wait(fails))
                    continue
                fails = 0
                with self.cond:
                    self.results[i] = run
                    self.done += 1
                    with svc.lock:
                        svc.stats[server.url]["runs"] += 1
                    self.cond.notify_all()
        finally:
            if holder[0] is not None:
                holder[0].close()
            with self.cond:
                self.alive -= 1
                if (self.alive == 0 and self.done < len(self.ranges) and self.error is None
                        and not self.closed):
                    self.error = _all_failed(svc.servers, self.errors, svc.attempts)
                self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.results.clear()
            self.cond.notify_all()

    def __iter__(self):
        try:
            for i in range(len(self.ranges)):
                with self.cond:
                    while i not in self.results:
                        if self.error is not None:
                            raise self.error
                        self.cond.wait()
                    run = self.results.pop(i)
                    self.consumed = i + 1
                    self.cond.notify_all()
                yield run
        finally:
            self.close()
