"""uint8 images -> float32 in [0, 1], optionally resized: the project's only resize.

The resize has PIL's ``Image.resize(..., Image.BILINEAR)`` weights (a triangle filter on
half-pixel centres whose support widens by the scale when shrinking, i.e. antialiased), computed
exactly as Pillow's ``precompute_coeffs`` (``src/libImaging/Resample.c``) does, and applied as
two small float32 matrix products vectorised over the batch and channels.  Both framework
adapters call :func:`to_float`, which is why their batches are bitwise equal.

Values: without resize the result is exactly ``x.astype(float32) / float32(255)`` (a true
division, bitwise equal to ``np.float32(x) / np.float32(255)``).  With resize, ``1/255`` is
folded into the row weights, so values agree with PIL's (which rounds to uint8 after each of its
two passes) to within 1/255; they are clamped to [0, 1].  An axis whose size does not change is
not resampled (PIL skips it too), so ``resize=(H, W)`` is the exact ``/ 255``.

Pure functions of their inputs; the cached weight matrices are read-only, so concurrent callers
(threads, DataLoader workers) share them safely.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from shardstream.errors import InputError

__all__ = ["to_float", "resize_weights"]

_255 = np.float32(255)


def _bilinear(x: float) -> float:
    """Pillow's ``bilinear_filter``: the triangle ``max(0, 1 - |x|)`` (support 1)."""
    x = abs(x)
    return 1.0 - x if x < 1.0 else 0.0


@lru_cache(maxsize=256)
def _weights64(in_size: int, out_size: int) -> np.ndarray:
    """float64 (out_size, in_size) PIL BILINEAR weights, rows normalised to sum 1."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale  # bilinear support 1.0, widened when shrinking
    ss = 1.0 / filterscale
    w = np.zeros((out_size, in_size), dtype=np.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)  # C's (int) truncates toward zero
        xmax = min(int(center + support + 0.5), in_size)
        k = [_bilinear((x - center + 0.5) * ss) for x in range(xmin, xmax)]
        total = 0.0
        for v in k:  # left to right in double, as Pillow does (not Python's compensated sum())
            total += v
        if total != 0.0:
            k = [v / total for v in k]
        w[xx, xmin:xmax] = k
    return w


@lru_cache(maxsize=256)
def resize_weights(in_size: int, out_size: int) -> np.ndarray:
    """float32 (out_size, in_size) read-only matrix ``M`` of PIL BILINEAR weights: resizing a
    line ``v`` (in_size,) gives ``M @ v`` (out_size,).  Cached per (in_size, out_size)."""
    for name, v in (("in_size", in_size), ("out_size", out_size)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise InputError(f"resize_weights: {name}={v!r} must be a positive integer")
    m = _weights64(int(in_size), int(out_size)).astype(np.float32)
    m.flags.writeable = False
    return m


@lru_cache(maxsize=256)
def _scaled_weights(in_size: int, out_size: int) -> np.ndarray:
    """``resize_weights / 255`` in float32, read-only (the ÷255 folded into one pass)."""
    m = (_weights64(in_size, out_size) / 255.0).astype(np.float32)
    m.flags.writeable = False
    return m


def _check_resize(resize, shape) -> tuple[int, int]:
    try:
        h, w = resize
    except (TypeError, ValueError):
        raise InputError(f"resize={resize!r} must be None or a pair (height, width) of positive integers") from None
    for v in (h, w):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise InputError(f"resize={resize!r} must be None or a pair (height, width) of positive integers")
    return int(h), int(w)


def to_float(images: np.ndarray, resize: tuple[int, int] | None = None) -> np.ndarray:
    """float32 (N, h, w, C) in [0, 1] from uint8 ``images`` (N, H, W, C).

    ``resize=None`` keeps (H, W) and returns exactly ``images.astype(float32) / float32(255)``;
    ``resize=(h, w)`` resamples with PIL's BILINEAR weights (see the module docstring).
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise InputError(
            f"to_float expects uint8 images of shape (N, H, W, C), got {images.dtype} {images.shape}")
    n, hin, win, c = images.shape
    if resize is None:
        return np.divide(images, _255, dtype=np.float32)
    h, w = _check_resize(resize, images.shape)
    if (h, w) == (hin, win):
        return np.divide(images, _255, dtype=np.float32)
    x = images.astype(np.float32)
    if w != win:
        # width pass: contract W.  (N, H, W, C) -> (N, H, w, C); carries the 1/255 when it is
        # the only pass
        ww = resize_weights(win, w) if h != hin else _scaled_weights(win, w)
        if c == 1:
            x = (x.reshape(n * hin, win) @ ww.T).reshape(n, hin, w, 1)
        else:
            x = np.matmul(ww, x.reshape(n * hin, win, c)).reshape(n, hin, w, c)
    if h != hin:
        # height pass: contract H.  (N, H, w, C) -> (N, h, w, C), one GEMM over all columns
        wh = _scaled_weights(hin, h)
        x = np.matmul(wh, x.reshape(n, hin, w * c)).reshape(n, h, w, c)
    np.clip(x, 0.0, 1.0, out=x)
    return x
