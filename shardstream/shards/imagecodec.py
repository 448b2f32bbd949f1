"""Image encodings inside a shard: raw ``.npy`` members and deterministic PNG.

PNG decoding has a fast path for the PNGs our converters write (8-bit gray or RGB, not
interlaced, IHDR / IDAT / IEND chunks only): chunks walked and CRC-checked here, the image data
inflated by :mod:`zlib`, and the row filters undone for the whole shard in one compiled call
(:mod:`._png`) -- bitwise Pillow's pixels, 4x faster (docs/benchmarks.md).  Any payload the
fast path does not take (another PNG flavour, damage of any kind) goes through Pillow, which
decodes it or names the problem exactly as before; without numba every payload does.
"""

from __future__ import annotations

import io
import threading
import warnings
import zlib

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


_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_unfilter_state: list = []  # [] not tried; [function] usable; [None] not (warned once)
_unfilter_lock = threading.Lock()


def _compiled_unfilter():
    """:func:`._png.unfilter` if numba can compile it here, else None (one RuntimeWarning)."""
    if not _unfilter_state:
        with _unfilter_lock:
            if not _unfilter_state:
                try:
                    from ._png import unfilter  # noqa: PLC0415 - numba loads on first use only
                    unfilter(np.zeros((1, 1, 2), np.uint8), np.ones(1, bool),
                             np.zeros((1, 1, 1), np.uint8), 1)
                except Exception as exc:  # ImportError (no numba), a numba compile error, ...
                    warnings.warn(f"shardstream: the compiled PNG decoder cannot be used "
                                  f"({type(exc).__name__}: {exc}); decoding with Pillow, the "
                                  f"same pixels but slower", RuntimeWarning, stacklevel=3)
                    unfilter = None
                _unfilter_state.append(unfilter)
    return _unfilter_state[0]


_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the whole IEND chunk (no data, its CRC)


def _chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC of type and data."""
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def _filtered_rows(payload, head: bytes, size: int):
    """The inflated image data (``size`` bytes: per row a filter byte and the filtered bytes)
    of a PNG that starts with ``head`` (the signature and the IHDR chunk expected) and has
    IDAT and IEND chunks only after it, every CRC right; None for anything else (Pillow then
    decodes it or says what is wrong)."""
    mv = memoryview(payload)
    n = len(head)
    if mv[:n] != head:
        return None
    stop = n + 8 + int.from_bytes(mv[n:n + 4], "big")
    if mv[n + 4:n + 8] == b"IDAT" and mv[stop + 4:] == _IEND:  # one IDAT: what we write
        if zlib.crc32(mv[n + 4:stop]) != int.from_bytes(mv[stop:stop + 4], "big"):
            return None
        idat = [mv[n + 8:stop]]
    else:
        idat = _idat_chunks(mv, n)
        if idat is None:
            return None
    inflate = zlib.decompressobj()
    try:  # at most size + 1 bytes: a small payload must not inflate into gigabytes
        data = inflate.decompress(idat[0] if len(idat) == 1 else b"".join(idat), size + 1)
    except zlib.error:
        return None
    # eof: the stream ended within the limit and its checksum matched (bytes after it ignored)
    return data if inflate.eof and len(data) == size else None


def _idat_chunks(mv: memoryview, pos: int):
    """The data of the IDAT chunks from ``pos`` up to IEND (the general walk: several IDATs,
    bytes after IEND); None when a CRC is wrong or another chunk comes."""
    end, idat = len(mv), []
    while True:
        if pos + 12 > end:
            return None
        stop = pos + 8 + int.from_bytes(mv[pos:pos + 4], "big")
        if stop + 4 > end or zlib.crc32(mv[pos + 4:stop]) != int.from_bytes(mv[stop:stop + 4],
                                                                              "big"):
            return None
        kind = mv[pos + 4:pos + 8]
        if kind == b"IDAT":
            idat.append(mv[pos + 8:stop])
        elif kind == b"IEND" and idat:
            return idat
        else:
            return None
        pos = stop + 4


def _decode_fast(payloads, shape, out: np.ndarray) -> np.ndarray:
    """Decode into ``out`` (n, H, W, C) every payload the fast path takes; returns bool (n,),
    which ones it did."""
    h, w, c = shape
    n = len(payloads)
    ok = np.zeros(n, bool)
    unfilter = _compiled_unfilter() if c in (1, 3) else None
    if unfilter is None or not n:
        return ok
    head = _SIGNATURE + _chunk(b"IHDR", w.to_bytes(4, "big") + h.to_bytes(4, "big") +
                                bytes((8, 0 if c == 1 else 2, 0, 0, 0)))  # 8 bits, no interlace
    size = h * (1 + w * c)
    raw = np.empty((n, h, 1 + w * c), np.uint8)
    buf = memoryview(raw.reshape(-1))
    for i, payload in enumerate(payloads):
        try:
            data = _filtered_rows(payload, head, size)
        except (TypeError, ValueError, BufferError):  # not a plain bytes-like payload
            data = None
        if data is not None:
            buf[i * size:(i + 1) * size] = data
            ok[i] = True
    unfilter(raw, ok, out.reshape(n, h, w * c), c)
    return ok


def decode_pngs(payloads, shape, shard: str, first_id: int) -> np.ndarray:
    """uint8 (n, H, W, C) from n PNG payloads (bytes-like), each checked to be an (H, W) image of
    the mode matching C (L for 1, RGB for 3); :class:`ShardError` naming the shard and sample.
    The pixels are Pillow's, through the fast path where it applies (module docstring)."""
    h, w, c = shape
    mode = {1: "L", 3: "RGB"}.get(c)
    out = np.empty((len(payloads), h, w, c), dtype=np.uint8)
    done = _decode_fast(payloads, (int(h), int(w), int(c)), out)
    for i, payload in enumerate(payloads):
        if done[i]:
            continue
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
