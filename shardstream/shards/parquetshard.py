"""Parquet shards (pyarrow): one row group per shard, one row per sample.

Columns: ``key`` (string, ``"%09d"`` global sample index), ``image``, ``label`` (int64).
``image`` is, for the png encoding, ``struct<bytes: binary, path: string>`` (the Hugging Face
``datasets`` Image feature; ``path`` is ``"<key>.png"``) and, for npy, ``binary`` holding the raw
H*W*C uint8 bytes of the (H, W, C) image in C order.  Schema metadata:

- ``huggingface``: ``{"info": {"features": ...}}`` so ``datasets`` sees ``Image`` (png) and a
  ``ClassLabel`` with the class names;
- ``shardstream``: ``{"image_shape": [H, W, C], "encoding": ..., "first_id": ...}``.

Fixed writer options (see :data:`WRITE_OPTIONS`) make the output byte-identical for identical
input with one pyarrow version.  Pages carry CRC checksums, which the reader verifies, so a
flipped bit in a page is an error rather than a wrong pixel.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import InputError, ShardError
from .names import key_digits
from .spans import Spans

# Compression: none for npy (raw pixels are read straight out of the page buffer at memory
# speed; zstd made reading a 10,000-image shard ~6x slower), zstd level 1 for png (the PNG bytes
# are compressed already; zstd trims the container overhead and costs little next to decoding).
COMPRESSION = {"npy": {"compression": "none"},
               "png": {"compression": "zstd", "compression_level": 1}}
WRITE_OPTIONS = dict(
    use_dictionary=False,
    write_statistics=["key", "label"],
    write_page_checksum=True,
    write_page_index=False,
    store_schema=True,
    data_page_version="2.0",
)


def _schema(encoding: str, shape, classes, first_id: int):

    if encoding == "png":
        image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        image_feature = {"_type": "Image"}
    else:
        image_type = pa.binary()
        image_feature = {"dtype": "binary", "_type": "Value"}
    features = {"key": {"dtype": "string", "_type": "Value"},
                "image": image_feature,
                "label": {"names": list(classes), "_type": "ClassLabel"}}
    meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode(),
            b"shardstream": json.dumps({"image_shape": [int(d) for d in shape],
                                        "encoding": encoding,
                                        "first_id": int(first_id)}).encode()}
    # nullable fields (the Arrow default): `datasets` only applies the features in the metadata
    # to fields equal to its own, which are nullable; the reader rejects nulls all the same
    return pa.schema([pa.field("key", pa.string()), pa.field("image", image_type),
                      pa.field("label", pa.int64())], metadata=meta)


def write_parquet(fileobj, first_id: int, payloads, labels, encoding: str, shape,
                  classes) -> None:
    """Write one Parquet shard to the binary file object ``fileobj``.

    ``payloads``: uint8 (n, H, W, C) images for npy, or n PNG byte strings for png;
    ``labels``: int64 (n,); ``shape`` = (H, W, C); ``classes``: the class names.  Deterministic.
    """

    n = len(labels)
    digits = key_digits(first_id, n)
    width = digits.shape[1]
    key_offsets = (np.arange(n + 1, dtype=np.int32) * width)
    keys = pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(key_offsets),
                                                  pa.py_buffer(digits.tobytes())])
    if encoding == "npy":
        raw = np.ascontiguousarray(payloads, dtype=np.uint8)
        per = int(np.prod(shape))
        if per * n >= 2**31:
            raise InputError(f"a Parquet shard holds under 2 GiB of image data, {n} images of "
                             f"{shape} are {per * n} bytes; use a smaller --shard-size")
        offsets = np.arange(n + 1, dtype=np.int32) * per
        images = pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets),
                                                        pa.py_buffer(raw.reshape(-1))])
    else:
        paths = pa.array([f"{k}.png" for k in digits.view(f"S{width}").ravel().astype(str)],
                         pa.string())
        images = pa.StructArray.from_arrays([pa.array(payloads, pa.binary()), paths],
                                            names=["bytes", "path"])
    table = pa.Table.from_arrays(
        [keys, images, pa.array(np.asarray(labels, dtype=np.int64))],
        schema=_schema(encoding, shape, classes, first_id))
    pq.write_table(table, fileobj, row_group_size=max(n, 1), **WRITE_OPTIONS,
                   **COMPRESSION[encoding])


def _fail(shard, problem):
    raise ShardError(f"{shard}: {problem}; the shard is damaged or does not belong to this "
                     f"manifest: run `shardstream verify` and re-create or re-download it")


def _binary_parts(chunked, shard, what):
    """(offsets int64 (n+1,), values uint8 (m,)) of a binary/string column without nulls:
    value i is ``values[offsets[i]:offsets[i+1]]``."""

    arr = chunked.combine_chunks() if chunked.num_chunks != 1 else chunked.chunk(0)
    if arr.null_count:
        _fail(shard, f"the {what} column has {arr.null_count} missing values")
    large = pa.types.is_large_binary(arr.type) or pa.types.is_large_string(arr.type)
    _, off_buf, val_buf = arr.buffers()
    offs = np.frombuffer(off_buf, dtype=np.int64 if large else np.int32)
    offs = offs[arr.offset:arr.offset + len(arr) + 1].astype(np.int64)
    values = np.frombuffer(val_buf, np.uint8) if val_buf is not None else np.zeros(0, np.uint8)
    return offs, values


def read_parquet(data, shard: str, first_id: int, n: int, shape: tuple, encoding: str):
    """Parse a Parquet shard's bytes (``data``: bytes-like; ``shard``: its name for messages),
    which must hold exactly the samples ``first_id .. first_id+n-1`` of (H, W, C) = ``shape``.

    Returns ``(payloads, labels)``: labels int64 (n,); payloads uint8 (n, H, W, C) for npy
    (writable, a view of the column buffer pyarrow decoded), a :class:`.spans.Spans` of the n
    PNG byte strings (cut from that buffer) for png.  Raises :class:`ShardError` (never a
    pyarrow error).
    """

    try:
        pf = pq.ParquetFile(pa.BufferReader(pa.py_buffer(data)), page_checksum_verification=True)
        rows = pf.metadata.num_rows
        schema = pf.schema_arrow
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... on damaged files
        _fail(shard, f"not a readable Parquet file ({type(exc).__name__}: {exc})")
    if rows != n:
        _fail(shard, f"holds {rows} rows, the manifest says {n} samples")
    if schema.names != ["key", "image", "label"]:
        _fail(shard, f"has columns {schema.names}, expected ['key', 'image', 'label']")
    want = _schema(encoding, shape, (), first_id)
    for name in ("key", "image", "label"):
        if schema.field(name).type != want.field(name).type:
            _fail(shard, f"column {name} is {schema.field(name).type}, expected "
                         f"{want.field(name).type} for {encoding} images")
    try:
        meta = json.loads((schema.metadata or {}).get(b"shardstream", b"{}"))
    except ValueError:
        meta = None
    expect = {"image_shape": list(shape), "encoding": encoding, "first_id": first_id}
    if not isinstance(meta, dict) or any(meta.get(k) != v for k, v in expect.items()):
        _fail(shard, f"its metadata says {meta}, the manifest says {expect}")
    try:
        table = pf.read(use_threads=False)
    except Exception as exc:
        _fail(shard, f"cannot be read ({type(exc).__name__}: {exc})")
    if table.num_rows != n:
        _fail(shard, f"holds {table.num_rows} rows, the manifest says {n} samples")

    offs, values = _binary_parts(table.column("key"), shard, "key")
    digits = key_digits(first_id, n)
    width = digits.shape[1]
    if (not np.array_equal(np.diff(offs), np.full(n, width))
            or not np.array_equal(values[offs[0]:offs[-1]], digits.reshape(-1))):
        got = [str(k) for k in table.column("key").to_pylist()]
        bad = next((i for i in range(n) if got[i] != digits[i].tobytes().decode()), 0)
        _fail(shard, f"row {bad} has key {got[bad]!r}, expected {digits[bad].tobytes().decode()!r}")

    labels_col = table.column("label")
    if labels_col.null_count:
        _fail(shard, f"the label column has {labels_col.null_count} missing values")
    labels = labels_col.to_numpy().astype(np.int64, copy=False)

    per = int(np.prod(shape))
    image = table.column("image")
    if encoding == "npy":
        offs, values = _binary_parts(image, shard, "image")
        lengths = np.diff(offs)
        if not np.array_equal(lengths, np.full(n, per)):
            bad = int(np.flatnonzero(lengths != per)[0])
            _fail(shard, f"row {bad} (key {digits[bad].tobytes().decode()}) holds "
                         f"{lengths[bad]} image bytes, expected {per} for uint8 {shape}")
        # no copy: the values buffer is pyarrow's own decoded (writable) allocation, which
        # nothing else shares once ``table`` is gone; the images are a view of it
        images = values[offs[0]:offs[-1]].reshape((n,) + tuple(shape))
        return images, labels
    struct = image.combine_chunks() if image.num_chunks != 1 else image.chunk(0)
    if struct.null_count:
        _fail(shard, f"the image column has {struct.null_count} missing values")
    offs, values = _binary_parts(pa.chunked_array([struct.flatten()[0]]), shard, "image.bytes")
    return Spans(values, offs[:-1], offs[1:]), labels
