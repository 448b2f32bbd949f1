"""The compiled half of the PNG fast path that walks chunks and inflates (``_zinflate``, zlib
called from numba without the GIL), the :class:`Spans` it reads, and decoding a shard in
parts on several threads: the same bytes as the Python walk, never a read outside a payload,
the same pixels and messages whatever the path or the thread count."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardstream import config
from shardstream.errors import InputError, ShardError
from shardstream.shards import imagecodec
from shardstream.shards.imagecodec import _IEND, _SIGNATURE, _chunk, decode_pngs, encode_png
from shardstream.shards.spans import Spans

SHAPE = (5, 6, 1)
HEAD = _SIGNATURE + _chunk(b"IHDR", (6).to_bytes(4, "big") + (5).to_bytes(4, "big") +
                           bytes((8, 0, 0, 0, 0)))
SIZE = 5 * (1 + 6)


@pytest.fixture(scope="module")
def inflate():
    function = imagecodec._compiled_inflate()
    assert function is not None  # numba and libz work on every machine the suite runs on
    return function


def compiled(inflate, payloads):
    """(ok bool (n,), raw uint8 (n, 5, 7)) of the compiled walk over ``payloads``."""
    raw = np.zeros((len(payloads), 5, 7), np.uint8)
    ok = np.zeros(len(payloads), bool)
    inflate(Spans.of(payloads), HEAD, raw, ok)
    return ok, raw


def test_spans_cut_one_buffer():
    buffer = np.frombuffer(b"abcdefghij", np.uint8)
    spans = Spans(buffer, [0, 3, 3, 7], [3, 3, 7, 10])
    assert len(spans) == 4
    assert [bytes(p) for p in spans] == [b"abc", b"", b"defg", b"hij"]
    assert bytes(spans[-1]) == b"hij" and spans[2].readonly
    assert [bytes(p) for p in spans.take([3, 0, 0])] == [b"hij", b"abc", b"abc"]
    assert [bytes(p) for p in spans[1:3]] == [b"", b"defg"]
    assert spans.take([1]).buffer is buffer  # no payload bytes copied
    assert Spans.of(spans) is spans
    joined = Spans.of([b"xy", memoryview(b"z"), bytearray(b"")])
    assert [bytes(p) for p in joined] == [b"xy", b"z", b""]
    assert joined.starts.tolist() == [0, 2, 3] and joined.stops.tolist() == [2, 3, 3]


@pytest.mark.parametrize("starts,stops", [([0], [11]), ([-1], [2]), ([4], [3]), ([0, 1], [1])])
def test_spans_out_of_bounds_are_refused(starts, stops):
    with pytest.raises(ValueError, match="Spans"):
        Spans(np.zeros(10, np.uint8), starts, stops)


def test_spans_offsets_are_checked_integers_kept_read_only():
    buffer = np.zeros(10, np.uint8)
    starts = np.array([0, 4])
    spans = Spans(buffer, starts, [4, 10])
    starts[1] = 9  # the caller's array changes: the checked copy does not
    assert spans.starts.tolist() == [0, 4] and not spans.starts.flags.writeable
    with pytest.raises(ValueError):
        spans.stops[0] = 100
    with pytest.raises(ValueError, match="integer offsets"):
        Spans(buffer, [0.9], [3.9])
    with pytest.raises(ValueError, match="integer indices"):
        spans.take([True, False])


def test_spans_need_a_flat_uint8_buffer():
    with pytest.raises(ValueError, match="C-contiguous uint8"):
        Spans(np.zeros((2, 5), np.uint8), [0], [1])
    with pytest.raises(ValueError, match="C-contiguous uint8"):
        Spans(np.zeros(10, np.uint8)[::2], [0], [1])


def test_compiled_walk_takes_what_the_converters_write(inflate):
    images = np.random.default_rng(0).integers(0, 256, (20,) + SHAPE, dtype=np.uint8)
    payloads = [encode_png(im) for im in images]
    ok, raw = compiled(inflate, payloads)
    assert ok.all()
    for p, r in zip(payloads, raw):
        assert r.tobytes() == imagecodec._filtered_rows(p, HEAD, SIZE)


def good_payload(seed: int) -> bytes:
    image = np.random.default_rng(seed).integers(0, 256, SHAPE, dtype=np.uint8)
    return encode_png(image)


@st.composite
def damaged(draw):
    """A valid PNG of SHAPE with one damage: a byte changed, cut short, bytes appended, the
    IDAT length field set to anything, or the zlib stream given trailing or missing bytes."""
    payload = bytearray(good_payload(draw(st.integers(0, 50))))
    kind = draw(st.sampled_from(["byte", "cut", "append", "length", "stream"]))
    if kind == "byte":
        i = draw(st.integers(0, len(payload) - 1))
        payload[i] = draw(st.integers(0, 255))
    elif kind == "cut":
        del payload[draw(st.integers(0, len(payload) - 1)):]
    elif kind == "append":
        payload += draw(st.binary(min_size=1, max_size=20))
    elif kind == "length":
        payload[33:37] = draw(st.integers(0, 2**32 - 1)).to_bytes(4, "big")
    else:
        stream = bytes(payload[41:-16])
        stream = stream + draw(st.binary(max_size=8)) if draw(st.booleans()) else \
            stream[:draw(st.integers(0, len(stream)))]
        payload = bytearray(HEAD + _chunk(b"IDAT", stream) + _IEND)
    return bytes(payload)


@given(st.lists(damaged(), min_size=1, max_size=8))
def test_compiled_walk_agrees_with_the_python_walk(inflate, payloads):
    """Whatever it takes, the Python walk takes too, with the same bytes; whatever the Python
    walk takes in the single-IDAT layout, it takes too (the rest goes to the Python walk)."""
    ok, raw = compiled(inflate, payloads)
    for p, taken, r in zip(payloads, ok, raw):
        rows = imagecodec._filtered_rows(p, HEAD, SIZE)
        if taken:
            assert rows == r.tobytes()
        single = len(p) >= 45 and len(p) == 33 + 24 + int.from_bytes(p[33:37], "big")
        if rows is not None and single:
            assert taken


def test_no_read_outside_a_payload_under_numba_boundscheck(tmp_path):
    """The same damaged payloads (every prefix, every byte flipped, huge length fields), each
    alone at the very end of its buffer, through the walk compiled with bounds checks."""
    script = textwrap.dedent("""
        import numpy as np
        from shardstream.shards import imagecodec
        from shardstream.shards.imagecodec import encode_png
        from shardstream.shards.spans import Spans
        head = imagecodec._SIGNATURE + imagecodec._chunk(
            b"IHDR", (6).to_bytes(4, "big") + (5).to_bytes(4, "big") + bytes((8, 0, 0, 0, 0)))
        good = encode_png(np.arange(30, dtype=np.uint8).reshape(5, 6, 1))
        cases = [good[:k] for k in range(len(good) + 1)]
        cases += [good[:i] + bytes([good[i] ^ 0xFF]) + good[i + 1:] for i in range(len(good))]
        cases += [good[:33] + n.to_bytes(4, "big") + good[37:] for n in (0, 1, 2**31, 2**32 - 1)]
        inflate = imagecodec._compiled_inflate()
        taken = 0
        for p in cases:
            buffer = np.frombuffer(p, np.uint8).copy()
            raw, ok = np.zeros((1, 5, 7), np.uint8), np.zeros(1, bool)
            inflate(Spans(buffer, [0], [len(p)]), head, raw, ok)
            taken += int(ok[0])
        print("taken", taken, "of", len(cases))
    """)
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the intact payload only: every other byte is compared (signature, IHDR, IEND) or under
    # the IDAT CRC, and every cut or length field leaves the layout
    assert proc.stdout.split() == ["taken", "1", "of", str(2 * 82 + 1 + 4)]


def test_decode_threads(monkeypatch):
    monkeypatch.delenv("SHARDSTREAM_DECODE_THREADS", raising=False)
    cpus = config.usable_cpus()
    part = imagecodec.PART_IMAGES
    assert imagecodec.decode_threads(0) == 1
    assert imagecodec.decode_threads(2 * part - 1) == 1
    assert imagecodec.decode_threads(2 * part) == min(cpus, 2)
    assert imagecodec.decode_threads(10**9) == cpus
    monkeypatch.setenv("SHARDSTREAM_DECODE_THREADS", "3")
    assert imagecodec.decode_threads(10**9) == 3
    assert imagecodec.decode_threads(2 * part) == 2
    for bad in ("0", "-2", "two", "1.5"):
        monkeypatch.setenv("SHARDSTREAM_DECODE_THREADS", bad)
        with pytest.raises(InputError, match=rf"SHARDSTREAM_DECODE_THREADS='{bad}'.*>= 1"):
            imagecodec.decode_threads(10**9)


@pytest.mark.parametrize("text,limit", [("200000 100000", 2), ("150000 100000", 2),
                                        ("50000 100000", 1), ("max 100000", None),
                                        ("garbage", None), (None, None)])
def test_usable_cpus_follow_a_cgroup_quota(monkeypatch, tmp_path, text, limit):
    affinity = len(os.sched_getaffinity(0))
    path = tmp_path / "cpu.max"
    if text is not None:
        path.write_text(text + "\n")
    monkeypatch.setattr(config, "CGROUP_CPU_MAX", str(path))
    assert config.usable_cpus() == (affinity if limit is None else min(affinity, limit))


@pytest.mark.parametrize("threads", [1, 2, 3, 7])
@pytest.mark.parametrize("libz", [True, False])
def test_a_shard_in_parts_gives_the_same_pixels_and_messages(monkeypatch, threads, libz):
    rng = np.random.default_rng(threads)
    images = rng.integers(0, 256, (40, 4, 3, 3), dtype=np.uint8)
    payloads = [encode_png(im) for im in images]
    payloads[33] = payloads[33][:-20] + _IEND  # not decodable: the fast path and Pillow fail
    monkeypatch.setattr(imagecodec, "decode_threads", lambda n: threads)
    if not libz:
        monkeypatch.setattr(imagecodec, "_inflate_state", [None])
    good = [i for i in range(40) if i != 33]
    got = decode_pngs(Spans.of(payloads).take(good), (4, 3, 3), "t.tar", 0)
    assert np.array_equal(got, images[good])
    with pytest.raises(ShardError, match="t.tar: sample 000000133 is not a readable PNG"):
        decode_pngs(payloads, (4, 3, 3), "t.tar", 100)


def test_more_parts_than_images_and_threads_that_cannot_start(monkeypatch):
    """A part count above the image count; helper threads refused (a process limit, or
    interpreter shutdown on Python 3.12): the calling thread decodes those parts itself."""
    images = np.random.default_rng(9).integers(0, 256, (3, 4, 4, 1), dtype=np.uint8)
    payloads = [encode_png(im) for im in images]
    monkeypatch.setattr(imagecodec, "decode_threads", lambda n: 5)
    assert np.array_equal(decode_pngs(payloads, (4, 4, 1), "t.tar", 0), images)
    real = threading.Thread.start

    def start(self):
        if self.name == "shardstream-png":
            raise RuntimeError("can't start new thread")
        return real(self)
    monkeypatch.setattr(threading.Thread, "start", start)
    assert np.array_equal(decode_pngs(payloads, (4, 4, 1), "t.tar", 0), images)


def test_an_error_in_a_decoding_thread_reaches_the_caller(monkeypatch):
    def part(lo, hi):
        if lo:
            raise RuntimeError(f"part {lo}-{hi} failed")
    with pytest.raises(RuntimeError, match="part 5-10 failed"):
        imagecodec._side_by_side(part, [(0, 5), (5, 10)])


def test_a_zlib_bomb_is_not_inflated(inflate):
    ihdr = (1).to_bytes(4, "big") * 2 + bytes((8, 0, 0, 0, 0))
    payload = _SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(
        b"IDAT", zlib.compress(b"\x00\x07" + bytes(64 << 20), 9)) + _IEND
    raw, ok = np.zeros((1, 1, 2), np.uint8), np.zeros(1, bool)
    inflate(Spans.of([payload]), payload[:33], raw, ok)
    assert not ok[0]  # zlib stopped at the 2 bytes it was given room for
    assert decode_pngs([payload], (1, 1, 1), "t.tar", 0).tolist() == [[[[7]]]]
