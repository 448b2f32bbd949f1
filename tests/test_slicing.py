"""Issue 18 item 5: tfds-style split slicing (``"train[:90%]"``, ``"train[90%:]"``).

A slice is a contiguous range of the split's global ids; the plan runs over it as a split of
its own (virtual shards: each shard clipped to the slice).  Checked here: the parser and the
tfds rounding rule; ``[:90%]`` and ``[90%:]`` partition the split over an epoch; a sliced
loader's batches are the reference's (the slice's samples gathered by ``plan_epoch`` over the
clipped shard sizes), bitwise in torch and tf.data for workers, parallel streams, ranks and
resume; only the touched shards are read; http locations, the batch service and the book's
data module take slices; bad slices are clear errors; a property test over random shard sizes
and bounds.
"""

import os
import pathlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shardstream as ss
from shardstream.errors import InputError
from shardstream.loaders.execute import ShardSource, open_stream
from shardstream.loaders.lazyplan import LazyPlan
from shardstream.loaders.plan import plan_epoch
from shardstream.loaders.resize import to_float
from shardstream.loaders.slicing import SliceView, parse_slice, split_location
from shardstream.shards.manifest import Manifest, ShardInfo, load_manifest

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")


def tfds_bounds(text, n):
    """tfds's own rule, written out independently: ``_pct_to_abs_closest`` then Python
    slicing."""
    a, b = text[1:-1].split(":")

    def conv(s):
        if not s:
            return None
        return int(round(float(s[:-1]) * n / 100.0)) if s.endswith("%") else int(s)

    lo, hi, _ = slice(conv(a), conv(b)).indices(n)
    return lo, max(hi, lo)


def clipped_sizes(sizes, lo, hi):
    """The slice's shard sizes, written out independently of SliceView."""
    out, start = [], 0
    for s in sizes:
        k = max(0, min(start + s, hi) - max(start, lo))
        if k:
            out.append(k)
        start += s
    return np.array(out, np.int64)


def reference(images, labels, sizes, lo, hi, resize=None, **plan_kw):
    """The batches of a slice: plan_epoch over the clipped sizes, ids + lo, gathered."""
    plan = plan_epoch(clipped_sizes(sizes, lo, hi), **plan_kw)
    return [(to_float(images[plan.batch(k) + lo], resize), labels[plan.batch(k) + lo])
            for k in range(plan.num_batches)]


def torch_epoch(location, **kw):
    loader = ss.torch_loader(location, **kw)
    return [(X.numpy().transpose(0, 2, 3, 1), y.numpy()) for X, y in loader]


def tf_epoch(location, **kw):
    return [(X.numpy(), y.numpy().astype(np.int64)) for X, y in ss.tf_dataset(location, **kw)]


def assert_same(got, want):
    assert len(got) == len(want) > 0
    for k, ((X, y), (eX, ey)) in enumerate(zip(got, want)):
        assert np.array_equal(X, eX), f"batch {k}: pixels differ"
        assert np.array_equal(y, ey), f"batch {k}: labels differ"


# -- the parser and the rule ---------------------------------------------------------------


@pytest.mark.parametrize("location,base,text", [
    ("shards/fashion-mnist/train[:90%]", "shards/fashion-mnist/train", "[:90%]"),
    ("shards/fashion-mnist/train[90%:]", "shards/fashion-mnist/train", "[90%:]"),
    ("http://127.0.0.1:8000/fm/train[10%:20%]", "http://127.0.0.1:8000/fm/train", "[10%:20%]"),
    ("s3://bucket/fm/train[-1000:]", "s3://bucket/fm/train", "[-1000:]"),
    ("file:///data/train[:12.5%]", "file:///data/train", "[:12.5%]"),
    ("fashion-mnist/train[:]", "fashion-mnist/train", "[:]"),
])
def test_split_location_parses_every_location_kind(location, base, text):
    got_base, sl = split_location(location)
    assert (got_base, sl.text) == (base, text)


def test_no_suffix_is_no_slice():
    assert split_location("shards/fashion-mnist/train") == ("shards/fashion-mnist/train", None)
    assert split_location("s3://b/x[1]/train") == ("s3://b/x[1]/train", None)


@pytest.mark.parametrize("n", [1, 7, 10, 99, 100, 101, 333, 1000, 1001, 54321, 60000])
@pytest.mark.parametrize("text", ["[:90%]", "[90%:]", "[10%:20%]", "[:12.5%]", "[-10%:]",
                                  "[:1000]", "[-1000:]", "[5:-5]", "[:-33%]", "[33%:66%]",
                                  "[0%:100%]", "[:]", "[-100%:5]", "[2:100000]"])
def test_bounds_are_tfds_closest_rounding(text, n):
    want = tfds_bounds(text, n)
    if want[0] == want[1]:
        with pytest.raises(InputError, match="empty"):
            parse_slice(text).bounds(n)
    else:
        assert parse_slice(text).bounds(n) == want


def test_rounding_examples():
    # halves go to even, as Python's round (and tfds): 2.5 -> 2, 3.5 -> 4
    assert parse_slice("[:50%]").bounds(5) == (0, 2)
    assert parse_slice("[:50%]").bounds(7) == (0, 4)
    assert parse_slice("[:90%]").bounds(60000) == (0, 54000)
    assert parse_slice("[90%:]").bounds(60000) == (54000, 60000)
    assert parse_slice("[-1000:]").bounds(60000) == (59000, 60000)


@pytest.mark.parametrize("n", range(1, 130))
def test_complementary_slices_partition_every_size(n):
    for p in (1, 10, 33, 50, 90, 99):
        a = parse_slice(f"[:{p}%]")
        b = parse_slice(f"[{p}%:]")
        ends = [s.bounds(n) if tfds_bounds(s.text, n)[1] > tfds_bounds(s.text, n)[0] else None
                for s in (a, b)]
        covered = np.concatenate([np.arange(*e) for e in ends if e])
        assert np.array_equal(covered, np.arange(n)), (n, p)


@pytest.mark.parametrize("location,match", [
    ("SPLIT[a:b]", r"\[start:stop\]"),
    ("SPLIT[5]", r"train\[:90%\]"),
    ("SPLIT[:150%]", "within -100% .. 100%"),
    ("SPLIT[:90%%]", r"train\[-1000:\]"),
    ("SPLIT[50:10]", "empty"),
    ("SPLIT[100%:]", "empty"),
    ("SPLIT[-0:0]", "empty"),
])
def test_bad_slices_are_input_errors_naming_the_location(loader_splits, location, match):
    loc = location.replace("SPLIT", loader_splits["npy"][0])
    for make in (ss.torch_loader, ss.tf_dataset):
        with pytest.raises(InputError, match=match) as info:
            make(loc, batch_size=8)
        assert loader_splits["npy"][0] in str(info.value)


def test_a_slice_alone_is_not_a_location():
    with pytest.raises(InputError, match="follows the split's location"):
        split_location("[:90%]")


def test_a_real_path_with_brackets_still_works(tmp_path, loader_splits):
    src = pathlib.Path(loader_splits["rgb"][0])
    real = tmp_path / "run[1]"
    real.mkdir()
    for f in src.iterdir():
        os.symlink(f, real / f.name)
    want = torch_epoch(str(src), batch_size=50, seed=2)
    assert_same(torch_epoch(str(real), batch_size=50, seed=2), want)
    # and a valid slice after it still slices
    assert ss.torch_loader(str(real) + "[:10%]", batch_size=50).num_samples == 30


# -- the loaders over a slice ----------------------------------------------------------------


def _samples(batches):
    """{(image bytes, label)} of an epoch, and how many samples it held."""
    keys = [(X[i].tobytes(), int(y[i])) for X, y in batches for i in range(len(y))]
    return set(keys), len(keys)


@pytest.mark.parametrize("cut", ["90%", "37%", "500", "-1"])
def test_complementary_slices_partition_the_split_over_an_epoch(loader_splits, cut):
    loc, images, labels = loader_splits["npy"]
    whole, n = _samples([(to_float(images), labels)])
    assert n == 1000 and len(whole) == n          # every image distinct
    a, na = _samples(torch_epoch(f"{loc}[:{cut}]", batch_size=64, seed=3, shuffle_buffer=200))
    b, nb = _samples(tf_epoch(f"{loc}[{cut}:]", batch_size=64, seed=3, shuffle_buffer=200))
    assert na == len(a) and nb == len(b)           # each sample once per epoch
    assert a.isdisjoint(b) and a | b == whole
    lo = tfds_bounds(f"[:{cut}]", 1000)[1]
    assert (na, nb) == (lo, 1000 - lo)


CASES = [  # (split, slice, loader arguments)
    ("npy", "[:90%]", dict(batch_size=64, seed=0, shuffle_buffer=300)),
    ("npy", "[90%:]", dict(batch_size=16, seed=4, epoch=2, shuffle_buffer=50, resize=(14, 20))),
    ("png", "[130:777]", dict(batch_size=37, seed=5, epoch=3, shuffle_buffer=200)),
    ("npy", "[-300:]", dict(batch_size=50, seed=1, shuffle_buffer=10_000)),   # B >= N
    ("rgb", "[10%:65%]", dict(batch_size=23, seed=2, shuffle=False)),
    ("npy", "[:12.5%]", dict(batch_size=10, seed=7, shard_shuffle=False, shuffle_buffer=30,
                             drop_last=True)),
]


@pytest.mark.parametrize("name,sl,kw", CASES)
def test_sliced_batches_are_the_reference_bitwise_in_both_frameworks(loader_splits, name, sl, kw):
    loc, images, labels = loader_splits[name]
    sizes = load_manifest(loc).shard_sizes
    lo, hi = tfds_bounds(sl, len(labels))
    plan_kw = {k: v for k, v in kw.items() if k != "resize"}
    want = reference(images, labels, sizes, lo, hi, kw.get("resize"), **plan_kw)
    assert_same(torch_epoch(loc + sl, **kw), want)
    assert_same(torch_epoch(loc + sl, num_workers=2, **kw), want)
    assert_same(tf_epoch(loc + sl, **kw), want)
    assert_same(tf_epoch(loc + sl, num_parallel=2, **kw), want)


@pytest.mark.parametrize("rank", [0, 1, 2])
def test_sliced_ranks_and_resume_are_the_reference(loader_splits, rank):
    loc, images, labels = loader_splits["npy"]
    sizes = load_manifest(loc).shard_sizes
    kw = dict(batch_size=24, seed=9, epoch=1, shuffle_buffer=100, world_size=3, rank=rank)
    lo, hi = tfds_bounds("[35%:]", 1000)
    want = reference(images, labels, sizes, lo, hi, **kw)
    assert_same(torch_epoch(loc + "[35%:]", num_workers=2, **kw), want)
    if rank == 1:
        assert_same(torch_epoch(loc + "[35%:]", num_workers=2, worker_mode="process", **kw), want)
    assert_same(tf_epoch(loc + "[35%:]", num_parallel=2, **kw), want)
    assert_same(torch_epoch(loc + "[35%:]", start_batch=3, **kw), want[3:])
    assert_same(tf_epoch(loc + "[35%:]", start_batch=3, num_parallel=2, **kw), want[3:])
    # the ranks together hold each sample of the slice (650, padded to 651 by wrapping)
    assert sum(len(y) for _, y in want) == 217


def test_torch_state_dict_counts_the_slice(loader_splits):
    loc = loader_splits["npy"][0]
    loader = ss.torch_loader(loc + "[:90%]", batch_size=64, seed=1)
    assert (loader.num_samples, len(loader)) == (900, 15)
    assert "[:90%]" in repr(loader) and "900 samples" in repr(loader)
    it = iter(loader)
    for _ in range(4):
        next(it)
    state = loader.state_dict()
    assert state["num_samples"] == 900
    other = ss.torch_loader(loc + "[:80%]", batch_size=64, seed=1)
    with pytest.raises(InputError, match="num_samples=900"):
        other.load_state_dict(state)
    with pytest.raises(InputError, match="first_sample=0"):   # as many samples, elsewhere
        ss.torch_loader(loc + "[10%:]", batch_size=64, seed=1).load_state_dict(state)
    resumed = ss.torch_loader(loc + "[:90%]", batch_size=64, seed=1)
    resumed.load_state_dict(state)
    rest = [(X.numpy(), y.numpy()) for X, y in resumed]
    full = [(X.numpy(), y.numpy()) for X, y in ss.torch_loader(loc + "[:90%]", batch_size=64,
                                                                 seed=1)]
    assert_same(rest, full[4:])


def test_in_order_slice_is_the_range_itself(loader_splits):
    loc, images, labels = loader_splits["npy"]
    for sl, (lo, hi) in (("[-100:]", (900, 1000)), ("[:1000]", (0, 1000)), ("[5:-5]", (5, 995)),
                         ("[-130:-120]", (870, 880))):
        got = torch_epoch(pathlib.Path(loc + sl), batch_size=1000, shuffle=False)  # PathLike
        assert len(got) == 1
        assert np.array_equal(got[0][0], to_float(images[lo:hi]))
        assert np.array_equal(got[0][1], labels[lo:hi])


def test_only_the_touched_shards_are_read(loader_splits, monkeypatch):
    loc = loader_splits["npy"][0]            # shards of 128: [130:300] touches shards 1 and 2
    read = []
    real_load = ShardSource.load

    def load(self, shard_index, want=None):
        read.append((shard_index, None if want is None else np.sort(np.asarray(want))))
        return real_load(self, shard_index, want)

    monkeypatch.setattr(ShardSource, "load", load)
    got = torch_epoch(loc + "[130:300]", batch_size=32, seed=0)
    assert sum(len(y) for _, y in got) == 170
    assert sorted({s for s, _ in read}) == [1, 2]
    wanted = np.concatenate([w for _, w in read])
    assert wanted.size == 170                # only samples inside the slice decoded
    view = open_stream(loc + "[130:300]").manifest
    assert isinstance(view, SliceView)
    assert (view.real.tolist(), view.first.tolist(), view.shard_sizes.tolist()) == \
        ([1, 2], [2, 0], [126, 44])


def test_http_location_with_a_slice(loader_splits, http_serve, tmp_path):
    loc = loader_splits["npy"][0]
    srv = http_serve(str(pathlib.Path(loc).parent))
    kw = dict(batch_size=40, seed=6, shuffle_buffer=120)
    want = torch_epoch(loc + "[:20%]", **kw)
    cache = tmp_path / "cache"
    assert_same(torch_epoch(f"{srv.url}/npy[:20%]", cache_dir=str(cache), **kw), want)
    assert_same(tf_epoch(f"{srv.url}/npy[:20%]", cache_dir=str(cache), **kw), want)
    # 200 samples of shards of 128: only shards 0 and 1 were fetched into the cache
    cached = sorted(p.name.split("-", 2)[-1] for p in cache.rglob("*.parquet"))
    assert cached == ["train-000000.parquet", "train-000001.parquet"]


def test_s3_location_with_a_slice(loader_splits, s3_server, tmp_path):
    from shardstream.storage.upload import upload

    loc = loader_splits["rgb"][0]        # split "train" of dataset "toy"
    dest = s3_server.bucket("sliced") + "/data"
    upload(loc, dest, progress=False, storage_options=s3_server.storage_options)
    kw = dict(batch_size=25, seed=8, shuffle_buffer=60, storage_options=s3_server.storage_options,
              cache_dir=str(tmp_path / "cache"))
    want = torch_epoch(loc + "[-150:]", **{k: v for k, v in kw.items()
                                           if k not in ("storage_options", "cache_dir")})
    assert_same(torch_epoch(f"{dest}/toy/train[-150:]", **kw), want)
    assert_same(tf_epoch(f"{dest}/toy/train[-150:]", num_parallel=2, **kw), want)


def test_batch_service_takes_a_sliced_dataset(loader_splits):
    from conftest import _LoopThread

    from shardstream.server import start_app
    from shardstream.service import BatchService, make_batch_app

    loc = loader_splits["rgb"][0]
    root = str(pathlib.Path(loc).parent)
    lt = _LoopThread()
    runner, url = lt.run(start_app(make_batch_app(root, workers=2), "127.0.0.1", 0,
                                   shutdown_timeout=5.0))
    try:
        kw = dict(batch_size=20, seed=3, shuffle_buffer=50, rank=1, world_size=2)
        want = torch_epoch(loc + "[-45%:]", **kw)
        svc = BatchService([url], run_bytes=1, in_flight=1)
        assert_same(torch_epoch("rgb[-45%:]", service=svc, **kw), want)
        assert_same(tf_epoch("rgb[-45%:]", service=svc, num_parallel=2, **kw), want)
        with pytest.raises(InputError, match="empty"):
            ss.torch_loader("rgb[100%:]", batch_size=4, service=svc)
    finally:
        lt.run(runner.cleanup())
        lt.stop()


# -- the book's data module -------------------------------------------------------------------


def test_data_module_streams_a_validation_slice(fmnist_shards):
    from shardstream import FashionMNIST

    root = str(fmnist_shards)
    whole = FashionMNIST(batch_size=32, root=root)
    n = len(whole.train)
    data = FashionMNIST(batch_size=32, root=root, train_split="train[:90%]",
                        val_split="train[90%:]")
    k = int(round(n * 0.9))
    assert (len(data.train), len(data.val)) == (k, n - k)
    for i in (0, k - 1):
        assert np.array_equal(data.train[i][0].numpy(), whole.train[i][0].numpy())
    for i in (0, n - k - 1):
        assert np.array_equal(data.val[i][0].numpy(), whole.train[k + i][0].numpy())
        assert data.val[i][1] == whole.train[k + i][1]
    ys = np.concatenate([y.numpy() for _, y in data.val_dataloader()])
    assert np.array_equal(ys, [whole.train[k + i][1] for i in range(n - k)])
    tf_data = FashionMNIST(batch_size=32, root=root, train_split="train[:90%]",
                           val_split="train[90%:]", framework="tf")
    assert (len(tf_data.train[0]), len(tf_data.val[0])) == (k, n - k)
    for (X, y), (tX, ty) in zip(data.train_dataloader(), tf_data.train_dataloader()):
        assert np.array_equal(X.numpy().transpose(0, 2, 3, 1), tX.numpy())
        assert np.array_equal(y.numpy(), ty.numpy())
    with pytest.raises(InputError, match="val_fraction"):
        FashionMNIST(root=root, val_fraction=0.1, train_split="train[:90%]")
    with pytest.raises(InputError, match="empty"):
        FashionMNIST(root=root, val_split="train[100%:]")


# -- the plan over a slice, property test ----------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=12),
       a=st.floats(0, 1), b=st.floats(0, 1), seed=st.integers(0, 2**32 - 1),
       buffer=st.integers(0, 80), batch_size=st.integers(1, 17), shuffle=st.booleans())
def test_plan_over_a_slice_emits_exactly_the_slice(sizes, a, b, seed, buffer, batch_size,
                                                   shuffle):
    n = sum(sizes)
    lo, hi = sorted((int(a * n), int(b * n)))
    if lo == hi:
        hi = lo + 1 if lo < n else lo
        lo = hi - 1
    m = Manifest(dataset="d", split="train", num_samples=n, image_shape=(1, 1, 1),
                 encoding="npy", classes=("a",), label_counts=(n,),
                 shards={"tar": [ShardInfo(f"s{i}.tar", s, 1, "0" * 64)
                                 for i, s in enumerate(sizes)]}, source={})
    v = SliceView(m, parse_slice(f"[{lo}:{hi}]"))
    assert (v.lo, v.hi, v.num_samples) == (lo, hi, hi - lo)
    assert np.array_equal(v.shard_sizes, clipped_sizes(sizes, lo, hi))
    plan = LazyPlan(v.shard_sizes, batch_size=batch_size, seed=seed, shuffle=shuffle,
                    shuffle_buffer=buffer)
    ids = v.global_ids(plan.ids())
    assert np.array_equal(np.sort(ids), np.arange(lo, hi))    # each id of the slice once
    eager = plan_epoch(clipped_sizes(sizes, lo, hi), batch_size=batch_size, seed=seed,
                       shuffle=shuffle, shuffle_buffer=buffer)
    assert np.array_equal(ids, eager.ids + lo)
    # every id's real shard holds it: the virtual shards map back to the right samples
    real_shard = np.searchsorted(m.offsets, ids, side="right") - 1
    virt = np.searchsorted(v.offsets, ids - lo, side="right") - 1
    assert np.array_equal(real_shard, v.real[virt])
    assert np.array_equal(ids - m.offsets[real_shard], ids - lo - v.offsets[virt] + v.first[virt])
