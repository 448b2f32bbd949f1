"""uint8 images -> float32 in [0, 1], optionally resized: the project's only resize.

The resize has PIL's ``Image.resize(..., Image.BILINEAR)`` weights (a triangle filter on
half-pixel centres whose support widens by the scale when shrinking, i.e. antialiased), computed
exactly as Pillow's ``precompute_coeffs`` (``src/libImaging/Resample.c``) does: output ``i`` of a
line of ``n`` inputs resized to ``m`` has centre ``(i + 0.5) * n / m``, support
``max(n / m, 1)``, taps ``int(centre - support + 0.5) .. int(centre + support + 0.5)`` clamped to
the line, weights ``triangle((x - centre + 0.5) / max(n / m, 1))`` normalised to sum 1
(:func:`resize_weights` gives them as an (m, n) matrix).  It is separable: a height pass, then
a width pass, each vectorised over the whole batch and all channels.  Both framework adapters
call :func:`to_float`, which is why their batches are bitwise equal.

Two implementations, one result: :func:`to_float_reference` (numpy, several passes over the
batch) defines the bits; :func:`to_float` runs the compiled kernel of :mod:`._kernels` (numba: one
call per batch, output written in the caller's layout -- NHWC or NCHW -- GIL released) when it
can be used, and the reference otherwise.  The kernel evaluates the same float32 operations in
the same order, so the two are bitwise equal (tests check it on random images); it is checked
against the reference once per process before first use (:func:`compiled_kernel`), and if it
cannot be imported, compiled, or ever disagreed, ``to_float`` uses the reference and warns once
(a ``RuntimeWarning`` naming the cause).

Values: without resize the result is exactly ``x.astype(float32) / float32(255)`` (a true
division, bitwise equal to ``np.float32(x) / np.float32(255)``).  With resize, ``1/255`` is
folded into the first pass's weights, so values agree with PIL's (which rounds to uint8 after
each of its two passes) to within 1/255; they are clamped to [0, 1].  An axis whose size does
not change is not resampled (PIL skips it too), so ``resize=(H, W)`` is the exact ``/ 255``.

Determinism: each output value is the same fixed sequence of float32 multiplies and adds (taps
in input order) of its own image's pixels -- no BLAS and no reduction whose order could depend
on the batch size, the thread count or the CPU -- so an image gives the same bits in any batch,
thread, process or machine.  The functions are pure; the cached weights are read-only and the
work buffers are per thread, so concurrent callers (threads, DataLoader workers) are safe.
"""

from __future__ import annotations

import math
import threading
import warnings
from functools import lru_cache

import numpy as np

from shardstream.errors import InputError

__all__ = ["to_float", "to_float_reference", "resize_weights", "compiled_kernel", "resampled"]

_255 = np.float32(255)
_SCRATCH_LIMIT = 4 << 20  # bytes per reusable work array, per thread
_thread = threading.local()


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
def _taps(in_size: int, out_size: int, over_255: bool) -> tuple[np.ndarray, np.ndarray]:
    """The weights as taps: ``idx`` intp (K, out_size) and ``coef`` float32 (K, out_size), so that
    output ``i`` is ``sum_j coef[j, i] * x[idx[j, i]]`` summed for j = 0, 1, ... K-1 (input index
    order).  Rows with fewer than K nonzero weights are padded with weight 0.  ``over_255``
    folds the ``/ 255`` into the weights."""
    w = _weights64(in_size, out_size)
    if over_255:
        w = w / 255.0
    nonzero = [np.flatnonzero(row) for row in w]
    k = max(len(nz) for nz in nonzero)
    idx = np.zeros((k, out_size), dtype=np.intp)
    coef = np.zeros((k, out_size), dtype=np.float32)
    for i, nz in enumerate(nonzero):
        idx[:, i] = nz[0]
        idx[:len(nz), i] = nz
        coef[:len(nz), i] = w[i, nz]
    idx.flags.writeable = False
    coef.flags.writeable = False
    return idx, coef


def check_size(resize, *, allow_n: bool = False) -> tuple[int, int]:
    """``(h, w)``: ``resize`` checked as a pair of positive integers (and, with ``allow_n``, a
    single ``n`` for ``(n, n)``, the loaders' form); InputError otherwise.  The one check of a
    resize argument (the loaders' :func:`options.check_resize` and every batch here)."""
    if type(resize) is tuple and len(resize) == 2 and type(resize[0]) is int and \
            type(resize[1]) is int and resize[0] > 0 and resize[1] > 0:
        return resize  # the loaders' own (checked) pair, once per batch: no more to check
    forms = "None, a size n or a pair (height, width)" if allow_n else \
        "None or a pair (height, width)"
    pair = resize
    if allow_n and isinstance(resize, (int, np.integer)) and not isinstance(resize, bool):
        pair = (resize, resize)
    try:
        h, w = pair
    except (TypeError, ValueError):
        raise InputError(f"resize={resize!r}: must be {forms}") from None
    for v in (h, w):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise InputError(f"resize={resize!r}: height and width must be positive integers "
                             f"(e.g. resize=(32, 32))")
    return int(h), int(w)


def checked_batch(images, resize, who: str = "to_float"):
    """``(images, (n, H, W, C), (h, w))``: ``images`` as a uint8 (N, H, W, C) array and the
    output size (``resize`` checked, or the stored size); InputError naming ``who`` else."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise InputError(f"{who} expects uint8 images of shape (N, H, W, C), "
                         f"got {images.dtype} {images.shape}")
    n, hin, win, c = images.shape
    return images, (n, hin, win, c), (hin, win) if resize is None else check_size(resize)


def _scratch(slot: str, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """A work array of ``shape`` and ``dtype``, reused by this thread for ``slot`` when small.

    Fresh multi-100-KB temporaries cost more in page faults than the arithmetic on them (the
    allocator hands such blocks back to the OS between batches), so each thread keeps its own
    (hence thread-safe) buffers of at most :data:`_SCRATCH_LIMIT` bytes; bigger ones are allocated
    as usual.  Only intermediates live here, never a returned array.
    """
    dtype = np.dtype(dtype)
    size = math.prod(shape)
    if size * dtype.itemsize > _SCRATCH_LIMIT:
        return np.empty(shape, dtype=dtype)
    bufs = _thread.__dict__.setdefault("bufs", {})
    buf = bufs.get((slot, dtype))
    if buf is None or buf.size < size:
        buf = bufs[slot, dtype] = np.empty(size, dtype=dtype)
    return buf[:size].reshape(shape)


def _resample(x: np.ndarray, axis: int, taps: tuple[np.ndarray, np.ndarray],
              slot: str) -> np.ndarray:
    """Resample ``x`` (uint8 or float32, any shape) along ``axis`` (0 or 1) with ``taps``:
    float32, ``x.shape`` with ``axis`` resized.  Gathers whole trailing blocks (np.take) and
    multiplies/adds them in tap order: plain IEEE float32 arithmetic, element by element."""
    idx, coef = taps
    shape = x.shape[:axis] + (idx.shape[1],) + x.shape[axis + 1:]
    acc = _scratch(slot, shape)
    gathered = _scratch(slot + ".gather", shape, x.dtype)
    term = _scratch(slot + ".term", shape)
    bshape = (-1,) + (1,) * (x.ndim - axis - 1)
    for j in range(idx.shape[0]):
        np.take(x, idx[j], axis=axis, out=gathered)
        np.multiply(gathered, coef[j].reshape(bshape), out=acc if j == 0 else term)
        if j:
            np.add(acc, term, out=acc)
    return acc


def to_float_reference(images: np.ndarray, resize: tuple[int, int] | None = None, *,
                       out: np.ndarray | None = None) -> np.ndarray:
    """The numpy reference of :func:`to_float` (its definition, and its fallback): float32
    (N, h, w, C) in [0, 1] from uint8 ``images`` (N, H, W, C).

    ``resize=None`` keeps (H, W) and returns exactly ``images.astype(float32) / float32(255)``;
    ``resize=(h, w)`` resamples with PIL's BILINEAR weights (see the module docstring).
    ``out``, if given, is a float32 array of the result's shape that receives it (and is
    returned): the loaders write a batch straight into its slot of a larger array.

    How: the batch is laid out as (H, W, N*C) (each pixel position holds the whole batch, so
    every step moves contiguous blocks); the height pass then the width pass each compute
    ``sum_j coef_j * x[idx_j]`` over their few nonzero taps (``/ 255`` folded into the first
    pass's weights); the clamp to [0, 1] writes (N, h, w, C).  No BLAS, no reduction whose order
    depends on sizes or threads: every output value is the same float32 expression of its own
    image's pixels, whatever the batch, thread, process or machine.
    """
    images, (n, hin, win, c), (h, w) = checked_batch(images, resize)
    if out is None:
        out = np.empty((n, h, w, c), dtype=np.float32)
    elif out.dtype != np.float32 or out.shape != (n, h, w, c):
        raise InputError(f"to_float: out must be float32 of shape {(n, h, w, c)}, "
                         f"got {out.dtype} {out.shape}")
    if (h, w) == (hin, win):
        return np.divide(images, _255, out=out, dtype=np.float32)
    x = resampled(images, (h, w), over_255=True)
    np.clip(x.reshape(h, w, n, c).transpose(2, 0, 1, 3), 0.0, 1.0, out=out)
    return out


def resampled(images: np.ndarray, size: tuple[int, int], over_255: bool) -> np.ndarray:
    """The resize itself (numpy): uint8 ``images`` (N, H, W, C), ``size`` (h, w) other than
    (H, W) -> float32 (h, w, N*C), unclamped (a per-thread work array: use it before the next
    call).  ``over_255``: the ``/ 255`` folded into the first pass's weights (float batches);
    without it the values are on the 0..255 scale (uint8 batches, :mod:`.pixels`)."""
    n, hin, win, c = images.shape
    h, w = size
    x = _scratch("in", (hin, win, n * c), np.uint8)
    np.copyto(x.reshape(hin, win, n, c), images.transpose(1, 2, 0, 3))
    if h != hin:
        x = _resample(x, 0, _taps(hin, h, over_255), "h")
    if w != win:
        x = _resample(x, 1, _taps(win, w, over_255 and h == hin), "w")
    return x


_kernel_lock = threading.Lock()
_kernel_state: list = []  # [] not tried yet; [module] usable; [None] unusable (warned once)


def _probe(kernels) -> str | None:
    """Run ``kernels`` on random images against the reference: None if bitwise equal, else
    what differed."""
    rng = np.random.default_rng(12)
    for n, hin, win, c, size in ((3, 28, 28, 1, (32, 32)), (2, 20, 36, 3, (9, 50)),
                                 (16, 28, 28, 1, (32, 32)), (6, 20, 36, 3, (9, 50)),
                                 (2, 12, 12, 3, (12, 12)), (90, 4, 5, 3, (3, 7))):
        # N * C below 16 (plane by plane), from 16 on (the batch layout), beyond 256 (blocks)
        x = rng.integers(0, 256, (n, hin, win, c), dtype=np.uint8)
        want = to_float_reference(x, size)
        for channels_first in (False, True):
            got = _compiled(kernels, x, size, None, channels_first)
            if channels_first:
                got = got.transpose(0, 2, 3, 1)
            if not np.array_equal(got, want):
                return (f"its result for {x.shape} -> {size} differs from the numpy reference "
                        f"(max difference {np.abs(got - want).max()})")
    return None


def compiled_kernel():
    """The module of compiled kernels (:mod:`._kernels`) if it can be used in this process,
    else None.  Decided once, on first call: the import (numba), the compilation and a bitwise
    check against :func:`to_float_reference`; any failure warns once (RuntimeWarning with the
    cause) and the reference is used from then on."""
    if _kernel_state:
        return _kernel_state[0]
    with _kernel_lock:
        if not _kernel_state:
            try:
                from . import _kernels  # noqa: PLC0415 - numba loads (and compiles) on first use only
                problem = _probe(_kernels)
            except Exception as exc:  # ImportError (no numba), a numba compile error, ...
                problem = f"{type(exc).__name__}: {exc}"
            if problem is None:
                _kernel_state.append(_kernels)
            else:
                warnings.warn(f"shardstream: the compiled resize kernel cannot be used "
                              f"({problem}); using the numpy reference, bitwise the same "
                              "but slower",
                              RuntimeWarning, stacklevel=3)
                _kernel_state.append(None)
    return _kernel_state[0]


def _no_taps(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero taps for an axis of ``size`` that is not resampled."""
    return np.zeros((0, size), np.intp), np.zeros((0, size), np.float32)


def _compiled(kernels, images, size, out, channels_first):
    """to_float through ``kernels`` (checked arguments): ``size`` (h, w); ``out`` None or of the
    result's shape."""
    n, hin, win, c = images.shape
    h, w = size
    if out is not None and not out.flags.c_contiguous:
        np.copyto(out, _compiled(kernels, images, size, None, channels_first))
        return out
    if out is None:
        out = np.empty((n, c, h, w) if channels_first else (n, h, w, c), np.float32)
    # (N, C, h, w) either way: the batch itself, or the channels-last one transposed
    view = out if channels_first else out.transpose(0, 3, 1, 2)
    images = np.ascontiguousarray(images)
    if (h, w) == (hin, win):
        kernels.divide_into(images, view)
        return out
    planes = view.reshape(n, c, h * w) if channels_first or c == 1 else \
        out.reshape(n, h * w, c).transpose(0, 2, 1)
    kernels.resize_into(images, planes, *_kernel_args(n, hin, win, c, h, w))
    return out


def _kernel_args(n, hin, win, c, h, w, over_255=True) -> tuple:
    """The taps, this thread's scratch arrays and the clamp bound for
    :func:`_kernels.resize_into`, cached per thread and shape (one dict lookup per batch).
    ``over_255=False``: the uint8 batches' taps (no ``/ 255``) and bound 255 (:mod:`.pixels`)."""
    try:
        cache = _thread.kernel_args
    except AttributeError:
        cache = _thread.kernel_args = {}
    key = (n, hin, win, c, h, w, over_255)
    args = cache.get(key)
    if args is None:
        if len(cache) >= 8:  # a few shapes are in use at a time (the last batch is shorter)
            cache.clear()
        hidx, hcoef = _taps(hin, h, over_255) if h != hin else _no_taps(h)
        widx, wcoef = _taps(win, w, over_255 and h == hin) if w != win else _no_taps(w)
        args = (hidx, hcoef, widx, wcoef,
                np.empty((hin, win * n * c), np.uint8),   # the batch, transposed
                np.empty(win * n * c, np.float32),        # a row of the height pass
                np.empty(w * n * c, np.float32),          # a row of the width pass
                np.float32(1 if over_255 else 255))       # the clamp's upper bound
        if hin * win * n * c <= _SCRATCH_LIMIT:  # big batches: not kept between calls
            cache[key] = args
    return args


def to_float(images: np.ndarray, resize: tuple[int, int] | None = None, *,
             out: np.ndarray | None = None, channels_first: bool = False) -> np.ndarray:
    """float32 in [0, 1] from uint8 ``images`` (N, H, W, C): (N, h, w, C), or (N, C, h, w) with
    ``channels_first=True`` (torch's layout, written directly: no transposing copy after).

    ``resize=None`` keeps (H, W) and returns exactly ``images.astype(float32) / float32(255)``;
    ``resize=(h, w)`` resamples with PIL's BILINEAR weights (see the module docstring).
    ``out``, if given, is a float32 array of the result's shape that receives it (and is
    returned): the loaders write a batch straight into its slot of a larger array.
    Bitwise equal to :func:`to_float_reference` (transposed for ``channels_first``); runs the
    compiled kernel when :func:`compiled_kernel` is usable (one pass per batch, GIL released).
    """
    images, (n, hin, win, c), (h, w) = checked_batch(images, resize)
    shape = (n, c, h, w) if channels_first else (n, h, w, c)
    if out is not None and (out.dtype != np.float32 or out.shape != shape):
        raise InputError(f"to_float: out must be float32 of shape {shape}, "
                         f"got {out.dtype} {out.shape}")
    kernels = compiled_kernel() if n else None
    if kernels is not None:
        return _compiled(kernels, images, (h, w), out, channels_first)
    if not channels_first:
        return to_float_reference(images, (h, w), out=out)
    if out is None:
        out = np.empty(shape, np.float32)
    np.copyto(out, to_float_reference(images, (h, w)).transpose(0, 3, 1, 2))
    return out
