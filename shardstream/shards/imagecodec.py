"""Image encodings inside a shard: raw ``.npy`` members and deterministic PNG."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from ..errors import InputError, ShardError
from .names import sample_key

# fixed PNG settings: the same pixels always give the same bytes
PNG_COMPRESS_LEVEL = 6

def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of one uint8 (H, W, C) image, C = 1 (mode L) or 3 (RGB); deterministic
    (fixed compression level, no metadata chunks)."""
    if image.shape[2] == 1:
        pil = Image.fromarray(np.ascontiguousarray(image[:, :, 0]), mode="L")
    elif image.shape[2] == 3:
        pil = Image.fromarray(np.ascontiguousarray(image), mode="RGB")
    else:
        raise InputError(f"png encoding needs 1 or 3 channels, the images have {image.shape[2]}; "
                         f"use encoding='npy'")
    out = io.BytesIO()
    pil.save(out, format="PNG", compress_level=PNG_COMPRESS_LEVEL, optimize=False)
    return out.getvalue()


def npy_header(shape) -> bytes:
    """The bytes ``numpy.save`` writes before the data of a C-order uint8 array of ``shape``
    (format 1.0)."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        out, {"descr": "|u1", "fortran_order": False, "shape": tuple(int(d) for d in shape)})
    return out.getvalue()


def encode_npy(images: np.ndarray):
    """Iterator over the ``.npy`` bytes of each uint8 (H, W, C) image of ``images`` (n, H, W, C):
    exactly what ``numpy.save(f, image, allow_pickle=False)`` writes."""
    head = npy_header(images.shape[1:])
    for image in images:
        yield head + np.ascontiguousarray(image).tobytes()


def decode_pngs(payloads, shape, shard: str, first_id: int) -> np.ndarray:
    """uint8 (n, H, W, C) from n PNG payloads (bytes-like), each checked to be an (H, W) image of
    the mode matching C (L for 1, RGB for 3); :class:`ShardError` naming the shard and sample."""
    h, w, c = shape
    mode = {1: "L", 3: "RGB"}.get(c)
    out = np.empty((len(payloads), h, w, c), dtype=np.uint8)
    for i, payload in enumerate(payloads):
        try:
            with Image.open(io.BytesIO(payload), formats=("PNG",)) as im:
                if im.size != (w, h) or im.mode != mode:
                    raise ShardError(f"{shard}: sample {sample_key(first_id + i)} is a {im.mode} "
                                     f"image of {im.size[1]}x{im.size[0]}, expected {mode} "
                                     f"{h}x{w}; re-create the shard")
                out[i] = np.asarray(im).reshape(h, w, c)
        except ShardError:
            raise
        except Exception as exc:  # PIL raises many kinds (OSError, SyntaxError, ValueError ...)
            raise ShardError(f"{shard}: sample {sample_key(first_id + i)} is not a readable PNG "
                             f"({type(exc).__name__}: {exc}); the shard is damaged: re-create or "
                             f"re-download it") from None
    return out
