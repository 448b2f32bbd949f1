"""The server's work: a checked request -> the body of its run of batches (:func:`compute_run`).

A run is batches ``start .. stop - 1`` of one rank's epoch, computed by the loaders' own machinery
-- :func:`loader_options` (the same argument checks), :meth:`LoaderOptions.plan`,
:func:`execute.iter_batches` (only the shards, and only the samples, those batches need) and
:func:`pixels.to_pixels` (and :func:`normalize.normalize_`) -- so that the batches are bitwise the
local loaders'. The server keeps no per-client state; :class:`Splits` only caches what any request
may reuse (the manifest and shard source of a split while its ``manifest.json`` is unchanged, a few
recent plans, and the decoded shards themselves within a memory budget: a run needs a few thousand
samples from one or two shards, and reading and decoding a whole shard again for every run would
cost the server several times the work of the run itself), bounded. Blocking: the application calls
:func:`compute_run` in a thread pool.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from .. import storage
from ..errors import InputError, ManifestError, NotFoundError
from ..loaders.execute import ShardSource, iter_batches
from ..loaders.normalize import normalize_
from ..loaders.options import loader_options
from ..loaders.pixels import to_pixels
from ..loaders.plan import Plan, plan_epoch
from ..loaders.slicing import sliced
from ..server.paths import inside, is_hidden
from ..shards.manifest import MANIFEST_NAME, Manifest
from .request import MAX_RUN_BYTES, BadRequest, BatchRequest, manifest_sha
from .wire import new_run, run_nbytes

#: plans kept (each int64 (M,) ids: 480 KB for 60,000 samples)
PLAN_CACHE = 16
#: splits kept open (manifest + shard source)
SPLIT_CACHE = 32
#: a remote root's manifests are re-read after this many seconds
REMOTE_TTL = 30.0
#: default memory for decoded shards (shared by every request; ``serve-batches --cache-memory``)
CACHE_MEMORY = 1 << 30


@dataclass
class Split:
    location: str
    manifest: Manifest
    sha: str
    stamp: object
    sources: dict  # format -> ShardSource


class _LRU(OrderedDict):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def put(self, key, value):
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


class ShardMemory:
    """Decoded shards ``key -> (images uint8 (n, H, W, C), labels int64 (n,))``, read-only,
    least recently used dropped beyond ``budget`` bytes; thread-safe, and a shard wanted by
    several requests at once is read by one of them."""

    def __init__(self, budget: int):
        self.budget, self.used = budget, 0
        self.lru: OrderedDict = OrderedDict()
        self.loading: dict = {}
        self.lock = threading.Lock()

    def __contains__(self, key) -> bool:
        with self.lock:
            return key in self.lru

    def get(self, key, load):
        """The shard ``key``, from memory or ``load()`` (whose result is kept if it fits)."""
        while True:
            with self.lock:
                if key in self.lru:
                    self.lru.move_to_end(key)
                    return self.lru[key]
                event = self.loading.get(key)
                if event is None:
                    event = self.loading[key] = threading.Event()
                    break
            event.wait()      # another request is reading it; then look again
        try:
            images, labels = load()
            for a in (images, labels):
                a.flags.writeable = False
            nbytes = images.nbytes + labels.nbytes
            with self.lock:
                if nbytes <= self.budget:
                    self.lru[key] = (images, labels)
                    self.used += nbytes
                    while self.used > self.budget:
                        old = self.lru.popitem(last=False)[1]
                        self.used -= old[0].nbytes + old[1].nbytes
            return images, labels
        finally:
            with self.lock:
                del self.loading[key]
            event.set()


class _MemorySource:
    """A :class:`ShardSource` whose shards come from a :class:`ShardMemory` (what
    :func:`execute.iter_batches` reads from on the server)."""

    def __init__(self, source: ShardSource, memory: ShardMemory):
        self.source, self.memory = source, memory
        self.manifest, self.format, self.location = source.manifest, source.format, source.location
        self.key = (source.location, source.format, manifest_sha(source.manifest))

    def load(self, shard_index: int, want=None):
        images, labels = self.memory.get((*self.key, shard_index),
                                         lambda: self.source.load(shard_index))
        return (images, labels) if want is None else (images[want], labels[want])

    def release(self, shard_index: int) -> None:
        self.source.release(shard_index)

    def prefetch(self, shard_indices) -> None:
        self.source.prefetch([i for i in shard_indices if (*self.key, int(i)) not in self.memory])


class Splits:
    """The datasets under one root: ``root`` a local folder (real path) or a remote location
    (``s3://...``, ``http(s)://...``) the server itself reads; thread-safe."""

    def __init__(self, root: str, cache_dir=None, memory: int = CACHE_MEMORY):
        self.root = root
        self.memory = ShardMemory(memory)
        self.remote = storage.is_remote(root)
        self.cache_dir = cache_dir
        self.lock = threading.Lock()
        self.splits = _LRU(SPLIT_CACHE)
        self.plans = _LRU(PLAN_CACHE)

    def locate(self, segments) -> tuple[str, object]:
        """The location of the dataset ``segments`` under the root and a stamp that changes
        when its manifest does; BadRequest (404) if it is not a converted split there."""
        if self.remote:
            return storage.join(self.root, *segments), int(time.monotonic() // REMOTE_TTL)
        real = os.path.realpath(os.path.join(self.root, *segments))
        rel = os.path.relpath(real, self.root)
        if not inside(self.root, real) or (rel != "." and any(
                is_hidden(p) for p in rel.split(os.sep))):
            raise BadRequest(400, f"dataset {'/'.join(segments)!r} resolves outside the "
                                  f"server's root (a symbolic link?); it is not served")
        try:
            st = os.stat(os.path.join(real, MANIFEST_NAME))
        except OSError:
            raise BadRequest(404, f"dataset {'/'.join(segments)!r}: no converted split there "
                                  f"(no {MANIFEST_NAME}); ask the server's index, or convert "
                                  f"it first") from None
        return real, (st.st_mtime_ns, st.st_size, st.st_ino)

    def split(self, segments) -> Split:
        """The split ``segments`` (manifest checked, shards present), cached while unchanged."""
        location, stamp = self.locate(segments)
        with self.lock:
            found = self.splits.get(location)
            if found is not None and found.stamp == stamp:
                return found
        try:
            _, manifest = loader_options(location, batch_size=1)
        except NotFoundError as exc:
            raise BadRequest(404, f"dataset {'/'.join(segments)!r}: {exc}") from None
        except (ManifestError, InputError) as exc:
            raise BadRequest(404, f"dataset {'/'.join(segments)!r} is not usable on this "
                                  f"server: {exc}") from None
        found = Split(location, manifest, manifest_sha(manifest), stamp, {})
        with self.lock:
            self.splits.put(location, found)
        return found

    def source(self, split: Split, opts):
        """The split's :class:`_MemorySource` for ``opts.format`` (cached), restricted to
        ``opts.split_slice`` when there is one."""
        with self.lock:
            src = split.sources.get(opts.format)
            if src is None:
                src = split.sources[opts.format] = _MemorySource(opts.with_(
                    cache_dir=self.cache_dir, split_slice=None).open(split.manifest), self.memory)
        return sliced(src, opts.split_slice, split.location)  # a slice: read from the whole

    def plan(self, split: Split, opts) -> Plan:
        """The rank's whole plan for the epoch (from batch 0), cached."""
        key = (split.location, split.sha, opts.batch_size, opts.shuffle, opts.shuffle_buffer,
               opts.shard_shuffle, opts.seed, opts.epoch, opts.drop_last, opts.rank,
               opts.world_size, opts.split_slice)
        with self.lock:
            plan = self.plans.get(key)
            if plan is not None:
                self.plans.move_to_end(key)
                return plan
        # materialised (random access to any run of batches); equal to the loaders' lazy plan
        plan = plan_epoch(opts.view(split.manifest).shard_sizes,  # the slice's, if any
                          batch_size=opts.batch_size, seed=opts.seed,
                          epoch=opts.epoch, shuffle=opts.shuffle,
                          shard_shuffle=opts.shard_shuffle, shuffle_buffer=opts.shuffle_buffer,
                          drop_last=opts.drop_last, rank=opts.rank, world_size=opts.world_size)
        with self.lock:
            self.plans.put(key, plan)
        return plan


def _fill(out: np.ndarray, images: np.ndarray, opts, layout: str) -> None:
    """Write the batch of ``images`` into ``out`` ((b, C, h, w) or (b, h, w, C)) as the local
    loaders make it: :func:`to_pixels` (``opts.resize``, ``opts.dtype``), then
    :func:`normalize_` (``opts.normalize``)."""
    nchw = layout == "nchw"
    to_pixels(images, opts.resize, opts.dtype, out=out, channels_first=nchw)
    normalize_(out, opts.normalize, 1 if nchw else -1)


def compute_run(splits: Splits, req: BatchRequest) -> bytearray:
    """The wire body (:mod:`.wire`) of the run ``req`` asks for.  BadRequest (400 bad
    argument, 404 unknown dataset, 409 manifest changed, 413 too much work) before any shard
    is read; a shard that cannot be read raises its own error (the server answers 500 and the
    client asks another server)."""
    name = "/".join(req.dataset)
    split = splits.split(req.dataset)
    if req.manifest is not None and req.manifest != split.sha:
        raise BadRequest(409, f"dataset {name!r} on this server has a different manifest from "
                              f"the one the client planned with (re-converted, or the servers "
                              f"hold different copies); rebuild the loader")
    try:
        opts, manifest = loader_options(split.location + (req.split_slice or ""),
                                        manifest=split.manifest, **req.loader)
    except InputError as exc:
        raise BadRequest(400, str(exc)) from None
    plan = splits.plan(split, opts)
    if req.stop > plan.num_batches:
        raise BadRequest(400, f"stop={req.stop}: the epoch of rank {opts.rank} has only "
                              f"{plan.num_batches} batches of {name!r}")
    bs = plan.batch_size
    ids = plan.ids[req.start * bs: req.stop * bs]
    sizes = [min(bs, len(ids) - i * bs) for i in range(req.stop - req.start)]
    image_size = opts.image_size(manifest)
    nbytes = run_nbytes(sizes, image_size, req.layout, opts.dtype)
    if nbytes > MAX_RUN_BYTES:
        raise BadRequest(413, f"batches {req.start} .. {req.stop - 1} would be {nbytes} bytes, "
                              f"over the limit of {MAX_RUN_BYTES} per request; ask for shorter "
                              f"runs")
    body, x, y = new_run(req.start, sizes, image_size, req.layout, opts.dtype)
    sub = Plan(ids=ids, batch_size=bs, num_batches=len(sizes), shard_order=plan.shard_order,
               first_batch=req.start)
    pos = 0
    for _, images, labels in iter_batches(splits.source(split, opts), sub):
        b = len(labels)
        _fill(x[pos:pos + b], images, opts, req.layout)
        y[pos:pos + b] = labels
        pos += b
    return body
