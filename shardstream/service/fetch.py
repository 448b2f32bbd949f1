"""The transport of the batch service's client: one request (:func:`request`) and one
in-order stream of runs from many servers (:class:`Fetch`), with back-pressure and failover.

:class:`Fetch` runs ``in_flight`` threads per server, each with its own keep-alive
``http.client`` connection.  A thread takes the lowest run not yet asked for (or one to ask
again) only while fewer than ``in_flight x servers`` runs are ahead of the consumer, so the
runs requested or held are bounded whatever the consumer's speed.  A failure (connection
refused or reset, timeout, 5xx, truncated or malformed body) puts the run back for any thread
to take; a thread whose server failed ``attempts`` times in a row stops, and when the last one
stops with runs missing the consumer gets :func:`all_failed`'s error.  4xx answers raise at
once (:func:`refused`): every server would say the same.  Bodies are read straight into
aligned buffers (:func:`wire.aligned_buffer`) with ``readinto``.
"""

from __future__ import annotations

import heapq
import http.client
import json
import threading
from urllib.parse import urlsplit

from ..errors import InputError, ServiceError
from .request import MAX_RUN_BYTES
from .wire import CONTENT_TYPE, X_DTYPES, WireError, aligned_buffer, decode_run

#: what a kept-alive connection that the server has closed in the meantime raises
_CLOSED = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
           ConnectionAbortedError)


class Transient(Exception):
    """This server failed this time; ask another."""


class Server:
    """One server's URL, checked; ``connect(timeout)`` opens a connection to it."""

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


def request(server: Server, holder: list, method: str, path: str, body=None, *, headers,
            timeout):
    """(status, body) of one request on the connection in ``holder[0]`` (made or remade
    there); a 200 body is read into an aligned uint8 buffer, others as text.  Transient
    for a connection failure, a timeout or a truncated body."""
    for again in (False, True):
        reused = holder[0] is not None
        if holder[0] is None:
            holder[0] = server.connect(timeout)
        conn = holder[0]
        try:
            conn.request(method, server.path + path, body=body, headers=headers)
            resp = conn.getresponse()
            if resp.status != 200:       # a short text; the connection is not reused
                text = resp.read(1 << 16).decode("utf-8", "replace").strip()
                conn.close()
                holder[0] = None
                return resp.status, text
            length = int(resp.getheader("Content-Length", -1))   # ValueError: Transient
            if not 0 <= length <= MAX_RUN_BYTES:
                raise Transient(f"{server.url}: a response of {length} bytes (no or a bad "
                                f"Content-Length)")
            buf = aligned_buffer(length)
            view, got = memoryview(buf), 0
            while got < len(buf):
                n = resp.readinto(view[got:])
                if not n:
                    raise Transient(f"{server.url}: the response ended after {got} of "
                                     f"{len(buf)} bytes")
                got += n
            return 200, buf
        except (OSError, http.client.HTTPException, ValueError, Transient) as exc:
            conn.close()
            holder[0] = None
            if reused and not again and isinstance(exc, _CLOSED):
                continue    # a kept-alive connection the server had closed: once more
            raise exc if isinstance(exc, Transient) else Transient(
                f"{server.url}: {type(exc).__name__}: {exc}") from None
    raise AssertionError("unreachable")


def refused(server: Server, status: int, text: str) -> Exception:
    """The error for a non-200 answer: 4xx -> ServiceError (the same on every server);
    5xx -> Transient (ask another)."""
    if 400 <= status < 500:
        hint = " (give the servers' token: token=... or $SHARDSTREAM_TOKEN)" if (
            status == 401) else ""
        return ServiceError(f"batch server {server.url} refused the request: {text}{hint}")
    return Transient(f"{server.url}: HTTP {status}: {text[:200]}")


def all_failed(servers, errors: dict, attempts: int) -> ServiceError:
    """The error when every server has been given up: each one's last failure."""
    detail = "; ".join(f"{s.url}: {errors.get(s.url, 'no answer')}" for s in servers)
    return ServiceError(f"no batch server answered after {attempts} attempts each ({detail}); "
                        f"start `shardstream serve-batches` on them again or pass other servers "
                        f"in service=")


class Fetch:
    """One in-order stream of runs (one epoch of one consumer): ``in_flight`` threads per
    server, each with its own connection, take the lowest run not yet asked for (or one to
    re-ask) as long as it is fewer than ``in_flight x servers`` runs ahead of the consumer."""

    def __init__(self, service, spec: dict, ranges: list):
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

    def _get(self, server: Server, holder: list, i: int):
        start, stop = self.ranges[i]
        body = json.dumps({**self.spec, "start": start, "stop": stop}).encode()
        svc = self.service
        status, data = request(server, holder, "POST", "/v1/batches", body,
                               headers=svc.headers, timeout=svc.timeout)
        if status != 200:
            raise refused(server, status, data)
        try:
            run = decode_run(data)
        except WireError as exc:
            raise Transient(f"{server.url}: {exc} (is it a {CONTENT_TYPE} server?)") from None
        if run.first != start or len(run.sizes) != stop - start or run.layout != self.spec[
                "layout"]:
            raise Transient(f"{server.url}: answered batches {run.first}.. "
                             f"({len(run.sizes)}) for {start} .. {stop - 1}")
        if run.x.dtype.str != X_DTYPES[self.spec.get("dtype", "float32")]:
            raise Transient(f"{server.url}: answered {run.x.dtype} pixels for dtype="
                            f"{self.spec.get('dtype', 'float32')!r} (an older server?)")
        return run

    def _worker(self, server: Server) -> None:
        holder, fails, svc = [None], 0, self.service
        try:
            while (i := self._take()) is not None:
                try:
                    run = self._get(server, holder, i)
                except Transient as exc:
                    fails += 1
                    with self.cond:
                        heapq.heappush(self.retry, i)
                        self.errors[server.url] = str(exc)
                        with svc.lock:
                            svc.stats[server.url]["failures"] += 1
                        self.cond.notify_all()
                        if fails >= svc.attempts:
                            return
                        self.cond.wait_for(lambda: self.closed, timeout=svc.wait(fails))
                    continue
                except Exception as exc:   # a 4xx (ServiceError) or a bug: the consumer
                    error = exc                 # raises it rather than wait for run i forever
                    if not isinstance(exc, ServiceError):
                        error = ServiceError(f"fetching batches {self.ranges[i]} from "
                                             f"{server.url} failed: {type(exc).__name__}: {exc}")
                        error.__cause__ = exc
                    with self.cond:
                        self.error = error
                        self.cond.notify_all()
                    return
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
                    self.error = all_failed(svc.servers, self.errors, svc.attempts)
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
