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
without a copy.  The transport (standard library ``http.client``, one keep-alive connection
per fetching thread) is :mod:`.fetch`.
"""

from __future__ import annotations

import threading
from urllib.parse import quote

import numpy as np

from .. import config
from ..errors import InputError, ServiceError
from ..loaders.execute import worker_batches
from ..loaders.options import loader_options
from ..loaders.slicing import split_location
from ..shards.manifest import Manifest
from .fetch import Fetch, Server, Transient, all_failed, refused, request
from .request import MAX_RUN_BATCHES, MAX_RUN_BYTES, BadRequest, dataset_segments, manifest_sha

#: default bytes of images per requested run (the run length adapts to the batch's size)
RUN_BYTES = 4 << 20


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
        self.servers = [Server(s) for s in servers]
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

    def wait(self, fails: int) -> float:
        """Seconds to wait after a server's ``fails``-th failure in a row."""
        return min(self.retry_wait * 2 ** (fails - 1), config.MAX_RETRY_WAIT)

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
                    status, body = request(server, holder, "GET", path,
                                           headers=self.headers, timeout=self.timeout)
                except Transient as exc:
                    errors[server.url] = str(exc)
                    continue
                finally:
                    if holder[0] is not None:
                        holder[0].close()
                if status != 200:
                    err = refused(server, status, body)
                    if isinstance(err, ServiceError):
                        raise err
                    errors[server.url] = str(err)
                    continue
                return Manifest.from_json(bytes(body).decode("utf-8"),
                                          f"{server.url}{path}")
            if attempt < self.attempts:
                threading.Event().wait(self.wait(attempt))
        raise all_failed(self.servers, errors, self.attempts)

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
        dataset, _ = split_location(location)  # "fashion-mnist/train[:90%]": a slice of it
        try:
            dataset_segments(dataset)
        except BadRequest as exc:
            raise InputError(f"location with service=: {exc}") from None
        opts, manifest = loader_options(location, manifest=self.manifest(dataset), **kw)
        if _batch_bytes(opts, manifest) > MAX_RUN_BYTES - (1 << 16):
            raise InputError(f"batch_size={opts.batch_size} with images of "
                             f"{opts.image_size(manifest)} is {_batch_bytes(opts, manifest)} bytes "
                             f"a batch, over the batch service's limit of {MAX_RUN_BYTES} per "
                             f"request; use a smaller batch_size or resize")
        return opts, manifest

    # -- runs ---------------------------------------------------------------------------------

    def run_batches(self, opts, manifest) -> int:
        """Batches per run: as many full batches as fit in ``run_bytes`` (at least one)."""
        return max(1, min(self.run_bytes // _batch_bytes(opts, manifest),
                          _most_batches(opts, manifest)))

    def runs(self, opts, manifest, ranges, layout: str):
        """Iterator of the :class:`~.wire.Run` of each ``(start, stop)`` in ``ranges`` (batch
        indices of the rank's epoch), in order."""
        spec = {"dataset": opts.location, "manifest": manifest_sha(manifest),
                "batch_size": opts.batch_size, "shuffle": opts.shuffle,
                "shuffle_buffer": opts.shuffle_buffer, "shard_shuffle": opts.shard_shuffle,
                "seed": opts.seed, "epoch": opts.epoch, "drop_last": opts.drop_last,
                "rank": opts.rank, "world_size": opts.world_size, "format": opts.format,
                "resize": None if opts.resize is None else list(opts.resize), "layout": layout}
        if opts.split_slice is not None:
            spec["slice"] = opts.split_slice.text
        if opts.dtype != "float32":  # sent only when asked for: older servers refuse the field
            spec["dtype"] = opts.dtype
        if opts.normalize is not None:  # float32 values, exact in JSON
            spec["normalize"] = [list(opts.normalize[0]), list(opts.normalize[1])]
        return iter(Fetch(self, spec, list(ranges)))

    def batches(self, opts, manifest, layout: str = "nchw"):
        """``(x, y)`` for every batch of the rank's epoch from ``opts.start_batch``: x float32
        (or uint8, ``opts.dtype``) (b, C, h, w) (``"nchw"``) or (b, h, w, C), y int64 (b,);
        contiguous views of the received bodies."""
        total = opts.start_batch + opts.plan(manifest).num_batches
        step = self.run_batches(opts, manifest)
        ranges = [(a, min(a + step, total)) for a in range(opts.start_batch, total, step)]
        for run in self.runs(opts, manifest, ranges, layout):
            yield from run.batches()

    def chunks(self, opts, manifest, stream: int, num_streams: int, chunks, group: int):
        """tf.data's chunks of stream ``stream`` of ``num_streams`` (runs of ``group`` batches
        dealt round-robin, as ``tf_loader._chunks``): X float32 or uint8 (``opts.dtype``)
        (k, b, h, w, C), y int32 (k, b),
        one per entry k of ``chunks``.  Each run of ``group`` batches is one request, and each
        chunk a view of its body -- unless the run is over the service's limit per request:
        then it is asked for in pieces and a chunk spanning two pieces is copied together."""
        total = opts.plan(manifest).num_batches
        first, most = opts.start_batch, _most_batches(opts, manifest)
        ranges = []
        for r in np.unique(worker_batches(total, stream, num_streams, group) // group):
            a, b = first + int(r) * group, first + min(int(r) * group + group, total)
            ranges += [(s, min(s + most, b)) for s in range(a, b, most)]

        def positions():        # (run, first sample, batch size) of each batch, in order
            for run in self.runs(opts, manifest, ranges, "nhwc"):
                start = 0
                for b in run.sizes:
                    yield run, start, b
                    start += b

        batches = positions()
        for k in chunks:
            parts = [next(batches) for _ in range(k)]
            run, start, b = parts[0]
            if all(p[0] is run for p in parts):
                X, y = run.x[start:start + k * b], run.y[start:start + k * b]
            else:
                X = np.concatenate([r.x[s:s + n] for r, s, n in parts])
                y = np.concatenate([r.y[s:s + n] for r, s, n in parts])
            yield X.reshape(k, b, *X.shape[1:]), y.astype(np.int32).reshape(k, b)


def _batch_bytes(opts, manifest) -> int:
    """Bytes of one full batch on the wire (float32 or uint8 pixels, int64 labels)."""
    h, w, c = opts.image_size(manifest)
    return opts.batch_size * (h * w * c * np.dtype(opts.dtype).itemsize + 8)


def _most_batches(opts, manifest) -> int:
    """The most batches one request may ask for (the server's limits; a header's room kept)."""
    return max(1, min(MAX_RUN_BATCHES, (MAX_RUN_BYTES - (1 << 16)) // _batch_bytes(opts, manifest)))
