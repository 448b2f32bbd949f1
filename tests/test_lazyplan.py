"""The lazy plan (shardstream.loaders.lazyplan) equals the reference plan_epoch bitwise, for
every option and chunking, and holds O(buffer + shards + batch) memory.  Budget: a few seconds."""

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_plan import PINNED, PINNED_RANKS, SIZES

from shardstream.errors import InputError
from shardstream.loaders import lazyplan
from shardstream.loaders.lazyplan import Emitter, LazyPlan
from shardstream.loaders.plan import plan_epoch


def assert_same(sizes, **kw):
    """LazyPlan(sizes, **kw) yields exactly plan_epoch(sizes, **kw)'s batches."""
    ref = plan_epoch(sizes, **kw)
    lazy = LazyPlan(sizes, **kw)
    got = list(lazy.batches())
    assert lazy.num_batches == ref.num_batches == len(got)
    assert lazy.first_batch == ref.first_batch and lazy.num_ids == ref.num_ids == ref.ids.size
    assert np.array_equal(lazy.shard_order, ref.shard_order)
    for k, batch in enumerate(got):
        assert batch.dtype == np.int64 and np.array_equal(batch, ref.batch(k)), k
    return got


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of a few ids, so that every chunk boundary case occurs on small inputs."""
    def use(chunk, skip_chunk):
        monkeypatch.setattr(lazyplan, "CHUNK", chunk)
        monkeypatch.setattr(lazyplan, "SKIP_CHUNK", skip_chunk)
    return use


@pytest.mark.parametrize("kw,shard_order,ids", PINNED)
def test_pinned_plans(kw, shard_order, ids):
    plan = LazyPlan(SIZES, batch_size=5, **kw)
    assert plan.shard_order.tolist() == shard_order
    assert plan.ids().tolist() == ids
    assert [b.tolist() for b in plan.batches()] == [ids[0:5], ids[5:10], ids[10:12]]


@pytest.mark.parametrize("world_size,drop_last", sorted(PINNED_RANKS))
def test_pinned_rank_plans(world_size, drop_last):
    for rank, expected in enumerate(PINNED_RANKS[world_size, drop_last]):
        plan = LazyPlan([3, 4, 6], batch_size=2, seed=0, shuffle_buffer=4, rank=rank,
                        world_size=world_size, drop_last=drop_last)
        assert plan.ids().tolist() == expected


@settings(max_examples=400, deadline=None, derandomize=True)
@given(sizes=st.lists(st.integers(0, 40), min_size=1, max_size=9),
       batch_size=st.integers(1, 9), seed=st.integers(0, 2**32), epoch=st.integers(0, 50),
       shuffle=st.booleans(), shard_shuffle=st.booleans(), drop_last=st.booleans(),
       world_size=st.integers(1, 5), chunk=st.sampled_from([1, 2, 3, 5, 16, 1 << 16]),
       skip_chunk=st.sampled_from([1, 4, 1 << 18]), data=st.data())
def test_lazy_equals_reference(sizes, batch_size, seed, epoch, shuffle, shard_shuffle, drop_last,
                               world_size, chunk, skip_chunk, data):
    if sum(sizes) == 0:
        sizes = sizes + [1]
    n = sum(sizes)
    # buffers below, at and above N, and the no-buffer cases
    buffer = data.draw(st.sampled_from([0, 1, 2, max(n - 1, 0), n, n + 1, 3 * n])
                       | st.integers(0, n + 2))
    rank = data.draw(st.integers(0, world_size - 1))
    kw = dict(batch_size=batch_size, seed=seed, epoch=epoch, shuffle=shuffle,
              shard_shuffle=shard_shuffle, shuffle_buffer=buffer, drop_last=drop_last,
              rank=rank, world_size=world_size)
    try:
        total = plan_epoch(sizes, **kw).num_batches
    except InputError as exc:
        with pytest.raises(InputError, match="no batch"):
            LazyPlan(sizes, **kw)
        assert "no batch" in str(exc)
        return
    start = data.draw(st.integers(0, total))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lazyplan, "CHUNK", chunk)
        mp.setattr(lazyplan, "SKIP_CHUNK", skip_chunk)
        assert_same(sizes, start_batch=start, **kw)


@pytest.mark.parametrize("buffer", [0, 1, 7_000, 70_000, 100_000, 199_999, 200_000, 10**6])
@pytest.mark.parametrize("world_size,rank,drop_last", [(1, 0, False), (3, 2, False), (7, 0, True),
                                                       (7, 6, False)])
def test_medium_epochs(buffer, world_size, rank, drop_last):
    """200,000 samples in uneven shards, buffers below 2**16 (one radix digit) and above,
    resumed at the start, in the middle and at the last batch."""
    sizes = np.random.default_rng(1).integers(0, 4000, 100)
    sizes[-1] += 200_000 - sizes.sum()
    kw = dict(batch_size=1000, seed=9, epoch=4, shuffle_buffer=buffer, rank=rank,
              world_size=world_size, drop_last=drop_last)
    total = plan_epoch(sizes, **kw).num_batches
    for start in (0, total // 2 + 1, total - 1):
        assert_same(sizes, start_batch=start, **kw)


def test_shard_shuffle_off_and_shuffle_off_medium():
    sizes = np.full(50, 1000)
    for kw in (dict(shard_shuffle=False, shuffle_buffer=5000), dict(shuffle=False)):
        assert_same(sizes, batch_size=333, seed=2, world_size=4, rank=3, start_batch=7, **kw)


@pytest.mark.parametrize("buffer", [2, 100, 65_536, 65_537, 100_000, 2**31 - 1])
def test_chunked_int32_draws_equal_the_one_int64_call(buffer):
    """What the lazy plan relies on: the plan's one ``integers(B, size=N-B)`` call equals
    the same draws made in chunks with dtype int32, and leaves the generator where the one
    call does (the permutation drawn next is the same)."""
    def rng():
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence([3, 1])))
    one = rng()
    expected = one.integers(buffer, size=100_003)
    chunked = rng()
    got = np.concatenate([chunked.integers(buffer, size=c, dtype=np.int32)
                          for c in (1, 2, 99_990, 0, 10)])
    assert np.array_equal(got, expected)
    assert np.array_equal(one.permutation(1000), chunked.permutation(1000))


def test_emitter_pending_is_what_is_not_yet_emitted(small_chunks):
    """What the executor uses: after any prefix, the ids not yet emitted are the buffer's
    ``pending()`` plus the stream from ``entered`` on."""
    small_chunks(7, 5)
    sizes = np.array([13, 0, 21, 8, 30])
    full = plan_epoch(sizes, batch_size=1, seed=4, shuffle_buffer=10).ids
    em = Emitter(sizes, 4, 0, True, True, 10)
    done = 0
    for step in (0, 3, 1, 20, 14, 8, 9, 11, 6):
        if step % 2:
            em.skip(step)
        else:
            assert np.array_equal(em.take(step), full[done:done + step])
        done += step
        rest = np.concatenate([em.pending(), em.stream(em.entered, em.n)])
        assert np.array_equal(np.sort(rest), np.sort(full[done:]))
    assert done == em.n and em.pending().size == 0


def test_memory_does_not_grow_with_the_epoch():
    """20 million samples (the reference would hold three int64 arrays of N, 480 MB): the lazy
    plan's first batches, and a resume at its last batch, stay within a few MB."""
    sizes = np.full(2000, 10_000)
    tracemalloc.start()
    try:
        plan = LazyPlan(sizes, batch_size=512, seed=1, shuffle_buffer=100_000, world_size=2)
        batches = plan.batches()
        first = [next(batches) for _ in range(3)]
        batches.close()
        deep = LazyPlan(sizes, batch_size=512, seed=1, shuffle_buffer=100_000, world_size=2,
                        start_batch=plan.num_batches - 1)
        last = list(deep.batches())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20e6, peak
    assert len(last) == 1 and last[0].size == 10**7 - 512 * (plan.num_batches - 1)
    # spot check against the reference on the same stream, shard order and buffer
    assert np.array_equal(plan.shard_order, deep.shard_order)
    assert all(b.size == 512 and np.unique(b).size == 512 for b in first)
    assert np.intersect1d(np.concatenate(first), last[0]).size == 0


@pytest.mark.parametrize("kw,match", [
    (dict(batch_size=0), "batch_size=0"),
    (dict(batch_size=2, rank=2, world_size=2), "rank=2"),
    (dict(batch_size=2, start_batch=7), "start_batch=7 .*6 batches"),
    (dict(batch_size=20, drop_last=True), "no batch.*batch_size=20"),
    (dict(batch_size=2, shuffle_buffer=-1), "shuffle_buffer=-1"),
])
def test_bad_arguments_same_errors(kw, match):
    for make in (plan_epoch, LazyPlan):
        with pytest.raises(InputError, match=match):
            make(SIZES, **kw)
