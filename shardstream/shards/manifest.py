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
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .. import __version__, storage
from ..errors import AccessError, ManifestError, NotFoundError
from .names import ENCODINGS, MANIFEST_NAME, SHARD_EXTENSIONS, is_plain_name
from .splits import split_hint

FORMAT_VERSION = 1
IMAGE_DTYPE = "uint8"

_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
_FIX = "the manifest is damaged or was not written by shardstream: re-run `shardstream convert`"


@dataclass(frozen=True)
class ShardInfo:
    """One shard file: its name (relative to the split's location), sample count, size in bytes
    and sha256 (64 lowercase hex digits)."""

    name: str
    num_samples: int
    bytes: int
    sha256: str


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
            "shards": {fmt: tuple(ShardInfo(str(s.name), int(s.num_samples), int(s.bytes),
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
    def from_json(cls, text, where: str) -> Manifest:
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
    def from_dict(cls, data, where: str) -> Manifest:
        """Validate the decoded JSON object ``data`` (see :meth:`from_json`)."""
        v = _Validator(where)
        obj = v.obj(data, "the top level")
        version = v.get(obj, "format_version")
        if not _is_int(version):
            v.fail("format_version", f"must be an integer, got {version!r}")
        if version != FORMAT_VERSION:
            raise ManifestError(
                f"manifest {where}: unknown format_version {version} (this shardstream reads "
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
                if not is_plain_name(name):
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

        source = v.obj(v.get(obj, "source"), "source")
        if not isinstance(source.get("synthetic"), bool):
            v.fail("source.synthetic", f"must be true or false, got "
                                       f"{_short(source.get('synthetic', '<missing>'))}")
        created_by = obj.get("created_by", "")
        if not isinstance(created_by, str):
            v.fail("created_by", f"must be a string, got {_short(created_by)}")

        return cls(dataset=dataset, split=split, num_samples=num_samples,
                   image_shape=tuple(shape), encoding=encoding, classes=tuple(classes),
                   label_counts=tuple(label_counts), shards=shards, source=source,
                   format_version=version)


def load_manifest(location: str, storage_options=None) -> Manifest:
    """The validated :class:`Manifest` of the split at ``location`` (reads
    ``<location>/manifest.json`` through :mod:`shardstream.storage`).

    A missing manifest is a :class:`ManifestError` saying the location is not a finished
    conversion (and, for a dataset folder, "pass …/train or …/test"); access denied is an
    :class:`AccessError`; other storage failures propagate as ``StorageError``.
    """
    where = storage.join(location, MANIFEST_NAME)
    try:
        data = storage.read_bytes(where, storage_options)
    except AccessError:
        raise
    except NotFoundError as exc:
        hint = split_hint(location, storage_options)
        if hint:
            raise ManifestError(f"{location} holds no {MANIFEST_NAME}{hint}") from None
        raise ManifestError(
            f"{location} is not a finished conversion, or it cannot be read: "
            f"no readable {MANIFEST_NAME} ({exc}); run `shardstream convert` to create it, or "
            f"check the location and its access settings") from None
    return Manifest.from_json(data, where)


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
        if not is_plain_name(x):
            self.fail(fieldname, f"must be a plain name (no '/', '\\', '..', control characters "
                                 f"or leading '.'), got {_short(x)}")
        return x
