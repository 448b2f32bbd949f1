"""Execute a :class:`~shardstream.loaders.lazyplan.LazyPlan`: the batches of
:func:`execute.iter_batches <shardstream.loaders.execute.iter_batches>`, bitwise, without ever
holding the epoch's ids.

:func:`iter_batches` takes either kind of plan: a materialised
:class:`~shardstream.loaders.plan.Plan` goes to :func:`execute.iter_batches` unchanged; a lazy
one is executed here, from the epoch's global order as the plan's
:class:`~shardstream.loaders.lazyplan.Emitter` produces it, chunk by chunk:

- the *frontier*: the global order is computed ahead of the batch being built, by
  :data:`LOOKAHEAD` buffers (plus two shards); every id in it is *resolved* -- known to go to
  this worker (queued, with its batch) or elsewhere;
- a shard is read once, when this worker's next batch first needs it, and from it the pool
  keeps every sample this worker may still need: those queued for it, those still in the
  shuffle buffer (``Emitter.pending``) and those not yet in the stream (``Emitter.entered``);
- as the frontier moves on, a held sample that it sends elsewhere is dropped from the pool.

So the pool holds a subset of the real shuffle buffer plus one shard (``<= B + shard`` samples,
as the eager executor's test bound), and mostly only this worker's share of it; the state
besides the pool is O(S + CHUNK + lookahead / workers).  Padding (step 5) repeats the epoch's
first ids at its end: a worker whose last batch holds such an id reads that id's shard once
more, for those ids only (at most one id per rank).
"""

from __future__ import annotations

import numpy as np

from . import execute
from .execute import PREFETCH_AHEAD, ExecStats, _Pool, _ReadAhead, worker_batches
from .lazyplan import LazyPlan

__all__ = ["LOOKAHEAD", "iter_batches"]

#: how far the frontier runs ahead of the batch being built, in shuffle buffers (plus two of
#: the largest shard): a held sample still unresolved that far ahead is rare (it stays in the
#: buffer that long with probability about e**-LOOKAHEAD)
LOOKAHEAD = 4

#: most batches handled together (see ``_Run.batches``)
GROUP = 64

_UNREAD, _WANTED = -1, -2  # held-state codes (>= 0: a pool slot)


def iter_batches(source, plan, worker: int = 0, num_workers: int = 1,
                 stats: ExecStats | None = None, group: int = 1):
    """:func:`execute.iter_batches` for either kind of plan (same arguments, same batches):
    yields ``(k, images uint8 (b, H, W, C), labels int64 (b,))`` for worker ``worker``'s
    batches ``k`` (counted from the plan's first batch), in order."""
    if not isinstance(plan, LazyPlan):
        yield from execute.iter_batches(source, plan, worker, num_workers, stats, group)
        return
    worker_batches(1, worker, num_workers, group)  # the argument checks
    yield from _Run(source, plan, worker, num_workers, group,
                    ExecStats() if stats is None else stats).batches()


class _Queue:
    """This worker's resolved ids not yet handed out, in order: columns ``ids``, ``k`` (plan
    batch), ``pos`` (global position), ``shard``; appended at the tail, cut at the head, in
    amortised O(1) per entry."""

    COLUMNS = ("ids", "k", "pos", "shard")

    def __init__(self):
        self.cols = {c: np.empty(1024, np.int64) for c in self.COLUMNS}
        self.head = self.tail = 0
        self.popped = 0  # entries popped so far: entry ``head + j`` is number ``popped + j``

    def __len__(self) -> int:
        return self.tail - self.head

    def col(self, name: str) -> np.ndarray:
        return self.cols[name][self.head:self.tail]

    def append(self, **cols) -> None:
        m = len(cols["ids"])
        if self.tail + m > len(self.cols["ids"]):
            keep = len(self)
            cap = max(2 * (keep + m), 1024)
            for c in self.COLUMNS:
                new = np.empty(cap, np.int64)
                new[:keep] = self.cols[c][self.head:self.tail]
                self.cols[c] = new
            self.head, self.tail = 0, keep
        for c in self.COLUMNS:
            self.cols[c][self.tail:self.tail + m] = cols[c]
        self.tail += m

    def pop(self, m: int) -> dict:
        """The first ``m`` entries (copies), removed."""
        out = {c: self.cols[c][self.head:self.head + m].copy() for c in self.COLUMNS}
        self.head += m
        self.popped += m
        return out


def _groups(keys: np.ndarray):
    """Yields ``(key, positions)`` for each distinct value of ``keys`` (int (m,)), positions
    (into ``keys``) in order; one stable sort, no pass over ``keys`` per group."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    cuts = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
    for part in np.split(order, cuts) if keys.size else ():
        yield int(keys[part[0]]), part


class _Run:
    """One worker's execution of a lazy plan (see the module docstring)."""

    def __init__(self, source, plan: LazyPlan, worker, num_workers, group, stats):
        self.source, self.plan, self.stats = source, plan, stats
        self.worker, self.num_workers, self.group = worker, num_workers, group
        manifest = source.manifest
        self.offsets = np.asarray(manifest.offsets, dtype=np.int64)
        sizes = np.diff(self.offsets)
        self.em = plan.emitter()
        # where each shard starts in the stream (step 3)
        self.stream_start = np.empty(sizes.size, np.int64)
        self.stream_start[self.em.shard_order] = self.em.stream_ends[:-1]
        self.sizes = sizes
        self.read = np.zeros(sizes.size, dtype=bool)   # read (or being read) by this worker
        # the state of each sample of the shards held: slab[base[s] + i] for sample i of
        # shard s (base -1: nothing held); count[s]: its entries that are not _UNREAD
        self.base = np.full(sizes.size, -1, np.int64)
        self.count = np.zeros(sizes.size, np.int64)
        self.slab = np.empty(0, np.int32)
        self.slab_end = self.live = 0
        max_shard = int(sizes.max(initial=1))
        self.lookahead = LOOKAHEAD * plan.shuffle_buffer + 2 * max_shard
        # room for what the pool holds at most (shuffle buffer + one shard + one batch: no
        # growing copy as the epoch starts; pages are touched only as slots are used)
        self.pool = _Pool(manifest.image_shape,
                          min(plan.shuffle_buffer + max_shard, plan.num_samples) + plan.batch_size)
        ws = plan.world_size
        self.n = plan.num_samples
        self.end = ws * plan.per_rank                   # global positions of the epoch
        self.chunks = plan.global_chunks(self.em)
        self.frontier = plan.first_batch * plan.batch_size * ws
        self.queue = _Queue()
        self.scanned = 0                                # see _next_unread
        self.pending = None                             # the _ReadAhead in flight

    # -- the frontier ---------------------------------------------------------------------

    def _advance(self) -> bool:
        """Resolve the next chunk of the global order; False at the end of the epoch."""
        try:
            g, ids = next(self.chunks)
        except StopIteration:
            return False
        plan, ws = self.plan, self.plan.world_size
        pos = g + np.arange(ids.size, dtype=np.int64)
        k = (pos // ws) // plan.batch_size - plan.first_batch
        mine = (pos % ws == plan.rank) & ((k // self.group) % self.num_workers == self.worker)
        self.frontier = g + ids.size
        shards = np.searchsorted(self.offsets, ids, side="right") - 1
        if self.live:
            # held samples sent elsewhere are dropped (padding copies, pos >= n, are read apart)
            away = ~mine & (pos < self.n) & self.read[shards]
            if away.any():
                self._drop(ids[away], shards[away])
        self.queue.append(ids=ids[mine], k=k[mine], pos=pos[mine], shard=shards[mine])
        return True

    def _unhold(self, ids: np.ndarray, shards: np.ndarray) -> np.ndarray:
        """Mark ``ids`` (of ``shards``, each id at most once) no longer held; returns their
        pool slots (-1: none), freeing none of them."""
        base = self.base[shards]
        held = base >= 0
        slots = np.full(ids.size, -1, np.int64)
        if not held.any():
            return slots
        shards = shards[held]
        at = base[held] + ids[held] - self.offsets[shards]
        got = self.slab[at]
        slots[held] = np.where(got >= 0, got, -1)
        self.slab[at] = _UNREAD
        np.subtract.at(self.count, shards, got != _UNREAD)
        done = np.unique(shards)
        done = done[self.count[done] == 0]
        self.base[done] = -1
        self.live -= int(self.sizes[done].sum())
        return slots

    def _hold(self, s: int, state: np.ndarray) -> None:
        """Start holding shard ``s`` with ``state`` (int32 (n_s,)); the slab grows or is
        compacted as needed (amortised O(1) per sample)."""
        n = state.size
        if not (state != _UNREAD).any():
            return
        if self.slab_end + n > self.slab.size:
            held = np.flatnonzero(self.base >= 0)
            new = np.empty(max(2 * (self.live + n), 1024), np.int32)
            end = 0
            for h in held:
                size = int(self.sizes[h])
                new[end:end + size] = self.slab[self.base[h]:self.base[h] + size]
                self.base[h] = end
                end += size
            self.slab, self.slab_end = new, end
        self.base[s] = self.slab_end
        self.slab[self.slab_end:self.slab_end + n] = state
        self.slab_end += n
        self.live += n
        self.count[s] = int(np.count_nonzero(state != _UNREAD))

    def _state(self, s: int):
        """The held state of shard ``s`` (a view into the slab), or None."""
        b = int(self.base[s])
        return None if b < 0 else self.slab[b:b + int(self.sizes[s])]

    def _drop(self, ids: np.ndarray, shards: np.ndarray) -> None:
        slots = self._unhold(ids, shards)
        slots = slots[slots >= 0]
        if slots.size:
            self.pool.take(slots)  # frees them (the gathered copy is discarded)

    # -- reading ----------------------------------------------------------------------------

    def _next_unread(self, count: int) -> list[int]:
        """The next ``count`` shards the queue needs that this worker has not read, in order
        (padding copies are read apart).  Entries before ``self.scanned`` (a queue entry
        number) are known to need read shards only, and are not scanned again."""
        q = self.queue
        start = max(self.scanned - q.popped, 0)
        shards, pos = q.col("shard")[start:], q.col("pos")[start:]
        found: list[int] = []
        step = 4096
        for i in range(0, len(shards), step):
            block = shards[i:i + step]
            unread = np.flatnonzero(~self.read[block] & (pos[i:i + step] < self.n))
            if not found and unread.size:
                self.scanned = q.popped + start + i + int(unread[0])
            block = block[unread]
            firsts = block[np.sort(np.unique(block, return_index=True)[1])]  # in queue order
            found += [s for s in firsts[:count + len(found)].tolist() if s not in found]
            if len(found) >= count:
                break
        if not found:
            self.scanned = q.popped + start + len(shards)
        return found[:count]

    def _start_read(self) -> None:
        """Start reading the first unread shard the queue needs, keeping every sample of it
        this worker may still need (queued, pending in the buffer, or not yet streamed)."""
        ahead = self._next_unread(1 + PREFETCH_AHEAD)
        if not ahead:
            return
        if len(ahead) > 1:
            self.source.prefetch(ahead[1:])
        s = ahead[0]
        lo, hi = self.offsets[s], self.offsets[s + 1]
        queued = self.queue.col("ids")[(self.queue.col("shard") == s)
                                       & (self.queue.col("pos") < self.n)]
        buffered = self.em.pending()
        buffered = buffered[(buffered >= lo) & (buffered < hi)]
        start = max(self.em.entered - self.stream_start[s], 0)
        state = np.full(hi - lo, _UNREAD, dtype=np.int32)
        state[queued - lo] = _WANTED
        state[buffered - lo] = _WANTED
        state[start:] = _WANTED
        want = np.flatnonzero(state == _WANTED)
        self.read[s] = True
        self._hold(s, state)
        self.pending = _ReadAhead(self.source, s, want)

    def _finish_read(self) -> None:
        """Put the shard read ahead into the pool (the samples still wanted)."""
        reader, self.pending = self.pending, None
        s = reader.shard
        images, labels = reader.get()
        self.source.release(s)
        self.stats.shards_read.append(s)
        state = self._state(s)
        if state is None:  # everything it had was sent elsewhere while it was read
            return
        keep = state[reader.want] == _WANTED
        if keep.all():  # the usual case: no gathered copy of the whole shard
            state[reader.want] = self.pool.put(images, labels)
        else:
            state[reader.want[keep]] = self.pool.put(images[keep], labels[keep])
        self.stats.peak_pool = max(self.stats.peak_pool, self.pool.used)

    def _load_copies(self, ids: np.ndarray) -> np.ndarray:
        """Pool slots of padding copies (ids emitted at the epoch's start, repeated at its end),
        read from their shards again."""
        if self.pending is not None:  # one shard at a time
            self._finish_read()
        shards = np.searchsorted(self.offsets, ids, side="right") - 1
        slots = np.empty(ids.size, np.int64)
        for s, at in _groups(shards):
            images, labels = self.source.load(s, ids[at] - self.offsets[s])
            self.source.release(s)
            self.stats.shards_read.append(s)
            slots[at] = self.pool.put(images, labels)
        return slots

    # -- batches ----------------------------------------------------------------------------

    def _ready(self, shards: np.ndarray) -> None:
        """Read (in queue order) until every one of ``shards`` is in the pool, then start
        reading the next shard ahead."""
        while True:
            if self.pending is not None and self.pending.shard in shards:
                self._finish_read()
            elif not self.read[shards].all():
                if self.pending is not None:
                    self._finish_read()
                self._start_read()
            else:
                break
        if self.pending is None:
            self._start_read()

    def _my_count(self) -> int:
        """How many batches this worker executes (:func:`execute.worker_batches`' length,
        without making it: O(1) memory for any epoch)."""
        n, g, w, nw = self.plan.num_batches, self.group, self.worker, self.num_workers
        runs = -(-n // g)
        mine = max(-(-(runs - w) // nw), 0)
        if mine and (runs - 1) % nw == w:  # the last run is mine: it may be short
            return mine * g - (runs * g - n)
        return mine * g

    def _my_batches(self, j: int, count: int) -> np.ndarray:
        """int64 (<= count,) this worker's batches ``j, j+1, ...`` (indices into
        :func:`execute.worker_batches`' list), computed, not listed."""
        g = self.group
        idx = np.arange(j, min(j + count, self._my_count()), dtype=np.int64)
        return (self.worker + (idx // g) * self.num_workers) * g + idx % g

    def batches(self):
        """Yields ``(k, images, labels)`` for this worker's batches.  Batches come in groups:
        the next batch is made ready (its shards read), then the batches after it whose
        shards are all in the pool already join it, so that the bookkeeping runs once per
        group, not once per batch."""
        plan, bs, ws = self.plan, self.plan.batch_size, self.plan.world_size
        j, total = 0, self._my_count()
        try:
            while j < total:
                mine = self._my_batches(j, GROUP)
                ends = np.minimum((plan.first_batch + mine + 1) * bs * ws, self.end)
                while self.frontier < min(int(ends[0]) + self.lookahead, self.end):
                    self._advance()
                q = self.queue
                first = int(np.searchsorted(q.col("k"), mine[0], side="right"))
                real = q.col("pos")[:first] < self.n
                self._ready(np.unique(q.col("shard")[:first][real]))
                # the following batches, resolved and with every shard in the pool
                last = int(np.searchsorted(ends, self.frontier, side="right"))
                take = int(np.searchsorted(q.col("k"), mine[max(last - 1, 0)], side="right"))
                shards, pos = q.col("shard")[first:take], q.col("pos")[first:take]
                loaded = self.read[shards] | (pos >= self.n)
                if self.pending is not None:
                    loaded &= shards != self.pending.shard
                if not loaded.all():
                    stop = q.col("k")[first + int(np.flatnonzero(~loaded)[0])]
                    take = int(np.searchsorted(q.col("k"), stop, side="left"))
                batch = q.pop(max(take, first))
                copies = batch["pos"] >= self.n
                real = np.flatnonzero(~copies)
                slots = np.empty(copies.size, np.int64)
                slots[real] = self._unhold(batch["ids"][real], batch["shard"][real])
                if copies.any():
                    slots[copies] = self._load_copies(batch["ids"][copies])
                self.stats.peak_pool = max(self.stats.peak_pool, self.pool.used)
                ks, bounds = np.unique(batch["k"], return_index=True)
                bounds = np.append(bounds, slots.size)
                for i, k in enumerate(ks):
                    x, y = self.pool.take(slots[bounds[i]:bounds[i + 1]])
                    self.stats.pool_capacity = len(self.pool.labels)
                    yield int(k), x, y
                j += ks.size
        finally:
            if self.pending is not None:
                self.pending.abandon()
