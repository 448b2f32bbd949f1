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
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .. import __version__, storage
from ..errors import AccessError, ManifestError, NotFoundError
from . import index as _index
from .names import MANIFEST_NAME, SHARD_EXTENSIONS, is_plain_name
from .shardinfo import ShardInfo, ShardTable
from .splits import find_splits, split_hint
from .validate import (
    FIX,
    FORMAT_VERSION,
    IMAGE_DTYPE,
    SHA256,
    Validator,
    header,
    short,
    sorted_keys,
    table_shards,
)

__all__ = ["Manifest", "ShardInfo", "ShardTable", "load_manifest", "find_splits",
           "FORMAT_VERSION", "IMAGE_DTYPE", "MANIFEST_NAME"]


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
        d["source"] = sorted_keys(d["source"])
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
                raise ManifestError(f"manifest {where} is not UTF-8 text ({exc}); {FIX}") from None
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ManifestError(f"manifest {where} is not valid JSON ({exc}); {FIX}") from None
        return cls.from_dict(data, where)

    @classmethod
    def from_dict(cls, data, where: str) -> Manifest:
        """Validate the decoded JSON object ``data`` (see :meth:`from_json`)."""
        v = Validator(where)
        obj = v.obj(data, "the top level")
        head = header(v, obj)
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
                                        f"{short(entries)}")
            infos = []
            for i, entry in enumerate(entries):
                p = f"shards.{fmt}[{i}]"
                e = v.obj(entry, p)
                name = v.get(e, "name", f"{p}.name")
                if not is_plain_name(name):
                    v.fail(f"{p}.name", f"must be a plain file name (no '/', no '..'), got "
                                        f"{short(name)}")
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
                if not isinstance(sha, str) or not SHA256.match(sha):
                    v.fail(f"{p}.sha256", f"must be 64 lowercase hex digits, got {short(sha)}")
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
    def from_index(cls, meta: dict, table: np.ndarray, where: str) -> Manifest:
        """The manifest held by an index (:func:`.index.parse_index`'s ``meta`` and shard
        ``table``), validated as :meth:`from_dict` validates the JSON, column by column."""
        v = Validator(where)
        head = header(v, v.obj(meta, "the top level"))
        return cls(**head, shards=table_shards(v, table, head["num_samples"]))


def load_manifest(location: str, storage_options=None, use_index: bool = True) -> Manifest:
    """The validated :class:`Manifest` of the split at ``location`` (reads
    ``<location>/manifest.json`` through :mod:`shardstream.storage`).

    With ``use_index`` and an index beside it (``index.npy``, :mod:`.index`, written by
    ``convert``) the shards come from the index's columns, without parsing the per-shard JSON
    (100,000 shards: a fraction of a second instead of seconds), after checking that the index
    was written for exactly this ``manifest.json`` (its recorded sha256); without an index
    (conversions made before it existed) the JSON is parsed.

    A missing manifest is a :class:`ManifestError` saying the location is not a finished
    conversion; so is an index that belongs to another manifest or is damaged (naming both
    files), and for a dataset folder it says "pass …/train or …/test"; access denied is an
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
    if use_index:
        index_loc = storage.join(location, _index.INDEX_NAME)
        try:
            index_data = storage.read_bytes(index_loc, storage_options)
        except NotFoundError:
            index_data = None
        if index_data is not None:
            shown = index_loc
            meta, table = _index.parse_index(index_data, shown)
            if meta.get("manifest_sha256") != _index.manifest_digest(data):
                raise ManifestError(
                    f"index {shown} was not written for {where} (its recorded "
                    f"sha256 of the manifest differs): one of them was replaced or copied from "
                    f"another conversion; re-run `shardstream convert`, or delete {shown} to "
                    f"use {MANIFEST_NAME} alone")
            return Manifest.from_index(meta, table, shown)
    return Manifest.from_json(data, where)
