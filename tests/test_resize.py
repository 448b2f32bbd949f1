"""The one resize (DESIGN.md "Resize and value semantics"): PIL BILINEAR within 1/255 for up-,
down- and non-square scaling, gray and RGB; no resize is exactly x / 255."""

import threading

import numpy as np
import pytest
from PIL import Image

from shardstream.errors import InputError
from shardstream.loaders.resize import resize_weights, to_float

# PIL rounds to uint8 after each of its two passes (in fixed point), so it is within 1/255 of the
# exact result; ours is float32 and exact up to float rounding.
TOL = 1 / 255 + 1e-6


def images(n, h, w, c, seed=0):
    """uint8 (n, h, w, c): half noise (the hardest case), half smooth gradients with edges."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, size=(n - n // 2, h, w, c), dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    smooth = []
    for i in range(n // 2):
        g = (np.sin(yy / (2 + i)) * 100 + xx * 255 / w * 0.5 + 60) * (1 + (xx > w // 2))
        smooth.append(np.repeat(np.clip(g, 0, 255)[..., None], c, axis=2))
    return np.concatenate([noise, np.asarray(smooth, dtype=np.uint8).reshape(-1, h, w, c)])


def pil_reference(batch, h, w):
    out = []
    for im in batch:
        pil = Image.fromarray(im[..., 0] if im.shape[2] == 1 else im)
        out.append(np.asarray(pil.resize((w, h), Image.BILINEAR)).reshape(h, w, im.shape[2]))
    return np.asarray(out, dtype=np.float64) / 255


@pytest.mark.parametrize("in_hw", [(28, 28), (20, 36), (36, 20)])
@pytest.mark.parametrize("out_hw", [(32, 32), (14, 14), (20, 20), (20, 36), (36, 20), (28, 14),
                                    (7, 50), (64, 64), (1, 1)])
@pytest.mark.parametrize("channels", [1, 3])
def test_matches_pil_bilinear(in_hw, out_hw, channels):
    x = images(6, *in_hw, channels)
    got = to_float(x, out_hw)
    assert got.dtype == np.float32 and got.shape == (6, *out_hw, channels)
    err = np.abs(got - pil_reference(x, *out_hw))
    assert err.max() <= TOL, (err.max() * 255, in_hw, out_hw)
    # Not a lucky tolerance: on average we are far closer than one grey level.
    assert err.mean() < 0.5 / 255
    assert got.min() >= 0 and got.max() <= 1


def test_extremes_stay_in_unit_range():
    x = np.zeros((4, 28, 28, 1), np.uint8)
    x[0] = 255
    x[1, ::2] = 255  # stripes: maximal overshoot risk
    x[2, :, ::3] = 255
    for size in [(32, 32), (14, 14), (20, 36), (57, 9)]:
        y = to_float(x, size)
        assert y.min() >= 0.0 and y.max() <= 1.0
        assert np.all(y[0] == 1.0) or np.abs(y[0] - 1).max() <= 1e-6
        assert np.all(y[3] == 0.0)


@pytest.mark.parametrize("shape", [(5, 28, 28, 1), (3, 20, 36, 3), (0, 28, 28, 1)])
def test_no_resize_is_exactly_x_over_255(shape):
    x = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    want = np.float32(x) / np.float32(255)
    for resize in (None, shape[1:3]):  # resizing to the same size resamples nothing, like PIL
        got = to_float(x, resize)
        assert got.dtype == np.float32 and got.shape == shape
        assert np.array_equal(got, want)
    every = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    assert np.array_equal(to_float(every).ravel(),
                          np.arange(256, dtype=np.float32) / np.float32(255))


def test_one_axis_only():
    x = images(4, 28, 28, 1)
    for size in [(28, 32), (14, 28)]:
        assert np.abs(to_float(x, size) - pil_reference(x, *size)).max() <= TOL


def test_deterministic_independent_of_batch_and_threads():
    x = images(64, 28, 28, 1, seed=3)
    want = to_float(x, (32, 32))
    assert np.array_equal(want, to_float(x.copy(), (32, 32)))
    # Every image comes out the same whether it is resized alone or within any batch.
    for i in (0, 17, 63):
        assert np.array_equal(to_float(x[i:i + 1], (32, 32))[0], want[i])
    assert np.array_equal(to_float(x[:10], (32, 32)), want[:10])
    assert np.array_equal(to_float(x[::3], (32, 32)), want[::3])  # strided input, same bits
    results = [None] * 8

    def work(j):
        results[j] = [to_float(x, (32, 32)) for _ in range(5)]

    threads = [threading.Thread(target=work, args=(j,)) for j in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(r, want) for rs in results for r in rs)


def test_resize_weights():
    m = resize_weights(28, 32)
    assert m.shape == (32, 28) and m.dtype == np.float32
    assert np.allclose(m.sum(axis=1), 1, atol=1e-6) and (m >= 0).all()
    assert resize_weights(28, 32) is m  # cached
    with pytest.raises(ValueError):
        m[0, 0] = 1  # read-only: callers cannot corrupt the cache
    assert np.array_equal(resize_weights(5, 5), np.eye(5, dtype=np.float32))
    # Up-scaling 2x: each output is 3/4 of its nearest input + 1/4 of the next (edges clamp).
    up = resize_weights(2, 4)
    assert np.allclose(up, [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    # Down-scaling 2x: the triangle widened to support 2 -> taps 1/8, 3/8, 3/8, 1/8 (renormalised
    # at the border).
    down = resize_weights(8, 4)
    assert np.allclose(down[1], [0, 1 / 8, 3 / 8, 3 / 8, 1 / 8, 0, 0, 0])
    assert np.allclose(down[0], np.array([3, 3, 1, 0, 0, 0, 0, 0]) / 7)


@pytest.mark.parametrize("resize", [(0, 32), (32, -1), (32,), 32, (32.0, 32), "32x32", (True, 2)])
def test_bad_resize(resize):
    with pytest.raises(InputError, match="resize"):
        to_float(np.zeros((1, 28, 28, 1), np.uint8), resize)


def test_one_resize_check_for_loaders_and_batches():
    """The loaders' check (n or a pair) and a batch's (a pair) are one function: the same
    results and the same words."""
    from shardstream.loaders.options import check_resize

    assert check_resize(None) is None and check_resize(5) == (5, 5)
    assert check_resize(np.int64(7)) == (7, 7) and check_resize([3, np.int32(4)]) == (3, 4)
    x = np.zeros((1, 28, 28, 1), np.uint8)
    assert to_float(x, [np.int16(3), 4]).shape == (1, 3, 4, 1)
    for bad in [0, (2, 0), (1.5, 2), (True, 2)]:
        with pytest.raises(InputError) as loader_error:
            check_resize(bad)
        with pytest.raises(InputError) as batch_error:
            to_float(x, bad)
        assert f"resize={bad!r}:" in str(loader_error.value)
        if bad != 0:
            assert str(loader_error.value) == str(batch_error.value)
    with pytest.raises(InputError, match=r"resize=5: must be None or a pair \(height, width\)"):
        to_float(x, 5)  # a batch's resize is a pair


@pytest.mark.parametrize("bad", [np.zeros((2, 28, 28), np.uint8),
                                 np.zeros((2, 28, 28, 1), np.float32),
                                 np.zeros((2, 28, 28, 1), np.uint16)])
def test_bad_images(bad):
    with pytest.raises(InputError, match="uint8 images"):
        to_float(bad)


def test_to_float_out_receives_the_same_bits():
    """``out=`` (the loaders write each batch into its slot of a chunk) gives the bits of the
    plain call, for resize and no resize; a wrong shape or dtype is an InputError."""
    x = np.random.default_rng(3).integers(0, 256, (5, 28, 28, 1), dtype=np.uint8)
    for resize, shape in ((None, (5, 28, 28, 1)), ((32, 32), (5, 32, 32, 1)),
                          ((14, 20), (5, 14, 20, 1))):
        chunk = np.full((2, *shape), np.nan, np.float32)
        got = to_float(x, resize, out=chunk[1])
        assert got is chunk[1] or np.shares_memory(got, chunk[1])
        assert np.array_equal(chunk[1], to_float(x, resize)) and np.isnan(chunk[0]).all()
    with pytest.raises(InputError, match="out must be float32 of shape"):
        to_float(x, (32, 32), out=np.empty((5, 28, 28, 1), np.float32))
    with pytest.raises(InputError, match="out must be float32"):
        to_float(x, out=np.empty((5, 28, 28, 1), np.float64))
