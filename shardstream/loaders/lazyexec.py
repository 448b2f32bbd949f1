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
        self.read = np.zeros(sizes.size, dtype=bool)   # read (or being read) by this worker
        self.held: dict[int, np.ndarray] = {}           # shard -> int32 (n_s,) state per sample
        max_shard = int(sizes.max(initial=1))
        self.lookahead = LOOKAHEAD * plan.shuffle_buffer + 2 * max_shard
        self.pool = _Pool(manifest.image_shape, plan.batch_size + max_shard)
        ws = plan.world_size
        self.n = plan.num_samples
        self.end = ws * plan.per_rank                   # global positions of the epoch
        self.chunks = plan.global_chunks(self.em)
        self.frontier = plan.first_batch * plan.batch_size * ws
        # the queue: this worker's resolved ids not yet handed out, with their batch and
        # global position
        self.q_ids = self.q_k = self.q_pos = np.empty(0, np.int64)
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
        if self.held:
            # held samples sent elsewhere are dropped (padding copies, pos >= n, are read apart)
            away = ~mine & (pos < self.n)
            self._drop(ids[away])
        self.q_ids = np.concatenate([self.q_ids, ids[mine]])
        self.q_k = np.concatenate([self.q_k, k[mine]])
        self.q_pos = np.concatenate([self.q_pos, pos[mine]])
        return True

    def _drop(self, ids: np.ndarray) -> None:
        shards = np.searchsorted(self.offsets, ids, side="right") - 1
        keep = self.read[shards]
        if not keep.any():
            return
        ids, shards = ids[keep], shards[keep]
        for s in np.unique(shards):
            state = self.held.get(int(s))
            if state is None:
                continue
            local = ids[shards == s] - self.offsets[s]
            slots = state[local]
            self._free(slots[slots >= 0])
            state[local] = _UNREAD
            if not (state != _UNREAD).any():
                del self.held[int(s)]

    def _free(self, slots: np.ndarray) -> None:
        if slots.size:
            self.pool.take(slots)  # frees them (the gathered copy is discarded)

    # -- reading ----------------------------------------------------------------------------

    def _next_unread(self, count: int) -> list[int]:
        """The next ``count`` shards the queue needs that this worker has not read, in order."""
        ids = self.q_ids[self.q_pos < self.n]  # padding copies are read apart
        if not ids.size:
            return []
        shards = np.searchsorted(self.offsets, ids, side="right") - 1
        shards = shards[~self.read[shards]]
        uniq, first = np.unique(shards, return_index=True)
        return [int(s) for s in uniq[np.argsort(first, kind="stable")][:count]]

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
        queued = self.q_ids[(self.q_ids >= lo) & (self.q_ids < hi) & (self.q_pos < self.n)]
        buffered = self.em.pending()
        buffered = buffered[(buffered >= lo) & (buffered < hi)]
        start = max(self.em.entered - self.stream_start[s], 0)
        state = np.full(hi - lo, _UNREAD, dtype=np.int32)
        state[queued - lo] = _WANTED
        state[buffered - lo] = _WANTED
        state[start:] = _WANTED
        self.read[s] = True
        self.held[s] = state
        self.pending = _ReadAhead(self.source, s, np.flatnonzero(state == _WANTED))

    def _finish_read(self) -> None:
        """Put the shard read ahead into the pool (the samples still wanted)."""
        reader, self.pending = self.pending, None
        s = reader.shard
        images, labels = reader.get()
        self.source.release(s)
        self.stats.shards_read.append(s)
        state = self.held.get(s)
        if state is None:  # everything it had was sent elsewhere while it was read
            return
        keep = state[reader.want] == _WANTED
        state[reader.want[keep]] = self.pool.put(images[keep], labels[keep])
        self.stats.peak_pool = max(self.stats.peak_pool, self.pool.used)

    def _load_copies(self, ids: np.ndarray) -> np.ndarray:
        """Pool slots of padding copies (ids emitted at the epoch's start, repeated at its end),
        read from their shards again."""
        if self.pending is not None:  # one shard at a time
            self._finish_read()
        shards = np.searchsorted(self.offsets, ids, side="right") - 1
        slots = np.empty(ids.size, np.int64)
        for s in np.unique(shards):
            at = np.flatnonzero(shards == s)
            images, labels = self.source.load(int(s), ids[at] - self.offsets[s])
            self.source.release(int(s))
            self.stats.shards_read.append(int(s))
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

    def batches(self):
        plan, bs, ws = self.plan, self.plan.batch_size, self.plan.world_size
        try:
            for k in worker_batches(plan.num_batches, self.worker, self.num_workers, self.group):
                batch_end = min((plan.first_batch + int(k) + 1) * bs * ws, self.end)
                while self.frontier < min(batch_end + self.lookahead, self.end):
                    self._advance()
                take = int(np.searchsorted(self.q_k, k, side="right"))
                ids, pos = self.q_ids[:take], self.q_pos[:take]
                copies = pos >= self.n
                real = np.flatnonzero(~copies)
                shards = np.searchsorted(self.offsets, ids[real], side="right") - 1
                self._ready(np.unique(shards))
                self.q_ids, self.q_k, self.q_pos = (self.q_ids[take:], self.q_k[take:],
                                                    self.q_pos[take:])
                slots = np.empty(ids.size, np.int64)
                for s in np.unique(shards):
                    at = real[shards == s]
                    state = self.held[int(s)]
                    local = ids[at] - self.offsets[s]
                    slots[at] = state[local]
                    state[local] = _UNREAD
                    if not (state != _UNREAD).any():
                        del self.held[int(s)]
                if copies.any():
                    slots[copies] = self._load_copies(ids[copies])
                self.stats.peak_pool = max(self.stats.peak_pool, self.pool.used)
                x, y = self.pool.take(slots)
                self.stats.pool_capacity = len(self.pool.labels)
                yield int(k), x, y
        finally:
            if self.pending is not None:
                self.pending.abandon()
