"""Issue 3 items 1-3: the torch and tf.data loaders give bitwise identical batches — to each
other, for every worker count, for tar and Parquet shards and for npy and PNG encodings — and
those batches are the plan's samples with ``to_float`` of the stored pixels.

Budget: ~1 minute on 2 cores (one epoch of 1,000 small images per configuration).
"""

import numpy as np
import pytest

import shardstream as ss
from shardstream.loaders.plan import plan_epoch
from shardstream.loaders.resize import to_float
from shardstream.shards.manifest import load_manifest

# torch warns when num_workers exceeds the 2 cores of the test machine
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")


def torch_epoch(location, **kw):
    """[(X NHWC float32, y int64)] of one torch_loader epoch, as numpy."""
    loader = ss.torch_loader(location, **kw)
    out = [(X.numpy(), y.numpy()) for X, y in loader]
    assert len(out) == len(ss.torch_loader(location, **kw))
    for X, y in out:
        assert X.dtype == np.float32 and X.flags["C_CONTIGUOUS"] and y.dtype == np.int64
    return [(X.transpose(0, 2, 3, 1), y) for X, y in out]


def tf_epoch(location, **kw):
    """[(X NHWC float32, y int32)] of one tf_dataset epoch, as numpy."""
    ds = ss.tf_dataset(location, **kw)
    out = [(X.numpy(), y.numpy()) for X, y in ds]
    assert len(out) == len(ds)
    for X, y in out:
        assert X.dtype == np.float32 and y.dtype == np.int32
    return out


def expected_epoch(location, images, labels, *, resize=None, **kw):
    """The batches the plan says, from the images the split was written from."""
    manifest = load_manifest(location)
    plan = plan_epoch(manifest.shard_sizes, **kw)
    return [(to_float(images[plan.batch(k)], resize), labels[plan.batch(k)])
            for k in range(plan.num_batches)]


def assert_same(got, want):
    assert len(got) == len(want)
    for k, ((X, y), (eX, ey)) in enumerate(zip(got, want)):
        assert X.shape == eX.shape, k
        assert np.array_equal(X, eX), f"batch {k}: pixels differ"
        assert np.array_equal(y.astype(np.int64), ey), f"batch {k}: labels differ"


CASES = [  # (split, format, plan arguments, resize)
    ("npy", "tar", dict(batch_size=64, seed=0, epoch=0, shuffle_buffer=300), None),
    ("npy", "parquet", dict(batch_size=64, seed=0, epoch=0, shuffle_buffer=300), None),
    ("npy", "tar", dict(batch_size=37, seed=5, epoch=3, shuffle_buffer=200), (32, 32)),
    ("npy", "parquet", dict(batch_size=37, seed=5, epoch=3, shuffle_buffer=200), (14, 20)),
    ("npy", "parquet", dict(batch_size=1, seed=2, epoch=1, shuffle_buffer=10_000), (20, 20)),
    ("npy", "tar", dict(batch_size=100, seed=9, epoch=0, shuffle=False), None),
    ("npy", "tar", dict(batch_size=33, seed=1, epoch=4, shard_shuffle=False, drop_last=True,
                        shuffle_buffer=50), (32, 24)),
    ("png", "tar", dict(batch_size=37, seed=5, epoch=3, shuffle_buffer=200), (32, 32)),
    ("png", "parquet", dict(batch_size=64, seed=0, epoch=1, shuffle_buffer=300), None),
    ("rgb", "tar", dict(batch_size=16, seed=4, epoch=2, shuffle_buffer=40), (12, 10)),
    ("rgb", "parquet", dict(batch_size=300, seed=4, epoch=0, shuffle_buffer=40), None),
]


@pytest.mark.parametrize("split,fmt,kw,resize", CASES,
                         ids=[f"{s}-{f}-b{kw['batch_size']}-{r}" for s, f, kw, r in CASES])
def test_torch_tf_identical_and_as_planned(loader_splits, split, fmt, kw, resize):
    """Item 1 (+ pixel values): every batch of torch_loader equals tf_dataset's bitwise, and both
    equal to_float of the written images at the plan's ids, labels equal."""
    location, images, labels = loader_splits[split]
    want = expected_epoch(location, images, labels, resize=resize, **kw)
    got_torch = torch_epoch(location, resize=resize, format=fmt, **kw)
    got_tf = tf_epoch(location, resize=resize, format=fmt, **kw)
    assert_same(got_torch, want)
    assert_same(got_tf, want)


def test_formats_and_encodings_identical(loader_splits):
    """Item 3: tar and Parquet shards, npy and PNG encodings of the same images: same batches."""
    kw = dict(batch_size=50, seed=3, epoch=1, shuffle_buffer=400, resize=(32, 32))
    runs = [torch_epoch(loader_splits[enc][0], format=fmt, **kw)
            for enc in ("npy", "png") for fmt in ("tar", "parquet")]
    for other in runs[1:]:
        assert_same(other, runs[0])


WORKERS = [("torch", 0), ("torch", 1), ("torch", 2), ("torch", 3),
           ("tf", 1), ("tf", 2), ("tf", 3), ("tf", 4)]


@pytest.fixture(scope="module")
def reference_epoch(loader_splits):
    location, images, labels = loader_splits["npy"]
    # 1000 samples / 37 = 28 batches: 3 and 4 workers get unequal counts in the last round
    kw = dict(batch_size=37, seed=11, epoch=2, shuffle_buffer=250)
    return kw, expected_epoch(location, images, labels, resize=(16, 16), **kw)


@pytest.mark.parametrize("framework,workers", WORKERS, ids=[f"{f}-{w}" for f, w in WORKERS])
def test_worker_count_independent(loader_splits, reference_epoch, framework, workers):
    """Item 2: torch num_workers 0..3 and tf num_parallel 1..4 give the plan's batches in plan
    order (28 batches, so with 3 workers one executes fewer: the last round is short)."""
    kw, want = reference_epoch
    location = loader_splits["npy"][0]
    if framework == "torch":
        got = torch_epoch(location, resize=(16, 16), num_workers=workers, **kw)
    else:
        got = tf_epoch(location, resize=(16, 16), num_parallel=workers, **kw)
    assert_same(got, want)


def test_raw_idx_pixels(fmnist_raw, train_split):
    """Pixel values are those of the raw IDX files: batch k of the loaders is to_float of the raw
    images at the plan's ids (the converted stand-in Fashion-MNIST)."""
    from shardstream.converters.idx import read_idx

    raw_images = read_idx(str(fmnist_raw / "train-images-idx3-ubyte.gz"))[..., None]
    raw_labels = read_idx(str(fmnist_raw / "train-labels-idx1-ubyte.gz")).astype(np.int64)
    kw = dict(batch_size=64, seed=0, epoch=0, shuffle_buffer=500)
    want = expected_epoch(train_split, raw_images, raw_labels, resize=(32, 32), **kw)
    assert_same(torch_epoch(train_split, resize=(32, 32), **kw), want)
    assert_same(tf_epoch(train_split, resize=(32, 32), **kw), want)
