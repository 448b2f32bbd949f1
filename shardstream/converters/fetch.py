"""Finding the raw IDX files of a dataset, or downloading them.

Where :func:`find_raw` looks, in order (the first folder holding all four files wins; a file
may be gzip-compressed ``name.gz`` or plain ``name`` as torchvision leaves it):

1. ``--raw DIR`` (``raw_dir``): ``DIR`` itself, then ``DIR/<TorchvisionName>/raw``; nothing
   else is tried when it is given;
2. ``$SHARDSTREAM_RAW_DIR`` and ``$SHARDSTREAM_RAW_DIR/<TorchvisionName>/raw``;
3. the torchvision layout under ``./data`` and ``~/data``: ``<root>/FashionMNIST/raw/``;
4. the keras cache: ``~/.keras/datasets/fashion-mnist/`` (Fashion-MNIST, MNIST);
5. shardstream's own download cache: ``<cache dir>/raw/<dataset>/`` (cache dir:
   ``$SHARDSTREAM_CACHE_DIR`` or the platform's user cache folder);
6. otherwise the files are downloaded from the dataset's official mirror(s) into that cache,
   each checked against the published md5 before it is written (atomically).

Offline, the error lists every place looked at and how to provide the files.
"""

from __future__ import annotations

import hashlib
import os

from tqdm import tqdm

from .. import config, storage
from ..errors import InputError, ShardstreamError
from .datasets import SPLITS, DatasetSpec


def raw_cache_dir(spec: DatasetSpec) -> str:
    """The folder downloads of ``spec`` go to: ``<cache dir>/raw/<dataset>``."""
    return os.path.join(config.cache_dir(), "raw", spec.name)


def candidate_dirs(spec: DatasetSpec, raw_dir=None) -> list[str]:
    """The folders :func:`find_raw` searches, in order (see the module doc)."""
    tv = spec.torchvision_folder
    if raw_dir is not None:
        raw_dir = os.fspath(raw_dir)
        return [raw_dir, os.path.join(raw_dir, tv, "raw")]
    dirs = []
    env = config.raw_dir()
    if env:
        dirs += [env, os.path.join(env, tv, "raw")]
    for root in ("data", os.path.join("~", "data")):
        dirs.append(os.path.abspath(os.path.join(os.path.expanduser(root), tv, "raw")))
    if spec.keras_folder:
        dirs.append(os.path.expanduser(os.path.join("~", ".keras", "datasets",
                                                    spec.keras_folder)))
    dirs.append(raw_cache_dir(spec))
    return list(dict.fromkeys(dirs))  # without repeats (./data is ~/data when cwd is ~)


def _locate(folder: str, filename: str) -> str | None:
    """``folder/filename`` (``.gz``) or the same without ``.gz``, whichever exists."""
    for name in (filename, filename[:-3] if filename.endswith(".gz") else None):
        if name and os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def _in_folder(spec: DatasetSpec, folder: str):
    """({split: (images, labels)} or None, [missing file names]) for one folder."""
    found, missing = {}, []
    for split in SPLITS:
        pair = tuple(_locate(folder, f) for f in spec.files[split])
        missing += [f for f, p in zip(spec.files[split], pair) if p is None]
        found[split] = pair
    return (None if missing else found), missing


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def download_raw(spec: DatasetSpec, dest: str, mirror=None, checksums=None, progress=True) -> dict:
    """Download the raw files of ``spec`` that ``dest`` lacks into the local folder ``dest``.

    ``mirror``: a base URL or a list of them (default: the official mirrors), tried in order;
    ``checksums``: ``{file name: md5}`` (default: the published ones).  Every file is checked
    against its md5 before it is written (atomically), so a bad download leaves nothing behind.
    Returns ``{split: (images path, labels path)}``; :class:`InputError` when no mirror gives a
    file with the right checksum (the message says what each mirror answered).
    """
    mirrors = list(spec.mirrors if mirror is None else
                   ([mirror] if isinstance(mirror, str) else mirror))
    sums = dict(spec.md5 if checksums is None else checksums)
    names = spec.all_files()
    todo = [f for f in names if _locate(dest, f) is None]
    bar = tqdm(total=len(todo), desc=f"download {spec.name}", unit="file", disable=not progress)
    try:
        for name in todo:
            if name not in sums:
                raise InputError(f"no md5 checksum for {name}; pass checksums={{'{name}': ...}}")
            failures = []
            for base in mirrors:
                url = base.rstrip("/") + "/" + name
                bar.set_postfix_str(url, refresh=True)
                try:
                    data = storage.read_bytes(url, {"retries": 1, "retry_wait": 0.2,
                                                    "timeout": 60})
                except ShardstreamError as exc:
                    failures.append(f"{url}: {exc}")
                    continue
                got = _md5(data)
                if got != sums[name]:
                    failures.append(f"{url}: checksum mismatch: md5 {got}, expected "
                                    f"{sums[name]} ({len(data):,} bytes; not saved)")
                    continue
                storage.write_bytes(os.path.join(dest, name), data)
                break
            else:
                raise InputError(f"could not download {name} of {spec.name}: "
                                 + "; ".join(failures))
            bar.update(1)
    finally:
        bar.close()
    found, missing = _in_folder(spec, dest)
    assert found is not None, missing
    return found


def find_raw(spec: DatasetSpec, raw_dir=None, download: bool = True, mirror=None,
             checksums=None, progress: bool = True) -> dict:
    """``{split: (images path, labels path)}`` of the raw IDX files of ``spec``: found in the
    places listed in the module doc, else downloaded (unless ``download`` is False or
    ``raw_dir`` is given).  ``mirror`` / ``checksums``: see :func:`download_raw`.

    :class:`InputError` saying every place looked at, what is missing and how to provide the
    files (``--raw DIR``, ``$SHARDSTREAM_RAW_DIR``, ``shardstream synth``).
    """
    dirs = candidate_dirs(spec, raw_dir)
    partial = []
    for folder in dirs:
        found, missing = _in_folder(spec, folder)
        if found:
            return found
        if len(missing) < len(spec.all_files()):
            partial.append(f"{folder} lacks {', '.join(missing)}")
    howto = (f"provide the files with --raw DIR (a folder holding {', '.join(spec.all_files())},"
             f" .gz or not), put them in ${config.RAW_DIR_ENV} or "
             f"./data/{spec.torchvision_folder}/raw/, "
             f"or make a synthetic stand-in: `shardstream synth {spec.name} DIR` then "
             f"`shardstream convert {spec.name} OUT --raw DIR`")
    looked = "; ".join(dirs)
    extra = f" ({'; '.join(partial)})" if partial else ""
    if raw_dir is not None:
        raise InputError(f"the raw files of {spec.name} are not in --raw {os.fspath(raw_dir)}: "
                         f"looked in {looked}{extra}; {howto}")
    if not download:
        raise InputError(f"the raw files of {spec.name} were not found; looked in {looked}"
                         f"{extra}; {howto}")
    try:
        return download_raw(spec, raw_cache_dir(spec), mirror=mirror, checksums=checksums,
                            progress=progress)
    except InputError as exc:
        raise InputError(f"the raw files of {spec.name} were not found and the download "
                         f"failed. Looked in {looked}{extra}. Download: {exc}. "
                         f"To go on offline, {howto}") from None
