"""Image encodings inside a shard: raw ``.npy`` members and deterministic PNG.

PNG decoding has a fast path for the PNGs our converters write (8-bit gray or RGB, not
interlaced, IHDR / IDAT / IEND chunks only), in two compiled calls per shard that hold no GIL:
chunks walked, CRC-checked and the image data inflated by zlib (:mod:`._zinflate`), then the
row filters undone (:mod:`._png`) -- bitwise Pillow's pixels, ~6 µs an image against ~35 for
Pillow (docs/benchmarks.md).  What the compiled walk does not take (several IDAT chunks, bytes
after IEND) gets the same checks from a Python walk here; anything else (another PNG flavour,
damage of any kind) goes through Pillow, which decodes it or names the problem exactly as
before.  Without zlib's shared library the Python walk takes every payload; without numba,
Pillow does.
"""

from __future__ import annotations

import io
import threading
import warnings
import zlib

import numpy as np
from PIL import Image

from .. import config
from ..errors import InputError, ShardError
from .names import sample_key
from .spans import Spans

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
_inflate_state: list = []  # the same for the compiled chunk walk + inflate
_compile_lock = threading.Lock()


def _first_use(state: list, load, what: str, instead: str):
    """``state[0]``, filled on first use with ``load()``'s function, or None (and one
    RuntimeWarning naming the cause) when it raises."""
    if not state:
        with _compile_lock:
            if not state:
                try:
                    function = load()
                except Exception as exc:  # ImportError (no numba, no libz), a compile error...
                    warnings.warn(f"shardstream: {what} cannot be used ({type(exc).__name__}: "
                                  f"{exc}); {instead}: the same pixels, but slower",
                                  RuntimeWarning, stacklevel=4)
                    function = None
                state.append(function)
    return state[0]


def _load_unfilter():
    from ._png import unfilter  # noqa: PLC0415 - numba loads on first use only
    unfilter(np.zeros((1, 1, 2), np.uint8), np.ones(1, bool), np.zeros((1, 1, 1), np.uint8), 1)
    return unfilter


def _load_inflate():
    from ._zinflate import ULONG, inflate_idat  # noqa: PLC0415 - as above, and libz

    def inflate(spans: Spans, head: bytes, raw: np.ndarray, ok: np.ndarray) -> None:
        inflate_idat(spans.buffer, spans.starts, spans.stops, np.frombuffer(head, np.uint8),
                     _IEND_ARRAY, raw, ok, np.zeros(1, ULONG))

    payload = _SIGNATURE + _chunk(b"IHDR", bytes((0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0, 0)))
    payload += _chunk(b"IDAT", zlib.compress(b"\x00\x07")) + _IEND
    raw, ok = np.zeros((1, 1, 2), np.uint8), np.zeros(1, bool)
    inflate(Spans.of([payload]), payload[:33], raw, ok)
    if not (ok[0] and raw.tolist() == [[[0, 7]]]):
        raise RuntimeError("a 1x1 test PNG did not inflate right")
    return inflate


def _compiled_unfilter():
    """:func:`._png.unfilter` if numba can compile it here, else None (one RuntimeWarning)."""
    return _first_use(_unfilter_state, _load_unfilter, "the compiled PNG decoder",
                      "decoding with Pillow")


def _compiled_inflate():
    """``inflate(spans, head, raw, ok)`` (:func:`._zinflate.inflate_idat` on a
    :class:`Spans`) if numba and zlib's shared library work here, else None (one
    RuntimeWarning)."""
    return _first_use(_inflate_state, _load_inflate, "the compiled PNG inflate",
                      "inflating PNGs from Python")


_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the whole IEND chunk (no data, its CRC)
_IEND_ARRAY = np.frombuffer(_IEND, np.uint8)


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


#: the fewest images a decoding thread gets: below 2 x this a shard is decoded by one thread
PART_IMAGES = 1024


def decode_threads(n: int) -> int:
    """How many threads decode ``n`` PNGs: at most ``$SHARDSTREAM_DECODE_THREADS`` or else one
    per usable CPU (:func:`config.usable_cpus`), each with at least :data:`PART_IMAGES` images
    (the fast path holds no GIL, so they run in parallel)."""
    return max(1, min(config.decode_threads() or config.usable_cpus(), n // PART_IMAGES))


def _decode_fast(payloads, shape, out: np.ndarray) -> np.ndarray:
    """Decode into ``out`` (n, H, W, C) every payload the fast path takes, in
    :func:`decode_threads` parts side by side; returns bool (n,), which ones it did."""
    h, w, c = shape
    n = len(payloads)
    ok = np.zeros(n, bool)
    unfilter = _compiled_unfilter() if c in (1, 3) else None
    if unfilter is None or not n:
        return ok
    head = _SIGNATURE + _chunk(b"IHDR", w.to_bytes(4, "big") + h.to_bytes(4, "big") +
                                bytes((8, 0 if c == 1 else 2, 0, 0, 0)))  # 8 bits, no interlace
    inflate = _compiled_inflate()
    if inflate is not None:
        try:
            payloads = Spans.of(payloads)
        except (TypeError, ValueError, BufferError):  # not all plain bytes-like: Python walk
            inflate = None
    rows = out.reshape(n, h, w * c)

    def part(lo: int, hi: int) -> None:
        raw = np.empty((hi - lo, h, 1 + w * c), np.uint8)
        if inflate is not None:
            inflate(payloads[lo:hi], head, raw, ok[lo:hi])
        size = h * (1 + w * c)
        buf = memoryview(raw.reshape(-1))
        for i in (lo + np.flatnonzero(~ok[lo:hi])).tolist():  # what the compiled walk left
            try:
                data = _filtered_rows(payloads[i], head, size)
            except (TypeError, ValueError, BufferError):  # not a plain bytes-like payload
                data = None
            if data is not None:
                buf[(i - lo) * size:(i - lo + 1) * size] = data
                ok[i] = True
        unfilter(raw, ok[lo:hi], rows[lo:hi], c)

    cuts = np.linspace(0, n, min(decode_threads(n), n) + 1).astype(int).tolist()
    _side_by_side(part, list(zip(cuts[:-1], cuts[1:])))
    return ok


def _side_by_side(function, args: list) -> None:
    """``function(*a)`` for each ``a`` of ``args``: the first in this thread, the others in
    threads of their own, all joined before returning (an exception in any is re-raised); a
    part whose thread cannot start (a process limit, interpreter shutdown) runs here too."""
    errors: list = []

    def run(a):
        try:
            function(*a)
        except BaseException as exc:  # re-raised in the calling thread
            errors.append(exc)

    threads, here = [], [args[0]]
    for a in args[1:]:
        thread = threading.Thread(target=run, args=(a,), name="shardstream-png")
        try:
            thread.start()
        except RuntimeError:  # "can't start new thread"
            here.append(a)
        else:
            threads.append(thread)
    for a in here:
        run(a)
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def decode_pngs(payloads, shape, shard: str, first_id: int) -> np.ndarray:
    """uint8 (n, H, W, C) from n PNG payloads (bytes-like, or a :class:`Spans`), each checked to
    be an (H, W) image of the mode matching C (L for 1, RGB for 3); :class:`ShardError` naming
    the shard and sample.  The pixels are Pillow's, through the fast path where it applies
    (module docstring)."""
    h, w, c = shape
    mode = {1: "L", 3: "RGB"}.get(c)
    out = np.empty((len(payloads), h, w, c), dtype=np.uint8)
    done = _decode_fast(payloads, (int(h), int(w), int(c)), out)
    for i in np.flatnonzero(~done).tolist():
        payload = payloads[i]
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
