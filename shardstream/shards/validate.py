"""Validation of a manifest's fields, shared by ``manifest.json`` and the index: every
problem is a :class:`~shardstream.errors.ManifestError` naming the manifest and the field."""

from __future__ import annotations

import re

import numpy as np

from ..errors import ManifestError
from . import index as _index
from .names import ENCODINGS, SHARD_EXTENSIONS, is_plain_name
from .shardinfo import ShardTable

FORMAT_VERSION = 1
SHA256 = re.compile(r"[0-9a-f]{64}\Z")
IMAGE_DTYPE = "uint8"
FIX = "the manifest is damaged or was not written by shardstream: re-run `shardstream convert`"


def header(v: Validator, obj: dict) -> dict:
    """The validated manifest fields other than ``shards``, as :class:`Manifest` arguments."""
    version = v.get(obj, "format_version")
    if not is_int(version):
        v.fail("format_version", f"must be an integer, got {version!r}")
    if version != FORMAT_VERSION:
        raise ManifestError(
            f"manifest {v.where}: unknown format_version {version} (this shardstream reads "
            f"version {FORMAT_VERSION}); upgrade shardstream, or re-run `shardstream convert` "
            f"with this version")
    dataset = v.name(v.get(obj, "dataset"), "dataset")
    split = v.name(v.get(obj, "split"), "split")
    num_samples = v.count(v.get(obj, "num_samples"), "num_samples")

    image = v.obj(v.get(obj, "image"), "image")
    shape = v.get(image, "shape", "image.shape")
    if (not isinstance(shape, list) or len(shape) != 3
            or not all(is_int(d) and d > 0 for d in shape)):
        v.fail("image.shape", f"must be [height, width, channels] of positive integers, "
                              f"got {shape!r}")
    dtype = v.get(image, "dtype", "image.dtype")
    if dtype != IMAGE_DTYPE:
        v.fail("image.dtype", f"must be {IMAGE_DTYPE!r}, got {dtype!r}")
    encoding = v.get(image, "encoding", "image.encoding")
    if encoding not in ENCODINGS:
        v.fail("image.encoding", f"must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
    if encoding == "png" and shape[2] not in (1, 3):
        v.fail("image.shape", f"png images have 1 (grey) or 3 (RGB) channels, got {shape[2]}")

    classes = v.get(obj, "classes")
    if (not isinstance(classes, list) or not classes
            or not all(isinstance(c, str) and c for c in classes)):
        v.fail("classes", f"must be a non-empty list of non-empty strings, got "
                          f"{short(classes)}")
    if len(set(classes)) != len(classes):
        v.fail("classes", "holds the same class name twice")
    label_counts = v.get(obj, "label_counts")
    if not isinstance(label_counts, list):
        v.fail("label_counts", f"must be a list of counts, got {short(label_counts)}")
    for i, c in enumerate(label_counts):
        v.count(c, f"label_counts[{i}]")
    if len(label_counts) != len(classes):
        v.fail("label_counts", f"has {len(label_counts)} entries for {len(classes)} classes")
    if sum(label_counts) != num_samples:
        v.fail("label_counts", f"add up to {sum(label_counts)}, but num_samples is "
                               f"{num_samples}")

    source = v.obj(v.get(obj, "source"), "source")
    if not isinstance(source.get("synthetic"), bool):
        v.fail("source.synthetic", f"must be true or false, got "
                                   f"{short(source.get('synthetic', '<missing>'))}")
    created_by = obj.get("created_by", "")
    if not isinstance(created_by, str):
        v.fail("created_by", f"must be a string, got {short(created_by)}")

    return dict(dataset=dataset, split=split, num_samples=num_samples, image_shape=tuple(shape),
                encoding=encoding, classes=tuple(classes), label_counts=tuple(label_counts),
                source=source, format_version=version)


def table_shards(v: Validator, table: np.ndarray, num_samples: int) -> dict:
    """``{format: ShardTable}`` from an index's shard table, checked as the JSON's shards are
    (plain unique names with the format's extension, counts > 0 adding up to ``num_samples``,
    the formats agreeing on the samples per shard)."""
    shards = {}
    codes = table["format"]
    if not table.size or np.any(codes >= len(_index.FORMATS)) or np.any(np.diff(codes) < 0):
        v.fail("shards", "must list the shards of known formats, format by format")
    names = np.ascontiguousarray(table["name"])
    if np.unique(names).size != names.size:
        v.fail("shards", "list the same shard name twice")
    # plain file names, checked on the bytes (as the JSON's regex): not empty, no leading '.',
    # no '/', '\\' or control character, no '..'
    raw = names.view(np.uint8).reshape(names.size, -1)
    plain = ((raw[:, 0] != 0) & (raw[:, 0] != ord(".")) & (np.char.find(names, b"..") < 0)
             & ~np.any((raw == ord("/")) | (raw == ord("\\")) | (raw == 0x7F)
                       | ((raw > 0) & (raw < 0x20)), axis=1))
    for i in np.flatnonzero(np.any(raw >= 0x80, axis=1)):  # non-ASCII names must be UTF-8
        try:
            names[i].decode("utf-8")
        except UnicodeDecodeError:
            v.fail("shards", f"holds a shard name that is not UTF-8: {short(names[i])}")
    first = None
    for code in np.unique(codes):
        fmt = _index.FORMATS[code]
        rows = np.flatnonzero(codes == code)
        ext = SHARD_EXTENSIONS[fmt]
        ok = plain[rows] & np.char.endswith(names[rows], ext.encode())
        if not ok.all():
            bad = int(np.flatnonzero(~ok)[0])
            v.fail(f"shards.{fmt}[{bad}].name", f"must be a plain file name ending in {ext}, "
                                                f"got {short(names[rows[bad]])}")
        counts = table["num_samples"][rows]
        if np.any(counts <= 0) or np.any(table["bytes"][rows] < 0):
            i = int(np.flatnonzero((counts <= 0) | (table["bytes"][rows] < 0))[0])
            v.fail(f"shards.{fmt}[{i}]", "has a sample count <= 0 or negative bytes")
        if int(counts.sum()) != num_samples:
            v.fail(f"shards.{fmt}", f"hold {int(counts.sum())} samples in all, but num_samples "
                                    f"is {num_samples}")
        if first is not None and not np.array_equal(counts, shards[first].num_samples):
            v.fail(f"shards.{fmt}", f"disagree with shards.{first} on the samples per shard; "
                                    f"both formats must hold the same samples")
        first = first or fmt
        shards[fmt] = ShardTable(names[rows], counts.astype(np.int64),
                                 table["bytes"][rows].astype(np.int64),
                                 np.ascontiguousarray(table["sha256"][rows]))
    return shards


def is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def short(x, limit=60) -> str:
    text = repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def sorted_keys(x):
    if isinstance(x, dict):
        return {k: sorted_keys(x[k]) for k in sorted(x)}
    if isinstance(x, (list, tuple)):
        return [sorted_keys(i) for i in x]
    return x


class Validator:
    """Builds :class:`ManifestError` messages naming the manifest and the field."""

    def __init__(self, where):
        self.where = where

    def fail(self, fieldname, problem):
        raise ManifestError(f"manifest {self.where}: field '{fieldname}' {problem}; {FIX}")

    def obj(self, x, fieldname):
        if not isinstance(x, dict):
            if fieldname == "the top level":
                raise ManifestError(f"manifest {self.where}: the top level must be a JSON object, "
                                    f"got {type(x).__name__}; {FIX}")
            self.fail(fieldname, f"must be a JSON object, got {short(x)}")
        return x

    def get(self, obj, key, fieldname=None):
        if key not in obj:
            raise ManifestError(f"manifest {self.where}: field '{fieldname or key}' is missing; "
                                f"{FIX}")
        return obj[key]

    def count(self, x, fieldname):
        if not is_int(x):
            self.fail(fieldname, f"must be an integer, got {short(x)}")
        if x < 0:
            self.fail(fieldname, f"must not be negative, got {x}")
        return x

    def name(self, x, fieldname):
        if not is_plain_name(x):
            self.fail(fieldname, f"must be a plain name (no '/', '\\', '..', control characters "
                                 f"or leading '.'), got {short(x)}")
        return x
