"""Execute a plan: stream the shards it needs, in plan order, and gather its batches.

This is the second half of "plan, then execute" (``docs/design.md``).  The plan
(:mod:`shardstream.loaders.plan`) says which global sample ids go into which batch; this module
reads the shards those ids live in and hands out the batches as uint8 arrays.  It never imports
a framework: the torch and tf.data adapters both call :func:`iter_batches` and then
:func:`shardstream.loaders.resize.to_float`, which is why their batches are bitwise equal.

Memory: a worker keeps one *sample pool* holding exactly the samples it has read but not yet
emitted (that is the shuffle buffer, made real; for ``W`` workers each keeps only the samples of
its own batches) plus the one shard being read.  A shard's bytes are dropped, and the shard
released to the fetcher, as soon as its samples are in the pool.
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from dataclasses import dataclass, field

import numpy as np

from .. import storage
from ..errors import InputError, ShardError
from ..shards import formats
from ..shards.manifest import Manifest, load_manifest
from ..shards.names import FORMATS
from ..storage.cache import ShardFetcher
from .plan import shard_of
from .slicing import sliced, split_location

#: how many shards ahead of the one being read :func:`iter_batches` asks the fetcher to prefetch
PREFETCH_AHEAD = 2


def choose_format(manifest: Manifest, format: str = "auto") -> str:
    """The shard format to read: ``format`` itself (checked against the manifest) or, for
    ``"auto"``, Parquet when the split has Parquet shards, else tar.  Both hold the same
    samples in the same order (one plan serves both, the batches are identical); Parquet is
    the faster of the two to read for both encodings (measured: 0.46 vs 0.61 us per npy
    sample, 20 vs 28 us per PNG sample; docs/benchmarks.md)."""
    present = manifest.formats
    if format == "auto":
        for fmt in ("parquet", "tar"):
            if fmt in present:
                return fmt
        raise InputError(f"the manifest of {manifest.dataset}/{manifest.split} lists no shards "
                         f"in a known format {FORMATS}; re-run the conversion")
    if format not in FORMATS:
        raise InputError(f"format={format!r}: must be 'auto' or one of {FORMATS}")
    if format not in present:
        raise InputError(f"format={format!r}: this split has no {format} shards (it has "
                         f"{', '.join(present) or 'none'}); pass format='auto' or convert with "
                         f"--format {format}")
    return format


class ShardSource:
    """The shards of one split in one format, readable by index.

    ``.manifest`` the split's :class:`Manifest`; ``.format`` ``"tar"`` or ``"parquet"``;
    ``.location`` the location string; ``.load(i)`` the decoded samples of shard ``i``.
    """

    def __init__(self, location: str, manifest: Manifest, fmt: str, fetcher: ShardFetcher):
        self.location = location
        self.manifest = manifest
        self.format = fmt
        self.fetcher = fetcher

    def load(self, shard_index: int, want=None) -> tuple[np.ndarray, np.ndarray]:
        """Shard ``shard_index`` decoded: images uint8 (n, H, W, C), labels int64 (n,), with
        ``n = manifest.shard_sizes[shard_index]``; or, with ``want`` (int (m,) indices into the
        shard, repeats allowed), just those samples: (m, H, W, C), (m,) — for PNG shards only
        those images are decoded (npy shards with ``want`` the whole shard in order: the
        decoded images themselves, no gathered copy).  The file is read with one ``read`` call
        from the local file the fetcher provides (the shard itself, or its cached copy)."""
        path = self.fetcher.local_file(shard_index)
        with open(path, "rb") as f:
            data = f.read()
        expected = int(self.manifest.shard_sizes[shard_index])
        payloads, labels = formats.read_payloads(self.format, data, self.manifest, shard_index)
        if len(payloads) != expected or len(labels) != expected:
            name = self.manifest.shards[self.format][shard_index].name
            raise ShardError(f"shard {name} of {self.location} holds {len(labels)} samples, the "
                             f"manifest says {expected}; re-run the conversion or `shardstream "
                             f"verify {self.location}`")
        if want is None:
            return formats.decode_payloads(payloads, self.manifest, shard_index), labels
        want = np.asarray(want, dtype=np.int64)
        if isinstance(payloads, np.ndarray):
            if want.size == len(labels) and np.array_equal(want, np.arange(want.size)):
                return payloads, labels  # the whole shard, in order: no gathered copy
            return payloads[want], labels[want]
        try:
            images = formats.decode_payloads(payloads.take(want), self.manifest, shard_index)
        except ShardError:
            # decode the whole shard for the message naming the exact bad sample
            formats.decode_payloads(payloads, self.manifest, shard_index)
            raise
        return images, labels[want]

    def release(self, shard_index: int) -> None:
        """Tell the fetcher that this worker no longer needs shard ``shard_index``."""
        self.fetcher.release(shard_index)

    def prefetch(self, shard_indices) -> None:
        """Ask the fetcher to start fetching these shards in the background."""
        self.fetcher.prefetch([int(i) for i in shard_indices])


def open_stream(location: str, *, format: str = "auto", storage_options=None, cache_dir=None,
                cache_limit=None, token=None, manifest: Manifest | None = None,
                check_shards: bool = True, split_slice=None) -> ShardSource:
    """Open the split at ``location`` for reading: loads its manifest (unless given), picks the
    format (:func:`choose_format`) and sets up the shard fetcher (local files are read in place,
    remote ones through the verified local cache; ``check_shards``: see
    :mod:`shardstream.storage.checked`).  A location ending in a split slice
    (``.../train[:90%]``, :mod:`.slicing`) -- or a ``split_slice`` given apart, ``location``
    then being the split's -- gives a :class:`~shardstream.loaders.slicing.SlicedSource`: the
    slice as a split of its own (``.manifest`` its ``SliceView``)."""
    if split_slice is None:
        location, split_slice = split_location(location)
    storage_options = storage.with_token(location, storage_options, token)
    if manifest is None:
        manifest = load_manifest(location, storage_options=storage_options)
    manifest = getattr(manifest, "base", manifest)  # the whole split's, for a SliceView
    fmt = choose_format(manifest, format)
    fetcher = ShardFetcher(location, manifest, fmt, storage_options=storage_options,
                           cache_dir=cache_dir, cache_limit=cache_limit, check=check_shards)
    return sliced(ShardSource(location, manifest, fmt, fetcher), split_slice, location)


@dataclass
class ExecStats:
    """What one :func:`iter_batches` run held in memory (for tests and benchmarks).

    ``peak_pool``: most samples resident in the pool at once (read, not yet emitted);
    ``pool_capacity``: samples the pool array can hold at the end; ``shards_read``: the shards
    read, in order (each at most once)."""

    peak_pool: int = 0
    pool_capacity: int = 0
    shards_read: list = field(default_factory=list)


class _Pool:
    """Fixed-shape sample slots with a free list: ``put`` stores samples and returns their
    slots, ``take`` gathers slots into a new batch and frees them.  Grows by doubling."""

    def __init__(self, image_shape, capacity: int):
        capacity = max(int(capacity), 1)
        self.images = np.empty((capacity, *image_shape), np.uint8)
        self.labels = np.empty(capacity, np.int64)
        self.free = np.arange(capacity - 1, -1, -1, dtype=np.int64)  # a stack; top = end
        self.top = capacity
        self.used = 0

    def _grow(self, need: int) -> None:
        old = len(self.labels)
        new = max(2 * old, old + need)
        images = np.empty((new, *self.images.shape[1:]), np.uint8)
        labels = np.empty(new, np.int64)
        images[:old] = self.images
        labels[:old] = self.labels
        self.images, self.labels = images, labels
        free = np.empty(new, np.int64)
        free[: self.top] = self.free[: self.top]
        free[self.top: self.top + new - old] = np.arange(new - 1, old - 1, -1)
        self.free = free
        self.top += new - old

    def put(self, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Store images (n, H, W, C) and labels (n,); returns their slots, int64 (n,)."""
        n = len(labels)
        if n > self.top:
            self._grow(n - self.top)
        slots = self.free[self.top - n: self.top].copy()
        self.top -= n
        self.used += n
        self.images[slots] = images
        self.labels[slots] = labels
        return slots

    def take(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gather slots (b,) into new arrays images (b, H, W, C), labels (b,); frees the slots."""
        images = self.images.take(slots, axis=0)  # the methods: np.take's wrapper costs ~1 us,
        labels = self.labels.take(slots)          # a tenth of a batch_size=1 batch
        b = len(slots)
        self.free[self.top: self.top + b] = slots
        self.top += b
        self.used -= b
        return images, labels


#: the daemon threads of shardstream still alive (read-ahead, plan threads): joined at exit
_THREADS: weakref.WeakSet = weakref.WeakSet()
#: seconds the exit hook waits, in all, for them
EXIT_JOIN_SECONDS = 5.0


def track(thread: threading.Thread) -> threading.Thread:
    """Register a daemon thread of the loaders so that the interpreter's exit waits for it
    (:func:`_join_at_exit`) instead of finalizing while it is inside pyarrow, numba or torch
    code (a native thread pool torn down under it aborts the process: "terminate called
    without an active exception", seen after Ctrl-C and at the end of DDP runs)."""
    _THREADS.add(thread)
    return thread


@atexit.register
def _join_at_exit() -> None:
    deadline = time.monotonic() + EXIT_JOIN_SECONDS
    for thread in list(_THREADS):
        left = deadline - time.monotonic()
        if left <= 0:
            return
        if thread.is_alive() and thread is not threading.current_thread():
            thread.join(left)


class _ReadAhead:
    """Shard ``shard`` of ``source`` (just the samples ``want``) read by a daemon thread:
    reading the file, Parquet decoding and PNG decoding release the GIL, so this overlaps the
    work on the batches before it.  :meth:`get` waits and returns ``source.load``'s result (or
    raises its error); :meth:`abandon` (the reader stopped early) releases the shard once read."""

    def __init__(self, source: ShardSource, shard: int, want: np.ndarray):
        self.source, self.shard, self.want = source, shard, want
        self.result = self.error = None
        self.done = self.abandoned = False
        self.lock = threading.Lock()
        self.thread = track(threading.Thread(target=self._run, name="shardstream-read",
                                             daemon=True))
        self.thread.start()

    def _run(self) -> None:
        try:
            result = self.source.load(self.shard, self.want)
        except BaseException as exc:  # re-raised by get()
            result, self.error = None, exc
        with self.lock:
            self.done = True
            if not self.abandoned:
                self.result = result
                return
        self.source.release(self.shard)

    def get(self):
        self.thread.join()
        if self.error is not None:
            raise self.error
        result, self.result = self.result, None
        return result

    def abandon(self) -> None:
        with self.lock:
            self.abandoned = True
            if not self.done:
                return  # _run releases the shard when it is read
            self.result = None
        self.source.release(self.shard)


def worker_batches(num_batches: int, worker: int = 0, num_workers: int = 1,
                   group: int = 1) -> np.ndarray:
    """int64 (m,) the batches worker ``worker`` of ``num_workers`` executes: those ``k`` with
    ``(k // group) % num_workers == worker`` — runs of ``group`` consecutive batches dealt
    round-robin (``group=1``: ``worker, worker + W, worker + 2W, ...``)."""
    for name, v, low, high in (("num_workers", num_workers, 1, None), ("group", group, 1, None),
                               ("worker", worker, 0, num_workers)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low or (
                high is not None and v >= high):
            raise InputError(f"{name}={v!r}: must be an integer >= {low}"
                             + ("" if high is None else f" and < num_workers={high}"))
    k = np.arange(num_batches, dtype=np.int64)
    return k[(k // group) % num_workers == worker]


def worker_schedule(plan, offsets: np.ndarray, worker: int = 0, num_workers: int = 1,
                    group: int = 1):
    """What worker ``worker`` of ``num_workers`` must read, and when (pure; no I/O).

    Returns ``(batches, bounds, ids, shards, load_order, first_batch)``: ``batches`` int64 (m,)
    the plan batch indices this worker executes (:func:`worker_batches`); ``ids`` int64 (M,)
    their sample ids concatenated, batch ``batches[j]`` being ``ids[bounds[j]:bounds[j+1]]``;
    ``shards`` int64 (M,) the shard holding each id; ``load_order`` int64 (s,) the shards this
    worker needs, in the order it first needs them; ``first_batch`` int64 (s,) the index ``j``
    (into ``batches``) of the batch that first needs each of them."""
    bs = plan.batch_size
    batches = worker_batches(plan.num_batches, worker, num_workers, group)
    # batch k of the plan is plan.ids[k * bs:(k + 1) * bs] (the last one may be short)
    pos = (batches[:, None] * bs + np.arange(bs, dtype=np.int64)).reshape(-1)
    pos = pos[pos < plan.ids.size]
    ids = plan.ids[pos]
    sizes = np.minimum(plan.ids.size - batches * bs, bs)
    bounds = np.zeros(len(batches) + 1, np.int64)
    np.cumsum(sizes, out=bounds[1:])
    shards = shard_of(ids, offsets)
    found, first_pos = np.unique(shards, return_index=True)
    order = np.argsort(first_pos, kind="stable")
    load_order = found[order]
    first_batch = np.searchsorted(bounds, first_pos[order], side="right") - 1
    return batches, bounds, ids, shards, load_order, first_batch


def iter_batches(source: ShardSource, plan, worker: int = 0, num_workers: int = 1,
                 stats: ExecStats | None = None, group: int = 1):
    """Execute worker ``worker``'s share of ``plan``: yields ``(k, images, labels)`` for the plan
    batches ``k = worker, worker + num_workers, ...`` in that order (``k`` counts from the plan's
    first batch, like :meth:`Plan.batch`; with ``group > 1``, runs of ``group`` consecutive
    batches are dealt round-robin instead, see :func:`worker_batches`), with images uint8
    (b, H, W, C) and labels int64 (b,) holding the samples ``plan.batch(k)`` in plan order.

    Shards are read in the order this worker first needs them, each once, by a thread that
    reads (and decodes) the next one while the batches before it are being emitted (it starts
    when the previous shard is released); before a shard is read, the next
    :data:`PREFETCH_AHEAD` are handed to the fetcher's ``prefetch``.
    A shard's samples that this worker needs go into the pool; the rest of the shard is dropped
    at once and the shard released.  The pool holds only samples read and not yet emitted, so
    memory is bounded by the shuffle buffer plus one shard (the one being read; plus one
    batch), whatever the dataset size.  Gathering is vectorised (``searchsorted`` + fancy
    indexing); there is no per-sample Python loop.
    ``stats``, if given, is filled in with what was held (see :class:`ExecStats`)."""
    manifest = source.manifest
    offsets = np.asarray(manifest.offsets, dtype=np.int64)
    batches, bounds, ids, shards, load_order, first_batch = worker_schedule(
        plan, offsets, worker, num_workers, group)
    if stats is None:
        stats = ExecStats()
    # per position: the index within its shard; positions grouped by shard (int32: the index
    # arrays cost 12 bytes per sample of this worker, on top of the plan's 8)
    local_of = (ids - offsets[shards]).astype(np.int32)
    by_shard = np.argsort(shards, kind="stable").astype(np.int32)
    sorted_shards = shards[by_shard]
    shard_start = np.searchsorted(sorted_shards, load_order, side="left")
    shard_stop = np.searchsorted(sorted_shards, load_order, side="right")
    del ids, shards, sorted_shards
    slot_of = np.empty(len(local_of), np.int32)
    pool = _Pool(manifest.image_shape,
                 min(len(local_of), plan.batch_size + int(np.max(manifest.shard_sizes, initial=1))))

    def read(n):
        """Hand the shards after load_order[n] to the fetcher's prefetch, start reading n."""
        ahead = load_order[n + 1: n + 1 + PREFETCH_AHEAD]
        if len(ahead):
            source.prefetch(ahead)
        pos = by_shard[shard_start[n]: shard_stop[n]]
        return _ReadAhead(source, int(load_order[n]), local_of[pos])

    pending = read(0) if len(load_order) else None
    next_load = 0
    try:
        for j, k in enumerate(batches):
            while next_load < len(load_order) and first_batch[next_load] <= j:
                s = int(load_order[next_load])
                images, labels = pending.get()
                pos = by_shard[shard_start[next_load]: shard_stop[next_load]]
                slot_of[pos] = pool.put(images, labels)
                del images, labels
                source.release(s)
                stats.shards_read.append(s)
                stats.peak_pool = max(stats.peak_pool, pool.used)
                next_load += 1
                pending = read(next_load) if next_load < len(load_order) else None
            x, y = pool.take(slot_of[bounds[j]: bounds[j + 1]])
            stats.pool_capacity = len(pool.labels)
            yield int(k), x, y
    finally:
        if pending is not None:  # stopped early (or failed): nobody will take that shard
            pending.abandon()
