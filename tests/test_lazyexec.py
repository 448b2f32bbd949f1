"""The lazy executor (shardstream.loaders.lazyexec) hands out exactly the eager executor's
batches for a LazyPlan, reads each shard once in plan order, and holds a bounded pool."""

import threading
import time
import types

import numpy as np
import pytest
from test_loaders import RecordingFetcher

from shardstream.loaders import execute, lazyexec
from shardstream.loaders.execute import ExecStats, open_stream
from shardstream.loaders.lazyplan import LazyPlan
from shardstream.loaders.plan import plan_epoch


@pytest.fixture(scope="module")
def source(loader_splits):
    location, images, labels = loader_splits["npy"]  # 1,000 samples, 8 shards of 128 (last 104)
    return open_stream(location), images, labels


CASES = [
    dict(batch_size=40, seed=6, shuffle_buffer=100),
    dict(batch_size=40, seed=6, shuffle_buffer=700, shard_shuffle=False),
    dict(batch_size=33, seed=1, shuffle_buffer=0),
    dict(batch_size=33, seed=1, shuffle=False),
    dict(batch_size=64, seed=2, shuffle_buffer=5000),                    # B >= N
    dict(batch_size=7, seed=3, shuffle_buffer=300, world_size=3, rank=2),  # padding
    dict(batch_size=7, seed=3, shuffle_buffer=300, world_size=3, rank=0),
    dict(batch_size=9, seed=4, shuffle_buffer=250, world_size=6, rank=5, drop_last=True),
    dict(batch_size=16, seed=5, shuffle_buffer=128, world_size=7, rank=4, start_batch=5),
    dict(batch_size=10, seed=5, shuffle_buffer=400, start_batch=99),
]


@pytest.mark.parametrize("kw", CASES)
@pytest.mark.parametrize("num_workers,group", [(1, 1), (3, 1), (2, 4)])
def test_lazy_executor_equals_eager(source, kw, num_workers, group):
    src, images, labels = source
    sizes = src.manifest.shard_sizes
    plan, lazy = plan_epoch(sizes, **kw), LazyPlan(sizes, **kw)
    for w in range(num_workers):
        eager = list(execute.iter_batches(src, plan, w, num_workers, group=group))
        got = list(lazyexec.iter_batches(src, lazy, w, num_workers, group=group))
        assert [k for k, _, _ in got] == [k for k, _, _ in eager]
        for (k, x, y), (_, ex, ey) in zip(got, eager):
            ids = plan.batch(k)
            assert np.array_equal(x, ex) and np.array_equal(y, ey)
            assert np.array_equal(x, images[ids]) and np.array_equal(y, labels[ids])


def test_a_materialised_plan_goes_to_the_eager_executor(source):
    src, images, _ = source
    plan = plan_epoch(src.manifest.shard_sizes, batch_size=100, seed=1)
    got = [x for _, x, _ in lazyexec.iter_batches(src, plan)]
    assert all(np.array_equal(x, images[plan.batch(k)]) for k, x in enumerate(got))


@pytest.mark.parametrize("num_workers,group", [(1, 1), (3, 1), (2, 4)])
@pytest.mark.parametrize("buffer", [100, 300, 700])
def test_lazy_executor_holds_only_what_the_plan_may_still_need(source, num_workers, group, buffer):
    """As the eager executor: shards read once each, in the order this worker's batches first
    need them, one at a time, released after; the pool never exceeds buffer + shard + batch,
    and with several workers it holds about their share of the buffer."""
    src, _, _ = source
    rec = RecordingFetcher(src.fetcher)
    lazy_src = open_stream(src.location)
    lazy_src.fetcher = rec
    bs = 40
    plan = LazyPlan(src.manifest.shard_sizes, batch_size=bs, seed=6, shuffle_buffer=buffer)
    eager = plan_epoch(src.manifest.shard_sizes, batch_size=bs, seed=6, shuffle_buffer=buffer)
    peaks = []
    for w in range(num_workers):
        rec.log.clear()
        stats = ExecStats()
        batches = [k for k, _, _ in lazyexec.iter_batches(lazy_src, plan, w, num_workers,
                                                          stats=stats, group=group)]
        reads = [i for what, i in rec.log if what == "read"]
        assert reads == stats.shards_read and len(set(reads)) == len(reads)
        assert rec.held == set() and rec.peak_held == 1
        mine = np.concatenate([eager.batch(k) for k in batches])
        first_need = np.searchsorted(src.manifest.offsets, mine, side="right") - 1
        _, first = np.unique(first_need, return_index=True)
        assert reads == list(first_need[np.sort(first)])
        assert stats.peak_pool <= buffer + 128 + bs
        peaks.append(stats.peak_pool)
    if num_workers > 1:
        assert max(peaks) <= buffer / num_workers + 128 + bs + buffer // 10


def test_padding_copies_are_read_again(source):
    """Rank 2 of 3 over 1,000 samples gets the epoch's second id again as its last (padding
    positions 1000, 1001 go to ranks 1, 2): that id's shard is read a second time."""
    src, images, _ = source
    kw = dict(batch_size=7, seed=3, shuffle_buffer=300, world_size=3, rank=2)
    plan = plan_epoch(src.manifest.shard_sizes, **kw)
    stats = ExecStats()
    got = list(lazyexec.iter_batches(src, LazyPlan(src.manifest.shard_sizes, **kw), stats=stats))
    assert np.array_equal(got[-1][1][-1], images[plan.ids[-1]])
    assert plan.ids[-1] == plan_epoch(src.manifest.shard_sizes, **{**kw, "world_size": 1,
                                                                    "rank": 0}).ids[1]
    extra = [s for s in stats.shards_read if stats.shards_read.count(s) == 2]
    assert len(stats.shards_read) == 8 + 1 and len(set(extra)) == 1


def test_memory_does_not_grow_with_the_dataset(tmp_path):
    from conftest import write_test_split

    peaks = []
    for n in (1000, 4000):
        write_test_split(tmp_path / str(n), n=n, shard_size=100, shape=(4, 4, 1), formats=("tar",))
        src = open_stream(str(tmp_path / str(n)))
        plan = LazyPlan(src.manifest.shard_sizes, batch_size=32, seed=0, shuffle_buffer=200)
        stats = ExecStats()
        assert sum(len(y) for _, _, y in lazyexec.iter_batches(src, plan, stats=stats)) == n
        assert stats.peak_pool <= 200 + 100 + 32
        assert stats.pool_capacity <= 2 * (200 + 100 + 32)
        peaks.append(stats.peak_pool)
    assert peaks[1] <= peaks[0] + 32


def test_stopped_early_releases_the_shard_being_read(source):
    src, _, _ = source
    lazy_src = open_stream(src.location)
    rec = RecordingFetcher(lazy_src.fetcher)
    lazy_src.fetcher = rec
    plan = LazyPlan(src.manifest.shard_sizes, batch_size=40, seed=6, shuffle_buffer=100)
    batches = lazyexec.iter_batches(lazy_src, plan)
    for _ in range(3):
        next(batches)
    batches.close()
    for _ in range(100):
        if not any(t.name == "shardstream-read" for t in threading.enumerate()):
            break
        time.sleep(0.05)
    assert rec.held == set()


class MemorySource:
    """Shards of 1x1 images held in memory, the sample id as its label (no files)."""

    def __init__(self, sizes):
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.manifest = types.SimpleNamespace(offsets=offsets, shard_sizes=np.asarray(sizes),
                                              image_shape=(1, 1, 1))
        self.loads = []

    def load(self, s, want):
        want = np.asarray(want, np.int64)
        self.loads.append(s)
        return np.zeros((want.size, 1, 1, 1), np.uint8), want + self.manifest.offsets[s]

    def release(self, s):
        pass

    def prefetch(self, shards):
        pass


@pytest.mark.parametrize("world_size,num_workers,rank", [(1, 1, 0), (8, 1, 3), (3, 4, 2),
                                                         (5, 2, 4)])
def test_pool_holds_about_this_workers_share_and_ends_empty(world_size, num_workers, rank):
    """200 shards of 1,000, buffer 10,000: every batch is the plan's, every shard is read once
    (plus one for a padding copy), the pool holds about this worker's share of buffer + shard
    (not the whole buffer) and is empty at the end."""
    sizes = np.full(200, 1000)
    sizes[7] = 999  # padding for world sizes that do not divide
    kw = dict(batch_size=64, seed=1, shuffle_buffer=10_000, world_size=world_size, rank=rank)
    plan = LazyPlan(sizes, **kw)
    eager = plan_epoch(sizes, **kw)
    for w in range(num_workers):
        src = MemorySource(sizes)
        run = lazyexec._Run(src, plan, w, num_workers, 1, ExecStats())
        for k, _, y in run.batches():
            assert np.array_equal(y, eager.batch(k))
        assert run.pool.used == 0 and run.live == 0 and not (run.base >= 0).any()
        assert len(src.loads) - len(set(src.loads)) <= 1
        share = (10_000 + 1000) / (world_size * num_workers)
        assert run.stats.peak_pool <= share + 1000 + 64, run.stats.peak_pool


def test_worker_batches_are_computed_not_listed():
    """The lazy executor's batch list (computed in pieces, O(1) memory) is worker_batches'."""
    for n, group, num_workers in [(0, 1, 1), (1, 1, 3), (37, 4, 3), (64, 8, 2), (65, 8, 2),
                                  (1000, 3, 7)]:
        for w in range(num_workers):
            run = object.__new__(lazyexec._Run)
            run.plan = types.SimpleNamespace(num_batches=n)
            run.group, run.worker, run.num_workers = group, w, num_workers
            expected = execute.worker_batches(n, w, num_workers, group)
            assert run._my_count() == expected.size
            got = [run._my_batches(j, 5) for j in range(0, expected.size, 5)]
            assert np.array_equal(np.concatenate(got + [np.empty(0, np.int64)]), expected)
