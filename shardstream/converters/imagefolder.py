"""``shardstream convert imagefolder DIR OUT``: a folder of images sorted into class folders.

Accepted layouts:

- ``DIR/<class>/<image>``: one split, called ``train`` (``DataModule(..., val_fraction=0.1)``
  carves a validation split out of it);
- ``DIR/<split>/<class>/<image>`` with split folders ``train`` and ``val``, ``valid``,
  ``validation`` or ``test`` (any of them; they must share the same class folders).

Images are PNG or JPEG (``.png``, ``.jpg``, ``.jpeg``, any case), all grayscale (``L``) or all
RGB; classes are the folder names, sorted; samples within a class are taken in sorted file-name
order. Images with an alpha channel (RGBA, LA, transparent palette) are converted to RGB /
grayscale without it, with a warning naming how many and the first. All images must be of one
size, or ``size=(H, W)`` (``--size HxW``) resizes every image of another size to (H, W) at
conversion with PIL's BILINEAR filter (:class:`~.images.ImageStack`, the same resize as the
webdataset and Parquet sources).

Every problem of the folder is found in one run: a class folder without images, a file that is
not an image, an image of another kind or size. They are reported together in one
:class:`InputError`; with ``skip_bad=True`` (``--skip-bad``) the bad files are left out instead
and listed (with their problem) in the manifest's ``source["skipped"]``. An output folder
inside ``DIR`` is never taken for a class or a split.

``DIR`` may also be an ``s3://`` or ``http(s)://`` folder (a name with a file extension is taken
for a file, any other for a folder).  On a cluster (:mod:`.cluster`) each shard's images are read
by the task that writes the shard (:func:`read_images`); ``--size`` and ``--skip-bad`` are not
available there.
"""

from __future__ import annotations

import hashlib
import os
import sys

import numpy as np

from .. import storage
from ..errors import InputError, NotFoundError
from .images import ImageStack, decode_image
from .writer import write_splits

EXTENSIONS = (".png", ".jpg", ".jpeg")
SPLIT_NAMES = ("train", "test", "val", "valid", "validation")
#: problems listed in full in the error (the rest are counted)
MAX_LISTED = 20


def _entries(folder: str, storage_options=None, skip=()) -> tuple[list[str], list[str]]:
    """``(sub-folder names, file names)`` directly inside ``folder``, sorted, hidden names and
    the real paths in ``skip`` left out.  Remote folders (``s3://``, ``http(s)://``) list names
    only: a name with a file extension (``x.png``, ``notes.txt``) is taken as a file, any other
    as a folder."""
    if not storage.is_remote(folder):
        found = sorted(os.scandir(folder), key=lambda e: e.name)
        return ([e.name for e in found if e.is_dir() and not e.name.startswith(".")
                 and os.path.realpath(e.path) not in skip],
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


def scan(folder: str, storage_options=None, out=None) -> tuple[dict, list, list]:
    """``({split: [(path, class name), ...]}, sorted class names, problems)`` of the images
    under ``folder`` (a local folder or an ``s3://`` / ``http(s)://`` location); ``out``: the
    output folder, never taken for a class or split when it lies inside ``folder``.
    ``problems``: ``[(path, what is wrong)]`` (empty class folders, files that are not
    PNG/JPEG); a folder without class folders is an :class:`InputError` at once."""
    folder = os.fspath(folder)
    if not _is_folder(folder, storage_options):
        raise InputError(f"{folder}: no such folder; `convert imagefolder DIR OUT` needs a folder "
                         f"of class subfolders of images")
    skip = set()
    if out is not None and storage.local_path(os.fspath(out)) is not None \
            and os.path.isdir(storage.local_path(os.fspath(out))):
        skip.add(os.path.realpath(storage.local_path(os.fspath(out))))
    top = _entries(folder, storage_options, skip)[0]
    if top and all(d in SPLIT_NAMES for d in top):
        splits = {d: storage.join(folder, d) for d in top}
    else:
        splits = {"train": folder}
    classes, found, problems = None, {}, []
    for split, path in splits.items():
        cls = _entries(path, storage_options, skip)[0]
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
            cdir, count = storage.join(path, c), 0
            for name in _entries(cdir, storage_options)[1]:
                p = storage.join(cdir, name)
                if not name.lower().endswith(EXTENSIONS):
                    problems.append((p, "not a PNG or JPEG file (extension); remove it or "
                                        "convert it to PNG"))
                    continue
                items.append((p, c))
                count += 1
            if count == 0:
                problems.append((cdir, "empty class folder (no PNG/JPEG images); remove it or "
                                       "add its images"))
        found[split] = items
    return found, classes, problems


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


def check_images(items, classes, root, *, size=None, storage_options=None):
    """The first pass over a split's ``items``: every file read, hashed and decoded, none held.
    Returns ``(images, labels int64 (N,), sha256 of the good files, problems, files with
    alpha)``; ``images``: :class:`FolderImages` over the good files (None when there is none),
    read again shard by shard when the split is written.  ``problems``: ``[(path, what is
    wrong)]`` for each file that cannot be read or whose kind (or, without ``size``, size)
    differs from the first good image's; those files are left out."""
    index = {c: i for i, c in enumerate(classes)}
    digest = hashlib.sha256()
    hint = "pass --size HxW to resize them all at conversion (PIL bilinear), or --skip-bad"
    stack, good, labels, problems, alpha = ImageStack(size, hint=hint, keep=False), [], [], [], []
    for path, c in items:
        data = storage.read_bytes(path, storage_options)
        try:
            stack.add(decode_image(data, path, alpha=alpha), path)
        except InputError as exc:
            problems.append((path, str(exc).removeprefix(f"{path}: ")))
            continue
        digest.update(file_record(path, root, data))
        good.append(path)
        labels.append(index[c])
    images = FolderImages(good, stack.shape, size, storage_options) if good else None
    return images, np.asarray(labels, dtype=np.int64), digest.hexdigest(), problems, alpha


class FolderImages:
    """The good images of a split (:func:`check_images`), decoded again one shard at a time,
    so converting a folder needs memory for one shard: ``shape`` (N, H, W, C); ``read(start,
    count)`` -> uint8 (count, H, W, C), resized to ``size`` like the first pass."""

    def __init__(self, paths, shape, size=None, storage_options=None):
        self.paths, self.shape, self.size = paths, tuple(shape), size
        self.storage_options = storage_options

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, start: int, count: int) -> np.ndarray:
        stack = ImageStack(self.size)
        for path in self.paths[start:start + count]:
            stack.add(decode_image(storage.read_bytes(path, self.storage_options), path), path)
        return stack.array()


def problems_report(folder, problems) -> str:
    listed = "; ".join(f"{p}: {what}" for p, what in problems[:MAX_LISTED])
    more = f"; ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    return (f"{folder}: {len(problems)} problem{'s' if len(problems) > 1 else ''}: {listed}"
            f"{more}; fix {'them' if len(problems) > 1 else 'it'}, or pass --skip-bad "
            f"(skip_bad=True) to leave the bad files out")


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
                        progress: bool = True, size=None, skip_bad: bool = False) -> list:
    """Convert the image folder ``folder`` into ``<out>/<name>/<split>/`` (``name`` defaults to
    the folder's name); returns one manifest per split. ``size``: (H, W) to resize images of
    another size to; ``skip_bad``: leave bad files out (see the module doc)."""
    folder = os.fspath(folder)
    dataset = dataset_name(folder, name)
    found, classes, problems = scan(folder, out=out)
    empty = [p for p, what in problems if what.startswith("empty class")]
    if empty:   # a class without samples: refused even with skip_bad
        raise InputError(problems_report(folder, problems).replace(
            ", or pass --skip-bad (skip_bad=True) to leave the bad files out", ""))
    data, sources, alpha = {}, {}, []
    for split, items in found.items():
        images, labels, digest, bad, dropped = check_images(items, classes, folder, size=size)
        problems += bad
        alpha += dropped
        if images is None:
            problems.append((os.path.join(folder, split), "no readable images"))
            continue
        data[split] = (images, labels)
        sources[split] = source_record(dataset, len(labels), digest)
        if size is not None:
            sources[split]["resized_to"] = list(size)
    if problems and (not skip_bad or len(data) < len(found)):
        raise InputError(problems_report(folder, problems))
    if problems:
        for split, src in sources.items():
            base = os.path.join(folder, split) if len(found) > 1 else folder
            src["skipped"] = [{"file": os.path.relpath(p, folder).replace(os.sep, "/"),
                               "problem": what} for p, what in problems
                              if os.path.commonpath([os.path.abspath(p), os.path.abspath(base)])
                              == os.path.abspath(base)]
        print(f"skipped {len(problems)} bad file(s) (listed in the manifests' source.skipped), "
              f"e.g. {problems[0][0]}: {problems[0][1]}", file=sys.stderr)
    if alpha:
        print(f"warning: {len(alpha)} image(s) with an alpha channel (transparency) converted "
              f"without it, e.g. {alpha[0]}", file=sys.stderr)
    return write_splits(out, dataset, data, classes, sources, formats=formats,
                        shard_size=shard_size, encoding=encoding, overwrite=overwrite,
                        progress=progress)
