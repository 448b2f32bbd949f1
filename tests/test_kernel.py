"""Issue 12: the compiled resize kernel is bitwise the numpy reference; the loaders give the
same batches on both paths, with thread or process workers; the first batches of a seeded
epoch have the same sha256 on every machine.

The ``path`` fixture runs a test on the compiled kernel and again with ``to_float`` forced onto
the numpy reference (as on a platform where numba is missing)."""

import hashlib
import pathlib
import re
import sys
import threading
import warnings

import numpy as np
import pytest

import shardstream as ss
from shardstream.errors import InputError
from shardstream.loaders import pixels, resize
from shardstream.loaders.execute import iter_batches, open_stream
from shardstream.loaders.pixels import converter, to_pixels
from shardstream.loaders.plan import plan_epoch
from shardstream.loaders.resize import compiled_kernel, to_float, to_float_reference
from shardstream.shards.manifest import load_manifest

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")


@pytest.fixture(params=["compiled", "reference"])
def path(request, monkeypatch):
    """Which implementation ``to_float`` runs: the compiled kernel (which must be usable here:
    numba is a dependency) or the numpy reference (forced)."""
    if request.param == "compiled":
        assert compiled_kernel() is not None, "the compiled kernel should be usable here"
    else:
        monkeypatch.setattr(resize, "_kernel_state", [None])
    return request.param


def random_images(n, h, w, c, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


SIZES = [(32, 32), (14, 14), (28, 28), (20, 36), (57, 9), (1, 1), (28, 13), (5, 28), (64, 64)]


@pytest.mark.parametrize("n", [1, 2, 5, 15, 16, 63, 64, 65, 257, 512])
@pytest.mark.parametrize("c", [1, 3])
def test_kernel_is_bitwise_the_reference(n, c):
    """Random images (noise: every value, every rounding), up, down, non-square, one axis,
    none: the kernel's bits in both layouts are the reference's -- for N * C planes below
    ``_kernels.SMALL_BATCH`` (16: resized plane by plane) and from it on (the batch layout),
    and beyond ``_kernels.BLOCK_PLANES`` (256: blocks of whole images; 257 x 1 and 257 x 3
    end in a block of fewer than 16 planes, 512 x 1 is a tf.data chunk of 8 batches of 64)."""
    assert compiled_kernel() is not None
    for k, size in enumerate(SIZES):
        x = random_images(n, 28, 28, c, seed=1000 * n + 10 * c + k)
        want = to_float_reference(x, size)
        assert np.array_equal(to_float(x, size), want), size
        nchw = to_float(x, size, channels_first=True)
        assert nchw.shape == (n, c, *size) and nchw.flags["C_CONTIGUOUS"]
        assert np.array_equal(nchw, want.transpose(0, 3, 1, 2)), size


def test_kernel_zero_channels(path):
    """An image with no channels resizes to an empty batch, as the reference does (the kernel's
    blocks are counted in planes: C = 0 must not divide by zero)."""
    for n in (2, 300):
        x = np.zeros((n, 5, 5, 0), np.uint8)
        for cf in (False, True):
            want = (n, 0, 4, 4) if cf else (n, 4, 4, 0)
            assert to_float(x, (4, 4), channels_first=cf).shape == want
            assert to_pixels(x, (4, 4), "uint8", channels_first=cf).shape == want


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_converter_is_to_pixels(path, dtype, monkeypatch):
    """The loaders' per-batch shortcut (``pixels.converter``) gives ``to_pixels``' arrays bit for
    bit -- same dtype, shape, contiguity -- on every path it takes (the kernel straight, or
    ``to_pixels`` for no resize, the stored size, an empty batch, strided or non-uint8 input),
    and raises ``to_pixels``' own error for bad input."""
    if path == "reference":  # the uint8 kernel too (its own first-use check)
        monkeypatch.setattr(pixels, "_state", [None])
    x = random_images(9, 28, 28, 3, seed=5)
    inputs = [x, x[:1], x[:0], x[::-1], x[:, ::2], x[..., :1]]
    for resize_to in (None, (28, 28), (32, 32), (14, 20), (57, 9)):
        for cf in (False, True):
            convert = converter(resize_to, dtype, channels_first=cf)
            for images in inputs:
                want = to_pixels(images, resize_to, dtype, channels_first=cf)
                got = convert(images)
                assert got.dtype == want.dtype and got.shape == want.shape
                assert got.flags["C_CONTIGUOUS"] and np.array_equal(got, want)
                assert not np.shares_memory(got, images)
            for bad in (x.astype(np.float32), x[0]):
                with pytest.raises(InputError) as want_error:
                    to_pixels(bad, resize_to, dtype, channels_first=cf)
                with pytest.raises(InputError, match=re.escape(str(want_error.value))):
                    convert(bad)


def test_kernel_other_input_sizes_and_strided_input():
    for shape, size in (((5, 20, 36, 3), (36, 20)), ((4, 9, 50, 1), (60, 4)),
                        ((3, 100, 7, 3), (13, 7)), ((2, 3, 3, 1), (300, 2))):
        x = random_images(*shape, seed=sum(shape))
        assert np.array_equal(to_float(x, size), to_float_reference(x, size))
        assert np.array_equal(to_float(x[::-1], size), to_float_reference(x, size)[::-1])


def test_kernel_out_slot_and_extremes(path):
    x = np.zeros((4, 28, 28, 1), np.uint8)
    x[0] = 255
    x[1, ::2] = 255
    x[2, :, ::3] = 255
    for size in ((32, 32), (14, 14), (57, 9)):
        chunk = np.full((3, 4, *size, 1), np.nan, np.float32)
        got = to_float(x, size, out=chunk[1])
        assert np.shares_memory(got, chunk[1]) and np.isnan(chunk[0]).all()
        assert np.array_equal(chunk[1], to_float_reference(x, size))
        assert chunk[1].min() >= 0 and chunk[1].max() <= 1
        strided = np.full((4, 2, *size, 1), np.nan, np.float32)[:, 1]  # not contiguous
        assert to_float(x, size, out=strided) is strided
        assert np.array_equal(strided, chunk[1])
    with pytest.raises(ss.errors.InputError,
                       match=r"out must be float32 of shape \(4, 1, 32, 32\)"):
        to_float(x, (32, 32), channels_first=True, out=np.empty((4, 32, 32, 1), np.float32))


def test_reference_path_layouts(path):
    """Both paths give the reference bits in both layouts (and an empty batch)."""
    x = random_images(9, 28, 28, 3, seed=5)
    for size in ((32, 32), (28, 28)):
        want = to_float_reference(x, size)
        assert np.array_equal(to_float(x, size), want)
        assert np.array_equal(to_float(x, size, channels_first=True), want.transpose(0, 3, 1, 2))
    assert to_float(x[:0], (32, 32), channels_first=True).shape == (0, 3, 32, 32)


def test_unusable_kernel_falls_back_with_one_warning(monkeypatch):
    """No numba (a ModuleNotFoundError): to_float warns once, naming the cause, and gives the
    reference's bits."""
    import shardstream.loaders

    monkeypatch.setattr(resize, "_kernel_state", [])
    monkeypatch.setitem(sys.modules, "numba", None)  # as if numba were not installed
    monkeypatch.delitem(sys.modules, "shardstream.loaders._kernels")
    monkeypatch.delattr(shardstream.loaders, "_kernels", raising=False)
    x = random_images(3, 28, 28, 1, seed=9)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = to_float(x, (32, 32))
        second = to_float(x, (14, 14), channels_first=True)
    ours = [w for w in caught if "compiled resize kernel" in str(w.message)]
    assert len(ours) == 1 and ours[0].category is RuntimeWarning
    assert "ModuleNotFoundError" in str(ours[0].message) and "numba" in str(ours[0].message)
    assert "numpy reference" in str(ours[0].message)
    assert np.array_equal(first, to_float_reference(x, (32, 32)))
    assert np.array_equal(second, to_float_reference(x, (14, 14)).transpose(0, 3, 1, 2))
    assert resize._kernel_state == [None]


def test_a_kernel_that_disagrees_is_not_used(monkeypatch):
    """The first-use check compares bits: a kernel that rounds differently is refused."""
    from shardstream.loaders import _kernels

    class Wrong:
        @staticmethod
        def resize_into(images, out, *args):
            _kernels.resize_into(images, out, *args)
            out[0, 0, 0] = np.nextafter(out[0, 0, 0], np.float32(2))

        divide_into = staticmethod(_kernels.divide_into)

    monkeypatch.setattr(resize, "_kernel_state", [])
    monkeypatch.setitem(sys.modules, "shardstream.loaders._kernels", Wrong)
    monkeypatch.setattr(sys.modules["shardstream.loaders"], "_kernels", Wrong)
    with pytest.warns(RuntimeWarning, match="differs from the numpy reference"):
        assert compiled_kernel() is None


# ---------------------------------------------------------------------------------------------
# the loaders on both paths, thread and process workers


def torch_epoch(location, **kw):
    loader = ss.torch_loader(location, **kw)
    return [(X.numpy().transpose(0, 2, 3, 1), y.numpy()) for X, y in loader]


def expected(location, images, labels, resize_to, **kw):
    plan = plan_epoch(load_manifest(location).shard_sizes, **kw)
    return [(to_float_reference(images[plan.batch(k)], resize_to), labels[plan.batch(k)])
            for k in range(plan.num_batches)]


def assert_same(got, want):
    assert len(got) == len(want)
    for (X, y), (eX, ey) in zip(got, want):
        assert np.array_equal(X, eX) and np.array_equal(y, ey)


@pytest.mark.parametrize("split", ["npy", "rgb"])
def test_loaders_on_both_paths(path, split, loader_splits):
    location, images, labels = loader_splits[split]
    size = (32, 32) if split == "npy" else (11, 5)
    common = dict(batch_size=40, resize=size, seed=3, epoch=1, shuffle_buffer=200)
    want = expected(location, images, labels, size, batch_size=40, seed=3, epoch=1,
                    shuffle_buffer=200)
    for workers, mode in ((0, "thread"), (1, "thread"), (2, "thread"), (4, "thread"),
                          (2, "process")):
        assert_same(torch_epoch(location, num_workers=workers, worker_mode=mode, **common), want)
    for p in (1, 2):
        got = [(X.numpy(), y.numpy()) for X, y in ss.tf_dataset(location, num_parallel=p, **common)]
        assert_same(got, want)


def test_thread_workers_resume_ranks_and_stop(loader_splits):
    location, images, labels = loader_splits["npy"]
    common = dict(batch_size=32, resize=(14, 14), seed=7, shuffle_buffer=300)
    for world_size, rank in ((1, 0), (3, 2)):
        ref = torch_epoch(location, num_workers=0, rank=rank, world_size=world_size, **common)
        for workers in (1, 2, 4):
            got = torch_epoch(location, num_workers=workers, rank=rank, world_size=world_size,
                              **common)
            assert_same(got, ref)
            tail = torch_epoch(location, num_workers=workers, rank=rank, world_size=world_size,
                               start_batch=5, **common)
            assert_same(tail, ref[5:])
    # state_dict / load_state_dict / set_epoch with thread workers, and stopping half way
    ref = torch_epoch(location, num_workers=0, **common)
    before = set(threading.enumerate())
    loader = ss.torch_loader(location, num_workers=2, **common)
    it = iter(loader)
    for _ in range(11):
        next(it)
    state = loader.state_dict()
    it.close()
    assert state["batch"] == 11
    assert not [t for t in threading.enumerate() if t not in before and t.name.startswith(
        ("shardstream-worker", "shardstream-plan"))]
    other = ss.torch_loader(location, num_workers=4, **common)
    other.load_state_dict(state)
    assert_same([(X.numpy().transpose(0, 2, 3, 1), y.numpy()) for X, y in other], ref[11:])
    other.set_epoch(2)
    assert_same([(X.numpy().transpose(0, 2, 3, 1), y.numpy()) for X, y in other],
                torch_epoch(location, num_workers=0, epoch=2, **common))
    with pytest.raises(ss.errors.InputError, match="worker_mode"):
        ss.torch_loader(location, batch_size=8, worker_mode="fork")


@pytest.mark.parametrize("workers,mode", [(0, "thread"), (2, "thread"), (2, "process")])
def test_pin_memory_without_an_accelerator(loader_splits, workers, mode):
    """pin_memory=True pins where an accelerator exists; without one it warns and still gives
    the same batches (as torch's DataLoader does)."""
    import torch

    location, images, labels = loader_splits["rgb"]
    common = dict(batch_size=50, resize=(8, 8), seed=1, num_workers=workers, worker_mode=mode)
    want = torch_epoch(location, **common)
    loader = ss.torch_loader(location, pin_memory=True, **common)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = [(X, y) for X, y in loader]
    assert_same([(X.numpy().transpose(0, 2, 3, 1), y.numpy()) for X, y in got], want)
    if torch.cuda.is_available():
        assert all(X.is_pinned() for X, _ in got)
    else:
        assert any("pin" in str(w.message) for w in caught)


def test_thread_worker_error_reaches_the_loop(make_split):
    location, manifest, _, _ = make_split(n=60, shard_size=16, shape=(6, 5, 1))
    bad = pathlib.Path(location) / manifest.shards["parquet"][2].name
    loader = ss.torch_loader(location, batch_size=8, num_workers=2, shuffle=False)
    bad.write_bytes(b"\0" * bad.stat().st_size)  # corrupted after the loader was built
    with pytest.raises(ss.errors.ShardError, match="train-000002.parquet"):
        for _ in loader:
            pass


# ---------------------------------------------------------------------------------------------
# the same bits on every machine: sha256 of the first batches of a seeded epoch


def digest(batches) -> str:
    h = hashlib.sha256()
    for X, y in batches:
        h.update(np.ascontiguousarray(X).tobytes())
        h.update(np.asarray(y, dtype=np.int64).tobytes())
    return h.hexdigest()


PINNED = {  # (split, resize) -> sha256 of the first 3 batches (X NHWC float32, y int64)
    ("gray", (32, 32)): "99b92484d883d768ffb42347e333b1866b99f429fb71e8f405437be14e8881bc",
    ("gray", (14, 14)): "3aca4d27819bc65db21e5054bdf54c49863746d482d99917738964d04c639823",
    ("rgb", (32, 32)): "41f66750bc7856d84c64af33aa5661631cb276b3522cef533f0d7526590ef379",
    ("rgb", (14, 14)): "1b3cece51484d4dc24894063930691ebaf13dab580d16c772cf26479dfe0aaab",
}
PINNED_PIXELS = {  # split -> sha256 of the uint8 pixels and labels of those 3 batches
    "gray": "20f05b51e3a8adf912ed1ebd093bcefe00c6d2c63453387f024a4aa0f48229d1",
    "rgb": "1a0736be05b2d53978671a47eea5bc5d96d3f70eb4f598a2e3a1988762633147",
}


@pytest.fixture(scope="module")
def pinned_splits(fmnist_shards, tmp_path_factory):
    """gray: the converted stand-in Fashion-MNIST (synth + convert); rgb: 200 seeded 24x20x3
    images written as shards."""
    from conftest import write_test_split

    rgb = tmp_path_factory.mktemp("pinned") / "rgb"
    write_test_split(rgb, n=200, shard_size=64, shape=(24, 20, 3), seed=12,
                     classes=tuple("abcdefghij"))
    return {"gray": str(fmnist_shards / "fashion-mnist" / "train"), "rgb": str(rgb)}


@pytest.mark.parametrize("key", sorted(PINNED))
def test_first_batches_have_pinned_sha256(path, key, pinned_splits):
    split, size = key
    common = dict(batch_size=16, resize=size, seed=2026, epoch=3, shuffle_buffer=100)
    torch_batches = []
    for X, y in ss.torch_loader(pinned_splits[split], num_workers=0, **common):
        torch_batches.append((X.numpy().transpose(0, 2, 3, 1), y.numpy()))
        if len(torch_batches) == 3:
            break
    tf_batches = [(X.numpy(), y.numpy()) for X, y in
                  ss.tf_dataset(pinned_splits[split], **common).take(3)]
    # the input first: if this differs, the data generator (not the resize) gave other pixels
    source = open_stream(pinned_splits[split])
    plan = plan_epoch(source.manifest.shard_sizes, batch_size=16, seed=2026, epoch=3,
                      shuffle_buffer=100)
    raw = [(x, y) for _, (_, x, y) in zip(range(3), iter_batches(source, plan))]
    assert digest(raw) == PINNED_PIXELS[split], "the stored pixels differ: see the generator"
    assert digest(torch_batches) == PINNED[key]
    assert digest(tf_batches) == PINNED[key]


def test_kernel_machine_code_has_no_fused_multiply_add():
    """No FMA contraction (a * b + c rounded once would change bits): compile the kernel afresh
    for this CPU (not from numba's cache, whose code cannot be inspected) and look."""
    import re

    from numba import njit

    from shardstream.loaders import _kernels

    fresh = njit(nogil=True)(_kernels.resize_into.py_func)
    x = random_images(4, 28, 28, 1, seed=2)
    out = np.empty((4, 1, 32 * 32), np.float32)
    fresh(x, out, *resize._kernel_args(4, 28, 28, 1, 32, 32))
    assert np.array_equal(out.reshape(4, 1, 32, 32),
                          to_float_reference(x, (32, 32)).transpose(0, 3, 1, 2))
    asm = "\n".join(fresh.inspect_asm().values())
    assert re.search(r"\bv?mulps\b|\bv?mulss\b", asm)  # we are looking at the right code
    assert not re.search(r"\bvfn?m(add|sub)\w*\b", asm)
