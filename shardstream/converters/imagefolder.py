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

from .. import storage
from ..errors import InputError, NotFoundError
from .images import decode_image
from .writer import write_splits

EXTENSIONS = (".png", ".jpg", ".jpeg")
SPLIT_NAMES = ("train", "test", "val")


def _entries(folder: str, storage_options=None) -> tuple[list[str], list[str]]:
    """``(sub-folder names, file names)`` directly inside ``folder``, sorted, hidden names
    left out.  Remote folders (``s3://``, ``http(s)://``) list names only: a name with a file
    extension (``x.png``, ``notes.txt``) is taken as a file, any other as a folder."""
    if not storage.is_remote(folder):
        found = sorted(os.scandir(folder), key=lambda e: e.name)
        return ([e.name for e in found if e.is_dir() and not e.name.startswith(".")],
                [e.name for e in found if e.is_file() and not e.name.startswith(".")])
    names = [n for n in storage.listdir(folder, storage_options) if not n.startswith(".")]
    files = [n for n in names if "." in n.lstrip(".")]
    return [n for n in names if n not in files], files


def _is_folder(folder: str, storage_options=None) -> bool:
    if not storage.is_remote(folder):
        return os.path.isdir(folder)
    try:
        return bool(storage.listdir(folder, storage_options))
    except NotFoundError:
        return False


def scan(folder: str, storage_options=None) -> dict:
    """``{split: [(path, class name), ...]}`` of the images under ``folder`` (a local folder
    or an ``s3://`` / ``http(s)://`` location) and the sorted class names:
    ``({split: [...]}, classes)``."""
    folder = os.fspath(folder)
    if not _is_folder(folder, storage_options):
        raise InputError(f"{folder}: no such folder; `convert imagefolder DIR OUT` needs a folder "
                         f"of class subfolders of images")
    top = _entries(folder, storage_options)[0]
    if top and all(d in SPLIT_NAMES for d in top):
        splits = {d: storage.join(folder, d) for d in top}
    else:
        splits = {"train": folder}
    classes = None
    found = {}
    for split, path in splits.items():
        cls = _entries(path, storage_options)[0]
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
            cdir = storage.join(path, c)
            for name in _entries(cdir, storage_options)[1]:
                p = storage.join(cdir, name)
                if not name.lower().endswith(EXTENSIONS):
                    raise InputError(f"{p}: not a PNG or JPEG file (extension); remove it or "
                                     f"convert it to PNG")
                items.append((p, c))
        if not items:
            raise InputError(f"{path}: the class folders hold no images")
        found[split] = items
    return found, classes


def file_record(path: str, root: str, data: bytes) -> bytes:
    """What the source digest records of one file: its path relative to ``root`` (``/``
    separators), a NUL byte, and the sha256 of its bytes ``data``."""
    if storage.is_remote(root):
        rel = path[len(root.rstrip("/")) + 1:]
    else:
        rel = os.path.relpath(path, root).replace(os.sep, "/")
    return rel.encode() + b"\0" + hashlib.sha256(data).digest()


def _decode(path: str, data: bytes, first):
    """``(image uint8 (H, W, C), (path, size, mode))`` of one file (:func:`.images.decode_image`);
    ``first``: the ``(path, (width, height), mode)`` of the first image (None: this is the
    first), which every image must match."""
    arr = decode_image(data, path)
    h, w, c = arr.shape
    mode = "L" if c == 1 else "RGB"
    if first is None:
        first = (path, (w, h), mode)
    if (w, h) != first[1]:
        raise InputError(f"{path}: image of {w}x{h} (WxH), expected {first[1][0]}x{first[1][1]} "
                         f"like {first[0]}; all images must be one size: resize or remove it")
    if mode != first[2]:
        raise InputError(f"{path}: {'RGB' if mode == 'RGB' else 'grayscale'} image among "
                         f"{'RGB' if first[2] == 'RGB' else 'grayscale'} ones (like {first[0]}); "
                         f"all images must be one kind")
    return arr, first


def first_image(items, storage_options=None):
    """``(path, (width, height), mode)`` of the first image of ``items`` (what every other
    image must match); reads that one file."""
    path = items[0][0]
    return _decode(path, storage.read_bytes(path, storage_options), None)[1]


def read_images(items, classes, root, storage_options=None, first=None):
    """``(images uint8 (n, H, W, C), labels int64 (n,), digest records bytes)`` of ``items``
    (``[(path, class name)]``) under ``root``; C = 1 for grayscale, 3 for RGB.  ``first``:
    :func:`first_image` of the whole split (default: the first of ``items``).
    :class:`InputError` naming the first file whose size or mode differs from it.  The records
    of consecutive ``items`` concatenate: the sha256 of all of a split's records is its source
    digest."""
    index = {c: i for i, c in enumerate(classes)}
    records = []
    images, labels = None, np.empty(len(items), dtype=np.int64)
    for k, (path, c) in enumerate(items):
        data = storage.read_bytes(path, storage_options)
        records.append(file_record(path, root, data))
        arr, first = _decode(path, data, first)
        if images is None:
            images = np.empty((len(items),) + arr.shape, dtype=np.uint8)
        images[k] = arr
        labels[k] = index[c]
    return images, labels, b"".join(records)


def load_images(items, classes, root) -> tuple[np.ndarray, np.ndarray, str]:
    """(images uint8 (N, H, W, C), labels int64 (N,), sha256 of all file bytes) of ``items``;
    C = 1 for grayscale, 3 for RGB (:func:`read_images` over the whole split)."""
    images, labels, records = read_images(items, classes, root)
    return images, labels, hashlib.sha256(records).hexdigest()


def dataset_name(folder, name=None) -> str:
    """The dataset name of a conversion of ``folder``: ``name``, else the folder's name."""
    if name:
        return name
    folder = os.fspath(folder)
    if storage.is_remote(folder):
        return folder.rstrip("/").rsplit("/", 1)[-1]
    return os.path.basename(os.path.normpath(os.path.abspath(folder)))


def source_record(dataset: str, files: int, digest: str) -> dict:
    """The ``source`` of an image-folder conversion's manifest."""
    return {"synthetic": False, "imagefolder": dataset, "files": files, "sha256": digest}


def convert_imagefolder(folder, out, *, name=None, formats=("tar", "parquet"),
                        shard_size: int = 10000, encoding: str = "npy", overwrite: bool = False,
                        progress: bool = True) -> list:
    """Convert the image folder ``folder`` into ``<out>/<name>/<split>/`` (``name`` defaults to
    the folder's name); returns one manifest per split."""
    folder = os.fspath(folder)
    dataset = dataset_name(folder, name)
    found, classes = scan(folder)
    data, sources = {}, {}
    for split, items in found.items():
        images, labels, digest = load_images(items, classes, folder)
        data[split] = (images, labels)
        sources[split] = source_record(dataset, len(items), digest)
    return write_splits(out, dataset, data, classes, sources, formats=formats,
                        shard_size=shard_size, encoding=encoding, overwrite=overwrite,
                        progress=progress)
