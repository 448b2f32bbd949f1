"""``shardstream convert imagefolder DIR OUT``: a folder of images sorted into class folders.

Accepted layouts:

- ``DIR/<class>/<image>``: one split, called ``train``;
- ``DIR/<split>/<class>/<image>`` with split folders ``train`` and ``test`` or ``val``
  (any of them; they must share the same class folders).

Images are PNG or JPEG (``.png``, ``.jpg``, ``.jpeg``, any case), all grayscale (``L``) or all
RGB, all of one size; classes are the folder names, sorted; samples within a class are taken in
sorted file-name order.  Anything else is an :class:`InputError` naming the odd file.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from ..errors import InputError
from .images import ImageStack, decode_image
from .writer import write_splits

EXTENSIONS = (".png", ".jpg", ".jpeg")
SPLIT_NAMES = ("train", "test", "val")


def _subdirs(folder: str) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def scan(folder: str) -> dict:
    """``{split: [(path, class name), ...]}`` of the images under ``folder`` and the sorted
    class names: ``({split: [...]}, classes)``."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise InputError(f"{folder}: no such folder; `convert imagefolder DIR OUT` needs a folder "
                         f"of class subfolders of images")
    top = _subdirs(folder)
    if top and all(d in SPLIT_NAMES for d in top):
        splits = {d: os.path.join(folder, d) for d in top}
    else:
        splits = {"train": folder}
    classes = None
    found = {}
    for split, path in splits.items():
        cls = _subdirs(path)
        if not cls:
            raise InputError(f"{path}: holds no class subfolders; put the images of each class "
                             f"in a folder named after the class")
        if classes is None:
            classes = cls
        elif cls != classes:
            raise InputError(f"{path}: class folders {cls} differ from those of the other split "
                             f"({classes}); every split needs the same class folders")
        items = []
        for c in cls:
            cdir = os.path.join(path, c)
            for name in sorted(os.listdir(cdir)):
                p = os.path.join(cdir, name)
                if name.startswith(".") or not os.path.isfile(p):
                    continue
                if not name.lower().endswith(EXTENSIONS):
                    raise InputError(f"{p}: not a PNG or JPEG file (extension); remove it or "
                                     f"convert it to PNG")
                items.append((p, c))
        if not items:
            raise InputError(f"{path}: the class folders hold no images")
        found[split] = items
    return found, classes


def load_images(items, classes, root) -> tuple[np.ndarray, np.ndarray, str]:
    """(images uint8 (N, H, W, C), labels int64 (N,), sha256 of all file bytes) of ``items``;
    C = 1 for grayscale, 3 for RGB.  :class:`InputError` naming the first file whose size or
    mode differs from the first image's (:class:`~.images.ImageStack`)."""
    index = {c: i for i, c in enumerate(classes)}
    digest = hashlib.sha256()
    stack, labels = ImageStack(), np.empty(len(items), dtype=np.int64)
    for k, (path, c) in enumerate(items):
        with open(path, "rb") as f:
            data = f.read()
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
        stack.add(decode_image(data, path), path)
        labels[k] = index[c]
    return stack.array(), labels, digest.hexdigest()


def convert_imagefolder(folder, out, *, name=None, formats=("tar", "parquet"),
                        shard_size: int = 10000, encoding: str = "npy", overwrite: bool = False,
                        progress: bool = True) -> list:
    """Convert the image folder ``folder`` into ``<out>/<name>/<split>/`` (``name`` defaults to
    the folder's name); returns one manifest per split."""
    folder = os.fspath(folder)
    dataset = name or os.path.basename(os.path.normpath(os.path.abspath(folder)))
    found, classes = scan(folder)
    data, sources = {}, {}
    for split, items in found.items():
        images, labels, digest = load_images(items, classes, folder)
        data[split] = (images, labels)
        sources[split] = {"synthetic": False, "imagefolder": dataset, "files": len(items),
                          "sha256": digest}
    return write_splits(out, dataset, data, classes, sources, formats=formats,
                        shard_size=shard_size, encoding=encoding, overwrite=overwrite,
                        progress=progress)
