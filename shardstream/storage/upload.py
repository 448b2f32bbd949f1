"""``shardstream upload``: copy a finished local conversion to another location, verified.

``upload(src, dest)`` finds every split under ``src`` (a split folder holding manifest.json, a
dataset folder of splits, or a root of datasets) and copies each to
``<dest>/<dataset>/<split>/`` (names from its manifest), the same layout ``convert`` writes, so
``shardstream upload shards/ s3://bucket/datasets`` gives ``s3://bucket/datasets/fashion-mnist/train``.

For each split:

1. every local shard is checked against the manifest first (size and sha256), so a damaged
   conversion is never published;
2. a destination manifest that differs from the one being uploaded is removed first, so the
   destination never looks finished while its shards are being replaced;
3. shards are uploaded in parallel (``jobs``), each re-read after writing and checked (size and
   sha256); a shard already at the destination with the right size and sha256 is skipped, which
   makes an interrupted upload restartable;
4. the columnar index (``index.npy``, when the conversion has one; checked to belong to the
   manifest) is copied, then ``manifest.json`` is written last, byte-identical to the local
   one.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..errors import InputError, ManifestError, ShardError, StorageError
from ..shards.index import INDEX_NAME, manifest_digest, parse_index
from ..shards.manifest import Manifest
from ..shards.names import MANIFEST_NAME
from ..shards.splits import find_splits
from ..units import progress_bar
from . import exists, read_bytes, remove, size, write_bytes
from .location import join, local_path


@dataclass
class UploadReport:
    """What :func:`upload` did: ``splits`` destination locations written, ``uploaded`` /
    ``skipped`` shard counts (skipped = already present and verified), ``bytes_uploaded``."""

    splits: list = field(default_factory=list)
    uploaded: int = 0
    skipped: int = 0
    bytes_uploaded: int = 0

    def summary(self) -> str:
        """One line for the command line."""
        return (f"uploaded {self.uploaded} shard(s) ({self.bytes_uploaded:,} bytes), skipped "
                f"{self.skipped} already present and verified, in {len(self.splits)} split(s): "
                + ", ".join(self.splits))


def _source_splits(src) -> list[str]:
    """The local split folders of the conversion at ``src`` (see :func:`find_splits`)."""
    root = local_path(src)
    if root is None:
        raise InputError(f"upload source {src!r} is remote; upload copies a local conversion "
                         f"(a folder written by 'shardstream convert')")
    if not os.path.isdir(root):
        raise InputError(f"upload source {src}: no such folder")
    found = find_splits(root)
    if not found:
        raise InputError(f"upload source {src}: no {MANIFEST_NAME} in it or in its sub-folders; "
                         f"upload needs a finished conversion — run 'shardstream convert' first "
                         f"(a folder without a manifest is an unfinished one)")
    return found


def _sha256(data) -> str:
    return hashlib.sha256(data).hexdigest()


def upload(src, dest, progress=True, jobs=4, storage_options=None) -> UploadReport:
    """Copy every split under local ``src`` to ``<dest>/<dataset>/<split>/``, verified.

    ``jobs``: shards uploaded at once; ``storage_options``: for ``dest`` (see docs/storage.md).
    Returns an :class:`UploadReport`.  Raises :class:`InputError` for a source without a
    manifest, :class:`ShardError` when a local shard does not match its manifest, and
    :class:`StorageError` when an uploaded object reads back wrong twice.
    """
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise InputError(f"jobs={jobs!r}: must be a positive integer")
    if local_path(dest) is None and dest.lower().startswith(("http://", "https://")):
        raise InputError(f"upload destination {dest}: http(s) locations are read-only; upload to "
                         f"s3://bucket/prefix or a local folder (and serve it with "
                         f"'shardstream serve')")
    report = UploadReport()
    plans = []
    for split_dir in _source_splits(src):
        manifest_path = os.path.join(split_dir, MANIFEST_NAME)
        with open(manifest_path, "rb") as f:
            manifest_bytes = f.read()
        try:
            text = manifest_bytes.decode("utf-8")
        except UnicodeDecodeError:
            raise ManifestError(f"{manifest_path} is not UTF-8 text; re-run the "
                                f"conversion") from None
        manifest = Manifest.from_json(text, manifest_path)
        target = join(dest, manifest.dataset, manifest.split)
        shards = [info for fmt in manifest.formats for info in manifest.shards[fmt]]
        index_path = os.path.join(split_dir, INDEX_NAME)
        index = None
        if os.path.isfile(index_path):
            with open(index_path, "rb") as f:
                index = f.read()
            meta, _ = parse_index(index, index_path)
            if meta.get("manifest_sha256") != manifest_digest(manifest_bytes):
                raise ManifestError(f"{index_path} was not written for {manifest_path}; re-run "
                                    f"the conversion (or delete {index_path}) before uploading")
        plans.append((split_dir, target, manifest_bytes, shards, index))

    total = sum(info.bytes for _, _, _, shards, _ in plans for info in shards)
    with progress_bar(total=total, unit="B", unit_scale=True, enabled=progress,
              desc="upload") as bar, ThreadPoolExecutor(jobs) as pool:
        for split_dir, target, manifest_bytes, shards, index in plans:
            manifest_loc = join(target, MANIFEST_NAME)
            if exists(manifest_loc, storage_options):
                if read_bytes(manifest_loc, storage_options) != manifest_bytes:
                    remove(manifest_loc, storage_options)
            futures = [pool.submit(_copy_shard, split_dir, target, info, storage_options, bar)
                       for info in shards]
            try:
                for future in futures:
                    uploaded = future.result()
                    if uploaded:
                        report.uploaded += 1
                        report.bytes_uploaded += uploaded
                    else:
                        report.skipped += 1
            except BaseException:
                for future in futures:          # stop at the first failure
                    future.cancel()
                raise
            index_loc = join(target, INDEX_NAME)
            if index is not None:
                write_bytes(index_loc, index, storage_options)
            elif exists(index_loc, storage_options):  # another conversion's index
                remove(index_loc, storage_options)
            write_bytes(manifest_loc, manifest_bytes, storage_options)
            report.splits.append(target)
    return report


def _copy_shard(split_dir, target, info, storage_options, bar) -> int:
    """Upload one shard unless already there and verified; returns bytes uploaded (0 = skipped)."""
    local = os.path.join(split_dir, info.name)
    remote = join(target, info.name)
    try:
        with open(local, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ShardError(f"shard {info.name} listed in {split_dir}/{MANIFEST_NAME} cannot be read "
                         f"({exc}); re-run the conversion") from exc
    if len(data) != info.bytes or _sha256(data) != info.sha256:
        raise ShardError(f"local shard {local} does not match its manifest (size or sha256); "
                         f"nothing damaged is uploaded — run 'shardstream verify {split_dir}' "
                         f"and re-run the conversion")
    if _present(remote, info, storage_options):
        bar.update(info.bytes)
        return 0
    for _attempt in range(2):
        write_bytes(remote, data, storage_options)
        if _present(remote, info, storage_options):
            bar.update(info.bytes)
            return info.bytes
    raise StorageError(f"uploaded shard {remote} reads back different from {local} (twice); "
                       f"check the destination store, then run the upload again (it resumes)")


def _present(remote, info, storage_options) -> bool:
    """True when ``remote`` exists with the manifest's size and sha256."""
    if not exists(remote, storage_options):
        return False
    if size(remote, storage_options) != info.bytes:
        return False
    return _sha256(read_bytes(remote, storage_options)) == info.sha256
