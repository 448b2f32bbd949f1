"""``shardstream verify`` and ``shardstream info``: check a converted split against its manifest,
and describe it.

:func:`verify` reads every shard of every format of one split and checks, per shard: it exists,
its size and sha256 equal the manifest's, it parses (member names, order, count, image shape,
PNG data), its labels lie within the classes; per split: the tar and Parquet shards hold the same
samples (pixels and labels), the label counts equal the manifest's, and the columnar index
(``index.npy``, if present) agrees with ``manifest.json``.  It returns the problems
as one line each, naming the shard; an empty list means the split is sound.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import numpy as np

from ..errors import ManifestError, NotFoundError, ShardError, StorageError
from . import storage
from .formats import read_shard, sample_key
from .index import INDEX_NAME, manifest_digest, parse_index
from .manifest import MANIFEST_NAME, Manifest, load_manifest


def _check_shard(location, manifest, fmt, index, storage_options):
    """(problem or None, (images, labels) or None) for one shard."""
    info = manifest.shards[fmt][index]
    where = storage.join(location, info.name)
    try:
        data = storage.read_bytes(where, storage_options)
    except NotFoundError:
        return f"{info.name}: missing (listed in the manifest, not found at " \
               f"{storage.display(where)})", None
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
        meta, table = parse_index(data, storage.display(where))
        indexed = Manifest.from_index(meta, table, storage.display(where))
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


def _verify(location, manifest, storage_options=None, bar=None) -> list[str]:
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
            same = np.flatnonzero((labels != labels0)
                                  | (images != images0).reshape(len(images), -1).any(axis=1))
            if len(same):
                key = sample_key(int(manifest.offsets[index]) + int(same[0]))
                problems.append(f"{manifest.shards[fmt][index].name}: sample {key} differs from "
                                f"{manifest.shards[other][index].name} ({len(same)} samples "
                                f"differ); both formats must hold the same samples")
        if first is None:
            counted = False
    if counted and tuple(counts.tolist()) != tuple(manifest.label_counts):
        problems.append(f"{MANIFEST_NAME}: the shards hold {counts.tolist()} samples per class, "
                        f"the manifest's label_counts say {list(manifest.label_counts)}")
    return problems


def verify(location: str, storage_options=None) -> list[str]:
    """Problems of the split at ``location`` (one line each, naming the shard); empty = sound.

    Raises :class:`ManifestError` when the location has no valid manifest."""
    manifest = load_manifest(location, storage_options, use_index=False)
    return _verify(location, manifest, storage_options)


def find_splits(location: str) -> list[str]:
    """Split locations at or below ``location``: ``[location]`` when it holds a manifest;
    for a local folder otherwise every folder below it holding ``manifest.json`` (sorted);
    ``[]`` when there is none."""
    if storage.exists(storage.join(location, MANIFEST_NAME)):
        return [location]
    local = storage.local_path(location)
    if local is None or not os.path.isdir(local):
        return []
    found = []
    for root, dirs, files in os.walk(local):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if MANIFEST_NAME in files:
            found.append(root)
            dirs[:] = []  # a split folder holds no further splits
    return sorted(found)


def _no_splits(location):
    return ManifestError(f"{storage.display(location)} holds no converted split (no "
                         f"{MANIFEST_NAME} there or below it); run `shardstream convert` first, "
                         f"or check the location")


def verify_command(location: str, quiet: bool = False) -> int:
    """``shardstream verify``: verify the split at ``location``, or every split below a local
    folder; prints each problem (naming the shard) and a line per split; returns the exit
    status, 0 when everything matches, 1 otherwise."""
    from tqdm import tqdm

    splits = find_splits(location)
    if not splits:
        raise _no_splits(location)
    manifests = {}
    bad = 0
    for split in splits:
        try:
            manifests[split] = load_manifest(split, use_index=False)
        except ManifestError as exc:
            print(f"{storage.display(split)}: FAILED: {exc}")
            bad += 1
    total = sum(m.num_shards * len(m.formats) for m in manifests.values())
    with tqdm(total=total, unit="shard", desc="verify", disable=quiet or None,
              file=sys.stderr, leave=False) as bar:
        for split, manifest in manifests.items():
            problems = _verify(split, manifest, bar=bar)
            name = storage.display(split)
            if problems:
                bad += 1
                bar.write(f"{name}: FAILED, {len(problems)} problem"
                          f"{'s' if len(problems) > 1 else ''}:", file=sys.stdout)
                for p in problems:
                    bar.write(f"  {p}", file=sys.stdout)
            elif not quiet:
                size = sum(s.bytes for f in manifest.formats for s in manifest.shards[f])
                bar.write(f"{name}: OK ({manifest.num_samples} samples; "
                          f"{', '.join(f'{len(manifest.shards[f])} {f}' for f in manifest.formats)}"
                          f" shards; {storage.human_bytes(size)} checked)", file=sys.stdout)
    if bad and len(splits) > 1:
        print(f"{bad} of {len(splits)} splits FAILED")
    return 1 if bad else 0


# ---------------------------------------------------------------------------------------------
# info


def info_dict(manifest: Manifest, location: str) -> dict:
    """A summary of the split (what ``shardstream info --json`` prints)."""
    return {
        "location": storage.display(location),
        "dataset": manifest.dataset,
        "split": manifest.split,
        "num_samples": manifest.num_samples,
        "image": {"shape": list(manifest.image_shape), "dtype": manifest.image_dtype,
                  "encoding": manifest.encoding},
        "classes": [{"label": i, "name": c, "count": manifest.label_counts[i]}
                    for i, c in enumerate(manifest.classes)],
        "shards": {f: {"count": len(manifest.shards[f]),
                       "bytes": sum(s.bytes for s in manifest.shards[f]),
                       "samples_per_shard": max(s.num_samples for s in manifest.shards[f])}
                   for f in manifest.formats},
        "synthetic": manifest.synthetic,
        "source": manifest.source,
        "format_version": manifest.format_version,
    }


def print_info(location: str, as_json: bool = False) -> None:
    """``shardstream info``: print a summary of the split at ``location`` — samples, classes
    with counts, shards per format with bytes, encoding, image shape, synthetic or not — as a
    table, or as JSON (:func:`info_dict`)."""
    try:
        manifest = load_manifest(location)
    except ManifestError:
        splits = find_splits(location)
        if not splits or splits == [location]:
            raise
        raise ManifestError(f"{storage.display(location)} is not a split but holds "
                            f"{len(splits)}: {', '.join(splits)}; run `shardstream info` on "
                            f"one of them") from None
    d = info_dict(manifest, location)
    if as_json:
        print(json.dumps(d, indent=2))
        return
    h, w, c = manifest.image_shape
    rows = [
        ("location", d["location"]),
        ("dataset", f"{manifest.dataset} / {manifest.split}"),
        ("data", "SYNTHETIC stand-in (generated, not the real dataset)" if manifest.synthetic
         else "real (converted from the source files)"),
        ("samples", f"{manifest.num_samples:,}"),
        ("image", f"{h}x{w}x{c} uint8 ({'grey' if c == 1 else 'RGB' if c == 3 else f'{c} channels'})"
                  f", {manifest.encoding} encoding"),
    ]
    for f, s in d["shards"].items():
        rows.append((f"{f} shards", f"{s['count']} x up to {s['samples_per_shard']:,} samples, "
                                    f"{storage.human_bytes(s['bytes'])}"))
    rows.append(("classes", str(len(manifest.classes))))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    name_w = max(len(cn) for cn in manifest.classes)
    for i, (cn, n) in enumerate(zip(manifest.classes, manifest.label_counts)):
        share = 100.0 * n / manifest.num_samples if manifest.num_samples else 0.0
        print(f"{'':<{width}}  {i:>3}  {cn:<{name_w}}  {n:>10,}  {share:5.1f}%")
    files = manifest.source.get("files")
    if isinstance(files, dict) and files:
        print(f"{'source':<{width}}  " + ", ".join(sorted(files)))
