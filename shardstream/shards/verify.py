"""Check a converted split against its manifest (the library side of ``shardstream verify``).

:func:`verify` reads every shard of every format of one split and checks, per shard: it exists,
its size and sha256 equal the manifest's, it parses (member names, order, count, image shape,
PNG data), its labels lie within the classes; per split: the tar and Parquet shards hold the same
samples (pixels and labels), the label counts equal the manifest's, and the columnar index
(``index.npy``, if present) agrees with ``manifest.json``.  It returns the problems
as one line each, naming the shard; an empty list means the split is sound.
"""

from __future__ import annotations

import hashlib

import numpy as np

from .. import storage
from ..errors import ManifestError, NotFoundError, ShardError, StorageError
from .formats import read_shard
from .index import INDEX_NAME, manifest_digest, parse_index
from .manifest import Manifest, load_manifest
from .names import MANIFEST_NAME, sample_key


def _check_shard(location, manifest, fmt, index, storage_options):
    """(problem or None, (images, labels) or None) for one shard."""
    info = manifest.shards[fmt][index]
    where = storage.join(location, info.name)
    try:
        data = storage.read_bytes(where, storage_options)
    except NotFoundError:
        return f"{info.name}: missing (listed in the manifest, not found at " \
               f"{where})", None
    except StorageError as exc:
        return f"{info.name}: cannot be read ({exc})", None
    if len(data) != info.bytes:
        return f"{info.name}: {len(data)} bytes, the manifest says {info.bytes} (incomplete or " \
               f"changed copy)", None
    digest = hashlib.sha256(data).hexdigest()
    if digest != info.sha256:
        return f"{info.name}: sha256 {digest}, the manifest says {info.sha256} (the shard's " \
               f"bytes changed)", None
    try:
        images, labels = read_shard(fmt, data, manifest, index)
    except ShardError as exc:
        return str(exc), None
    if len(labels) != info.num_samples:
        return f"{info.name}: holds {len(labels)} samples, the manifest says " \
               f"{info.num_samples}", None
    return None, (images, labels)


def _index_problems(location, manifest, storage_options=None) -> list[str]:
    """The disagreements of the split's index (``index.npy``, if it has one) with the manifest
    read from ``manifest.json``: damaged, written for another manifest, or a differing field."""
    where = storage.join(location, INDEX_NAME)
    try:
        data = storage.read_bytes(where, storage_options)
        manifest_bytes = storage.read_bytes(storage.join(location, MANIFEST_NAME), storage_options)
    except NotFoundError:
        return []
    try:
        meta, table = parse_index(data, where)
        indexed = Manifest.from_index(meta, table, where)
    except ManifestError as exc:
        return [f"{INDEX_NAME}: {exc}"]
    problems = []
    if meta.get("manifest_sha256") != manifest_digest(manifest_bytes):
        problems.append(f"{INDEX_NAME}: was not written for this {MANIFEST_NAME} (its recorded "
                        f"sha256 differs); re-run the conversion or delete {INDEX_NAME}")
    for key in ("dataset", "split", "num_samples", "image_shape", "encoding", "classes",
                "label_counts", "source", "shards"):
        if getattr(indexed, key) != getattr(manifest, key):
            problems.append(f"{INDEX_NAME}: field '{key}' disagrees with {MANIFEST_NAME}; re-run "
                            f"the conversion or delete {INDEX_NAME}")
    return problems


def verify(location: str, storage_options=None, *, manifest=None, bar=None) -> list[str]:
    """Problems of the split at ``location`` (one line each, naming the shard); empty = sound.

    ``manifest``: the split's :class:`Manifest` when already loaded; ``bar``: a progress bar
    advanced by one per shard checked.  Raises :class:`ManifestError` when the location has no
    valid manifest."""
    if manifest is None:
        manifest = load_manifest(location, storage_options, use_index=False)
    problems = _index_problems(location, manifest, storage_options)
    counts = np.zeros(len(manifest.classes), dtype=np.int64)
    counted = True  # every shard parsed in at least one format
    for index in range(manifest.num_shards):
        first = None  # (fmt, images, labels) of the first format that parsed
        for fmt in manifest.formats:
            problem, result = _check_shard(location, manifest, fmt, index, storage_options)
            if bar is not None:
                bar.update(1)
            if problem:
                problems.append(problem)
                continue
            images, labels = result
            if first is None:
                first = (fmt, images, labels)
                counts += np.bincount(labels, minlength=len(manifest.classes))
                continue
            other, images0, labels0 = first
            differ = np.flatnonzero((labels != labels0)
                                  | (images != images0).reshape(len(images), -1).any(axis=1))
            if len(differ):
                key = sample_key(int(manifest.offsets[index]) + int(differ[0]))
                problems.append(f"{manifest.shards[fmt][index].name}: sample {key} differs from "
                                f"{manifest.shards[other][index].name} ({len(differ)} samples "
                                f"differ); both formats must hold the same samples")
        if first is None:
            counted = False
    if counted and tuple(counts.tolist()) != tuple(manifest.label_counts):
        problems.append(f"{MANIFEST_NAME}: the shards hold {counts.tolist()} samples per class, "
                        f"the manifest's label_counts say {list(manifest.label_counts)}")
    return problems
