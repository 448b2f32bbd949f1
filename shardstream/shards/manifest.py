"""The manifest of a converted split: ``<location>/manifest.json``.

It says what the shards hold (dataset, split, image shape and encoding, class names and counts)
and, per shard format, every shard's file name, sample count, size and sha256; plus where the
data came from (``source``; ``source["synthetic"]`` is true for a generated stand-in).  The
converter writes it last, so a folder without one is never taken for a finished conversion.

:meth:`Manifest.from_json` checks everything a reader relies on and raises
:class:`~shardstream.errors.ManifestError` naming the manifest and the field;
:meth:`Manifest.to_json` is deterministic (fixed key order, no timestamps), so converting the same
input twice gives the same bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ..errors import ManifestError, NotFoundError
from . import index as _index

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
ENCODINGS = ("npy", "png")
IMAGE_DTYPE = "uint8"
# shard formats and the file-name extension of each (the order is the order in the JSON)
SHARD_EXTENSIONS = {"tar": ".tar", "parquet": ".parquet"}

_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
# a plain file name: no path separators, no control characters, no '..', not hidden
_NAME = re.compile(r"[^./\\\x00-\x1f\x7f][^/\\\x00-\x1f\x7f]{0,254}\Z")
_FIX = "the manifest is damaged or was not written by shardstream: re-run `shardstream convert`"


@dataclass(frozen=True)
class ShardInfo:
    """One shard file: its name (relative to the split's location), sample count, size in bytes
    and sha256 (64 lowercase hex digits)."""

    name: str
    num_samples: int
    bytes: int
    sha256: str


class ShardTable(Sequence):
    """The shards of one format as columns (from the index, :mod:`.index`): a read-only
    sequence of :class:`ShardInfo` made on access, equal to any sequence of the same
    ShardInfos.  ``names`` bytes (S,), ``num_samples`` / ``bytes`` int64 (S,), ``sha256`` uint8
    (S, 32) raw digests."""

    __hash__ = None

    def __init__(self, names: np.ndarray, num_samples: np.ndarray, nbytes: np.ndarray,
                 sha256: np.ndarray):
        self.names, self.num_samples, self.bytes, self.sha256 = names, num_samples, nbytes, sha256
        for a in (names, num_samples, nbytes, sha256):
            a.setflags(write=False)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return tuple(self[j] for j in range(*i.indices(len(self))))
        return ShardInfo(self.names[i].decode("utf-8"), int(self.num_samples[i]),
                         int(self.bytes[i]), self.sha256[i].tobytes().hex())

    def __iter__(self):
        return iter(self._infos())

    def _infos(self) -> tuple:
        """Every ShardInfo, made once (vectorised) on the first full iteration."""
        infos = self.__dict__.get("_all")
        if infos is None:
            hexes = self.sha256.tobytes().hex()
            infos = tuple(ShardInfo(name.decode("utf-8"), n, b, hexes[64 * i:64 * i + 64])
                          for i, (name, n, b) in enumerate(zip(self.names.tolist(),
                                                               self.num_samples.tolist(),
                                                               self.bytes.tolist())))
            self.__dict__["_all"] = infos
        return infos

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_all"}

    def __eq__(self, other):
        if isinstance(other, ShardTable):
            return all(np.array_equal(getattr(self, k), getattr(other, k))
                       for k in ("names", "num_samples", "bytes", "sha256"))
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __repr__(self) -> str:
        return f"ShardTable({len(self)} shards)"


@dataclass(frozen=True)
class Manifest:
    """A converted split.

    ``image_shape`` is the stored (H, W, C) of every image (dtype always uint8); ``encoding`` is
    ``"npy"`` (raw uint8) or ``"png"``; ``classes`` the class names (label ``i`` is
    ``classes[i]``); ``label_counts[i]`` the samples of class ``i``; ``shards`` maps each format
    present (``"tar"``, ``"parquet"``) to its shards, in order — every format holds the same
    samples in the same order, so the per-shard counts agree.
    """

    dataset: str
    split: str
    num_samples: int
    image_shape: tuple
    encoding: str
    classes: tuple
    label_counts: tuple
    shards: dict = field(hash=False)
    source: dict = field(hash=False)
    format_version: int = FORMAT_VERSION

    image_dtype = IMAGE_DTYPE

    def __post_init__(self):
        # normalise what callers may pass as lists / numpy integers, so that a manifest built in
        # memory equals the same manifest read back from its JSON
        norm = {
            "num_samples": int(self.num_samples),
            "image_shape": tuple(int(d) for d in self.image_shape),
            "classes": tuple(str(c) for c in self.classes),
            "label_counts": tuple(int(c) for c in self.label_counts),
            "shards": {fmt: self.shards[fmt] if isinstance(self.shards[fmt], ShardTable) else
                       tuple(ShardInfo(str(s.name), int(s.num_samples), int(s.bytes),
                                       str(s.sha256)) for s in self.shards[fmt])
                       for fmt in SHARD_EXTENSIONS if fmt in self.shards}
            | {fmt: tuple(v) for fmt, v in self.shards.items() if fmt not in SHARD_EXTENSIONS},
            "source": dict(self.source),
            "format_version": int(self.format_version),
        }
        for name, value in norm.items():
            object.__setattr__(self, name, value)

    # -- derived ---------------------------------------------------------------------------

    @property
    def formats(self) -> tuple:
        """The shard formats present, in the canonical order (``"tar"`` before ``"parquet"``)."""
        return tuple(f for f in SHARD_EXTENSIONS if f in self.shards)

    @cached_property
    def shard_sizes(self) -> np.ndarray:
        """int64 (S,): samples per shard (the same for every format); read-only."""
        fmt = self.formats[0] if self.formats else None
        if fmt and isinstance(self.shards[fmt], ShardTable):
            return self.shards[fmt].num_samples
        sizes = np.array([s.num_samples for s in self.shards[fmt]] if fmt else [], dtype=np.int64)
        sizes.setflags(write=False)
        return sizes

    @cached_property
    def offsets(self) -> np.ndarray:
        """int64 (S+1,): global id of each shard's first sample; the last entry is
        ``num_samples``; read-only."""
        offsets = np.zeros(len(self.shard_sizes) + 1, dtype=np.int64)
        np.cumsum(self.shard_sizes, out=offsets[1:])
        offsets.setflags(write=False)
        return offsets

    @property
    def synthetic(self) -> bool:
        """True when the data is a generated stand-in (``source["synthetic"]``)."""
        return bool(self.source.get("synthetic", False))

    @property
    def num_shards(self) -> int:
        """Number of shards (per format)."""
        return len(self.shard_sizes)

    # -- JSON ------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The manifest as the JSON object written to disk (fixed key order)."""
        from .. import __version__

        return {
            "format_version": self.format_version,
            "dataset": self.dataset,
            "split": self.split,
            "num_samples": int(self.num_samples),
            "image": {"shape": [int(d) for d in self.image_shape], "dtype": IMAGE_DTYPE,
                      "encoding": self.encoding},
            "classes": list(self.classes),
            "label_counts": [int(c) for c in self.label_counts],
            "shards": {fmt: [{"name": s.name, "num_samples": int(s.num_samples),
                              "bytes": int(s.bytes), "sha256": s.sha256}
                             for s in self.shards[fmt]]
                       for fmt in self.formats},
            "source": self.source,
            "created_by": f"shardstream {__version__}",
        }

    def to_json(self) -> str:
        """Deterministic JSON text: the same manifest always gives the same string (indent 2,
        fixed key order, ``source`` keys sorted, ASCII only, trailing newline)."""
        d = self.to_dict()
        d["source"] = _sorted_keys(d["source"])
        try:
            text = json.dumps(d, indent=2, ensure_ascii=True, allow_nan=False) + "\n"
        except (TypeError, ValueError) as exc:
            raise ManifestError(f"the manifest of {self.dataset}/{self.split} cannot be written as "
                                f"JSON ({exc}): its source dict holds a value JSON cannot "
                                f"represent") from None
        # never write a manifest a reader would refuse
        Manifest.from_json(text, f"(the manifest of {self.dataset}/{self.split} being written)")
        return text

    @classmethod
    def from_json(cls, text, where: str) -> "Manifest":
        """Parse and validate a manifest.  ``where`` names it in error messages (its location).

        Raises :class:`ManifestError` naming ``where`` and the offending field when the text is
        not JSON, a field is missing or has the wrong type, the format version is unknown, a
        count is negative or the counts disagree (shards vs ``num_samples``, formats vs each
        other, ``label_counts`` vs ``num_samples``), a sha256 is malformed, or a shard name is
        not a plain file name.
        """
        if isinstance(text, (bytes, bytearray, memoryview)):
            try:
                text = bytes(text).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ManifestError(f"manifest {where} is not UTF-8 text ({exc}); {_FIX}") from None
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ManifestError(f"manifest {where} is not valid JSON ({exc}); {_FIX}") from None
        return cls.from_dict(data, where)

    @classmethod
    def from_dict(cls, data, where: str) -> "Manifest":
        """Validate the decoded JSON object ``data`` (see :meth:`from_json`)."""
        v = _Validator(where)
        obj = v.obj(data, "the top level")
        head = _header(v, obj)
        num_samples = head["num_samples"]
        shards_obj = v.obj(v.get(obj, "shards"), "shards")
        unknown = [k for k in shards_obj if k not in SHARD_EXTENSIONS]
        if unknown:
            v.fail("shards", f"unknown shard format {unknown[0]!r} (known: "
                             f"{', '.join(SHARD_EXTENSIONS)})")
        if not shards_obj:
            v.fail("shards", "lists no shard format (tar or parquet)")
        shards = {}
        names = set()
        first_fmt = None
        for fmt in SHARD_EXTENSIONS:
            if fmt not in shards_obj:
                continue
            entries = shards_obj[fmt]
            if not isinstance(entries, list) or not entries:
                v.fail(f"shards.{fmt}", f"must be a non-empty list of shards, got "
                                        f"{_short(entries)}")
            infos = []
            for i, entry in enumerate(entries):
                p = f"shards.{fmt}[{i}]"
                e = v.obj(entry, p)
                name = v.get(e, "name", f"{p}.name")
                if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
                    v.fail(f"{p}.name", f"must be a plain file name (no '/', no '..'), got "
                                        f"{_short(name)}")
                if not name.endswith(SHARD_EXTENSIONS[fmt]):
                    v.fail(f"{p}.name", f"{name!r} does not end in {SHARD_EXTENSIONS[fmt]}")
                if name in names:
                    v.fail(f"{p}.name", f"{name!r} is listed twice")
                names.add(name)
                n = v.count(v.get(e, "num_samples", f"{p}.num_samples"), f"{p}.num_samples")
                if n == 0:
                    v.fail(f"{p}.num_samples", "is 0; every shard holds at least one sample")
                size = v.count(v.get(e, "bytes", f"{p}.bytes"), f"{p}.bytes")
                sha = v.get(e, "sha256", f"{p}.sha256")
                if not isinstance(sha, str) or not _SHA256.match(sha):
                    v.fail(f"{p}.sha256", f"must be 64 lowercase hex digits, got {_short(sha)}")
                infos.append(ShardInfo(name, n, size, sha))
            total = sum(s.num_samples for s in infos)
            if total != num_samples:
                v.fail(f"shards.{fmt}", f"hold {total} samples in all, but num_samples is "
                                        f"{num_samples}")
            if first_fmt is not None:
                counts = [s.num_samples for s in shards[first_fmt]]
                mine = [s.num_samples for s in infos]
                if counts != mine:
                    bad = next((i for i, (a, b) in enumerate(zip(counts, mine)) if a != b),
                               min(len(counts), len(mine)))
                    v.fail(f"shards.{fmt}", f"disagree with shards.{first_fmt} on the samples per "
                                            f"shard (at shard {bad}: "
                                            f"{mine[bad] if bad < len(mine) else 'none'} vs "
                                            f"{counts[bad] if bad < len(counts) else 'none'}); "
                                            f"both formats must hold the same samples")
            else:
                first_fmt = fmt
            shards[fmt] = tuple(infos)

        return cls(**head, shards=shards)

    @classmethod
    def from_index(cls, meta: dict, table: np.ndarray, where: str) -> "Manifest":
        """The manifest held by an index (:func:`.index.parse_index`'s ``meta`` and shard
        ``table``), validated as :meth:`from_dict` validates the JSON, column by column."""
        v = _Validator(where)
        head = _header(v, v.obj(meta, "the top level"))
        return cls(**head, shards=_table_shards(v, table, head["num_samples"]))


def _header(v: "_Validator", obj: dict) -> dict:
    """The validated manifest fields other than ``shards``, as :class:`Manifest` arguments."""
    version = v.get(obj, "format_version")
    if not _is_int(version):
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
            or not all(_is_int(d) and d > 0 for d in shape)):
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
                          f"{_short(classes)}")
    if len(set(classes)) != len(classes):
        v.fail("classes", "holds the same class name twice")
    label_counts = v.get(obj, "label_counts")
    if not isinstance(label_counts, list):
        v.fail("label_counts", f"must be a list of counts, got {_short(label_counts)}")
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
                                   f"{_short(source.get('synthetic', '<missing>'))}")
    created_by = obj.get("created_by", "")
    if not isinstance(created_by, str):
        v.fail("created_by", f"must be a string, got {_short(created_by)}")

    return dict(dataset=dataset, split=split, num_samples=num_samples, image_shape=tuple(shape),
                encoding=encoding, classes=tuple(classes), label_counts=tuple(label_counts),
                source=source, format_version=version)


def _table_shards(v: "_Validator", table: np.ndarray, num_samples: int) -> dict:
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
            v.fail("shards", f"holds a shard name that is not UTF-8: {_short(names[i])}")
    first = None
    for code in np.unique(codes):
        fmt = _index.FORMATS[code]
        rows = np.flatnonzero(codes == code)
        ext = SHARD_EXTENSIONS[fmt]
        ok = plain[rows] & np.char.endswith(names[rows], ext.encode())
        if not ok.all():
            bad = int(np.flatnonzero(~ok)[0])
            v.fail(f"shards.{fmt}[{bad}].name", f"must be a plain file name ending in {ext}, "
                                                f"got {_short(names[rows[bad]])}")
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


def load_manifest(location: str, storage_options=None, use_index: bool = True) -> Manifest:
    """The validated :class:`Manifest` of the split at ``location`` (reads
    ``<location>/manifest.json`` through :mod:`shardstream.shards.storage`).

    With ``use_index`` and an index beside it (``index.npy``, :mod:`.index`, written by
    ``convert``) the shards come from the index's columns, without parsing the per-shard JSON
    (100,000 shards: a fraction of a second instead of seconds), after checking that the index
    was written for exactly this ``manifest.json`` (its recorded sha256); without an index
    (conversions made before it existed) the JSON is parsed.

    A missing manifest is a :class:`ManifestError` saying the location is not a finished
    conversion; so is an index that belongs to another manifest or is damaged (naming both
    files).  Storage failures other than "not found" propagate as ``StorageError``.
    """
    from . import storage

    where = storage.join(location, MANIFEST_NAME)
    try:
        data = storage.read_bytes(where, storage_options)
    except NotFoundError as exc:
        raise ManifestError(
            f"{storage.display(location)} is not a finished conversion, or it cannot be read: "
            f"no readable {MANIFEST_NAME} ({exc}); run `shardstream convert` to create it, or "
            f"check the location and its access settings") from None
    if use_index:
        index_loc = storage.join(location, _index.INDEX_NAME)
        try:
            index_data = storage.read_bytes(index_loc, storage_options)
        except NotFoundError:
            index_data = None
        if index_data is not None:
            shown = storage.display(index_loc)
            meta, table = _index.parse_index(index_data, shown)
            if meta.get("manifest_sha256") != _index.manifest_digest(data):
                raise ManifestError(
                    f"index {shown} was not written for {storage.display(where)} (its recorded "
                    f"sha256 of the manifest differs): one of them was replaced or copied from "
                    f"another conversion; re-run `shardstream convert`, or delete {shown} to "
                    f"use {MANIFEST_NAME} alone")
            return Manifest.from_index(meta, table, shown)
    return Manifest.from_json(data, storage.display(where))


# ---------------------------------------------------------------------------------------------
# helpers


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _short(x, limit=60) -> str:
    text = repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _sorted_keys(x):
    if isinstance(x, dict):
        return {k: _sorted_keys(x[k]) for k in sorted(x)}
    if isinstance(x, (list, tuple)):
        return [_sorted_keys(i) for i in x]
    return x


class _Validator:
    """Builds :class:`ManifestError` messages naming the manifest and the field."""

    def __init__(self, where):
        self.where = where

    def fail(self, fieldname, problem):
        raise ManifestError(f"manifest {self.where}: field '{fieldname}' {problem}; {_FIX}")

    def obj(self, x, fieldname):
        if not isinstance(x, dict):
            if fieldname == "the top level":
                raise ManifestError(f"manifest {self.where}: the top level must be a JSON object, "
                                    f"got {type(x).__name__}; {_FIX}")
            self.fail(fieldname, f"must be a JSON object, got {_short(x)}")
        return x

    def get(self, obj, key, fieldname=None):
        if key not in obj:
            raise ManifestError(f"manifest {self.where}: field '{fieldname or key}' is missing; "
                                f"{_FIX}")
        return obj[key]

    def count(self, x, fieldname):
        if not _is_int(x):
            self.fail(fieldname, f"must be an integer, got {_short(x)}")
        if x < 0:
            self.fail(fieldname, f"must not be negative, got {x}")
        return x

    def name(self, x, fieldname):
        if not isinstance(x, str) or not _NAME.match(x) or ".." in x:
            self.fail(fieldname, f"must be a plain name (no '/', '\\', '..', control characters "
                                 f"or leading '.'), got {_short(x)}")
        return x
