"""Issue 18 item 5: ``dtype="uint8"`` batches, bitwise the same in torch and tf.data (and
through the batch service and the book's data module, with ``normalize=`` too).

Values asserted: without resize a uint8 batch is the stored images gathered by the plan's ids;
with resize it is the one resize without ``/ 255`` (:func:`resampled`), clamped and rounded half
to even -- on the compiled kernel and on the numpy reference (``path`` fixture), and within 1
of PIL's own uint8 BILINEAR resize.
"""

import json
import os
import pathlib
import warnings

import numpy as np
import pytest

import shardstream as ss
from shardstream.book.datamodule import SplitDataset
from shardstream.errors import InputError
from shardstream.loaders import pixels
from shardstream.loaders.execute import open_stream
from shardstream.loaders.pixels import compiled_uint8, to_uint8, to_uint8_reference
from shardstream.loaders.plan import plan_epoch
from shardstream.loaders.resize import resampled, to_float
from shardstream.service import BatchService, decode_run, make_batch_app, new_run
from shardstream.service.request import BadRequest, parse_request
from shardstream.shards.manifest import load_manifest

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")


@pytest.fixture(params=["compiled", "reference"])
def path(request, monkeypatch):
    """Which implementation ``to_uint8`` runs: the compiled kernel or the numpy reference."""
    if request.param == "compiled":
        assert compiled_uint8() is not None, "the compiled kernel should be usable here"
    else:
        monkeypatch.setattr(pixels, "_state", [None])
    return request.param


def random_images(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# the values


def test_hand_computed_values_round_half_to_even(path):
    """A row [a, b] resized 2 -> 4: PIL's weights give [a, .75a + .25b, .25a + .75b, b]."""
    x = np.array([[10, 13], [10, 12], [0, 255]], np.uint8).reshape(3, 1, 2, 1)
    got = to_uint8(x, (1, 4))[:, 0, :, 0]
    # 10.75 -> 11, 12.25 -> 12; 10.5 -> 10 and 11.5 -> 12 (ties to even); 63.75, 191.25
    assert got.tolist() == [[10, 11, 12, 13], [10, 10, 12, 12], [0, 64, 191, 255]]
    assert np.array_equal(to_uint8(x, (1, 2)), x) and to_uint8(x).dtype == np.uint8


# N * C below and at the kernel's SMALL_BATCH (16), and beyond its BLOCK_PLANES (256)
@pytest.mark.parametrize("n", [1, 5, 16, 257])
@pytest.mark.parametrize("c", [1, 3])
def test_uint8_is_the_rounded_resize_in_both_layouts(path, n, c):
    """Random images, up / down / one axis / none: the pre-division resize rounded half to
    even, bitwise the reference; within 0.5 of 255 x the float batch (plus float error)."""
    for k, size in enumerate([(32, 32), (14, 14), (20, 36), (57, 9), (1, 1), (28, 13),
                              (28, 28)]):
        x = random_images((n, 28, 28, c), seed=100 * n + 10 * k + c)
        want = to_uint8_reference(x, size)
        if size == (28, 28):
            assert np.array_equal(want, x)
        else:
            pre = resampled(x, size, over_255=False).reshape(*size, n, c).transpose(2, 0, 1, 3)
            assert np.array_equal(want, np.rint(np.clip(pre, 0, 255)).astype(np.uint8))
        assert np.array_equal(to_uint8(x, size), want), size
        nchw = to_uint8(x, size, channels_first=True)
        assert nchw.flags["C_CONTIGUOUS"] and np.array_equal(nchw, want.transpose(0, 3, 1, 2))
        assert np.abs(want - 255.0 * to_float(x, size)).max() <= 0.5 + 1e-3
        slot = np.zeros((2, n, *size, c), np.uint8)
        assert np.shares_memory(to_uint8(x, size, out=slot[1]), slot[1])
        assert np.array_equal(slot[1], want) and not slot[0].any()
    with pytest.raises(InputError, match=rf"out must be uint8 of shape \({n}, 32, 32, 1\)"):
        to_uint8(x[..., :1], (32, 32), out=np.empty((n, 1, 32, 32), np.float32))


def test_uint8_is_within_one_of_pil(path):
    """The documented distance to PIL's own uint8 ``resize(BILINEAR)`` (which rounds after
    each pass, in fixed point): at most 1 on random images."""
    from PIL import Image

    rng = np.random.default_rng(7)
    worst = 0
    for _ in range(40):
        (H, W), (h, w) = rng.integers(2, 48, 2), rng.integers(1, 64, 2)
        c = int(rng.choice([1, 3]))
        x = random_images((1, H, W, c), seed=int(rng.integers(1 << 30)))
        pil = Image.fromarray(x[0, ..., 0] if c == 1 else x[0]).resize((int(w), int(h)),
                                                                       Image.BILINEAR)
        diff = np.abs(np.asarray(pil).reshape(h, w, c).astype(int) -
                      to_uint8(x, (int(h), int(w)))[0].astype(int))
        worst = max(worst, int(diff.max()))
    assert worst == 1


def test_a_kernel_that_rounds_differently_is_not_used(monkeypatch):
    from shardstream.loaders import _kernels

    class Wrong:
        @staticmethod
        def resize_into(images, out, *args):
            _kernels.resize_into(images, out, *args)
            out[0, 0, 0] ^= 1

    monkeypatch.setattr(pixels, "_state", [])
    monkeypatch.setattr(pixels, "compiled_kernel", lambda: Wrong)
    with pytest.warns(RuntimeWarning, match="uint8 result .* differs from the numpy reference"):
        assert compiled_uint8() is None
    x = random_images((3, 28, 28, 1), seed=3)
    assert np.array_equal(to_uint8(x, (32, 32)), to_uint8_reference(x, (32, 32)))
    monkeypatch.setattr(pixels, "_state", [])
    monkeypatch.setattr(pixels, "compiled_kernel", lambda: None)   # no numba: no 2nd warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compiled_uint8() is None


# ---------------------------------------------------------------------------------------------
# the loaders: the plan's stored bytes, torch == tf, workers, ranks, resume


def expected(location, images, labels, size, **kw):
    plan = plan_epoch(load_manifest(location).shard_sizes, **kw)
    return [(images[plan.batch(k)] if size is None else
             to_uint8_reference(images[plan.batch(k)], size), labels[plan.batch(k)])
            for k in range(plan.num_batches)]


def torch_epoch(location, **kw):
    return [(X.numpy().transpose(0, 2, 3, 1), y.numpy()) for X, y in
            ss.torch_loader(location, dtype="uint8", **kw)]


def tf_epoch(location, **kw):
    return [(X.numpy(), y.numpy()) for X, y in ss.tf_dataset(location, dtype="uint8", **kw)]


def assert_same(got, want):
    assert len(got) == len(want) > 0
    for k, ((X, y), (eX, ey)) in enumerate(zip(got, want)):
        assert X.dtype == np.uint8 and X.shape == eX.shape, k
        assert np.array_equal(X, eX), f"batch {k}: pixels differ"
        assert np.array_equal(y, ey), f"batch {k}: labels differ"


@pytest.mark.parametrize("split,size", [("npy", None), ("npy", (32, 24)), ("rgb", None),
                                        ("rgb", (11, 5)), ("png", (14, 14))])
def test_uint8_batches_torch_and_tf(loader_splits, split, size):
    location, images, labels = loader_splits[split]
    kw = dict(batch_size=40, seed=3, epoch=1, shuffle_buffer=200)
    want = expected(location, images, labels, size, **kw)
    for workers, mode in ((0, "thread"), (2, "thread"), (2, "process")):
        assert_same(torch_epoch(location, resize=size, num_workers=workers, worker_mode=mode,
                                **kw), want)
    for p in (1, 2):
        assert_same(tf_epoch(location, resize=size, num_parallel=p, **kw), want)
    X, y = next(iter(ss.torch_loader(location, resize=size, dtype="uint8", **kw)))
    assert str(X.dtype) == "torch.uint8" and str(y.dtype) == "torch.int64"
    X, y = next(iter(ss.tf_dataset(location, resize=size, dtype=np.uint8, **kw)))
    assert X.dtype.name == "uint8" and y.dtype.name == "int32"


def test_uint8_ranks_and_resume(loader_splits):
    location, images, labels = loader_splits["npy"]
    kw = dict(batch_size=32, seed=7, shuffle_buffer=300, rank=2, world_size=3)
    want = expected(location, images, labels, (14, 14), **kw)
    kw["resize"] = (14, 14)
    assert_same(torch_epoch(location, num_workers=2, **kw), want)
    assert_same(tf_epoch(location, num_parallel=2, **kw), want)
    assert_same(torch_epoch(location, start_batch=5, **kw), want[5:])
    assert_same(tf_epoch(location, start_batch=5, **kw), want[5:])
    loader = ss.torch_loader(location, dtype="uint8", num_workers=2, **kw)
    it = iter(loader)
    for _ in range(4):
        next(it)
    state = loader.state_dict()
    it.close()
    other = ss.torch_loader(location, dtype="uint8", **kw)
    other.load_state_dict(state)
    assert_same([(X.numpy().transpose(0, 2, 3, 1), y.numpy()) for X, y in other], want[4:])
    assert "dtype='uint8'" in repr(other)


def test_bad_dtype_and_uint8_with_normalize_are_refused(loader_splits):
    location = loader_splits["npy"][0]
    for make in (ss.torch_loader, ss.tf_dataset):
        with pytest.raises(InputError, match=r"dtype='float16': must be 'float32' .* 'uint8'"):
            make(location, batch_size=10, dtype="float16")
        with pytest.raises(InputError, match=r"with dtype='uint8': normalizing gives floats"):
            make(location, batch_size=10, dtype="uint8", normalize=((0.5,), (0.2,)))
        with pytest.raises(InputError, match="dtype="):   # before the location is read
            make(location + "-missing", batch_size=10, dtype=np.int16)


# ---------------------------------------------------------------------------------------------
# the batch service: dtype and normalize travel in the request


@pytest.fixture(scope="module")
def server(loader_splits):
    """One batch server over the loader splits' folder (127.0.0.1, this process)."""
    from conftest import _LoopThread

    from shardstream.server import start_app

    lt = _LoopThread()
    root = str(pathlib.Path(loader_splits["npy"][0]).parent)
    runner, url = lt.run(start_app(make_batch_app(root, workers=2), "127.0.0.1", 0,
                                   shutdown_timeout=5.0))
    yield root, url
    lt.run(runner.cleanup())
    lt.stop()


@pytest.mark.parametrize("split,kw", [
    ("npy", dict(dtype="uint8")), ("rgb", dict(dtype="uint8", resize=(11, 5))),
    ("npy", dict(normalize=((0.286,), (0.353,)), resize=(32, 24))),
    ("rgb", dict(normalize=((0.49, 0.48, 0.45), (0.25, 0.24, 0.26))))])
def test_service_batches_are_the_local_ones(server, split, kw):
    root, url = server
    kw = dict(batch_size=37, seed=5, epoch=2, shuffle_buffer=100, **kw)
    local = [(X.numpy(), y.numpy()) for X, y in ss.torch_loader(os.path.join(root, split), **kw)]
    svc = BatchService([url], run_bytes=1)
    remote = [(X.numpy(), y.numpy()) for X, y in ss.torch_loader(split, service=svc, **kw)]
    local_tf = [(X.numpy(), y.numpy()) for X, y in ss.tf_dataset(os.path.join(root, split), **kw)]
    remote_tf = [(X.numpy(), y.numpy()) for X, y in
                 ss.tf_dataset(split, service=[url], num_parallel=2, **kw)]
    for got, want in ((remote, local), (remote_tf, local_tf)):
        assert len(got) == len(want) > 0
        for (X, y), (eX, ey) in zip(got, want):
            assert X.dtype == eX.dtype == np.dtype(kw.get("dtype", "float32"))
            assert np.array_equal(X, eX) and np.array_equal(y, ey)
    assert np.array_equal(local[0][0].transpose(0, 2, 3, 1), local_tf[0][0])


def test_service_requests_check_dtype_and_normalize(server):
    base = {"dataset": "npy", "batch_size": 8, "start": 0, "stop": 1}
    req = parse_request({**base, "dtype": "uint8", "normalize": None})
    assert req.loader["dtype"] == "uint8" and req.loader["normalize"] is None
    assert parse_request({**base, "normalize": [[0.5], [0.25]]}).loader["normalize"] == (
        (0.5,), (0.25,))
    for bad, match in (({"dtype": "float64"}, "dtype='float64'"),
                       ({"normalize": [0.5, 0.25]}, "normalize="),
                       ({"normalize": [[0.5], [True]]}, "normalize="),
                       ({"normalize": [[0.5] * 65, [0.2] * 65]}, "1 .. 64 numbers")):
        with pytest.raises(BadRequest, match=match) as info:
            parse_request({**base, **bad})
        assert info.value.status == 400
    # the loaders' checks, on the server: 400 naming the problem
    import http.client
    from urllib.parse import urlsplit

    root, url = server
    for body, match in (({**base, "dtype": "uint8", "normalize": [[0.5], [0.2]]},
                         "normalizing gives floats"),
                        ({**base, "normalize": [[0.5], [0.0]]}, "std > 0")):
        conn = http.client.HTTPConnection(urlsplit(url).netloc, timeout=30)
        conn.request("POST", "/v1/batches", json.dumps(body),
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        text = resp.read().decode()
        conn.close()
        assert resp.status == 400 and match in text, text


def test_wire_carries_uint8_pixels():
    body, x, y = new_run(3, [2, 1], (4, 5, 3), "nhwc", "uint8")
    x[:] = np.arange(x.size, dtype=np.uint8).reshape(x.shape)
    run = decode_run(bytes(body))
    assert run.x.dtype == np.uint8 and run.x.shape == (3, 4, 5, 3)
    assert np.array_equal(run.x, x) and run.first == 3 and run.sizes == [2, 1]
    assert len(body) < len(new_run(3, [2, 1], (4, 5, 3), "nhwc")[0])


# ---------------------------------------------------------------------------------------------
# the book's data module and helpers


def test_book_data_module_takes_dtype_and_normalize(fmnist_shards):
    root = str(fmnist_shards)
    train = os.path.join(root, "fashion-mnist", "train")
    data = ss.FashionMNIST(batch_size=64, resize=(32, 32), root=root, dtype="uint8")
    X, y = next(iter(data.train_dataloader()))
    want = next(iter(ss.torch_loader(train, batch_size=64, resize=(32, 32), dtype="uint8",
                                     shuffle_buffer=10_000)))[0]
    assert str(X.dtype) == "torch.uint8" and np.array_equal(X.numpy(), want.numpy())
    image, _ = data.train[3]
    source = ss.torch_loader(train, batch_size=4, resize=(32, 32), dtype="uint8",
                             shuffle=False)
    assert str(image.dtype) == "torch.uint8"
    assert np.array_equal(image.numpy(), next(iter(source))[0][3].numpy())
    mean, std = (0.286,), (0.353,)
    tf_iter = ss.load_data_fashion_mnist(64, framework="tf", root=root, num_workers=2,
                                         normalize=(mean, std))[1]
    torch_iter = ss.load_data_fashion_mnist(64, root=root, num_workers=0,
                                            normalize=(mean, std))[1]
    (Xt, yt), (Xf, yf) = next(iter(torch_iter)), next(iter(tf_iter))
    assert np.array_equal(Xt.numpy().transpose(0, 2, 3, 1), Xf.numpy())
    assert np.array_equal(yt.numpy(), yf.numpy())
    images = open_stream(os.path.join(root, "fashion-mnist", "test")).load(0)[0]
    assert np.array_equal(Xf.numpy(), (to_float(images[:64]) - np.float32(mean)) / np.float32(std))
    with pytest.raises(InputError, match="normalizing gives floats"):
        ss.FashionMNIST(root=root, dtype="uint8", normalize=(mean, std))
    with pytest.raises(InputError, match="one per channel"):
        ss.FashionMNIST(root=root, normalize=((0.5, 0.5, 0.5), (0.2, 0.2, 0.2)))


def test_uint8_kernel_machine_code_has_no_fused_multiply_add():
    """The uint8 specialisation of the kernel (its own machine code): no FMA contraction, and
    the rounding ``(v + 2**23) - 2**23`` kept (no fastmath folds it away)."""
    import re

    from numba import njit

    from shardstream.loaders import _kernels, resize

    fresh = njit(nogil=True)(_kernels.resize_into.py_func)
    x = random_images((4, 28, 28, 1), seed=2)
    out = np.empty((4, 1, 32 * 32), np.uint8)
    fresh(x, out, *resize._kernel_args(4, 28, 28, 1, 32, 32, over_255=False))
    assert np.array_equal(out.reshape(4, 1, 32, 32),
                          to_uint8_reference(x, (32, 32)).transpose(0, 3, 1, 2))
    asm = "\n".join(fresh.inspect_asm().values())
    assert re.search(r"\bv?mulps\b|\bv?mulss\b", asm)
    assert not re.search(r"\bvfn?m(add|sub)\w*\b", asm)
    assert ss.to_uint8 is to_uint8


def test_framework_dtypes_name_the_same_batches(loader_splits):
    """``dtype=torch.uint8`` / ``tf.uint8`` / ``np.uint8`` mean ``"uint8"`` (and the float32
    ones ``"float32"``): the same batches; another framework dtype is refused by name."""
    import tensorflow as tf
    import torch
    location = loader_splits["npy"][0]
    kw = dict(batch_size=50, resize=(9, 13), seed=3)
    want = [X.numpy() for X, _ in ss.torch_loader(location, dtype="uint8", **kw)]
    got = [X.numpy() for X, _ in ss.torch_loader(location, dtype=torch.uint8, **kw)]
    assert got[0].dtype == np.uint8 and all(map(np.array_equal, got, want))
    got = [X.numpy().transpose(0, 3, 1, 2) for X, _ in ss.tf_dataset(location, dtype=tf.uint8,
                                                                     **kw)]
    assert got[0].dtype == np.uint8 and all(map(np.array_equal, got, want))
    floats = next(iter(ss.torch_loader(location, dtype=torch.float32, **kw)))[0]
    assert floats.dtype == torch.float32
    with pytest.raises(InputError, match=r"dtype=torch.int16: must be 'float32'"):
        ss.torch_loader(location, dtype=torch.int16, **kw)


def test_uint8_pixels_are_never_a_view_of_the_input(loader_splits, tmp_path):
    """Without resize the uint8 pixels equal the input but are a new array: changing a sample
    in place never changes the shards' decoded cache (``data.train[i]`` twice)."""
    x = random_images((3, 5, 4, 1), 7)
    for cf in (False, True):
        got = ss.to_uint8(x, channels_first=cf)
        assert not np.may_share_memory(got, x)
        assert np.array_equal(got, x.transpose(0, 3, 1, 2) if cf else x)
    ds = SplitDataset(loader_splits["npy"][0], dtype="uint8", framework="torch")
    first = ds[3][0]
    first[...] = 0
    assert np.array_equal(np.asarray(ds[3][0]).reshape(-1),
                          loader_splits["npy"][1][3].reshape(-1))
