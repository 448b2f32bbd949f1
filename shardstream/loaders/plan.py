"""The plan: which samples, in which order, in which batch -- from per-shard sample counts alone.

Pure numpy over integers, no I/O and no framework, so every framework adapter, every DataLoader
worker, every rank and every restart computes the same plan.  The steps and the random draws are
the contract in ``docs/design.md`` ("The plan, precisely"); ``docs/determinism.md`` explains
them for users with a worked example.  In short, for ``N`` samples in ``S`` shards:

1. ``rng = Generator(PCG64(SeedSequence([seed, epoch])))``
2. shard order ``rng.permutation(S)`` when ``shuffle and shard_shuffle``, else manifest order;
3. the stream: the global sample ids of the shards in that order;
4. a shuffle buffer of ``B = shuffle_buffer`` samples when ``shuffle``:
   ``1 < B < N``: ``slots = rng.integers(B, size=N - B)`` (one call), emit ``buffer[slots[t]]``
   and refill that slot with ``stream[B + t]``, then emit the leftover buffer as
   ``buffer[rng.permutation(B)]``; ``B >= N``: ``stream[rng.permutation(N)]``;
   ``B <= 1``: stream order;
5. ranks: pad to a multiple of ``world_size`` by wrapping around (``drop_last``: drop the tail),
   rank ``r`` takes ``ids[r::world_size]``;
6. batches of ``batch_size``, the last one short unless ``drop_last`` (then it is dropped);
7. resume: skip this rank's first ``start_batch`` batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shardstream.errors import InputError

__all__ = ["Plan", "plan_epoch", "shard_of", "needed_shards", "first_use", "last_use"]


@dataclass(frozen=True, eq=False)
class Plan:
    """One rank's plan for one epoch, from batch ``first_batch`` on.

    Attributes:
        ids: int64 (M,) global sample ids of this rank, in order, starting at batch
            ``first_batch``; batch ``k`` is ``ids[k * batch_size:(k + 1) * batch_size]``.
        batch_size: samples per batch (the last batch may be shorter unless ``drop_last``).
        num_batches: batches in this plan (``k = 0 .. num_batches - 1``); this rank's whole
            epoch has ``first_batch + num_batches`` batches, the same on every rank.
        shard_order: int64 (S,) the order in which the shards enter the stream (the same on
            every rank).
        first_batch: the ``start_batch`` the plan was made with (batch ``k`` of this plan is
            batch ``first_batch + k`` of the uninterrupted epoch).
    """

    ids: np.ndarray
    batch_size: int
    num_batches: int
    shard_order: np.ndarray
    first_batch: int = 0

    @property
    def num_ids(self) -> int:
        """Ids in this plan (``ids.size``), as :attr:`LazyPlan.num_ids
        <shardstream.loaders.lazyplan.LazyPlan.num_ids>`."""
        return int(self.ids.size)

    def batch(self, k: int) -> np.ndarray:
        """int64 (b,) global ids of batch ``k`` (``0 <= k < num_batches``, counted from
        ``first_batch``)."""
        if not _is_int(k) or not 0 <= k < self.num_batches:
            raise InputError(
                f"batch index k={k!r} is outside this plan's batches 0..{self.num_batches - 1}; "
                f"batches are counted from start_batch={self.first_batch}")
        return self.ids[k * self.batch_size:(k + 1) * self.batch_size]


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _check_int(name: str, value, low: int, high: int | None = None, what: str = "") -> int:
    if not _is_int(value):
        raise InputError(f"{name}={value!r} must be an integer{what}")
    value = int(value)
    if value < low or (high is not None and value > high):
        rng = f">= {low}" if high is None else f"in {low}..{high}"
        raise InputError(f"{name}={value} must be {rng}{what}")
    return value


def _shard_sizes(shard_sizes) -> np.ndarray:
    sizes = getattr(shard_sizes, "shard_sizes", shard_sizes)
    try:
        arr = np.asarray(sizes)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise InputError(f"shard_sizes={shard_sizes!r} is not an array of per-shard sample "
                         f"counts: {exc}") from None
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise InputError(
            f"shard_sizes must be a 1-D array of integer sample counts per shard (or a Manifest), "
            f"got shape {arr.shape} dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if (arr < 0).any():
        bad = int(np.flatnonzero(arr < 0)[0])
        raise InputError(f"shard_sizes[{bad}]={int(arr[bad])} is negative; "
                         f"every shard holds >= 0 samples")
    if arr.sum() == 0:
        raise InputError(
            f"the dataset is empty (shard_sizes has {arr.size} shards and 0 samples); "
            "convert a dataset with at least one sample first")
    return arr


def check_plan_args(shard_sizes, batch_size, seed, epoch, shuffle, shard_shuffle, shuffle_buffer,
                    drop_last, rank, world_size, start_batch):
    """The checked arguments of :func:`plan_epoch` (shared with the lazy plan,
    :mod:`shardstream.loaders.lazyplan`): ``(sizes int64 (S,), batch_size, seed, epoch,
    shuffle_buffer, rank, world_size)``; InputError naming the first bad one."""
    sizes = _shard_sizes(shard_sizes)
    batch_size = _check_int("batch_size", batch_size, 1)
    seed = _check_int("seed", seed, 0)
    epoch = _check_int("epoch", epoch, 0)
    shuffle_buffer = _check_int("shuffle_buffer", shuffle_buffer, 0,
                                what=" (0 or 1 means no buffer shuffle)")
    world_size = _check_int("world_size", world_size, 1)
    rank = _check_int("rank", rank, 0, world_size - 1, what=f" for world_size={world_size}")
    flags = (("shuffle", shuffle), ("shard_shuffle", shard_shuffle), ("drop_last", drop_last))
    for name, flag in flags:
        if not isinstance(flag, (bool, np.bool_)):
            raise InputError(f"{name}={flag!r} must be True or False")
    if not _is_int(start_batch) or start_batch < 0:
        raise InputError(f"start_batch={start_batch!r} must be an integer >= 0")
    return sizes, batch_size, seed, epoch, shuffle_buffer, rank, world_size


def epoch_batches(n: int, batch_size: int, drop_last: bool, world_size: int,
                  start_batch: int) -> tuple[int, int]:
    """``(per_rank, num_batches)``: the samples of each rank after padding or dropping (steps 5)
    and its batches (step 6) for ``n`` samples; InputError if there is no batch or
    ``start_batch`` is past the end."""
    if drop_last:
        per_rank = (n - n % world_size) // world_size
        num_batches = per_rank // batch_size
    else:
        per_rank = -(-n // world_size)
        num_batches = -(-per_rank // batch_size)
    if num_batches == 0:
        raise InputError(
            f"the epoch has no batch: {n} samples over world_size={world_size} ranks gives "
            f"{per_rank} per rank, fewer than batch_size={batch_size} with drop_last=True; "
            "use a smaller batch_size or drop_last=False")
    if start_batch > num_batches:
        raise InputError(
            f"start_batch={start_batch} is past the end of this rank's epoch of {num_batches} "
            f"batches (batch_size={batch_size}); use 0..{num_batches}")
    return per_rank, num_batches


def _stable_argsort(keys: np.ndarray, bound: int) -> np.ndarray:
    """int64 (n,) the stable argsort of ``keys`` (n,), integers in ``[0, bound)``.

    numpy radix-sorts 16-bit keys (a few ms for a million) but merge-sorts wider ones (~15x
    slower), so wider keys are sorted as two 16-bit digits, low digit first (LSD radix sort).
    """
    if bound <= 1 << 16:
        return np.argsort(keys.astype(np.uint16), kind="stable")
    if bound > 1 << 32:
        return np.argsort(keys, kind="stable")
    order = np.argsort((keys & 0xFFFF).astype(np.uint16), kind="stable")
    high = (keys[order] >> 16).astype(np.uint16)
    return order[np.argsort(high, kind="stable")]


def shuffle_stream(stream: np.ndarray, buffer: int, rng: np.random.Generator) -> np.ndarray:
    """The shuffle-buffer order of ``stream`` (int64 (N,)), step 4 of the plan: int64 (N,).

    Draws from ``rng`` exactly as the contract says (``1 < B < N``: one ``integers(B, size=N-B)``
    then one ``permutation(B)``; ``B >= N``: one ``permutation(N)``; ``B <= 1``: nothing) and
    computes the emission loop without a Python loop: sort the draws by slot (stably, so draws of
    one slot stay in time order); draw ``t`` emits what the previous draw of the same slot wrote
    (``stream[B + t_prev]``), or the slot's first id ``stream[slot]`` when it is the slot's
    first draw; the buffer left at the end holds each slot's last write (or its first id).
    """
    n = stream.size
    b = int(buffer)
    if b <= 1:
        return stream.copy()
    if b >= n:
        return stream[rng.permutation(n)]
    slots = rng.integers(b, size=n - b)
    perm = rng.permutation(b)
    order = _stable_argsort(slots, b)  # draw times grouped by slot, in time order within a slot
    counts = np.bincount(slots, minlength=b)
    ends = np.cumsum(counts)
    drawn = np.flatnonzero(counts)  # slots drawn at least once
    firsts = (ends - counts)[drawn]  # where each drawn slot's group starts in `order`
    lasts = ends[drawn] - 1  # ... and ends
    refills = stream[b:]  # draw t writes refills[t] into its slot
    out = np.empty(n, dtype=np.int64)
    # Draw order[i] finds what the previous draw of its slot, order[i - 1], wrote ...
    out[order[1:]] = refills[order[:-1]]
    # ... unless it is its slot's first draw: then it finds the slot's first id.
    out[order[firsts]] = stream[drawn]
    # The leftover buffer: each drawn slot holds its last write, the others their first id.
    left = stream[:b].copy()
    left[drawn] = refills[order[lasts]]
    out[n - b:] = left[perm]
    return out


def plan_epoch(shard_sizes, *, batch_size: int, seed: int = 0, epoch: int = 0, shuffle: bool = True,
               shard_shuffle: bool = True, shuffle_buffer: int = 10_000, drop_last: bool = False,
               rank: int = 0, world_size: int = 1, start_batch: int = 0) -> Plan:
    """This rank's plan for one epoch.

    Args:
        shard_sizes: int (S,) samples per shard in manifest order, or anything with a
            ``.shard_sizes`` attribute (a :class:`~shardstream.shards.manifest.Manifest`).
            Global sample ids are ``offsets[s] + i`` with ``offsets = [0, cumsum(shard_sizes)]``.
        batch_size: samples per batch, >= 1.
        seed, epoch: non-negative integers; the plan's only randomness is
            ``Generator(PCG64(SeedSequence([seed, epoch])))``.
        shuffle: ``False`` gives manifest order (no shard shuffle, no buffer, no draws).
        shard_shuffle: with ``shuffle``, permute the shard order first; ``False`` keeps manifest
            shard order and only the buffer shuffles.
        shuffle_buffer: buffer size ``B`` >= 0 (``B <= 1``: no buffer shuffle;
            ``B >= N``: a full uniform shuffle).
        drop_last: drop the tail that does not divide among the ranks and each rank's last
            short batch, instead of padding by wrap-around and keeping a short last batch.
        rank, world_size: this rank and the number of ranks (``0 <= rank < world_size``).
        start_batch: skip this many batches of this rank's plan (0 .. its epoch's batch count).

    Returns:
        :class:`Plan` with ``ids`` int64 (M,), where ``M`` is this rank's samples from batch
        ``start_batch`` on.

    Raises:
        InputError: naming the bad argument and its value (also for an empty dataset, or an
            epoch that would have no batch at all).
    """
    sizes, batch_size, seed, epoch, shuffle_buffer, rank, world_size = check_plan_args(
        shard_sizes, batch_size, seed, epoch, shuffle, shard_shuffle, shuffle_buffer, drop_last,
        rank, world_size, start_batch)
    num_shards = sizes.size
    n = int(sizes.sum())
    offsets = np.zeros(num_shards + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])

    # 1. the one generator
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch])))
    # 2. shard order
    if shuffle and shard_shuffle:
        shard_order = rng.permutation(num_shards).astype(np.int64)
    else:
        shard_order = np.arange(num_shards, dtype=np.int64)
    # 3. the stream of global ids, shard by shard
    ordered_sizes = sizes[shard_order]
    first_in_stream = np.concatenate(([0], np.cumsum(ordered_sizes)[:-1]))
    starts = np.repeat(offsets[:-1][shard_order] - first_in_stream, ordered_sizes)
    stream = starts + np.arange(n, dtype=np.int64)
    # 4. the shuffle buffer
    ids = shuffle_stream(stream, shuffle_buffer, rng) if shuffle else stream
    # 5. ranks: every rank gets the same number of samples
    if world_size > 1:
        if drop_last:
            ids = ids[:n - n % world_size]
        elif n % world_size:
            ids = np.resize(ids, n + (-n) % world_size)  # wraps around: ids[:pad] appended
        ids = ids[rank::world_size]
    per_rank, num_batches = epoch_batches(n, batch_size, drop_last, world_size, start_batch)
    if drop_last:
        ids = ids[:num_batches * batch_size]
    ids = np.ascontiguousarray(ids[start_batch * batch_size:], dtype=np.int64)
    ids.flags.writeable = False
    shard_order.flags.writeable = False
    return Plan(ids=ids, batch_size=batch_size, num_batches=num_batches - int(start_batch),
                shard_order=shard_order, first_batch=int(start_batch))


def shard_of(ids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """int64 (M,) the shard index of each global id in ``ids`` (M,), given ``offsets`` (S+1,)
    (``offsets[s]`` = first global id of shard ``s``, ``offsets[-1]`` = N,
    e.g. ``Manifest.offsets``)."""
    return np.searchsorted(np.asarray(offsets), np.asarray(ids), side="right").astype(np.int64) - 1


def needed_shards(ids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """int64 (k,) the distinct shards holding ``ids`` (M,), in the order of their first use
    in ``ids``."""
    shards = shard_of(ids, offsets)
    uniq, first = np.unique(shards, return_index=True)
    return uniq[np.argsort(first, kind="stable")]


def _batch_shards(plan: Plan, offsets: np.ndarray, batches) -> tuple[np.ndarray, np.ndarray]:
    """(batch index, shard index) of every sample of the selected ``batches``, in batch order."""
    batches = np.asarray(batches, dtype=np.int64).reshape(-1)
    if batches.size and (batches.min() < 0 or batches.max() >= plan.num_batches):
        raise InputError(f"batches must lie in 0..{plan.num_batches - 1} (this plan's batches), "
                         f"got {batches.min()}..{batches.max()}")
    bs = plan.batch_size
    # positions of every sample of the selected batches (the last batch may be short)
    pos = (batches[:, None] * bs + np.arange(bs, dtype=np.int64)).reshape(-1)
    bidx = np.repeat(batches, bs)
    keep = pos < plan.ids.size
    pos, bidx = pos[keep], bidx[keep]
    return bidx, shard_of(plan.ids[pos], offsets)


def last_use(plan: Plan, offsets: np.ndarray, batches) -> np.ndarray:
    """int64 (S,) for each shard, the last of ``batches`` (plan batch indices) that needs one of
    its samples, or -1 if none does.  After executing batch ``k`` an executor that runs exactly
    ``batches`` may drop every shard ``s`` with ``last_use[s] == k``."""
    bidx, shards = _batch_shards(plan, offsets, batches)
    out = np.full(np.asarray(offsets).size - 1, -1, dtype=np.int64)
    np.maximum.at(out, shards, bidx)
    return out


def first_use(plan: Plan, offsets: np.ndarray, batches) -> np.ndarray:
    """int64 (S,) for each shard, the first of ``batches`` (plan batch indices) that needs one of
    its samples, or -1 if none does (sort the shards by it to fetch them in plan order)."""
    bidx, shards = _batch_shards(plan, offsets, batches)
    big = np.iinfo(np.int64).max
    out = np.full(np.asarray(offsets).size - 1, big, dtype=np.int64)
    np.minimum.at(out, shards, bidx)
    out[out == big] = -1
    return out
