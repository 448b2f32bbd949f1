"""``shardstream convert webdataset SRC OUT`` and ``convert parquet SRC OUT``: shards that other
tools wrote (webdataset tar shards, Hugging Face Parquet files), converted into shardstream's.

``SRC`` is a location (a local folder, ``http(s)://`` with an index page, ``s3://bucket/prefix``)
or one file.  Its files (``*.tar`` / ``*.tar.gz``, or ``*.parquet``) are grouped into splits:

- a file whose name starts with a split word (``train``, ``test``, ``val``, ``valid``,
  ``validation``, then ``-``, ``_`` or ``.``) belongs to that split, any other to ``train``;
- when ``SRC`` holds no such files directly, its subfolders named after a split hold that
  split's files, and a ``data/`` subfolder (the Hub's layout) files named as above.

Within a split, files are read in name order and samples in file order; the images are decoded
(:mod:`.images`: all grayscale or all RGB, one size unless ``size`` resizes them with PIL
bilinear) and the labels checked against the class names: ``classes`` when given, else the
files' metadata (Parquet ``ClassLabel`` names, the same in every file), else ``"0" .. "K-1"``.
Everything is read and checked before anything is written.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys

import numpy as np

from .. import storage
from ..errors import AccessError, InputError, ShardstreamError
from ..units import progress_bar
from .hfsource import read_rows
from .images import ImageStack, decode_image
from .wdsource import read_samples

EXTENSIONS = {"webdataset": (".tar", ".tar.gz", ".tgz"), "parquet": (".parquet",)}
SPLIT_WORDS = ("train", "test", "val", "valid", "validation")
_SPLIT = re.compile(r"(train|test|validation|valid|val)(?:[-_.]|\Z)", re.IGNORECASE)


def split_of(file_name: str) -> str:
    """The split a file belongs to by its name (see the module doc)."""
    match = _SPLIT.match(file_name)
    return match.group(1).lower() if match else "train"


def find_files(kind: str, src: str, storage_options=None) -> dict:
    """``{split: [file locations, in name order]}`` of the ``kind`` files at ``src``, splits
    train first; :class:`InputError` naming ``src`` when it holds none."""
    exts = EXTENSIONS[kind]
    if src.lower().endswith(exts):
        return {split_of(src.rstrip("/").rsplit("/", 1)[-1]): [src]}
    try:
        names = storage.listdir(src, storage_options=storage_options)
    except AccessError as exc:
        raise AccessError(f"{exc}; for an http(s) source pass --token (token=) or set "
                          f"$SHARDSTREAM_TOKEN") from None
    except ShardstreamError as exc:
        raise InputError(f"{src}: cannot list the {kind} files ({exc}); give "
                         f"a folder, http(s):// or s3:// prefix holding them, or one file") \
            from None
    found = {}
    for n in names:
        if n.lower().endswith(exts):
            found.setdefault(split_of(n), []).append(storage.join(src, n))
    if not found:
        for sub in names:
            if sub.lower() not in SPLIT_WORDS + ("data",):
                continue
            try:
                inner = storage.listdir(storage.join(src, sub), storage_options=storage_options)
            except ShardstreamError:
                continue  # a file called like a split, not a folder
            for n in inner:
                if n.lower().endswith(exts):
                    split = split_of(n) if sub == "data" else sub.lower()
                    found.setdefault(split, []).append(storage.join(src, sub, n))
    if not found:
        raise InputError(f"{src}: holds no {' / '.join(exts)} files (nor "
                         f"train/, test/ or data/ folders of them); is it the right location "
                         f"for `convert {kind}`?")
    order = {s: i for i, s in enumerate(SPLIT_WORDS)}
    return {s: sorted(found[s]) for s in sorted(found, key=lambda s: (order.get(s, 99), s))}


def default_name(src: str) -> str:
    """The dataset name for ``src`` when ``--name`` is not given: its folder's name."""
    path = src.rstrip("/")
    if path.lower().endswith(tuple(e for v in EXTENSIONS.values() for e in v)):
        path = path.rsplit("/", 1)[0] if "/" in path else "."
    if storage.local_path(path) is not None:
        path = os.path.abspath(storage.local_path(path))
    return re.split(r"[/\\]", path)[-1] or "dataset"


def _class_names(given, seen: dict, labels, wheres):
    """The class names (``given``, else the files' metadata, else numbers), checked against
    every label; :class:`InputError` naming the sample of a label outside them."""
    if given is not None:
        names = tuple(str(n) for n in given)
        origin = "--classes"
    elif seen:
        distinct = list(dict.fromkeys(seen.values()))
        if len(distinct) > 1:
            a, b = (next(w for w, n in seen.items() if n == d) for d in distinct[:2])
            short = [", ".join(d[:5]) + (", ..." if len(d) > 5 else "") for d in distinct[:2]]
            raise InputError(f"{b}: its class names ({short[1]}) differ from those of {a} "
                             f"({short[0]}); pass --classes to choose")
        names, origin = distinct[0], "the metadata"
    else:
        top = max(int(v.max()) for v in labels.values())
        return tuple(str(i) for i in range(top + 1))
    if not names or len(set(names)) != len(names):
        raise InputError(f"class names from {origin} must be distinct and non-empty: {names}")
    for split, values in labels.items():
        bad = np.flatnonzero(values >= len(names))
        if len(bad):
            raise InputError(f"{wheres[split][bad[0]]}: label {values[bad[0]]} is outside the "
                             f"{len(names)} classes from {origin}")
    return names


def load_foreign(kind: str, src, *, name=None, label=None, classes=None, size=None,
                 progress: bool = True, storage_options=None):
    """Read and check every sample at ``src`` (``kind``: ``"webdataset"`` or ``"parquet"``):
    ``(dataset name, {split: (images uint8 (N, H, W, C), labels int64 (N,))}, class names,
    {split: source dict for the manifests})``.  ``label``: Parquet label column; ``classes``:
    class names; ``size``: (H, W) to resize other sizes to; see the module doc."""
    src = os.fspath(src)
    files = find_files(kind, src, storage_options)
    hint = "pass --size HxW to resize them all at conversion (PIL bilinear), or remove it"
    stack = ImageStack(size, hint=hint)
    spans, labels, wheres, infos, seen, columns = {}, {}, {}, {}, {}, set()
    bar = progress_bar(total=sum(len(v) for v in files.values()), desc=f"read {kind}", unit="file",
               enabled=progress, leave=False, file=sys.stderr)
    try:
        for split, locations in files.items():
            start, resized = len(stack), stack.resized
            values, at_list, infos[split] = [], [], []
            for loc in locations:
                data = storage.read_bytes(loc, storage_options=storage_options)
                where = loc
                infos[split].append({"name": loc[len(src):].strip("/") or os.path.basename(loc),
                                     "bytes": len(data),
                                     "sha256": hashlib.sha256(data).hexdigest()})
                if kind == "webdataset":
                    samples = ((f"{where}: member {m}", blob, ext, y)
                               for m, blob, ext, y in read_samples(data, where))
                else:
                    rows, names, column = read_rows(data, where, label)
                    columns.add(column)
                    if names is not None:
                        seen[where] = names
                    samples = ((at, blob, None, y) for at, blob, y in rows)
                for at, blob, ext, y in samples:
                    if y < 0:
                        raise InputError(f"{at}: label {y} is negative; labels are class "
                                         f"indices 0, 1, ...")
                    stack.add(decode_image(blob, at, ext), at)
                    values.append(y)
                    at_list.append(at)
                bar.update(1)
            if len(stack) == start:
                raise InputError(f"{locations[0]}: the {split} files hold no "
                                 f"samples")
            spans[split] = (start, len(stack), stack.resized - resized)
            labels[split], wheres[split] = np.asarray(values, dtype=np.int64), at_list
    finally:
        bar.close()
    names = _class_names(classes, seen, labels, wheres)
    data, sources = {}, {}
    for split, (a, b, resized) in spans.items():
        data[split] = (stack.array(a, b), labels[split])
        sources[split] = {"synthetic": False, kind: default_name(src), "files": infos[split]}
        if columns:
            sources[split]["label_column"] = sorted(columns)[0]
        if size is not None:
            sources[split]["resized_to"] = [int(size[0]), int(size[1])]
            sources[split]["resized"] = resized
    return name or default_name(src), data, names, sources
