"""Reading Hugging Face Parquet files (``datasets.Dataset.to_parquet``, the Hub's Parquet
exports): an Image column and a label column.

- The image column is the one whose feature in the schema's ``huggingface`` metadata is an
  ``Image``, else the one struct column ``{bytes: binary, path: string}``; each row must hold
  the encoded image bytes (rows that only name a ``path`` are refused).
- The label column is ``label_column`` when given (``--label``), else the one ``ClassLabel``
  column of the metadata, else the one integer column (or the integer column named ``label``);
  class names come from the ``ClassLabel`` feature when there is one.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import InputError

_LABEL_NAMES = ("label", "labels")


def _features(schema) -> dict:
    """The ``datasets`` features recorded in the schema metadata ({} when none)."""
    raw = (schema.metadata or {}).get(b"huggingface")
    try:
        meta = json.loads(raw) if raw else {}
        features = meta.get("info", {}).get("features", {})
    except (ValueError, AttributeError):
        return {}
    return features if isinstance(features, dict) else {}


def _image_column(schema, features, where):
    def is_struct(f):
        return (pa.types.is_struct(f.type) and {f.type.field(i).name for i in
                                                range(f.type.num_fields)} >= {"bytes", "path"})

    tagged = [n for n in schema.names if isinstance(features.get(n), dict)
              and features[n].get("_type") == "Image"]
    found = tagged or [f.name for f in schema if is_struct(f)]
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ({', '.join(found)})"
        raise InputError(f"{where}: {what} image columns (a Hugging Face Image feature, "
                         f"struct<bytes, path>) among columns {schema.names}; the file needs "
                         f"exactly one")
    if not is_struct(schema.field(found[0])):
        raise InputError(f"{where}: column {found[0]} is {schema.field(found[0]).type}, not "
                         f"struct<bytes, path>")
    return found[0]


def _label_column(schema, features, where, label_column):
    ints = [f.name for f in schema if pa.types.is_integer(f.type)]
    if label_column is not None:
        if label_column not in schema.names:
            raise InputError(f"{where}: --label {label_column}: no such column; the columns "
                             f"are {schema.names}")
        if label_column not in ints:
            raise InputError(f"{where}: --label {label_column}: the column is "
                             f"{schema.field(label_column).type}, not integers")
        return label_column
    tagged = [n for n in ints if isinstance(features.get(n), dict)
              and features[n].get("_type") == "ClassLabel"]
    named = [n for n in ints if n in _LABEL_NAMES]
    for found in (tagged, named, ints):
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise InputError(f"{where}: {len(found)} label columns ({', '.join(found)}); "
                             f"choose one with --label COLUMN")
    raise InputError(f"{where}: no integer label column among {schema.names}")


def read_rows(data: bytes, where: str, label_column=None):
    """Parse one Parquet file's bytes: ``(rows, class names or None, label column)`` where
    ``rows`` yields ``(row where, image bytes, label)`` in order."""
    try:
        pf = pq.ParquetFile(pa.BufferReader(pa.py_buffer(data)))
        schema = pf.schema_arrow
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
        raise InputError(f"{where}: not a readable Parquet file ({type(exc).__name__}: "
                         f"{exc})") from None
    features = _features(schema)
    image_col = _image_column(schema, features, where)
    label_col = _label_column(schema, features, where, label_column)
    feature = features.get(label_col)
    names = None
    if isinstance(feature, dict) and feature.get("_type") == "ClassLabel" \
            and isinstance(feature.get("names"), list):
        names = tuple(str(n) for n in feature["names"])
    try:
        table = pf.read(columns=[image_col, label_col], use_threads=False)
    except Exception as exc:
        raise InputError(f"{where}: cannot be read ({type(exc).__name__}: {exc})") from None
    labels_arr = table.column(label_col)
    if labels_arr.null_count:
        bad = int(np.flatnonzero(labels_arr.is_null().to_numpy(zero_copy_only=False))[0])
        raise InputError(f"{where}: row {bad} has no label ({label_col} is null)")
    labels = labels_arr.to_numpy().astype(np.int64)
    images = table.column(image_col).combine_chunks()
    if images.null_count:
        bad = int(np.flatnonzero(images.is_null().to_numpy(zero_copy_only=False))[0])
        raise InputError(f"{where}: row {bad} has no image ({image_col} is null)")
    blobs = images.field("bytes").to_pylist()
    paths = images.field("path").to_pylist()

    def rows():
        for i, (blob, label) in enumerate(zip(blobs, labels.tolist())):
            at = f"{where}: row {i}"
            if blob is None:
                raise InputError(f"{at}: the image holds no bytes (path {paths[i]!r} only); "
                                 f"save the dataset with the images embedded "
                                 f"(Dataset.to_parquet does) and convert again")
            if label < 0:
                raise InputError(f"{at}: label {label} ({label_col}); -1 marks an unlabelled "
                                 f"sample in Hugging Face datasets: drop those rows first")
            yield at, blob, label

    return rows(), names, label_col
