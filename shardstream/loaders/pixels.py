"""The batches' pixels in the asked-for dtype: ``dtype="float32"`` (:func:`resize.to_float`) or
``dtype="uint8"`` (:func:`to_uint8`, for GPU-side preprocessing).  Both adapters and the batch
service call :func:`to_pixels`, so torch's, tf's and the service's batches are bitwise equal.

uint8 values (docs/design.md, "Resize and value semantics"):

- no resize (or ``resize`` = the stored size): the stored bytes, exactly;
- ``resize=(h, w)``: the project's one resize (:func:`resize.resampled`: the same taps, the
  same PIL BILINEAR weights, the same float32 operations in the same order as the float
  batches) without the ``/ 255`` folded into the weights, i.e. values on the 0..255 scale,
  then clamped to [0, 255] and rounded half to even (``np.rint``).

So a uint8 batch is *not* ``round(255 * float batch)`` bit for bit (the float path divides by
255 inside its first pass), but the same resize of the same pixels.  PIL's own uint8 resize
rounds after each of its two passes, in fixed point: the two differ by at most 1 (measured over
random images, docs/loaders.md).

Two implementations, one result, as for float: :func:`to_uint8_reference` (numpy) defines the
bits; :func:`to_uint8` runs the compiled kernel (:mod:`._kernels`, ``hi = 255``) when it is
usable and agrees with the reference on a first-use check, else the reference (one warning).
"""

from __future__ import annotations

import threading
import warnings

import numpy as np

from ..errors import InputError
from . import resize
from .normalize import check_normalize
from .resize import checked_batch, compiled_kernel, resampled, to_float

#: the values of the loaders' ``dtype`` argument
DTYPES = ("float32", "uint8")


def check_dtype(dtype) -> str:
    """``"float32"`` / ``"uint8"`` -- or the numpy, torch or tensorflow dtype of that name
    (``np.uint8``, ``torch.uint8``, ``tf.uint8``; recognised by name, no framework import) --
    -> its name; else InputError."""
    try:
        name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    except TypeError:  # torch.uint8 (str: "torch.uint8"), tf.uint8 (.name: "uint8")
        name = getattr(dtype, "name", None) or str(dtype).rpartition(".")[2]
        name = name if type(dtype).__module__.split(".")[0] in ("torch", "tensorflow") else None
    if name not in DTYPES:
        raise InputError(f"dtype={dtype!r}: must be 'float32' (images in [0, 1]) or 'uint8' "
                         f"(the stored 0..255 values, for preprocessing on the GPU)")
    return name


def check_pixel_options(dtype, normalize, channels: int | None = None) -> tuple[str, object]:
    """The checked ``dtype`` (:func:`check_dtype`) and ``normalize``
    (:func:`normalize.check_normalize` for ``channels``; ``channels=None``: returned as given,
    checked later); InputError for a bad one, and for ``normalize`` with ``dtype="uint8"``
    (normalizing needs floats)."""
    dtype = check_dtype(dtype)
    if dtype == "uint8" and normalize is not None:
        raise InputError(f"normalize={normalize!r} with dtype='uint8': normalizing gives "
                         f"floats; use dtype='float32' with normalize, or normalize the uint8 "
                         f"batches yourself (e.g. on the GPU)")
    return dtype, normalize if channels is None else check_normalize(normalize, channels)


def to_uint8_reference(images: np.ndarray, resize_to: tuple[int, int] | None = None, *,
                       out: np.ndarray | None = None) -> np.ndarray:
    """uint8 (N, h, w, C) from uint8 ``images`` (N, H, W, C) (numpy; the definition): the
    images themselves without resize, else ``rint(clip(resampled(images), 0, 255))`` (see the
    module doc).  ``out``: a uint8 array of the result's shape to write into."""
    images, (n, hin, win, c), (h, w) = checked_batch(images, resize_to, "to_uint8")
    if out is None:
        out = np.empty((n, h, w, c), np.uint8)
    elif out.dtype != np.uint8 or out.shape != (n, h, w, c):
        raise InputError(f"to_uint8: out must be uint8 of shape {(n, h, w, c)}, "
                         f"got {out.dtype} {out.shape}")
    if (h, w) == (hin, win):
        np.copyto(out, images)
        return out
    x = resampled(images, (h, w), over_255=False)
    np.clip(x, 0.0, 255.0, out=x)
    np.rint(x, out=x)
    np.copyto(out, x.reshape(h, w, n, c).transpose(2, 0, 1, 3), casting="unsafe")
    return out


_lock = threading.Lock()
_state: list = []  # [] not checked yet; [module] usable for uint8; [None] not (warned once)


def _kernel_uint8(kernels, images, size, channels_first, out=None):
    """uint8 (N, C, h, w) or (N, h, w, C) through the compiled kernel (checked arguments),
    written into ``out`` when given (C-contiguous)."""
    n, hin, win, c = images.shape
    h, w = size
    if out is None:
        out = np.empty((n, c, h, w) if channels_first else (n, h, w, c), np.uint8)
    planes = out.reshape(n, c, h * w) if channels_first or c == 1 else \
        out.reshape(n, h * w, c).transpose(0, 2, 1)
    kernels.resize_into(np.ascontiguousarray(images), planes,
                        *resize._kernel_args(n, hin, win, c, h, w, over_255=False))
    return out


def compiled_uint8():
    """The compiled kernels if they are usable for uint8 batches here, else None: decided once
    (after :func:`resize.compiled_kernel`'s own check) by comparing the kernel's uint8 results
    with :func:`to_uint8_reference` on random images (values at .5 included); any difference
    warns once (RuntimeWarning) and the reference is used from then on."""
    if _state:
        return _state[0]
    with _lock:
        if not _state:
            kernels, problem = compiled_kernel(), None
            rng = np.random.default_rng(13)
            for shape, size in (((3, 28, 28, 1), (32, 32)), ((2, 20, 36, 3), (9, 50)),
                                ((16, 28, 28, 1), (32, 32)), ((6, 20, 36, 3), (9, 50)),
                                ((2, 2, 2, 1), (4, 4)), ((2, 12, 12, 3), (12, 7)),
                                ((90, 4, 5, 3), (3, 7))):  # 270 planes: blocks
                x = rng.integers(0, 256, shape, dtype=np.uint8)
                want = to_uint8_reference(x, size)
                for cf in (False, True) if kernels is not None else ():
                    got = _kernel_uint8(kernels, x, size, cf)
                    if not np.array_equal(got.transpose(0, 2, 3, 1) if cf else got, want):
                        problem = f"its uint8 result for {shape} -> {size} differs"
            if problem is not None:
                warnings.warn(f"shardstream: the compiled resize kernel cannot be used for "
                              f"uint8 batches ({problem} from the numpy reference); using the "
                              f"reference, bitwise the same but slower", RuntimeWarning,
                              stacklevel=3)
                kernels = None
            _state.append(kernels)
    return _state[0]


def to_uint8(images: np.ndarray, resize_to: tuple[int, int] | None = None, *,
             out: np.ndarray | None = None, channels_first: bool = False) -> np.ndarray:
    """uint8 (N, h, w, C), or (N, C, h, w) with ``channels_first``, from uint8 ``images``
    (N, H, W, C): bitwise :func:`to_uint8_reference` (transposed for ``channels_first``),
    through the compiled kernel when :func:`compiled_uint8` is usable.  ``out``: a uint8 array
    of the result's shape that receives it."""
    images, (n, hin, win, c), (h, w) = checked_batch(images, resize_to, "to_uint8")
    shape = (n, c, h, w) if channels_first else (n, h, w, c)
    if out is not None and (out.dtype != np.uint8 or out.shape != shape):
        raise InputError(f"to_uint8: out must be uint8 of shape {shape}, "
                         f"got {out.dtype} {out.shape}")
    if (h, w) == (hin, win):
        got = images.transpose(0, 3, 1, 2) if channels_first else images
    else:
        kernels = compiled_uint8() if n else None
        if kernels is not None:
            if out is not None and out.flags.c_contiguous:
                return _kernel_uint8(kernels, images, (h, w), channels_first, out)
            got = _kernel_uint8(kernels, images, (h, w), channels_first)
        else:
            got = to_uint8_reference(images, (h, w))
            got = got.transpose(0, 3, 1, 2) if channels_first else got
    if out is None:  # always a new array: never a view of the caller's images
        return got.copy(order="C") if np.may_share_memory(got, images) else \
            np.ascontiguousarray(got)
    np.copyto(out, got)
    return out


def to_pixels(images: np.ndarray, resize_to, dtype: str = "float32", *, out=None,
              channels_first: bool = False) -> np.ndarray:
    """The batch of ``images`` uint8 (N, H, W, C) as the loaders give it: :func:`resize.to_float`
    for ``dtype="float32"``, :func:`to_uint8` for ``"uint8"`` (same arguments)."""
    convert = to_uint8 if dtype == "uint8" else to_float
    return convert(images, resize_to, out=out, channels_first=channels_first)


def converter(resize_to, dtype: str = "float32", *, channels_first: bool = False):
    """``convert(images) -> to_pixels(images, resize_to, dtype, channels_first=...)`` for the
    batches of one loader (``resize_to``, ``dtype`` already checked): bitwise the same, with
    less Python per batch.  The arguments and the kernel's availability are settled here, once;
    a uint8 (N >= 1, H, W, C) array then goes straight to the compiled kernel's call (the one
    :func:`to_pixels` ends in), anything else through :func:`to_pixels` itself.  Saves ~2 µs a
    batch, a seventh of a ``batch_size=1`` batch (docs/benchmarks.md, session 4)."""
    size = None if resize_to is None else resize.check_size(resize_to)

    def general(images):
        return to_pixels(images, resize_to, dtype, channels_first=channels_first)

    if dtype == "uint8":  # the kernel only resizes: the stored size is a copy (to_uint8's)
        kernels = compiled_uint8() if size is not None else None
        run = lambda images: _kernel_uint8(kernels, images, size, channels_first)  # noqa: E731
    else:
        kernels = compiled_kernel()
        run = lambda images: resize._compiled(  # noqa: E731
            kernels, images, size or images.shape[1:3], None, channels_first)
    if kernels is None:
        return general

    def convert(images):
        if type(images) is np.ndarray and images.dtype == np.uint8 and images.ndim == 4 \
                and images.shape[0] and (dtype == "float32" or images.shape[1:3] != size):
            return run(images)
        return general(images)
    return convert
