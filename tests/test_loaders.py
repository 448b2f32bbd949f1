"""Issue 3 items 4, 6, 7 and 9 through the loaders: epochs, ranks, resume, bounded memory; and
the loader objects themselves (len, state_dict, tf cardinality, tf_dataset_fn).

Budget: ~1 minute on 2 cores (1,000 small images; a few DataLoader workers).
"""

import numpy as np
import pytest

import shardstream as ss
from shardstream.loaders.execute import ExecStats, iter_batches, open_stream
from shardstream.loaders.plan import plan_epoch

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")


@pytest.fixture(scope="module")
def split(loader_splits):
    """(location, images, labels, id_of) for the npy split; ``id_of`` maps an image's bytes to
    its sample id (every image is distinct), so a batch can be turned back into ids."""
    location, images, labels = loader_splits["npy"]
    id_of = {im.tobytes(): i for i, im in enumerate(images)}
    assert len(id_of) == len(images)
    return location, images, labels, id_of


def torch_ids(loader, id_of):
    """The sample ids of every batch the torch loader yields (no resize: X * 255 is exact)."""
    out = []
    for X, _y in loader:
        u8 = np.rint(X.numpy().transpose(0, 2, 3, 1) * 255).astype(np.uint8)
        out.append(np.array([id_of[im.tobytes()] for im in u8]))
    return out


def tf_ids(ds, id_of):
    out = []
    for X, _y in ds:
        u8 = np.rint(X.numpy() * 255).astype(np.uint8)
        out.append(np.array([id_of[im.tobytes()] for im in u8]))
    return out


# --- item 4: epochs ------------------------------------------------------------------------


def test_epoch_visits_every_sample_once_and_set_epoch_reorders(split):
    location, images, labels, id_of = split
    loader = ss.torch_loader(location, batch_size=64, shuffle_buffer=300, seed=3)
    orders = []
    for epoch in range(3):
        loader.set_epoch(epoch)
        assert len(loader) == 16
        ids = np.concatenate(torch_ids(loader, id_of))
        assert np.array_equal(np.sort(ids), np.arange(1000))      # every sample exactly once
        orders.append(ids)
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
    # the same (seed, epoch) is the same order, in a new loader and in tf.data
    again = ss.torch_loader(location, batch_size=64, shuffle_buffer=300, seed=3, epoch=1)
    assert np.array_equal(np.concatenate(torch_ids(again, id_of)), orders[1])
    ds = ss.tf_dataset(location, batch_size=64, shuffle_buffer=300, seed=3, epoch=2)
    assert np.array_equal(np.concatenate(tf_ids(ds, id_of)), orders[2])
    # no shuffle: manifest order
    plain = ss.torch_loader(location, batch_size=64, shuffle=False)
    assert np.array_equal(np.concatenate(torch_ids(plain, id_of)), np.arange(1000))


def test_iterating_again_repeats_the_epoch(split):
    location, _, _, id_of = split
    loader = ss.torch_loader(location, batch_size=100, shuffle_buffer=300, seed=1, epoch=4)
    first = torch_ids(loader, id_of)
    assert loader.state_dict()["batch"] == 10 and len(loader) == 10
    second = torch_ids(loader, id_of)
    assert len(second) == 10 and all(np.array_equal(a, b) for a, b in zip(first, second))


# --- item 6: ranks -------------------------------------------------------------------------


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_equal_length_disjoint_covering(split, world_size, drop_last):
    location, _, _, id_of = split
    kw = dict(batch_size=48, shuffle_buffer=300, seed=2, epoch=1, drop_last=drop_last,
              world_size=world_size)
    per_rank = []
    for rank in range(world_size):
        loader = ss.torch_loader(location, rank=rank, **kw)
        ids = torch_ids(loader, id_of)
        assert len(ids) == len(loader)
        tf_batches = tf_ids(ss.tf_dataset(location, rank=rank, **kw), id_of)
        assert len(tf_batches) == len(ids)
        assert all(np.array_equal(a, b) for a, b in zip(ids, tf_batches))
        per_rank.append(np.concatenate(ids))
    lengths = {len(ids) for ids in per_rank}
    assert len(lengths) == 1                      # equal work per rank: no DDP hang
    together = np.concatenate(per_rank)
    if drop_last:
        # whole batches only, no sample twice, nothing lost beyond the documented tail
        assert len(np.unique(together)) == len(together)
        # exactly: each rank takes 1000 // world_size ids (the tail dropped), in whole batches
        assert len(together) == world_size * ((1000 // world_size) // 48) * 48
    else:
        # every sample, and only the wrap-around padding (the epoch's first ids) twice
        assert np.array_equal(np.unique(together), np.arange(1000))
        assert len(together) == 1000 + (-1000) % world_size


# --- item 7: resume ------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_torch_start_batch_and_state_dict(split, workers):
    location, _, _, id_of = split
    kw = dict(batch_size=37, shuffle_buffer=250, seed=8, epoch=2, num_workers=workers)
    full = torch_ids(ss.torch_loader(location, **kw), id_of)
    assert len(full) == 28
    k = 11
    resumed = ss.torch_loader(location, start_batch=k, **kw)
    assert len(resumed) == 28 - k
    rest = torch_ids(resumed, id_of)
    assert len(rest) == 28 - k and all(np.array_equal(a, b) for a, b in zip(rest, full[k:]))

    # stop after k batches, save, and resume in a new loader
    loader = ss.torch_loader(location, **kw)
    it = iter(loader)
    for _ in range(k):
        next(it)
    state = loader.state_dict()
    del it
    assert state["batch"] == k and state["epoch"] == 2 and state["seed"] == 8
    assert all(type(v) is int for v in state.values())
    fresh = ss.torch_loader(location, **kw)
    fresh.load_state_dict(state)
    assert len(fresh) == 28 - k
    rest = torch_ids(fresh, id_of)
    assert len(rest) == 28 - k and all(np.array_equal(a, b) for a, b in zip(rest, full[k:]))
    # set_epoch starts the next epoch from its first batch
    fresh.set_epoch(3)
    assert len(fresh) == 28 and fresh.state_dict()["batch"] == 0


@pytest.mark.parametrize("num_parallel", [1, 2])
def test_resume_tf_start_batch(split, num_parallel):
    location, _, _, id_of = split
    kw = dict(batch_size=37, shuffle_buffer=250, seed=8, epoch=2, num_parallel=num_parallel)
    full = tf_ids(ss.tf_dataset(location, **kw), id_of)
    for k in (1, 13, 27):
        ds = ss.tf_dataset(location, start_batch=k, **kw)
        assert len(ds) == 28 - k
        rest = tf_ids(ds, id_of)
        assert len(rest) == 28 - k and all(np.array_equal(a, b) for a, b in zip(rest, full[k:]))
    # the torch loader's state resumes tf.data too: the state is just (seed, epoch, batch)
    loader = ss.torch_loader(location, batch_size=37, shuffle_buffer=250, seed=8, epoch=2)
    it = iter(loader)
    for _ in range(5):
        next(it)
    state = loader.state_dict()
    ds = ss.tf_dataset(location, batch_size=37, shuffle_buffer=250, seed=state["seed"],
                       epoch=state["epoch"], start_batch=state["batch"], num_parallel=num_parallel)
    rest = tf_ids(ds, id_of)
    assert all(np.array_equal(a, b) for a, b in zip(rest, full[5:])) and len(rest) == 23


def test_load_state_dict_rejects_a_different_setup(split):
    location = split[0]
    a = ss.torch_loader(location, batch_size=37)
    b = ss.torch_loader(location, batch_size=64)
    with pytest.raises(ss.errors.InputError, match="batch_size=37"):
        b.load_state_dict(a.state_dict())
    with pytest.raises(ss.errors.InputError, match="past the end"):
        a.load_state_dict({**a.state_dict(), "batch": 29})


# --- item 9: bounded memory ----------------------------------------------------------------


class RecordingFetcher:
    """Wraps a ShardFetcher; records which shards are held (between local_file and release)."""

    def __init__(self, fetcher):
        self.fetcher = fetcher
        self.held = set()
        self.peak_held = 0
        self.log = []

    def local_file(self, i):
        self.held.add(i)
        self.peak_held = max(self.peak_held, len(self.held))
        self.log.append(("read", i))
        return self.fetcher.local_file(i)

    def prefetch(self, indices):
        self.log.append(("prefetch", tuple(indices)))

    def release(self, i):
        self.held.discard(i)
        self.log.append(("release", i))


@pytest.mark.parametrize("num_workers,group", [(1, 1), (3, 1), (2, 4)])
@pytest.mark.parametrize("buffer", [100, 300, 700])
def test_executor_holds_only_what_the_plan_still_needs(split, num_workers, group, buffer):
    """Shards are read once each in plan order, released right after, and the samples held
    (read, not yet emitted) never exceed the shuffle buffer + one shard + one batch."""
    location, images, labels, _ = split
    source = open_stream(location)
    rec = RecordingFetcher(source.fetcher)
    source.fetcher = rec
    bs = 40
    plan = plan_epoch(source.manifest.shard_sizes, batch_size=bs, seed=6, shuffle_buffer=buffer)
    for w in range(num_workers):
        rec.log.clear()
        stats = ExecStats()
        batches = []
        for k, x, y in iter_batches(source, plan, w, num_workers, stats=stats, group=group):
            ids = plan.batch(k)
            assert np.array_equal(x, images[ids]) and np.array_equal(y, labels[ids])
            batches.append(k)
        assert batches == [k for k in range(plan.num_batches) if (k // group) % num_workers == w]
        reads = [i for what, i in rec.log if what == "read"]
        assert reads == stats.shards_read and len(set(reads)) == len(reads)
        assert rec.held == set() and rec.peak_held == 1
        # shards read in the order this worker's batches first need them
        mine = np.concatenate([plan.batch(k) for k in batches])
        first_need = np.searchsorted(source.manifest.offsets, mine, side="right") - 1
        _, first = np.unique(first_need, return_index=True)
        assert reads == list(first_need[np.sort(first)])
        # prefetch asked for the next shards before each read
        assert rec.log[0] == ("prefetch", tuple(reads[1:3]))
        assert stats.peak_pool <= buffer + 128 + bs


def test_executor_stopped_early_releases_the_shard_being_read(split):
    """Closing the batch generator while the next shard is being read ahead: that read
    finishes, the shard is released, and no reader thread stays."""
    import threading
    import time

    location = split[0]
    source = open_stream(location)
    rec = RecordingFetcher(source.fetcher)
    source.fetcher = rec
    plan = plan_epoch(source.manifest.shard_sizes, batch_size=40, seed=6, shuffle_buffer=100)
    batches = iter_batches(source, plan)
    for _ in range(3):
        next(batches)
    reads = [i for what, i in rec.log if what == "read"]
    batches.close()
    for _ in range(100):
        if not any(t.name == "shardstream-read" for t in threading.enumerate()):
            break
        time.sleep(0.05)
    assert not any(t.name == "shardstream-read" for t in threading.enumerate())
    assert rec.held == set()
    # at most the one read that was in flight finished after close, and it was released
    after = [i for what, i in rec.log if what == "read"]
    assert after[:len(reads)] == reads and len(after) - len(reads) <= 1
    assert sorted(i for what, i in rec.log if what == "release") == sorted(after)
    time.sleep(0.2)
    assert [i for what, i in rec.log if what == "read"] == after      # and nothing since


def test_memory_does_not_grow_with_the_dataset(tmp_path):
    """Same buffer and shard size, 4x the samples: the pool's peak stays the same size."""
    from conftest import write_test_split

    peaks = []
    for n in (1000, 4000):
        write_test_split(tmp_path / str(n), n=n, shard_size=100, shape=(4, 4, 1), formats=("tar",))
        source = open_stream(str(tmp_path / str(n)))
        plan = plan_epoch(source.manifest.shard_sizes, batch_size=32, seed=0, shuffle_buffer=200)
        stats = ExecStats()
        assert sum(len(y) for _, _, y in iter_batches(source, plan, stats=stats)) == n
        assert stats.peak_pool <= 200 + 100 + 32
        assert stats.pool_capacity <= 2 * (200 + 100 + 32)
        peaks.append(stats.peak_pool)
    assert peaks[1] <= peaks[0] + 32


# --- the loader objects --------------------------------------------------------------------


def test_torch_loader_object(split):
    location = split[0]
    loader = ss.torch_loader(location, batch_size=64, resize=32, num_workers=0)
    assert len(loader) == 16 and loader.manifest.num_samples == 1000
    assert isinstance(loader.dataset, __import__("torch").utils.data.IterableDataset)
    X, y = next(iter(loader))
    assert tuple(X.shape) == (64, 1, 32, 32) and str(X.dtype) == "torch.float32"
    assert tuple(y.shape) == (64,) and str(y.dtype) == "torch.int64"
    assert 0.0 <= float(X.min()) and float(X.max()) <= 1.0


def test_tf_dataset_cardinality_and_spec(split):
    import tensorflow as tf

    location = split[0]
    ds = ss.tf_dataset(location, batch_size=64, resize=(32, 24), drop_last=True)
    assert len(ds) == 15 and int(ds.cardinality()) == 15
    X_spec, y_spec = ds.element_spec
    assert X_spec.shape.as_list() == [None, 32, 24, 1] and X_spec.dtype == tf.float32
    assert y_spec.dtype == tf.int32


def test_tf_dataset_fn_takes_rank_and_batch_from_the_input_context(split):
    import tensorflow as tf

    location, _, _, id_of = split
    fn = ss.tf_dataset_fn(location, global_batch_size=60, shuffle_buffer=300, seed=4)
    ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
                                     num_replicas_in_sync=2)
    got = tf_ids(fn(ctx), id_of)
    want = tf_ids(ss.tf_dataset(location, batch_size=30, rank=1, world_size=2,
                                shuffle_buffer=300, seed=4), id_of)
    assert len(got) == len(want) == 17
    assert all(np.array_equal(a, b) for a, b in zip(got, want))
    # and through a real strategy (one CPU replica)
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    dist = strategy.distribute_datasets_from_function(fn)
    first = next(iter(dist))
    assert first[0].shape[0] == 60


def test_tf_abandoned_and_concurrent_passes(split):
    """Passes dropped half way (``take``) are closed, least recently used first, once more than
    MAX_OPEN_PASSES are open, and leave no thread behind; passes in use survive abandoned ones
    started between them; two iterators over one dataset at once each get the whole epoch."""
    import threading
    import time

    from shardstream.loaders import tf_loader

    location, _, labels, id_of = split
    ds = ss.tf_dataset(location, batch_size=10, shuffle_buffer=300, num_parallel=2)
    want = tf_ids(ds, id_of)
    assert len(want) == 100
    want_labels = [labels[ids] for ids in want]
    passes = ds._shardstream_passes
    assert not passes.open  # a finished pass keeps nothing
    for _ in range(tf_loader.MAX_OPEN_PASSES + 3):
        assert len(list(ds.take(3))) == 3
    assert len(passes.open) == tf_loader.MAX_OPEN_PASSES
    for _ in range(50):  # the abandoned passes' shard reads finish; no thread stays
        if not any(t.name == "shardstream-read" for t in threading.enumerate()):
            break
        time.sleep(0.1)
    assert not any(t.name == "shardstream-read" for t in threading.enumerate())
    a, b = iter(ds), iter(ds)
    got_a, got_b = [], []
    for i in range(100):  # alternate between two iterators, abandoning a pass now and then
        got_a.append(next(a)[1].numpy())
        got_b.append(next(b)[1].numpy())
        if i % 10 == 5:
            next(iter(ds))
    assert all(np.array_equal(x, y) for x, y in zip(got_a, want_labels))
    assert all(np.array_equal(x, y) for x, y in zip(got_b, want_labels))
    assert len(passes.open) <= tf_loader.MAX_OPEN_PASSES


def test_tf_reshuffle_each_iteration_advances_the_epoch(split):
    """reshuffle_each_iteration=True: the k-th iteration is epoch + k (the torch loader's
    set_epoch(epoch + k)), for num_parallel 1 and 2; model.fit(ds, epochs=3) iterates it three
    times, so each Keras epoch gets its own order; with start_batch it is an InputError."""
    import keras

    location, _, _, id_of = split
    kw = dict(batch_size=50, shuffle_buffer=300, seed=2)
    loader = ss.torch_loader(location, **kw)
    want = []
    for e in (3, 4, 5):
        loader.set_epoch(e)
        want.append(torch_ids(loader, id_of))
    assert not np.array_equal(np.concatenate(want[0]), np.concatenate(want[1]))
    for num_parallel in (1, 2):
        ds = ss.tf_dataset(location, epoch=3, reshuffle_each_iteration=True,
                           num_parallel=num_parallel, **kw)
        for k in range(3):
            got = tf_ids(ds, id_of)
            assert len(got) == len(want[k]) == 20
            assert all(np.array_equal(a, b) for a, b in zip(got, want[k]))
    ds = ss.tf_dataset(location, reshuffle_each_iteration=True, **kw)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(ds, epochs=3, verbose=0, shuffle=False)
    assert ds._shardstream_passes.started == 3
    with pytest.raises(ss.errors.InputError, match="start_batch=2 with reshuffle_each_iteration"):
        ss.tf_dataset(location, start_batch=2, reshuffle_each_iteration=True, **kw)
    with pytest.raises(ss.errors.InputError, match="reshuffle_each_iteration='yes'"):
        ss.tf_dataset(location, reshuffle_each_iteration="yes", **kw)


def test_tf_pass_closed_by_newer_passes_says_so(split):
    """Resuming a pass that was closed because too many were open is an error saying why."""
    from shardstream.loaders import tf_loader

    location = split[0]
    ds = ss.tf_dataset(location, batch_size=10, shuffle_buffer=300)
    first = iter(ds)
    next(first)
    for _ in range(tf_loader.MAX_OPEN_PASSES):
        next(iter(ds))
    with pytest.raises(Exception, match="passes over it were open at once"):
        for _ in range(100):
            next(first)


def test_tf_chunks_cross_without_copies_or_generator(split):
    """The pipeline has no GeneratorDataset (its kernel sets glibc's M_TRIM_THRESHOLD for the
    whole process), and a chunk reaches tf.data without a copy (64-byte aligned)."""
    from shardstream.loaders import tf_loader

    ds = ss.tf_dataset(split[0], batch_size=10, shuffle_buffer=300)
    graph = ds._as_serialized_graph().numpy()
    assert b"GeneratorDataset" not in graph and b"shardstream_chunk" in graph
    assert tf_loader._aligned_empty((3, 10, 28, 28, 1)).ctypes.data % 64 == 0


@pytest.mark.parametrize("sizes,group,want", [
    ([64] * 20, 8, [8, 8, 4]),
    ([64] * 16 + [10], 8, [8, 8, 1]),
    ([64] * 13 + [5], 8, [8, 5, 1]),
    ([7], 8, [1]),
    ([], 8, []),
])
def test_chunk_sizes(sizes, group, want):
    from shardstream.loaders.tf_loader import chunk_sizes

    assert chunk_sizes(np.array(sizes), group) == want


def test_tf_reports_a_shard_gone_bad(split, tmp_path):
    """A shard damaged after construction is an error naming it out of the iteration, not a
    hang or a short epoch."""
    import shutil

    location = split[0]
    broken = tmp_path / "broken"
    shutil.copytree(location, broken)
    ds = ss.tf_dataset(str(broken), batch_size=10, format="tar", shuffle=False,
                       check_shards=False)             # the reader's own message
    name = sorted(p.name for p in broken.glob("*.tar"))[3]
    data = (broken / name).read_bytes()
    (broken / name).write_bytes(bytes(len(data)))     # same size, no valid tar header
    # tf.data re-raises the ShardError from its generator thread as a tf error with its text
    with pytest.raises(Exception, match=f"ShardError: {name}"):
        for _ in ds:
            pass


def test_served_split_gives_the_local_batches(split, tmp_path, shard_server):
    """Through `shardstream serve` (HTTP, shard cache, DataLoader workers) and through tf.data:
    the same batches as from the local folder."""
    import shutil

    location = split[0]
    shutil.copytree(location, tmp_path / "root" / "train")
    url = shard_server(str(tmp_path / "root")) + "/train"
    kw = dict(batch_size=100, resize=(16, 16), shuffle_buffer=300, seed=5)
    local = [(X.numpy(), y.numpy()) for X, y in ss.torch_loader(location, **kw)]
    remote = [(X.numpy(), y.numpy()) for X, y in
              ss.torch_loader(url, num_workers=2, cache_dir=str(tmp_path / "cache"), **kw)]
    remote_tf = [(X.numpy(), y.numpy()) for X, y in
                 ss.tf_dataset(url, cache_dir=str(tmp_path / "cache2"), **kw)]
    assert len(local) == len(remote) == len(remote_tf) == 10
    for (a, b), (c, d), (e, f) in zip(local, remote, remote_tf):
        assert np.array_equal(a, c) and np.array_equal(b, d)
        assert np.array_equal(a.transpose(0, 2, 3, 1), e) and np.array_equal(b, f)
