"""Raw dataset in, shards out: the entry point of ``shardstream convert`` for the downloadable
datasets (IDX: Fashion-MNIST, MNIST, KMNIST; CIFAR-10/100 through :mod:`.cifar`) and for the
source kinds (:mod:`.imagefolder`, webdataset and Parquet shards of other tools through
:mod:`.foreign`).  Writing the splits (and the rules for the target folder) is :mod:`.writer`'s.
"""

from __future__ import annotations

import hashlib
import os
import time

import numpy as np

from .. import storage
from ..errors import InputError
from ..shards.names import FORMATS
from .cifar import check_label, load_cifar
from .datasets import SOURCES, SPLITS, get_spec
from .fetch import find_raw
from .foreign import load_foreign
from .idx import MAGIC_IMAGES, MAGIC_LABELS, IdxImages, parse_idx, read_file, scan_idx
from .imagefolder import convert_imagefolder
from .marker import read_marker
from .writer import check_args, summary, write_splits


def _sha256(data) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_pair(spec, split, img_path, lbl_path, shape, labels):
    """Raw-data checks that need both files (counts, label range, image size); ``shape``: the
    images' (N, H, W, ...)."""
    if shape[0] != len(labels):
        raise InputError(f"{img_path} holds {shape[0]:,} images but {lbl_path} holds "
                         f"{len(labels):,} labels; the two files of the {split} split must have "
                         f"the same count: re-download them or pass the right --raw folder")
    if len(labels) and int(labels.max()) >= len(spec.classes):
        bad = int(np.argmax(labels >= len(spec.classes)))
        raise InputError(f"{lbl_path}: label {int(labels[bad])} of sample {bad} is out of range: "
                         f"{spec.name} has {len(spec.classes)} classes (labels 0.."
                         f"{len(spec.classes) - 1}); is this the labels file of another dataset?")
    if tuple(shape[1:3]) != tuple(spec.image_shape[:2]):
        h, w = spec.image_shape[:2]
        raise InputError(f"{img_path}: wrong dims: images of {shape[1]}x{shape[2]},"
                         f" {spec.name} images are {h}x{w}; check that the file belongs to "
                         f"{spec.name}")
    if shape[0] == 0:
        raise InputError(f"{img_path}: holds no images (0 samples)")


def mark_synthetic(sources: dict, paths) -> dict:
    """``sources`` (``{split: source dict}``) with ``synthetic`` (and ``generator``, the
    parameters of ``shardstream synth``) set from the marker files next to the raw files
    ``paths`` (``{split: (path, ...)}``)."""
    folders = {os.path.dirname(os.path.abspath(p)) for group in paths.values() for p in group}
    markers = [m for m in (read_marker(f) for f in sorted(folders)) if m is not None]
    for src in sources.values():
        src["synthetic"] = bool(markers)
        if markers:
            src["generator"] = markers[0]
    return sources


def load_raw(spec, paths) -> tuple[dict, dict]:
    """Check the raw files ``paths`` (``{split: (images, labels)}``) and open them for
    streaming: ``({split: (images :class:`~.idx.IdxImages` (N, H, W, 1), read shard by shard;
    labels uint8 (N,))}, source dict for the manifests)``.  Every file is read once here (its
    checks and sha256) without holding the images, so converting needs memory for one shard,
    not for the dataset."""
    data, sources = {}, {}
    for split in SPLITS:
        img_path, lbl_path = paths[split]
        dims, img_bytes, img_sha = scan_idx(img_path, MAGIC_IMAGES)
        raw_lbl = read_file(lbl_path)
        labels = parse_idx(raw_lbl, lbl_path, MAGIC_LABELS)
        _check_pair(spec, split, img_path, lbl_path, dims, labels)
        data[split] = (IdxImages(img_path, dims), labels)
        sources[split] = {"dataset": spec.name, "files": [
            {"name": os.path.basename(img_path), "bytes": img_bytes, "sha256": img_sha},
            {"name": os.path.basename(lbl_path), "bytes": len(raw_lbl),
             "sha256": _sha256(raw_lbl)}]}
    return data, mark_synthetic(sources, paths)


def _check_options(dataset, source, raw, label, classes, size, skip_bad=False,
                   remote_options=None):
    """Refuse the options that do not go with ``dataset`` (one line saying which do)."""
    if dataset in SOURCES:
        if source is None:
            what, arg = ("the image folder", "DIR") if dataset == "imagefolder" else \
                ("its source location", "SRC")
            raise InputError(f"convert {dataset} needs {what}: `shardstream convert {dataset} "
                             f"{arg} OUT`")
        if raw is not None:
            raise InputError(f"--raw is for the downloadable datasets; for {dataset} give the "
                             f"source as `shardstream convert {dataset} SRC OUT`")
    elif source is not None:
        get_spec(dataset)  # an unknown name: say so first
        raise InputError(f"unexpected argument {source!r}: `shardstream convert {dataset} OUT` "
                         f"takes one folder (the output); give the raw files with --raw DIR")
    if dataset == "imagefolder" and (label, classes) != (None, None):
        raise InputError("--label and --classes are for webdataset and parquet sources (and "
                         "--label for cifar-100); an image folder's classes are its folders")
    if dataset not in SOURCES and (classes is not None or size is not None):
        raise InputError(f"--classes and --size are for image folders, webdataset and parquet "
                         f"sources; {dataset} has its own classes and image size")
    if dataset != "imagefolder" and skip_bad:
        raise InputError("--skip-bad is for image folders")
    if dataset not in ("webdataset", "parquet") and remote_options:
        raise InputError(f"--token (and --timeout, --retries) are for a remote webdataset or "
                         f"parquet source; {dataset} reads local files")
    if dataset == "webdataset" and label is not None:
        raise InputError("--label names a Parquet column (or cifar-100's fine/coarse); a "
                         "webdataset sample's label is its .cls member")


def convert(dataset: str, out: str, source=None, raw=None, formats=FORMATS,
            shard_size: int = 10000, encoding: str = "npy", overwrite: bool = False,
            name=None, progress: bool = True, label=None, classes=None, size=None,
            skip_bad: bool = False, token=None, storage_options=None) -> list:
    """Convert ``dataset`` into ``<out>/<name or dataset>/<split>/`` for each split; returns the
    manifests (train, test, ...).  ``shardstream datasets`` lists what ``dataset`` may be: a
    downloadable dataset (``fashion-mnist``, ``mnist``, ``kmnist``, ``cifar-10``,
    ``cifar-100``) or a source kind (``imagefolder``, ``webdataset``, ``parquet``).

    ``raw``: the folder of raw files of a downloadable dataset (default: search the usual
    places, then download; see :mod:`.fetch`); ``source``: the location of a source kind;
    ``formats``: shard formats; ``shard_size``: samples per shard; ``encoding``: ``"npy"`` or
    ``"png"``; ``overwrite``: replace a different conversion already at the output; ``name``:
    the dataset name in the output (default the dataset's name, ``cifar-100-coarse`` for
    CIFAR-100's coarse labels, or the source folder's name).  ``label``: ``"fine"``/``"coarse"``
    (cifar-100) or the label column (parquet); ``classes``: class names (webdataset, parquet;
    default the source's metadata); ``size``: (H, W) to resize every image of another size to
    at conversion (imagefolder, webdataset, parquet; PIL bilinear), else they must be one
    size; ``skip_bad``: leave an image folder's bad files out (listed in the manifests'
    ``source["skipped"]``) instead of refusing it; ``token`` / ``storage_options``: reading a
    remote webdataset / parquet source (the token is bound to the source's origin).
    """
    t0 = time.perf_counter()
    formats = check_args(formats, shard_size, encoding)
    out = os.fspath(out)
    _check_options(dataset, source, raw, label, classes, size, skip_bad, storage_options or token)
    if dataset in ("webdataset", "parquet"):
        storage_options = storage.with_token(os.fspath(source), storage_options, token)
    kw = dict(formats=formats, shard_size=shard_size, encoding=encoding, overwrite=overwrite,
              progress=progress)
    if dataset == "imagefolder":
        manifests = convert_imagefolder(source, out, name=name, size=size, skip_bad=skip_bad,
                                        **kw)
    elif dataset in ("webdataset", "parquet"):
        out_name, data, names, sources = load_foreign(dataset, source, name=name, label=label,
                                                      classes=classes, size=size,
                                                      progress=progress,
                                                      storage_options=storage_options)
        manifests = write_splits(out, out_name, data, names, sources, **kw)
    else:
        spec = get_spec(dataset)
        if spec.raw_format == "cifar":
            label = check_label(spec, label)
        elif label is not None:
            raise InputError(f"--label is for cifar-100 (fine/coarse) and parquet sources; "
                             f"{spec.name} has one kind of label")
        paths = find_raw(spec, raw, progress=progress)
        if spec.raw_format == "cifar":
            data, names, sources = load_cifar(spec, paths["train"][0], label=label)
            sources = mark_synthetic(sources, paths)
            out_name = name or (spec.name if label == "fine" else f"{spec.name}-{label}")
        else:
            data, sources = load_raw(spec, paths)
            names, out_name = spec.classes, name or spec.name
        manifests = write_splits(out, out_name, data, names, sources, **kw)
    if progress:
        print(summary(manifests, out, time.perf_counter() - t0))
    return manifests
