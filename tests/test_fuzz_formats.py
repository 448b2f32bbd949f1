"""Fuzzing (issue 7, item 2) of the tar shard reader, the Parquet shard reader and the manifest
parser: arbitrary bytes and mutated valid inputs never hang, never read outside the buffer and
never raise anything but ShardError / ManifestError.  Bounded: a few hundred examples each."""

import io
import json
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardstream import shards
from shardstream.errors import ManifestError, ShardError
from shardstream.shards.imagecodec import decode_pngs
from shardstream.shards.manifest import Manifest, ShardInfo
from shardstream.shards.parquetshard import read_parquet
from shardstream.shards.tarshard import read_tar

SHAPE = (3, 2, 1)
N = 4
FUZZ = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _shard(fmt, encoding, first_id=5):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N,) + SHAPE, dtype=np.uint8)
    labels = np.array([0, 1, 10, 2])
    buf = io.BytesIO()
    shards.write_shard(fmt, buf, first_id, images, labels, encoding, [str(i) for i in range(11)])
    return buf.getvalue()


VALID = {(fmt, enc): _shard(fmt, enc) for fmt in ("tar", "parquet") for enc in ("npy", "png")}


def _check_result(payloads, labels, encoding):
    assert labels.dtype == np.int64 and labels.shape == (N,)
    if encoding == "npy":
        assert payloads.dtype == np.uint8 and payloads.shape == (N,) + SHAPE
    else:
        assert len(payloads) == N


def _tar_oracle(blob, encoding):
    """What Python's own tarfile and numpy read from the bytes: (payloads, labels) in member
    order, payloads uint8 (N, H, W, C) for npy or the PNG byte strings."""
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:") as tf:
        members = {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}
    keys = [f"{5 + i:09d}" for i in range(N)]
    labels = np.array([int(members[f"{k}.cls"]) for k in keys], dtype=np.int64)
    if encoding == "npy":
        payloads = np.stack([np.load(io.BytesIO(members[f"{k}.npy"]), allow_pickle=False)
                             for k in keys])
    else:
        payloads = [members[f"{k}.png"] for k in keys]
    return payloads, labels


def _same_content(got, oracle, encoding):
    """A shard that parses says what an independent reader of the same bytes says."""
    (payloads, labels), (want_payloads, want_labels) = got, oracle
    assert np.array_equal(labels, want_labels)
    if encoding == "npy":
        assert np.array_equal(payloads, want_payloads.reshape(payloads.shape))
    else:
        assert [bytes(p) for p in payloads] == list(want_payloads)


def _mutate(raw, data):
    """A mutated copy of ``raw``: byte flips, a cut, a splice or an insertion."""
    raw = bytearray(raw)
    kind = data.draw(st.sampled_from(["flip", "cut", "delete", "insert", "overwrite"]))
    pos = data.draw(st.integers(0, len(raw) - 1))
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            p = data.draw(st.integers(0, len(raw) - 1))
            raw[p] ^= data.draw(st.integers(1, 255))
    elif kind == "cut":
        del raw[pos:]
    elif kind == "delete":
        del raw[pos:pos + data.draw(st.integers(1, 1200))]
    elif kind == "insert":
        raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=600))
    else:
        chunk = data.draw(st.binary(min_size=1, max_size=64))
        raw[pos:pos + len(chunk)] = chunk
    return bytes(raw)


@pytest.mark.parametrize("encoding", ["npy", "png"])
@FUZZ
@given(blob=st.binary(max_size=4096))
def test_tar_reader_arbitrary_bytes(encoding, blob):
    try:
        payloads, labels = read_tar(blob, "f.tar", 5, N, SHAPE, encoding)
    except ShardError as exc:
        assert str(exc).startswith("f.tar: ")
    else:  # pragma: no cover - random bytes are never a valid shard
        _check_result(payloads, labels, encoding)


@pytest.mark.parametrize("encoding", ["npy", "png"])
@FUZZ
@given(data=st.data())
def test_tar_reader_mutated_shard(encoding, data):
    blob = _mutate(VALID["tar", encoding], data)
    try:
        payloads, labels = read_tar(blob, "f.tar", 5, N, SHAPE, encoding)
    except ShardError as exc:
        assert str(exc).startswith("f.tar: ")
        return
    _check_result(payloads, labels, encoding)
    _same_content((payloads, labels), _tar_oracle(blob, encoding), encoding)
    if encoding == "png":  # PNG decoding of mutated bytes: a valid image or ShardError
        try:
            images = decode_pngs(payloads, SHAPE, "f.tar", 5)
        except ShardError:
            return
        assert images.shape == (N,) + SHAPE


@pytest.mark.parametrize("encoding", ["npy", "png"])
@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_parquet_reader_mutated_shard(encoding, data):
    blob = _mutate(VALID["parquet", encoding], data)
    try:
        payloads, labels = read_parquet(blob, "f.parquet", 5, N, SHAPE, encoding)
    except ShardError as exc:
        assert str(exc).startswith("f.parquet: ")
        return
    _check_result(payloads, labels, encoding)
    table = pq.read_table(io.BytesIO(blob))
    want_labels = np.asarray(table.column("label").to_pylist(), dtype=np.int64)
    images = table.column("image").to_pylist()
    if encoding == "npy":
        want = np.frombuffer(b"".join(images), dtype=np.uint8).reshape((N,) + SHAPE)
    else:
        want = [im["bytes"] for im in images]
    _same_content((payloads, labels), (want, want_labels), encoding)


def _manifest_dict():
    shards = {"tar": (ShardInfo("train-000000.tar", 3, 10, "0" * 64),
                      ShardInfo("train-000001.tar", 1, 10, "1" * 64))}
    return json.loads(Manifest("ds", "train", 4, (2, 2, 1), "npy", ("a", "b"), (3, 1), shards,
                               {"synthetic": False}).to_json())


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                    | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                    max_leaves=12)


@FUZZ
@given(text=st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_manifest_parser_arbitrary_text(text):
    try:
        Manifest.from_json(text, "m.json")
    except ManifestError as exc:
        assert "m.json" in str(exc)


@FUZZ
@given(data=st.data())
def test_manifest_parser_mutated_fields(data):
    """Replace or delete one field anywhere in a valid manifest."""
    d = _manifest_dict()
    target = d
    while True:
        keys = list(target) if isinstance(target, dict) else list(range(len(target)))
        key = data.draw(st.sampled_from(keys))
        child = target[key]
        if isinstance(child, (dict, list)) and child and data.draw(st.booleans()):
            target = child
            continue
        break
    if isinstance(target, dict) and data.draw(st.booleans()):
        del target[key]
    else:
        target[key] = data.draw(JSON)
    try:
        m = Manifest.from_json(json.dumps(d), "m.json")
    except ManifestError as exc:
        assert "m.json" in str(exc)
        return
    # what parses is consistent
    assert int(m.shard_sizes.sum()) == m.num_samples == sum(m.label_counts)
    assert Manifest.from_json(m.to_json(), "again") == m
