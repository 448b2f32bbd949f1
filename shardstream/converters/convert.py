"""Raw dataset in, shards out: ``shardstream convert`` for the IDX datasets (Fashion-MNIST,
MNIST, KMNIST) and, through :mod:`.imagefolder`, for folders of images.  Writing a split (and
the rules for the target folder) is :mod:`.writer`'s.
"""

from __future__ import annotations

import hashlib
import os
import time

import numpy as np

from .. import storage
from ..errors import InputError
from ..shards.names import FORMATS
from .datasets import SPLITS, get_spec
from .fetch import find_raw
from .idx import MAGIC_IMAGES, MAGIC_LABELS, parse_idx, read_file
from .imagefolder import convert_imagefolder
from .synth import read_marker
from .writer import check_args, check_target, summary, target_header, write_split


def _sha256(data) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_pair(spec, split, img_path, lbl_path, images, labels):
    """Raw-data checks that need both files (counts, label range, image size)."""
    if len(images) != len(labels):
        raise InputError(f"{img_path} holds {len(images):,} images but {lbl_path} holds "
                         f"{len(labels):,} labels; the two files of the {split} split must have "
                         f"the same count: re-download them or pass the right --raw folder")
    if len(labels) and int(labels.max()) >= len(spec.classes):
        bad = int(np.argmax(labels >= len(spec.classes)))
        raise InputError(f"{lbl_path}: label {int(labels[bad])} of sample {bad} is out of range: "
                         f"{spec.name} has {len(spec.classes)} classes (labels 0.."
                         f"{len(spec.classes) - 1}); is this the labels file of another dataset?")
    if images.shape[1:] != spec.image_shape[:2]:
        h, w = spec.image_shape[:2]
        raise InputError(f"{img_path}: wrong dims: images of {images.shape[1]}x{images.shape[2]},"
                         f" {spec.name} images are {h}x{w}; check that the file belongs to "
                         f"{spec.name}")
    if len(images) == 0:
        raise InputError(f"{img_path}: holds no images (0 samples)")


def load_raw(spec, paths) -> tuple[dict, dict]:
    """Read and check the raw files ``paths`` (``{split: (images, labels)}``):
    ``({split: (images uint8 (N, H, W), labels uint8 (N,))}, source dict for the manifests)``."""
    data, files = {}, {}
    for split in SPLITS:
        img_path, lbl_path = paths[split]
        raw_img, raw_lbl = read_file(img_path), read_file(lbl_path)
        images = parse_idx(raw_img, img_path, MAGIC_IMAGES)
        labels = parse_idx(raw_lbl, lbl_path, MAGIC_LABELS)
        _check_pair(spec, split, img_path, lbl_path, images, labels)
        data[split] = (images, labels)
        files[split] = [{"name": os.path.basename(p), "bytes": len(b), "sha256": _sha256(b)}
                        for p, b in ((img_path, raw_img), (lbl_path, raw_lbl))]
    folders = {os.path.dirname(os.path.abspath(p)) for pair in paths.values() for p in pair}
    markers = [m for m in (read_marker(f) for f in sorted(folders)) if m is not None]
    sources = {}
    for split in SPLITS:
        src = {"dataset": spec.name, "files": files[split], "synthetic": bool(markers)}
        if markers:
            src["generator"] = markers[0]
        sources[split] = src
    return data, sources


def convert(dataset: str, out: str, source=None, raw=None, formats=FORMATS,
            shard_size: int = 10000, encoding: str = "npy", overwrite: bool = False,
            name=None, progress: bool = True) -> list:
    """Convert ``dataset`` (``fashion-mnist``, ``mnist``, ``kmnist`` or ``imagefolder``) into
    ``<out>/<name or dataset>/<split>/`` for each split; returns the manifests (train, test).

    ``raw``: the folder of raw IDX files (default: search the usual places, then download; see
    :mod:`.fetch`); ``source``: the image folder (``imagefolder`` only); ``formats``: shard
    formats; ``shard_size``: samples per shard; ``encoding``: ``"npy"`` or ``"png"``;
    ``overwrite``: replace a different conversion already at the output; ``name``: the dataset
    name in the output (default the dataset's name, or the image folder's name).
    """
    t0 = time.perf_counter()
    formats = check_args(formats, shard_size, encoding)
    out = os.fspath(out)
    if dataset == "imagefolder":
        if source is None:
            raise InputError("convert imagefolder needs the image folder: "
                             "`shardstream convert imagefolder DIR OUT`")
        if raw is not None:
            raise InputError("--raw is for the IDX datasets; for imagefolder give the folder as "
                             "`shardstream convert imagefolder DIR OUT`")
        manifests = convert_imagefolder(source, out, name=name, formats=formats,
                                        shard_size=shard_size, encoding=encoding,
                                        overwrite=overwrite, progress=progress)
    else:
        spec = get_spec(dataset)
        if source is not None:
            raise InputError(f"unexpected argument {source!r}: `shardstream convert {dataset} "
                             f"OUT` takes one folder (the output); give the raw files with --raw "
                             f"DIR")
        out_name = name or spec.name
        paths = find_raw(spec, raw, progress=progress)
        data, sources = load_raw(spec, paths)
        for split in SPLITS:  # refuse before writing anything
            check_target(storage.join(out, out_name, split),
                         target_header(out_name, split, *data[split], spec.classes,
                                       sources[split], formats=formats, shard_size=shard_size,
                                       encoding=encoding), overwrite)
        manifests = [write_split(out, out_name, split, data[split][0], data[split][1],
                                 spec.classes, sources[split], formats=formats,
                                 shard_size=shard_size, encoding=encoding, overwrite=overwrite,
                                 progress=progress)
                     for split in SPLITS]
    if progress:
        print(summary(manifests, out, time.perf_counter() - t0))
    return manifests



