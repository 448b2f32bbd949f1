"""Decoding the images of a source (image folders, other tools' shards) into one uint8 stack.

:func:`decode_image` turns an encoded image (PNG, JPEG or any format Pillow reads; ``.npy``
arrays) into uint8 (H, W, C), C = 1 for grayscale (Pillow modes ``L``, ``1``, ``LA``) and 3 for
colour (``RGB``, and ``P``, ``RGBA``, ``CMYK`` ... converted to RGB; alpha is dropped);
16/32-bit and float images are refused.  :class:`ImageStack` collects the decoded images of a
conversion and checks that they are all of one kind (grayscale or RGB) and one size, naming the
first odd one; with ``size=(H, W)`` it resizes every image of another size to (H, W) instead,
with Pillow's bilinear filter (``Image.resize(..., BILINEAR)`` per image, as PIL rounds it to
uint8): images already (H, W) are kept bit for bit.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from ..errors import InputError

_GREY = {"L": "L", "1": "L", "LA": "L", "I;16": None, "I;16B": None, "I;16L": None, "I": None,
         "F": None}
ARRAY_EXTENSIONS = ("npy",)
_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")


def _kind(channels: int) -> str:
    return "RGB" if channels == 3 else "grayscale"


def decode_image(data, where: str, ext: str | None = None, alpha=None) -> np.ndarray:
    """uint8 (H, W, C) of the encoded image ``data`` (bytes-like); ``ext`` ``"npy"`` reads a
    NumPy array file (uint8 (H, W), (H, W, 1) or (H, W, 3)), anything else goes to Pillow.
    :class:`InputError` naming ``where`` when it cannot be read or is of an unsupported kind.
    ``alpha``: a list that ``where`` is appended to when the image had an alpha channel (or a
    transparent palette) that was dropped."""
    if ext in ARRAY_EXTENSIONS:
        try:
            a = np.load(io.BytesIO(bytes(data)), allow_pickle=False)
        except Exception as exc:  # ValueError, OSError, EOFError ...
            raise InputError(f"{where}: not a readable .npy array ({type(exc).__name__}: "
                             f"{exc})") from None
        if a.ndim == 2:
            a = a[..., None]
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] not in (1, 3) or 0 in a.shape:
            raise InputError(f"{where}: a {a.dtype} array of shape {a.shape}; images must be "
                             f"uint8 (H, W), (H, W, 1) or (H, W, 3)")
        return np.ascontiguousarray(a)
    try:
        with Image.open(io.BytesIO(data)) as im:
            mode = _GREY.get(im.mode, "RGB")
            if mode is None:
                raise InputError(f"{where}: {im.mode} images (16/32-bit) are not supported; "
                                 f"save it as 8-bit grayscale or RGB")
            if alpha is not None and (im.mode in _ALPHA or "transparency" in im.info):
                alpha.append(where)
            a = np.asarray(im.convert(mode))
    except InputError:
        raise
    except Exception as exc:  # PIL raises many kinds
        raise InputError(f"{where}: not a readable PNG/JPEG image ({type(exc).__name__}: "
                         f"{exc})") from None
    return a.reshape(a.shape[0], a.shape[1], 1 if mode == "L" else 3)


def resize_bilinear(image: np.ndarray, size) -> np.ndarray:
    """uint8 (H, W, C) ``image`` resized to ``size`` = (h, w) with PIL's BILINEAR filter."""
    h, w = size
    c = image.shape[2]
    pil = Image.fromarray(image[..., 0] if c == 1 else image, mode="L" if c == 1 else "RGB")
    return np.asarray(pil.resize((w, h), Image.Resampling.BILINEAR)).reshape(h, w, c)


class ImageStack:
    """The decoded images of one conversion, checked to be of one kind and one size.

    ``add(image, where)`` takes uint8 (h, w, C) and returns its index; ``size``: (H, W) to
    resize images of another size to (see the module doc), else a size differing from the first
    image's is an :class:`InputError` naming ``where`` and the first image.  ``hint``: what to
    do about an odd size, appended to that message.  ``array()``: uint8 (N, H, W, C).
    ``keep=False`` checks the images without holding them (``shape`` and ``len`` still count).
    """

    def __init__(self, size=None, hint="resize or remove it", keep=True):
        self.size, self.hint = (tuple(size) if size is not None else None), hint
        self.images, self.first, self.resized = [], None, 0
        self.keep, self.count = keep, 0       # keep=False: check the images, hold none

    def add(self, image: np.ndarray, where: str) -> int:
        h, w, c = image.shape
        if self.first is None:
            self.first = (where, (h, w), c)
        if c != self.first[2]:
            raise InputError(f"{where}: {_kind(c)} image among {_kind(self.first[2])} ones "
                             f"(like {self.first[0]}); all images must be one kind")
        want = self.size or self.first[1]
        if (h, w) != want:
            if self.size is None:
                raise InputError(f"{where}: image of {w}x{h} (WxH), expected {want[1]}x"
                                 f"{want[0]} like {self.first[0]}; all images must be one "
                                 f"size: {self.hint}")
            if self.keep:
                image = resize_bilinear(image, want)
            self.resized += 1
        if self.keep:
            self.images.append(image)
        self.count += 1
        return self.count - 1

    def __len__(self):
        return self.count

    @property
    def shape(self) -> tuple:
        """(N, H, W, C) of the images added (resized ones at their new size)."""
        h, w = self.size or self.first[1]
        return (self.count, h, w, self.first[2])

    def array(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """uint8 (n, H, W, C) of images ``start .. stop - 1``."""
        return np.stack(self.images[start:stop])
