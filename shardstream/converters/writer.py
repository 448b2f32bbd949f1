"""Writing a converted split: ``<out>/<dataset>/<split>/`` with tar and/or Parquet shards and
``manifest.json`` (layout and guarantees: ``docs/design.md``, "On-disk layout").

- Every file is built in memory and written through :func:`shardstream.storage.write_bytes`
  (atomic locally: temp file + rename; one PUT on s3), so ``out`` may be any writable location.
- The manifest is written last: a folder without one is never taken for a finished conversion.
- Deterministic: the same input and arguments give byte-identical shards and manifest, so
  re-running an interrupted conversion finishes with the same bytes.
- Converting into a folder that holds a *different* conversion (another source, encoding, shard
  size or format list) refuses unless ``overwrite``; the same conversion again is fine.  Shard
  files the new manifest does not list (a previous conversion's extra shards) are removed after
  the new manifest is written, and so are temp files an interrupted run left behind.
"""

from __future__ import annotations

import hashlib
import io
import re
import sys

import numpy as np

from .. import storage
from ..errors import InputError, ManifestError, NotFoundError
from ..shards.formats import write_shard
from ..shards.imagecodec import encode_png
from ..shards.index import INDEX_NAME, index_bytes
from ..shards.manifest import Manifest, ShardInfo
from ..shards.names import (
    ENCODINGS,
    FORMATS,
    MANIFEST_NAME,
    is_plain_name,
    sample_key,
    shard_name,
)
from ..shards.parquetshard import write_parquet
from ..shards.tarshard import write_tar
from ..units import progress_bar


def check_args(formats, shard_size, encoding):
    formats = tuple(formats)
    if not formats:
        raise InputError("--format: give at least one shard format (tar, parquet)")
    for fmt in formats:
        if fmt not in FORMATS:
            raise InputError(f"--format: unknown shard format {fmt!r}; use tar, parquet or "
                             f"tar,parquet")
    if len(set(formats)) != len(formats):
        raise InputError(f"--format: {','.join(formats)} names a format twice")
    if encoding not in ENCODINGS:
        raise InputError(f"--encoding: unknown image encoding {encoding!r}; use npy or png")
    if not isinstance(shard_size, (int, np.integer)) or shard_size < 1:
        raise InputError(f"--shard-size must be a positive number of samples, got {shard_size}")
    # canonical order, so that "parquet,tar" and "tar,parquet" are the same conversion
    return tuple(f for f in FORMATS if f in formats)


def _sha256(data) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# the target folder


def _leftover_names(split: str):
    """Regex of the files a conversion of ``split`` writes (shards, index, manifest) and of the temp
    files :func:`storage.atomic_write_local` makes for them."""
    final = (rf"{re.escape(split)}-\d{{6}}\.(?:tar|parquet)|{re.escape(MANIFEST_NAME)}"
             rf"|{re.escape(INDEX_NAME)}")
    return re.compile(rf"(?:{final})\Z"), re.compile(rf"\.(?:{final})\..*\.tmp\Z")


def _differences(old: Manifest, new: dict) -> list[str]:
    """What differs between the manifest ``old`` already there and the conversion about to be
    written (``new``: the manifest fields known before any shard is encoded)."""
    diffs = []
    for key in ("dataset", "split", "num_samples", "image_shape", "encoding", "classes",
                "label_counts"):
        if getattr(old, key) != new[key]:
            diffs.append(f"{key} {getattr(old, key)!r} vs {new[key]!r}")
    if old.formats != new["formats"]:
        diffs.append(f"formats {','.join(old.formats)} vs {','.join(new['formats'])}")
    elif list(old.shard_sizes) != list(new["shard_sizes"]):
        diffs.append(f"shard sizes ({len(old.shard_sizes)} shards) vs "
                     f"({len(new['shard_sizes'])} shards)")
    if old.source != new["source"]:
        diffs.append("the source data (raw files / their checksums / synthetic flag)")
    return diffs


def check_target(split_loc: str, new: dict, overwrite: bool, storage_options=None) -> None:
    """Refuse (:class:`InputError` naming ``split_loc``) to write a conversion into a folder that
    holds a different finished one, unless ``overwrite``."""
    where = storage.join(split_loc, MANIFEST_NAME)
    if overwrite or not storage.exists(where, storage_options):
        return
    try:
        old = Manifest.from_json(storage.read_bytes(where, storage_options), where)
    except ManifestError:
        raise InputError(f"{split_loc} holds an unreadable {MANIFEST_NAME}; "
                         f"pass --overwrite to replace what is there, or choose another output "
                         f"folder") from None
    diffs = _differences(old, new)
    if diffs:
        raise InputError(f"{split_loc} already holds a different conversion "
                         f"({'; '.join(diffs[:3])}); pass --overwrite to replace it, or choose "
                         f"another output folder")


def _clean(split_loc: str, split: str, keep, storage_options=None) -> None:
    """Remove leftover temp files of an interrupted run (local folders) and, unless ``keep`` is
    None, the shard files of ``split`` that ``keep`` (a set of names) does not list."""
    final, temp = _leftover_names(split)
    local = storage.local_path(split_loc) is not None
    if keep is None and not local:
        return
    try:
        names = storage.listdir(split_loc, storage_options)
    except NotFoundError:
        return
    for name in names:
        stale = keep is not None and final.match(name) and name not in (MANIFEST_NAME, INDEX_NAME) \
            and name not in keep
        if stale or (local and temp.match(name)):
            storage.remove(storage.join(split_loc, name), storage_options)


# ---------------------------------------------------------------------------------------------
# writing one split


def _encode_shard(fmt, first_id, images, labels, encoding, classes, pngs) -> bytes:
    """The bytes of one shard; ``pngs``: the already encoded PNGs of ``images`` (png
    encoding), shared between the formats so each image is encoded once."""
    buf = io.BytesIO()
    if encoding == "npy":
        write_shard(fmt, buf, first_id, images, labels, encoding, classes)
    elif fmt == "tar":
        keys = [sample_key(first_id + i) for i in range(len(images))]
        write_tar(buf, keys, labels.tolist(), pngs, "png")
    else:
        write_parquet(buf, first_id, pngs, labels, "png", images.shape[1:], tuple(classes))
    return buf.getvalue()


def check_names(dataset: str, split: str) -> None:
    """InputError unless ``dataset`` and ``split`` are plain folder names (the one rule of
    :func:`~shardstream.shards.names.is_plain_name`, which the server also applies)."""
    for what, name in (("dataset name (--name)", dataset), ("split name", split)):
        if not is_plain_name(name):
            raise InputError(f"{what} {name!r} cannot be a folder of the output: use letters, "
                             f"digits, '-', '_' (no '/', '\\', '..', leading '.', or a temp "
                             f"suffix such as '.tmp')")


def _shape(images) -> tuple:
    """(N, H, W[, C]) of an image array or of a streamed split (its ``shape``)."""
    return tuple(images.shape) if hasattr(images, "shape") else np.asarray(images).shape


def target_header(dataset, split, images, labels, classes, source, *, formats, shard_size,
                  encoding) -> dict:
    """The manifest fields of a conversion known before any shard is written (what
    :func:`check_target` compares): ``images`` uint8 (N, H, W[, C]), ``labels`` int (N,)."""
    check_names(dataset, split)
    labels = np.asarray(labels)
    n = len(labels)
    shape = tuple(int(d) for d in _shape(images)[1:])
    return {"dataset": dataset, "split": split, "num_samples": n,
            "image_shape": shape + (1,) if len(shape) == 2 else shape, "encoding": encoding,
            "classes": tuple(classes),
            "label_counts": tuple(np.bincount(labels.astype(np.int64),
                                              minlength=len(classes)).tolist()),
            "formats": check_args(formats, shard_size, encoding),
            "shard_sizes": [min(s + shard_size, n) - s for s in range(0, n, shard_size)],
            "source": dict(source)}


def checked_arrays(dataset: str, split: str, images, labels, classes):
    """``(images uint8 (N, H, W, C), labels int64 (N,))`` of a split about to be written
    (``images`` (N, H, W) is taken as C = 1); :class:`InputError` naming the split otherwise."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    labels = np.asarray(labels).astype(np.int64)
    n = len(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise InputError(f"{dataset}/{split}: images must be uint8 (N, H, W, C), got "
                         f"{images.dtype} {images.shape}")
    if labels.shape != (n,):
        raise InputError(f"{dataset}/{split}: {n} images but {len(labels)} labels")
    if n == 0:
        raise InputError(f"{dataset}/{split}: no samples to convert")
    if labels.min() < 0 or labels.max() >= len(classes):
        bad = int(np.flatnonzero((labels < 0) | (labels >= len(classes)))[0])
        raise InputError(f"{dataset}/{split}: sample {bad} has label {labels[bad]}, outside the "
                         f"{len(classes)} classes")
    return images, labels


def shard_starts(header: dict) -> list[int]:
    """First sample id of each shard of the conversion ``header`` (:func:`target_header`)."""
    return np.concatenate([[0], np.cumsum(header["shard_sizes"])[:-1]]).astype(int).tolist()


def begin_split(split_loc: str, split: str, header: dict, overwrite: bool,
                storage_options=None) -> None:
    """Before the first shard of a split is written: refuse a different finished conversion
    (:func:`check_target`), un-finish the folder when overwriting (its manifest goes first) and
    remove the temp files an interrupted run left there."""
    check_target(split_loc, header, overwrite, storage_options)
    manifest_loc = storage.join(split_loc, MANIFEST_NAME)
    if overwrite and storage.exists(manifest_loc, storage_options):
        # the folder stops being a finished conversion while its shards are replaced
        storage.remove(manifest_loc, storage_options)
    _clean(split_loc, split, None, storage_options)


def write_shard_files(split_loc: str, split: str, index: int, first_id: int, images, labels, *,
                      formats, encoding: str, classes, storage_options=None) -> dict:
    """Encode and write shard ``index`` of ``split`` in every format of ``formats``:
    ``images`` uint8 (n, H, W, C) and ``labels`` int64 (n,) are samples ``first_id ..
    first_id + n - 1``.  Returns ``{format: ShardInfo}`` of the bytes written.

    The one way a shard is written: :func:`write_split` calls it for each shard in turn, and
    a cluster conversion (:mod:`.cluster`) runs it as one task per shard.  Idempotent (each file
    is written whole: temp + rename locally, one PUT on S3), so a retried task is harmless."""
    pngs = [encode_png(im) for im in images] if encoding == "png" else None
    infos = {}
    for fmt in formats:
        data = _encode_shard(fmt, first_id, images, labels, encoding, classes, pngs)
        name = shard_name(split, index, fmt)
        storage.write_bytes(storage.join(split_loc, name), data, storage_options)
        infos[fmt] = ShardInfo(name, len(images), len(data), _sha256(data))
    return infos


def finish_split(split_loc: str, header: dict, shard_infos, storage_options=None) -> Manifest:
    """After every shard is written: write the index and then the manifest (``header``:
    :func:`target_header`;
    ``shard_infos``: one ``{format: ShardInfo}`` per shard, in shard order), then remove shard
    files of the split it does not list and leftover temp files.  Returns the manifest."""
    formats = header["formats"]
    shards = {fmt: tuple(info[fmt] for info in shard_infos) for fmt in formats}
    manifest = Manifest(dataset=header["dataset"], split=header["split"],
                        num_samples=header["num_samples"], image_shape=header["image_shape"],
                        encoding=header["encoding"], classes=header["classes"],
                        label_counts=header["label_counts"], shards=shards,
                        source=header["source"])
    text = manifest.to_json().encode()
    # the columnar index first (read instead of the JSON's shard list), the manifest last
    storage.write_bytes(storage.join(split_loc, INDEX_NAME), index_bytes(manifest, text),
                        storage_options)
    storage.write_bytes(storage.join(split_loc, MANIFEST_NAME), text, storage_options)
    _clean(split_loc, header["split"], {s.name for v in shards.values() for s in v},
           storage_options)
    return manifest


def write_split(out_location: str, dataset: str, split: str, images: np.ndarray, labels,
                classes, source: dict, *, formats=FORMATS, shard_size: int = 10000,
                encoding: str = "npy", overwrite: bool = False, progress: bool = True) -> Manifest:
    """Write one split: ``<out_location>/<dataset>/<split>/`` shards of every format in
    ``formats``, then the columnar index ``index.npy`` (:mod:`shardstream.shards.index`),
    then ``manifest.json`` (last).  Returns the manifest.

    ``images``: uint8 (N, H, W, C) (or (N, H, W), taken as C = 1), or an object with
    ``shape`` (N, H, W, C) and ``read(start, count)`` giving consecutive runs of them (a split
    bigger than memory, read one shard at a time); ``labels``: int (N,) in
    ``[0, len(classes))``; ``source``: JSON-able dict recorded in the manifest (must hold
    ``"synthetic": bool``).  See the module doc for overwrite and clean-up rules.
    """
    check_names(dataset, split)
    formats = check_args(formats, shard_size, encoding)
    if isinstance(images, np.ndarray):
        images, labels = checked_arrays(dataset, split, images, labels, classes)
        read = lambda start, size: images[start:start + size]
    else:                   # streamed (e.g. converters.idx.IdxImages): one shard in memory
        labels = checked_arrays(dataset, split, np.zeros((len(labels), 1, 1, 1), np.uint8),
                                labels, classes)[1]
        read = images.read
    split_loc = storage.join(out_location, dataset, split)
    header = target_header(dataset, split, images, labels, classes, source, formats=formats,
                           shard_size=shard_size, encoding=encoding)
    begin_split(split_loc, split, header, overwrite)
    infos = []
    bar = progress_bar(total=len(labels), desc=f"{dataset}/{split}", unit="img", enabled=progress,
               leave=False, file=sys.stderr)
    try:
        for index, (start, size) in enumerate(zip(shard_starts(header), header["shard_sizes"])):
            infos.append(write_shard_files(split_loc, split, index, start, read(start, size),
                                           labels[start:start + size], formats=formats,
                                           encoding=encoding, classes=classes))
            bar.update(size)
    finally:
        bar.close()
    return finish_split(split_loc, header, infos)


def write_splits(out: str, dataset: str, data: dict, classes, sources: dict, *,
                 formats=FORMATS, shard_size: int = 10000, encoding: str = "npy",
                 overwrite: bool = False, progress: bool = True) -> list:
    """Write every split of ``data`` (``{split: (images, labels)}``, ``sources[split]`` its
    source dict) with :func:`write_split`, after checking that none of the targets holds a
    different conversion: a refusal writes nothing.  Returns the manifests."""
    for split, (images, labels) in data.items():
        check_target(storage.join(out, dataset, split),
                     target_header(dataset, split, images, labels, classes, sources[split],
                                   formats=formats, shard_size=shard_size, encoding=encoding),
                     overwrite)
    return [write_split(out, dataset, split, images, labels, classes, sources[split],
                        formats=formats, shard_size=shard_size, encoding=encoding,
                        overwrite=overwrite, progress=progress)
            for split, (images, labels) in data.items()]


def summary(manifests, out, seconds: float) -> str:
    """The one-paragraph report printed at the end of a conversion."""
    lines = []
    total_bytes = total_shards = total_samples = 0
    for m in manifests:
        b = sum(s.bytes for fmt in m.formats for s in m.shards[fmt])
        k = sum(len(m.shards[fmt]) for fmt in m.formats)
        total_bytes, total_shards, total_samples = (total_bytes + b, total_shards + k,
                                                    total_samples + m.num_samples)
        lines.append(f"  {m.split:<6} {m.num_samples:>9,} samples  {k:>4} shards "
                     f"({' + '.join(f'{len(m.shards[f])} {f}' for f in m.formats)})  "
                     f"{b / 1e6:>9.1f} MB  -> {storage.join(out, m.dataset, m.split)}")
    head = manifests[0] if manifests else None
    what = (f"{head.dataset} ({head.encoding}{', synthetic' if head.synthetic else ''})"
            if head else "nothing")
    lines.insert(0, f"converted {what}: {total_samples:,} samples, {total_shards} shards, "
                    f"{total_bytes / 1e6:.1f} MB in {seconds:.1f} s")
    return "\n".join(lines)
