"""The fast PNG path of ``decode_pngs`` (imagecodec + the compiled row unfilter): bitwise
Pillow's pixels for every PNG row filter, and every PNG it does not take goes to Pillow."""

from __future__ import annotations

import io
import sys
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from shardstream.errors import ShardError
from shardstream.shards import imagecodec
from shardstream.shards.imagecodec import _IEND, _SIGNATURE, _chunk, decode_pngs, encode_png


def pil_pixels(payload, c):
    with Image.open(io.BytesIO(payload)) as im:
        return np.asarray(im).reshape(im.size[1], im.size[0], c)


def filtered(image: np.ndarray, filters) -> bytes:
    """PNG's filtered rows of ``image`` uint8 (h, w, C), row y with filter ``filters[y]``
    (0-4), written from the specification (ISO 15948 section 9) in numpy."""
    h, w, c = image.shape
    x = image.reshape(h, w * c).astype(np.int32)
    out = []
    for y in range(h):
        a = np.concatenate([np.zeros(c, np.int32), x[y, :-c]])
        b = x[y - 1] if y else np.zeros(w * c, np.int32)
        cc = np.concatenate([np.zeros(c, np.int32), b[:-c]])
        f = filters[y]
        if f == 0:
            pred = 0
        elif f == 1:
            pred = a
        elif f == 2:
            pred = b
        elif f == 3:
            pred = (a + b) // 2
        else:
            p = a + b - cc
            pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - cc)
            pred = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, cc))
        out.append(bytes([f]) + ((x[y] - pred) % 256).astype(np.uint8).tobytes())
    return b"".join(out)


def png(image: np.ndarray, filters, idat_parts: int = 1, extra: bytes = b"",
        after_iend: bytes = b"") -> bytes:
    """A PNG of ``image`` with the given row filters, its zlib stream split over
    ``idat_parts`` IDAT chunks, ``extra`` chunks before the first IDAT."""
    h, w, c = image.shape
    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes((8, 0 if c == 1 else 2, 0, 0, 0))
    data = zlib.compress(filtered(image, filters), 9)
    cut = np.linspace(0, len(data), idat_parts + 1).astype(int)
    idats = b"".join(_chunk(b"IDAT", data[a:b]) for a, b in zip(cut[:-1], cut[1:]))
    return _SIGNATURE + _chunk(b"IHDR", ihdr) + extra + idats + _IEND + after_iend


@pytest.fixture
def fast_path():
    """The fast path is usable here (numba compiles the unfilter)."""
    assert imagecodec._compiled_unfilter() is not None
    return True


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("h,w", [(28, 28), (1, 1), (5, 1), (1, 7), (20, 30)])
def test_every_row_filter_is_bitwise_pillow(fast_path, c, h, w):
    rng = np.random.default_rng(100 * h + w + c)
    images = rng.integers(0, 256, (6, h, w, c), dtype=np.uint8)
    images[1] = 255  # extremes: the modulo-256 wrap in every predictor
    images[2] = 0
    payloads = []
    for k, image in enumerate(images):
        rows = [(k + y) % 5 for y in range(h)]  # every filter on every image size
        payloads.append(png(image, rows))
    payloads.append(png(images[0], [4] * h))
    payloads.append(png(images[3], [3] * h))
    got = decode_pngs(payloads, (h, w, c), "t.tar", 0)
    want = np.stack([pil_pixels(p, c) for p in payloads])
    assert np.array_equal(want[:6], images)  # the test's PNGs are right
    assert np.array_equal(got, want)


def test_what_our_converter_writes_is_taken_and_decoded_bitwise(fast_path, monkeypatch):
    rng = np.random.default_rng(3)
    smooth = np.cumsum(rng.integers(0, 3, (40, 28, 28, 1)), axis=2).astype(np.uint8)
    opened = []
    real = Image.open
    monkeypatch.setattr(imagecodec.Image, "open", lambda *a, **k: opened.append(1) or
                        real(*a, **k))
    for images in (smooth, rng.integers(0, 256, (10, 20, 30, 3), dtype=np.uint8)):
        payloads = [encode_png(im) for im in images]
        assert np.array_equal(decode_pngs(payloads, images.shape[1:], "t.tar", 0), images)
    assert opened == []  # every one through the fast path


def test_other_pngs_go_to_pillow_with_the_same_result(fast_path, monkeypatch):
    """Several IDATs, an ancillary chunk, bytes after IEND, a bad IDAT CRC (which Pillow does
    not check): the fast path steps aside or takes them; the pixels are Pillow's either way."""
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (9, 11, 1), dtype=np.uint8)
    good = png(image, [4] * 9)
    bad_crc = bytearray(good)
    bad_crc[-13] ^= 1  # the last byte of the IDAT CRC
    payloads = [png(image, [1] * 9, idat_parts=3),
                png(image, [2] * 9, extra=_chunk(b"tEXt", b"Comment\x00hi")),
                png(image, [3] * 9, after_iend=b"junk"),
                bytes(bad_crc), good]
    opened = []
    real = Image.open
    monkeypatch.setattr(imagecodec.Image, "open", lambda *a, **k: opened.append(1) or
                        real(*a, **k))
    got = decode_pngs(payloads, (9, 11, 1), "t.tar", 0)
    assert np.array_equal(got, np.stack([image] * 5))
    assert len(opened) == 2  # the tEXt chunk and the bad CRC went to Pillow


def test_damage_is_named_as_before(fast_path):
    image = np.zeros((4, 4, 1), np.uint8)
    good = png(image, [0] * 4)
    unknown_filter = png(image, [0, 0, 0, 0])
    raw = bytearray(zlib.decompress(unknown_filter[33 + 8:-12 - 4]))
    raw[5] = 7  # row 1's filter type: no such filter
    broken = _SIGNATURE + unknown_filter[8:33] + _chunk(b"IDAT", zlib.compress(bytes(raw))) + _IEND
    for payload, words in ((broken, "not a readable PNG"), (good[:40], "not a readable PNG"),
                           (encode_png(np.zeros((4, 5, 1), np.uint8)), "expected L 4x4")):
        with pytest.raises(ShardError, match=rf"t.tar: sample 000000008 .*{words}"):
            decode_pngs([good, good, payload], (4, 4, 1), "t.tar", 6)


@pytest.mark.parametrize("state,module,words", [
    # no numba: Pillow decodes everything
    ("_unfilter_state", "_png", "compiled PNG decoder cannot be used.*Pillow"),
    # no zlib shared library (or numba cannot call it): the Python walk inflates
    ("_inflate_state", "_zinflate", "compiled PNG inflate cannot be used.*from Python"),
])
def test_without_a_compiled_part_the_fallback_decodes_and_says_so(monkeypatch, state, module,
                                                                   words):
    images = np.random.default_rng(5).integers(0, 256, (3, 6, 5, 3), dtype=np.uint8)
    payloads = [encode_png(im) for im in images]
    monkeypatch.setattr(imagecodec, state, [])
    monkeypatch.setitem(sys.modules, f"shardstream.shards.{module}", None)  # import fails
    with pytest.warns(RuntimeWarning, match=words):
        got = decode_pngs(payloads, (6, 5, 3), "t.tar", 0)
    assert np.array_equal(got, images) and getattr(imagecodec, state) == [None]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        assert np.array_equal(decode_pngs(payloads, (6, 5, 3), "t.tar", 0), images)


def test_a_small_payload_does_not_inflate_into_a_huge_buffer(fast_path):
    """A 1x1 PNG whose zlib stream goes on with 64 MiB of zeros (a damaged or hostile
    payload of ~64 KB): the fast path inflates at most one row's worth more than the image
    needs and steps aside; Pillow (which stops at the rows it needs) gives the pixel."""
    import tracemalloc

    ihdr = (1).to_bytes(4, "big") * 2 + bytes((8, 0, 0, 0, 0))
    bomb = zlib.compress(b"\x00\x07" + bytes(64 << 20), 9)
    payload = _SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", bomb) + _IEND
    assert len(payload) < 100_000
    head = _SIGNATURE + _chunk(b"IHDR", ihdr)
    tracemalloc.start()
    try:
        assert imagecodec._filtered_rows(payload, head, 2) is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert decode_pngs([payload], (1, 1, 1), "t.tar", 0).tolist() == [[[[7]]]]
