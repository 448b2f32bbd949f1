"""The lazy plan: the ids of :func:`~shardstream.loaders.plan.plan_epoch`, batch by batch, in
memory O(shuffle_buffer + shards + batch) instead of O(N).

``plan_epoch`` is the reference (and the contract of ``docs/design.md``); this module produces
exactly its ids without ever holding the epoch.  It works because the plan's random draws form
one sequential stream: ``rng.integers(B, size=N - B)`` drawn as consecutive chunks gives the same
values, and leaves the generator in the same state, as the one call (numpy's bounded integers
take whole 32-bit or 64-bit words from the bit generator one after the other; the tests check
it against the one call for every case they plan).  Draws with ``B < 2**31`` are made with
``dtype=int32``, numpy's fast path for the same values (8x faster than ``int64`` here, also
checked by the tests).

The pieces, for ``N`` samples in ``S`` shards and a buffer of ``B``:

- :class:`Emitter`: the epoch's global order (steps 1-4 of the plan), emitted in chunks of at
  most :data:`CHUNK` ids; holds the shard order (S,), the buffer (B,) and one chunk;
  ``skip(count)`` advances without producing output (still O(count) time: every draw must be
  made to know the buffer);
- :class:`LazyPlan`: one rank's batches (steps 5-7) from ``start_batch`` on, with the same
  attributes as :class:`~shardstream.loaders.plan.Plan` except ``ids``.
"""

from __future__ import annotations

import numpy as np

from .plan import _stable_argsort, check_plan_args, epoch_batches

__all__ = ["CHUNK", "Emitter", "LazyPlan", "lazy_plan"]

#: ids produced per step of the emitter (a few int64 arrays of this length are alive at once;
#: smaller chunks sort faster, in cache)
CHUNK = 1 << 16
_EMPTY = np.empty(0, np.int64)
#: draws per step of :meth:`Emitter.skip` (at least the buffer: each step also scans it)
SKIP_CHUNK = 1 << 20


class Emitter:
    """The global emission order of one epoch (plan steps 1-4), produced in chunks.

    Attributes: ``n`` samples; ``shard_order`` int64 (S,); ``stream_ends`` int64 (S+1,)
    (``stream_ends[j]`` = stream position where the ``j``-th shard of ``shard_order``
    starts); ``emitted``: how many ids have been emitted (or skipped) so far.

    In buffer mode (``shuffle`` and ``1 < B < N``), ``buffer`` int64 (B,) holds the ids in the
    shuffle buffer now: the ids not yet emitted are exactly ``buffer`` plus the stream from
    position ``entered`` on (``entered = min(B + emitted, N)``; after the loop the leftover
    buffer is emitted in ``perm`` order and ``buffer`` holds what is left of it).
    """

    def __init__(self, sizes: np.ndarray, seed: int, epoch: int, shuffle: bool,
                 shard_shuffle: bool, shuffle_buffer: int):
        sizes = np.asarray(sizes, dtype=np.int64)
        self.n = n = int(sizes.sum())
        offsets = np.zeros(sizes.size + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        # 1. the one generator, 2. the shard order
        self.rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch])))
        if shuffle and shard_shuffle:
            self.shard_order = self.rng.permutation(sizes.size).astype(np.int64)
        else:
            self.shard_order = np.arange(sizes.size, dtype=np.int64)
        # 3. the stream: position q of the j-th shard in order is global id q + _delta[j]
        self.stream_ends = np.zeros(sizes.size + 1, dtype=np.int64)
        np.cumsum(sizes[self.shard_order], out=self.stream_ends[1:])
        self._delta = offsets[:-1][self.shard_order] - self.stream_ends[:-1]
        self.emitted = 0
        b = int(shuffle_buffer)
        self.b = b
        if not shuffle or b <= 1:
            self.mode = "stream"
        elif b >= n:
            self.mode = "full"
            self._full = self.stream(0, n)[self.rng.permutation(n)]
        else:
            self.mode = "buffer"
            self.buffer = self.stream(0, b)
            self._dtype = np.int32 if b <= np.iinfo(np.int32).max else np.int64
            self._perm = None  # drawn after the last slot draw

    @property
    def entered(self) -> int:
        """Stream positions ``< entered`` are emitted or in :meth:`pending`; the ids not yet
        emitted are exactly ``pending()`` plus ``stream(entered, n)``."""
        if self.mode == "stream":
            return self.emitted
        if self.mode == "full":
            return self.n
        return min(self.b + self.emitted, self.n)

    def stream(self, q0: int, q1: int) -> np.ndarray:
        """int64 (q1 - q0,) the stream (plan step 3) at positions ``q0 .. q1 - 1``."""
        ends = self.stream_ends
        j0 = int(np.searchsorted(ends, q0, side="right")) - 1
        j1 = int(np.searchsorted(ends, q1, side="left"))
        lens = np.minimum(ends[j0 + 1:j1 + 1], q1) - np.maximum(ends[j0:j1], q0)
        return np.repeat(self._delta[j0:j1], lens) + np.arange(q0, q1, dtype=np.int64)

    def stream_at(self, q: np.ndarray) -> np.ndarray:
        """int64 (m,) the stream at positions ``q`` (int (m,), any order)."""
        q = np.asarray(q, dtype=np.int64)
        return q + self._delta[np.searchsorted(self.stream_ends, q, side="right") - 1]

    def take(self, count: int) -> np.ndarray:
        """int64 (count,) the next ``count`` ids of the epoch's order (``count <= CHUNK`` keeps
        the memory bound; larger counts work, in proportion)."""
        return self._advance(count, True)

    def skip(self, count: int) -> None:
        """Advance past the next ``count`` ids without producing them (memory O(B + SKIP_CHUNK)):
        each slot ends holding the refill of its last draw, found with ``np.maximum.at``."""
        count = int(count)
        if self.mode == "buffer":
            draws = self.n - self.b
            step = min(max(SKIP_CHUNK, self.b), np.iinfo(np.int32).max)
            last = np.empty(self.b, dtype=np.int32)
            times = np.arange(min(step, count, draws), dtype=np.int32)
            while count > 0 and self.emitted < draws:
                c = min(count, draws - self.emitted, step)
                slots = self.rng.integers(self.b, size=c, dtype=self._dtype)
                # each slot ends holding the refill of its last draw in the chunk, stream
                # position B + emitted + that draw's index
                last.fill(-1)
                np.maximum.at(last, slots, times[:c])
                hit = np.flatnonzero(last >= 0)
                self.buffer[hit] = self.stream_at(self.b + self.emitted + last[hit])
                self.emitted += c
                count -= c
        self._advance(count, False)

    def _advance(self, count: int, emit: bool):
        count = int(count)
        if count < 0 or self.emitted + count > self.n:
            raise ValueError(f"cannot advance by {count}: {self.emitted} of {self.n} emitted")
        e0 = self.emitted
        if self.mode == "stream":
            out = self.stream(e0, e0 + count) if emit else None
        elif self.mode == "full":
            out = self._full[e0:e0 + count] if emit else None
        else:
            pieces = []
            draws = self.n - self.b
            e = e0
            while e < e0 + count:
                if e < draws:
                    c = min(e0 + count, draws, e + CHUNK) - e
                    slots = self.rng.integers(self.b, size=c, dtype=self._dtype)
                    piece = _buffer_step(self.buffer, slots,
                                         self.stream(self.b + e, self.b + e + c), emit)
                else:
                    if self._perm is None:
                        self._perm = self.rng.permutation(self.b)
                    c = e0 + count - e
                    piece = self.buffer[self._perm[e - draws:e - draws + c]] if emit else None
                if emit:
                    pieces.append(piece)
                e += c
            out = None
            if emit:
                out = pieces[0] if len(pieces) == 1 else np.concatenate(pieces + [_EMPTY])
        self.emitted = e0 + count
        return out

    def pending(self) -> np.ndarray:
        """int64 (k,) the ids held back now, not yet emitted: the shuffle buffer (after the
        loop, what is left of it; with ``B >= N`` every id not yet emitted; without a buffer,
        none)."""
        if self.mode == "stream":
            return _EMPTY
        if self.mode == "full":
            return self._full[self.emitted:]
        draws = self.n - self.b
        if self.emitted <= draws:
            return self.buffer
        return self.buffer[self._perm[self.emitted - draws:]]


def _buffer_step(buffer: np.ndarray, slots: np.ndarray, refills: np.ndarray, emit: bool):
    """One chunk of the buffer loop, in place: for ``t = 0 .. c-1`` emit ``buffer[slots[t]]``
    and put ``refills[t]`` in that slot.  ``buffer`` int64 (B,), ``slots`` int (c,) in
    ``[0, B)``, ``refills`` int64 (c,); returns the emitted ids int64 (c,) (``emit``) or None.

    Vectorised as in :func:`~shardstream.loaders.plan.shuffle_stream`: sort the draws by slot
    (stably); a draw emits what the previous draw of its slot wrote, or -- its slot's first
    draw in this chunk -- what the buffer holds; each slot's last draw leaves its refill."""
    order = _stable_argsort(slots, buffer.size)
    sorted_slots = slots[order]
    first = np.empty(slots.size, dtype=bool)
    first[0] = True
    np.not_equal(sorted_slots[1:], sorted_slots[:-1], out=first[1:])
    last = np.empty_like(first)
    last[:-1] = first[1:]
    last[-1] = True
    out = None
    if emit:
        got = np.empty(slots.size, dtype=np.int64)
        got[1:] = refills[order[:-1]]
        got[first] = buffer[sorted_slots[first]]
        out = np.empty(slots.size, dtype=np.int64)
        out[order] = got
    buffer[sorted_slots[last]] = refills[order[last]]
    return out


class LazyPlan:
    """One rank's plan for one epoch from batch ``first_batch`` on, computed as it is iterated.

    Same arguments and checks as :func:`~shardstream.loaders.plan.plan_epoch`, the same
    ``batch_size``, ``num_batches``, ``shard_order`` and ``first_batch``; instead of ``ids``,
    :meth:`batches` yields the batches (int64 arrays, batch ``first_batch + k`` of the epoch
    as the ``k``-th), equal to ``plan_epoch(...).batch(k)``.  Construction is O(S); iterating
    holds O(B + S + batch_size + CHUNK) integers at once.  Also: ``num_samples`` (N),
    ``per_rank`` (this rank's samples in the whole epoch), ``shuffle_buffer``, ``rank``,
    ``world_size``,
    ``drop_last``, and ``num_ids`` (ids from ``first_batch`` on)."""

    def __init__(self, shard_sizes, *, batch_size: int, seed: int = 0, epoch: int = 0,
                 shuffle: bool = True, shard_shuffle: bool = True, shuffle_buffer: int = 10_000,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1,
                 start_batch: int = 0):
        sizes, batch_size, seed, epoch, shuffle_buffer, rank, world_size = check_plan_args(
            shard_sizes, batch_size, seed, epoch, shuffle, shard_shuffle, shuffle_buffer,
            drop_last, rank, world_size, start_batch)
        self.num_samples = n = int(sizes.sum())
        self.per_rank, total = epoch_batches(n, batch_size, drop_last, world_size, start_batch)
        self._args = (sizes, seed, epoch, bool(shuffle), bool(shard_shuffle), shuffle_buffer)
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.shuffle_buffer = shuffle_buffer
        self.drop_last = bool(drop_last)
        self.first_batch = int(start_batch)
        self.num_batches = total - self.first_batch
        if drop_last:
            self.per_rank = total * batch_size
        self.shard_order = self.emitter().shard_order
        self.shard_order.flags.writeable = False

    def emitter(self) -> Emitter:
        """A fresh :class:`Emitter` of this epoch's global order (from its start)."""
        return Emitter(*self._args)

    @property
    def num_ids(self) -> int:
        """This rank's ids from batch ``first_batch`` on (``Plan.num_ids``)."""
        return max(self.per_rank - self.first_batch * self.batch_size, 0)

    def head(self) -> np.ndarray:
        """int64 (pad,) the ``pad = world_size * per_rank - N`` ids that padding appends at the
        end of the epoch (step 5): its first ids, wrapping around again if ``pad > N``
        (empty with ``drop_last`` or no padding)."""
        pad = max(self.world_size * self.per_rank - self.num_samples, 0)
        if not pad:
            return np.empty(0, np.int64)
        return np.resize(self.emitter().take(min(pad, self.num_samples)), pad)

    def global_chunks(self, emitter: Emitter | None = None):
        """Yields ``(g, ids)``: consecutive pieces of the padded global order (after step 5's
        padding or dropping), from global position ``g0 = first_batch * batch_size *
        world_size`` to the end of the last batch; ``ids`` int64 (c,) holds positions
        ``g .. g + c - 1`` (``c <= CHUNK``, a multiple of ``world_size`` except maybe the
        last).  Position ``g`` belongs to rank ``g % world_size``.  ``emitter`` (fresh, from
        :meth:`emitter`) may be passed to watch its buffer as the pieces come."""
        ws, n = self.world_size, self.num_samples
        end = ws * self.per_rank
        g = self.first_batch * self.batch_size * ws
        em = self.emitter() if emitter is None else emitter
        head = self.head() if end > n else None
        em.skip(min(g, n))
        step = max(CHUNK // ws, 1) * ws
        while g < end:
            c = min(step, end - g)
            if g + c <= n:
                ids = em.take(c)
            else:
                real = max(n - g, 0)
                ids = np.concatenate([em.take(real), head[g + real - n:g + c - n]])
            yield g, ids
            g += c

    def batches(self):
        """Yields int64 (b,) the ids of each batch, from batch ``first_batch`` on, in order."""
        bs, ws, r = self.batch_size, self.world_size, self.rank
        left = self.num_ids
        carry = np.empty(0, np.int64)
        for g, ids in self.global_chunks():
            mine = ids[(r - g) % ws::ws]
            carry = np.concatenate([carry, mine]) if carry.size else mine
            full = min(carry.size, left) // bs * bs
            for i in range(0, full, bs):
                yield carry[i:i + bs].copy()
            left -= full
            carry = carry[full:]
            if left <= carry.size and left:  # the last, short batch
                yield carry[:left].copy()
                return

    def ids(self) -> np.ndarray:
        """int64 (M,) all of this rank's ids from ``first_batch`` on (O(M): for tests and
        small epochs)."""
        parts = list(self.batches())
        return np.concatenate(parts) if parts else np.empty(0, np.int64)


def lazy_plan(shard_sizes, **kwargs) -> LazyPlan:
    """:class:`LazyPlan` (same arguments as :func:`~shardstream.loaders.plan.plan_epoch`)."""
    return LazyPlan(shard_sizes, **kwargs)
