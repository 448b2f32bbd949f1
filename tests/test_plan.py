"""The plan (DESIGN.md "The plan, precisely"): pinned literal orders, a naive reference of the
seven steps that the vectorised code must equal, epoch semantics, shuffle quality, ranks, resume
and argument errors.  Pure numpy; budget: a few seconds."""

import json
import subprocess
import sys
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardstream.errors import InputError
from shardstream.loaders.plan import (
    first_use,
    last_use,
    needed_shards,
    plan_epoch,
    shard_of,
    shuffle_stream,
)

# ---------------------------------------------------------------------------------------------
# The reference: DESIGN.md's steps 1-7 written as plainly as possible, with the Python loop.

def naive_buffer(stream, b, rng):
    n = len(stream)
    if b <= 1:
        return list(stream)
    if b >= n:
        return [stream[i] for i in rng.permutation(n)]
    slots = rng.integers(b, size=n - b)
    buffer = list(stream[:b])
    out = []
    for t in range(n - b):
        out.append(buffer[slots[t]])
        buffer[slots[t]] = stream[b + t]
    perm = rng.permutation(b)
    out.extend(buffer[i] for i in perm)  # emitted = buffer[perm]
    return out


def reference_plan(sizes, batch_size, seed=0, epoch=0, shuffle=True, shard_shuffle=True,
                   shuffle_buffer=10_000, drop_last=False, rank=0, world_size=1, start_batch=0):
    """List of batches (lists of ids) of this rank from start_batch on; None if no batch."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch])))
    offsets = [0]
    for s in sizes:
        offsets.append(offsets[-1] + s)
    shuffled = shuffle and shard_shuffle
    order = list(rng.permutation(len(sizes))) if shuffled else list(range(len(sizes)))
    stream = [offsets[s] + i for s in order for i in range(sizes[s])]
    ids = naive_buffer(stream, shuffle_buffer, rng) if shuffle else stream
    n = len(ids)
    if drop_last:
        ids = ids[:n - n % world_size]
    else:
        while len(ids) % world_size:
            ids.append(ids[len(ids) - n])  # wrap around: ids[0], ids[1], ...
    mine = ids[rank::world_size]
    batches = [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    if not batches:
        return None
    return batches[start_batch:]


def plan_batches(plan):
    return [plan.batch(k).tolist() for k in range(plan.num_batches)]


# ---------------------------------------------------------------------------------------------
# Pinned literal plans: a refactor must not change sample order by accident.

SIZES = [3, 4, 5]

PINNED = [
    # (keyword arguments, shard_order, ids)
    (dict(seed=0, epoch=0, shuffle_buffer=0), [2, 0, 1], [7, 8, 9, 10, 11, 0, 1, 2, 3, 4, 5, 6]),
    (dict(seed=0, epoch=0, shuffle_buffer=4), [2, 0, 1], [8, 7, 0, 1, 2, 10, 9, 4, 3, 5, 11, 6]),
    (dict(seed=0, epoch=1, shuffle_buffer=4), [2, 0, 1], [10, 9, 8, 11, 7, 2, 4, 3, 6, 5, 1, 0]),
    (dict(seed=1, epoch=0, shuffle_buffer=4), [0, 1, 2], [0, 4, 3, 6, 5, 1, 7, 9, 11, 10, 2, 8]),
    (dict(seed=0, epoch=0, shuffle_buffer=100), [2, 0, 1], [10, 9, 7, 0, 11, 2, 8, 5, 6, 1, 4, 3]),
    (dict(seed=1, epoch=1, shuffle_buffer=100), [2, 0, 1], [1, 9, 11, 4, 2, 8, 7, 10, 0, 5, 3, 6]),
    (dict(seed=0, epoch=0, shuffle_buffer=4, shard_shuffle=False), [0, 1, 2],
     [3, 2, 5, 1, 7, 0, 9, 10, 8, 6, 11, 4]),
    (dict(seed=0, epoch=0, shuffle=False), [0, 1, 2], list(range(12))),
]


@pytest.mark.parametrize("kw,shard_order,ids", PINNED)
def test_pinned_plans(kw, shard_order, ids):
    plan = plan_epoch(SIZES, batch_size=5, **kw)
    assert plan.shard_order.tolist() == shard_order
    assert plan.ids.tolist() == ids
    assert plan_batches(plan) == [ids[0:5], ids[5:10], ids[10:12]]
    assert plan.ids.dtype == np.int64 and plan.shard_order.dtype == np.int64


# 13 samples, buffer 4, seed 0, batch_size 2: (world_size, drop_last) -> per-rank ids
PINNED_RANKS = {
    (2, False): [[8, 12, 1, 9, 4, 6, 11], [7, 0, 10, 3, 2, 5, 8]],
    (2, True): [[8, 12, 1, 9, 4, 6], [7, 0, 10, 3, 2, 5]],
    (3, False): [[8, 0, 9, 2, 11], [7, 1, 3, 6, 8], [12, 10, 4, 5, 7]],
    (3, True): [[8, 0, 9, 2], [7, 1, 3, 6], [12, 10, 4, 5]],
    (5, False): [[8, 10, 6], [7, 9, 5], [12, 3, 11], [0, 4, 8], [1, 2, 7]],
    (5, True): [[8, 10], [7, 9], [12, 3], [0, 4], [1, 2]],
}


@pytest.mark.parametrize("world_size,drop_last", sorted(PINNED_RANKS))
def test_pinned_rank_plans(world_size, drop_last):
    for rank, expected in enumerate(PINNED_RANKS[world_size, drop_last]):
        plan = plan_epoch([3, 4, 6], batch_size=2, seed=0, shuffle_buffer=4, rank=rank,
                          world_size=world_size, drop_last=drop_last)
        assert plan.ids.tolist() == expected


# ---------------------------------------------------------------------------------------------
# The vectorised plan equals the literal loop.

@settings(max_examples=300, deadline=None)
@given(sizes=st.lists(st.integers(0, 25), min_size=1, max_size=7),
       batch_size=st.integers(1, 9), seed=st.integers(0, 2**32), epoch=st.integers(0, 50),
       shuffle=st.booleans(), shard_shuffle=st.booleans(), buffer=st.integers(0, 120),
       drop_last=st.booleans(), world_size=st.integers(1, 4), data=st.data())
def test_vectorised_plan_equals_reference_loop(sizes, batch_size, seed, epoch, shuffle,
                                               shard_shuffle, buffer, drop_last, world_size,
                                               data):
    if sum(sizes) == 0:
        sizes = sizes + [1]
    rank = data.draw(st.integers(0, world_size - 1))
    kw = dict(batch_size=batch_size, seed=seed, epoch=epoch, shuffle=shuffle,
              shard_shuffle=shard_shuffle, shuffle_buffer=buffer, drop_last=drop_last, rank=rank,
              world_size=world_size)
    expected = reference_plan(sizes, **kw)
    if expected is None:
        with pytest.raises(InputError, match="no batch"):
            plan_epoch(sizes, **kw)
        return
    start = data.draw(st.integers(0, len(expected)))
    plan = plan_epoch(sizes, start_batch=start, **kw)
    assert plan_batches(plan) == expected[start:]
    assert plan.first_batch == start and plan.num_batches == len(expected) - start


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 300), buffer=st.integers(0, 400), seed=st.integers(0, 2**63))
def test_shuffle_stream_equals_loop(n, buffer, seed):
    stream = np.random.default_rng(seed).permutation(n).astype(np.int64) + 1000
    got = shuffle_stream(stream, buffer, np.random.Generator(np.random.PCG64(seed)))
    want = naive_buffer(list(stream), buffer, np.random.Generator(np.random.PCG64(seed)))
    assert np.array_equal(got, np.array(want, dtype=np.int64))


def test_vectorised_equals_loop_on_large_buffers():
    # Buffers wider than 16 bits take the two-digit radix sort path.
    rng = np.random.default_rng(5)
    stream = rng.permutation(150_000).astype(np.int64)
    for buffer in (65_536, 65_537, 100_000):
        got = shuffle_stream(stream, buffer, np.random.Generator(np.random.PCG64(buffer)))
        want = naive_buffer(stream.tolist(), buffer, np.random.Generator(np.random.PCG64(buffer)))
        assert np.array_equal(got, np.array(want))


# ---------------------------------------------------------------------------------------------
# Epoch semantics

SIZES_10 = [128] * 7 + [104]  # the conftest stand-in: 1000 samples, last shard short


@pytest.mark.parametrize("buffer", [0, 1, 100, 500, 5000])
def test_every_sample_exactly_once_per_epoch(buffer):
    for epoch in range(3):
        plan = plan_epoch(SIZES_10, batch_size=64, seed=3, epoch=epoch, shuffle_buffer=buffer)
        assert np.array_equal(np.sort(plan.ids), np.arange(1000))
        assert plan.num_batches == 16 and plan.batch(15).size == 1000 - 15 * 64


def test_epochs_and_seeds_differ_and_repeat():
    a = plan_epoch(SIZES_10, batch_size=64, seed=0, epoch=0, shuffle_buffer=300).ids
    again = plan_epoch(SIZES_10, batch_size=64, seed=0, epoch=0, shuffle_buffer=300).ids
    assert np.array_equal(a, again)
    others = [plan_epoch(SIZES_10, batch_size=64, seed=s, epoch=e, shuffle_buffer=300).ids
              for s, e in [(0, 1), (0, 2), (1, 0), (1, 1)]]
    for o in others:
        assert not np.array_equal(a, o)


def test_same_plan_in_another_process():
    code = ("import json; from shardstream.loaders.plan import plan_epoch; "
            "print(json.dumps([plan_epoch([128]*7+[104], batch_size=64, seed=s, epoch=e, "
            "shuffle_buffer=300, rank=r, world_size=3).ids.tolist() for s, e, r in "
            "[(0, 0, 0), (7, 3, 2)]]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    there = json.loads(out.stdout)
    here = [plan_epoch(SIZES_10, batch_size=64, seed=s, epoch=e, shuffle_buffer=300, rank=r,
                       world_size=3).ids.tolist() for s, e, r in [(0, 0, 0), (7, 3, 2)]]
    assert there == here


def test_accepts_a_manifest_like_object_and_numpy_sizes():
    fake = types.SimpleNamespace(shard_sizes=np.array(SIZES_10, dtype=np.int64))
    a = plan_epoch(fake, batch_size=10, seed=4)
    b = plan_epoch(SIZES_10, batch_size=10, seed=4)
    c = plan_epoch(np.array(SIZES_10, dtype=np.int32), batch_size=10, seed=np.int64(4))
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.ids, c.ids)


def test_accepts_a_manifest():
    from shardstream.shards.manifest import Manifest, ShardInfo

    shards = tuple(ShardInfo(f"train-{i:06d}.tar", n, 1000, "0" * 64)
                   for i, n in enumerate(SIZES_10))
    manifest = Manifest(dataset="fashion-mnist", split="train", num_samples=1000,
                        image_shape=(28, 28, 1),
                        encoding="npy", classes=tuple("abcdefghij"), label_counts=(100,) * 10,
                        shards={"tar": shards}, source={"synthetic": True})
    plan = plan_epoch(manifest, batch_size=64, seed=2, shuffle_buffer=300)
    same = plan_epoch(SIZES_10, batch_size=64, seed=2, shuffle_buffer=300).ids
    assert np.array_equal(plan.ids, same)
    assert np.array_equal(shard_of(plan.ids, manifest.offsets),
                          np.repeat(np.arange(8), SIZES_10)[plan.ids])


def test_plan_arrays_are_read_only():
    plan = plan_epoch(SIZES, batch_size=2)
    before = plan.ids.copy()
    for array in (plan.ids, plan.shard_order, plan.batch(0)):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 5
    assert np.array_equal(plan.ids, before)           # nothing was changed through a view


# ---------------------------------------------------------------------------------------------
# Shuffle modes and quality

def test_shuffle_false_is_manifest_order():
    plan = plan_epoch(SIZES_10, batch_size=64, shuffle=False, seed=9, epoch=4)
    assert np.array_equal(plan.ids, np.arange(1000))
    assert np.array_equal(plan.shard_order, np.arange(8))


def test_shard_shuffle_without_buffer_keeps_shards_contiguous():
    plan = plan_epoch(SIZES_10, batch_size=64, seed=2, shuffle_buffer=0)
    assert sorted(plan.shard_order.tolist()) == list(range(8))
    assert plan.shard_order.tolist() != list(range(8))
    expected = np.concatenate([np.arange(128 * s, 128 * s + SIZES_10[s]) for s in plan.shard_order])
    assert np.array_equal(plan.ids, expected)


def test_buffer_without_shard_shuffle_reads_shards_in_manifest_order():
    plan = plan_epoch(SIZES_10, batch_size=64, seed=2, shuffle_buffer=50, shard_shuffle=False)
    assert np.array_equal(plan.shard_order, np.arange(8))
    # A sample can only leave the buffer after it has entered it: position >= id - 50 + 1.
    pos = np.empty(1000, dtype=np.int64)
    pos[plan.ids] = np.arange(1000)
    assert (pos >= np.arange(1000) - 49).all()
    assert not np.array_equal(plan.ids, np.arange(1000))


N_Q, K_Q = 10_000, 10  # 10 shards of 1000 samples, sorted by label: shard s holds only label s
LABELS_Q = np.arange(N_Q) // 1000


def displacement(ids):
    """Mean |position - id| / N: 0 in order, 1/3 for a uniform shuffle."""
    return np.abs(np.arange(ids.size) - ids).mean() / ids.size


def label_autocorrelation(ids):
    """Lag-1 autocorrelation of one-hot labels: (P(next label equal) - 1/K) / (1 - 1/K);
    1 for label-sorted order, 0 for a uniform shuffle."""
    lab = LABELS_Q[ids]
    p_same = (lab[1:] == lab[:-1]).mean()
    return (p_same - 1 / K_Q) / (1 - 1 / K_Q)


def classes_per_batch(ids, batch=100):
    lab = LABELS_Q[ids].reshape(-1, batch)
    return np.mean([np.unique(row).size for row in lab])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shuffle_quality_against_full_shuffle_and_none(seed):
    sizes = [1000] * 10
    none = plan_epoch(sizes, batch_size=100, shuffle=False).ids
    full = plan_epoch(sizes, batch_size=100, seed=seed, shuffle_buffer=N_Q).ids
    buf = plan_epoch(sizes, batch_size=100, seed=seed, shuffle_buffer=1000).ids
    big = plan_epoch(sizes, batch_size=100, seed=seed, shuffle_buffer=5000).ids
    shards_only = plan_epoch(sizes, batch_size=100, seed=seed, shuffle_buffer=0).ids

    # Where samples land in the epoch: shard shuffle + buffer moves them as far as a full shuffle.
    assert displacement(none) == 0
    assert abs(displacement(full) - 1 / 3) < 0.02
    assert abs(displacement(buf) - 1 / 3) < 0.06

    # Neighbouring samples: the worst case (every shard a single label).
    assert label_autocorrelation(none) > 0.99
    assert label_autocorrelation(shards_only) > 0.99  # shard shuffle alone does not mix labels
    assert abs(label_autocorrelation(full)) < 0.03
    assert label_autocorrelation(buf) < 0.45  # a one-shard buffer mixes two shards at a time
    assert abs(label_autocorrelation(big)) < 0.06  # a half-epoch buffer is nearly a full shuffle

    # What lands in a batch of 100.
    assert classes_per_batch(none) == 1
    assert classes_per_batch(full) > 9.9
    assert classes_per_batch(buf) > 4
    assert classes_per_batch(big) > 8.5


# ---------------------------------------------------------------------------------------------
# Ranks

@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_ranks_equal_batches_disjoint_and_cover(world_size, batch_size):
    n = 1000
    full = plan_epoch(SIZES_10, batch_size=batch_size, seed=1, shuffle_buffer=200).ids
    plans = [plan_epoch(SIZES_10, batch_size=batch_size, seed=1, shuffle_buffer=200, rank=r,
                        world_size=world_size) for r in range(world_size)]
    assert len({p.num_batches for p in plans}) == 1
    assert len({p.ids.size for p in plans}) == 1
    pad = (-n) % world_size
    together = np.concatenate([p.ids for p in plans])
    assert np.array_equal(np.sort(together), np.sort(np.concatenate([np.arange(n), full[:pad]])))
    # The only repeats are the wrap-around padding: the epoch's first `pad` ids, at the tail.
    padded = np.concatenate([full, full[:pad]])
    for r, p in enumerate(plans):
        assert np.array_equal(p.ids, padded[r::world_size])


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_drop_last(world_size):
    plans = [plan_epoch(SIZES_10, batch_size=64, seed=1, shuffle_buffer=200, rank=r,
                        world_size=world_size, drop_last=True) for r in range(world_size)]
    per_rank = 1000 // world_size
    assert {p.num_batches for p in plans} == {per_rank // 64}
    together = np.concatenate([p.ids for p in plans])
    assert np.unique(together).size == together.size  # disjoint: no padding when dropping
    assert all(p.batch(k).size == 64 for p in plans for k in range(p.num_batches))


def test_tiny_dataset_pads_by_wrapping_more_than_once():
    plans = [plan_epoch([1], batch_size=1, rank=r, world_size=3) for r in range(3)]
    assert [p.ids.tolist() for p in plans] == [[0], [0], [0]]


# ---------------------------------------------------------------------------------------------
# Resume

@pytest.mark.parametrize("world_size,rank", [(1, 0), (3, 1)])
def test_start_batch_resumes_the_same_plan(world_size, rank):
    kw = dict(batch_size=48, seed=5, epoch=2, shuffle_buffer=300, rank=rank, world_size=world_size)
    full = plan_epoch(SIZES_10, **kw)
    for k in (0, 1, 3, full.num_batches - 1, full.num_batches):
        resumed = plan_epoch(SIZES_10, start_batch=k, **kw)
        assert resumed.first_batch == k
        assert resumed.num_batches == full.num_batches - k
        assert plan_batches(resumed) == plan_batches(full)[k:]
        assert np.array_equal(resumed.shard_order, full.shard_order)


# ---------------------------------------------------------------------------------------------
# Shard bookkeeping for the executor

def test_shard_of_needed_shards_and_uses():
    sizes = np.array([5, 0, 7, 3, 9])
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    plan = plan_epoch(sizes, batch_size=4, seed=3, shuffle_buffer=6)
    owner = np.repeat(np.arange(5), sizes)
    assert np.array_equal(shard_of(plan.ids, offsets), owner[plan.ids])
    seen = []
    for s in owner[plan.ids]:
        if s not in seen:
            seen.append(s)
    assert needed_shards(plan.ids, offsets).tolist() == seen
    subsets = (range(plan.num_batches), range(1, plan.num_batches, 2), [],
               [plan.num_batches - 1])
    for batches in subsets:
        last = np.full(5, -1)
        first = np.full(5, -1)
        for k in batches:
            for s in owner[plan.batch(k)]:
                last[s] = k
                if first[s] < 0:
                    first[s] = k
        assert last_use(plan, offsets, batches).tolist() == last.tolist()
        assert first_use(plan, offsets, batches).tolist() == first.tolist()
    with pytest.raises(InputError, match="batches"):
        last_use(plan, offsets, [plan.num_batches])


# ---------------------------------------------------------------------------------------------
# Bad arguments

@pytest.mark.parametrize("kw,match", [
    (dict(batch_size=0), "batch_size=0"),
    (dict(batch_size=-3), "batch_size=-3"),
    (dict(batch_size=2.5), "batch_size=2.5"),
    (dict(batch_size=2, world_size=0), "world_size=0"),
    (dict(batch_size=2, rank=2, world_size=2), "rank=2"),
    (dict(batch_size=2, rank=-1), "rank=-1"),
    (dict(batch_size=2, start_batch=-1), "start_batch=-1"),
    (dict(batch_size=2, start_batch=7), "start_batch=7 .*6 batches"),
    (dict(batch_size=2, shuffle_buffer=-1), "shuffle_buffer=-1"),
    (dict(batch_size=2, seed=-1), "seed=-1"),
    (dict(batch_size=2, epoch=-2), "epoch=-2"),
    (dict(batch_size=20, drop_last=True), "no batch.*batch_size=20"),
    (dict(batch_size=2, shuffle="yes"), "shuffle='yes'"),
    (dict(batch_size=2, drop_last=1), "drop_last=1"),
])
def test_bad_arguments(kw, match):
    with pytest.raises(InputError, match=match):
        plan_epoch(SIZES, **kw)


@pytest.mark.parametrize("sizes,match", [
    ([], "empty"), ([0, 0], "empty"), ([3, -1], r"shard_sizes\[1\]=-1"),
    ([[1, 2]], "1-D"), ([1.5, 2], "integer"),
])
def test_bad_shard_sizes(sizes, match):
    with pytest.raises(InputError, match=match):
        plan_epoch(sizes, batch_size=1)


def test_batch_index_out_of_range():
    plan = plan_epoch(SIZES, batch_size=5, start_batch=1)
    assert plan.num_batches == 2
    with pytest.raises(InputError, match="k=2"):
        plan.batch(2)
