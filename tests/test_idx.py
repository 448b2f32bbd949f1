"""The IDX reader/writer (issue 2 item 2, issue 7 item 2: fuzzing)."""

import gzip

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardstream.converters.idx import (
    MAGIC_IMAGES,
    MAGIC_LABELS,
    idx_bytes,
    parse_idx,
    read_idx,
    write_idx,
)
from shardstream.errors import InputError


def test_round_trip_gz_and_plain(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7).astype(np.uint8)
    write_idx(tmp_path / "img.gz", images)
    write_idx(tmp_path / "lbl", labels, compress=False)
    got_i, got_l = read_idx(tmp_path / "img.gz"), read_idx(tmp_path / "lbl")
    assert got_i.dtype == np.uint8 and got_i.shape == (7, 28, 28)
    assert np.array_equal(got_i, images) and np.array_equal(got_l, labels)
    # the header is the documented big-endian layout
    raw = (tmp_path / "lbl").read_bytes()
    assert raw[:8] == bytes([0, 0, 8, 1, 0, 0, 0, 7])
    assert gzip.decompress((tmp_path / "img.gz").read_bytes())[:16] == bytes(
        [0, 0, 8, 3, 0, 0, 0, 7, 0, 0, 0, 28, 0, 0, 0, 28])


def test_writing_is_deterministic(tmp_path):
    a = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    write_idx(tmp_path / "a.gz", a)
    write_idx(tmp_path / "b.gz", a)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()
    assert idx_bytes(a) == idx_bytes(a.copy())


def _labels_file(n=5):
    return MAGIC_LABELS.to_bytes(4, "big") + n.to_bytes(4, "big") + bytes(range(n))


@pytest.mark.parametrize("data, problem", [
    (b"", "empty"),
    (b"\x00\x00\x08", "truncated"),
    ((1234).to_bytes(4, "big") + b"\0" * 20, "wrong magic number 1234"),
    (_labels_file()[:-2], "truncated"),
    (_labels_file() + b"\0\0", "wrong dimensions"),
    (MAGIC_IMAGES.to_bytes(4, "big") + b"\0\0\0\1\0\0\0\0\0\0\0\x1c", "wrong dimensions"),
    (MAGIC_IMAGES.to_bytes(4, "big") + b"\0\0\0\1", "truncated"),
    (b"\x1f\x8b\x08\x00garbage garbage garbage", "not a valid gzip file"),
    (gzip.compress(_labels_file())[:-9], "not a valid gzip file"),
])
def test_bad_files_name_the_file_and_problem(tmp_path, data, problem):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(data)
    with pytest.raises(InputError) as info:
        read_idx(path)
    msg = str(info.value)
    assert str(path) in msg and problem in msg
    assert "\n" not in msg


def test_missing_file_and_wrong_kind(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_idx(tmp_path / "nope.gz")
    (tmp_path / "l").write_bytes(_labels_file())
    with pytest.raises(InputError, match="swapped"):
        read_idx(tmp_path / "l", expect=MAGIC_IMAGES)


def _flip(data, at, bit):
    data = bytearray(data)
    data[at % len(data)] ^= 1 << bit
    return bytes(data)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(
    st.binary(max_size=64),
    st.builds(lambda head, tail: head + tail,
              st.sampled_from([_labels_file()[:4], MAGIC_IMAGES.to_bytes(4, "big")]),
              st.binary(max_size=64)),
    st.builds(lambda data, cut: gzip.compress(data, mtime=0)[:cut],
              st.binary(max_size=64), st.integers(0, 100)),
    st.builds(lambda n, at, bit: _flip(_labels_file(n), at, bit), st.integers(0, 20),
              st.integers(0, 7), st.integers(0, 7)),
))
def test_fuzz_parse_idx_only_raises_input_error(data):
    """Arbitrary bytes: parse_idx returns a uint8 array whose size matches the header, or
    raises InputError — nothing else, never a hang (each example is tiny)."""
    try:
        arr = parse_idx(bytes(data), "fuzz.idx")
    except InputError as exc:
        assert "fuzz.idx" in str(exc)
        return
    assert arr.dtype == np.uint8 and arr.ndim in (1, 3)
