"""Finding the raw files of a dataset (IDX files, CIFAR archives), or downloading them.

Where :func:`find_raw` looks, in order (the first folder holding all the raw files wins; an
IDX file may be gzip-compressed ``name.gz`` or plain ``name`` as torchvision leaves it; a CIFAR
archive may also be found under keras' names for it, or as the folder extracted from it, see
``DatasetSpec.aliases``):

1. ``--raw DIR`` (``raw_dir``): ``DIR`` itself, then ``DIR/<TorchvisionName>/raw``; nothing
   else is tried when it is given;
2. ``$SHARDSTREAM_RAW_DIR`` and ``$SHARDSTREAM_RAW_DIR/<TorchvisionName>/raw``;
3. the torchvision layout under ``./data`` and ``~/data``: ``<root>/FashionMNIST/raw/``
   (CIFAR: ``<root>/`` itself, where torchvision keeps ``cifar-10-python.tar.gz``);
4. the keras cache: ``~/.keras/datasets/fashion-mnist/`` (Fashion-MNIST, MNIST),
   ``~/.keras/datasets/`` (CIFAR);
5. shardstream's own download cache: ``<cache dir>/raw/<dataset>/`` (cache dir:
   ``$SHARDSTREAM_CACHE_DIR`` or the platform's user cache folder);
6. otherwise the files are downloaded from the dataset's official mirror(s) into that cache,
   each checked against the published md5 before it is written (atomically).

Offline, the error lists every place looked at and how to provide the files.
"""

from __future__ import annotations

import hashlib
import os

from .. import config, storage
from ..errors import InputError, ShardstreamError
from ..units import progress_bar
from .datasets import SPLITS, DatasetSpec


def raw_cache_dir(spec: DatasetSpec) -> str:
    """The folder downloads of ``spec`` go to: ``<cache dir>/raw/<dataset>``."""
    return os.path.join(config.cache_dir(), "raw", spec.name)


def candidate_dirs(spec: DatasetSpec, raw_dir=None) -> list[str]:
    """The folders :func:`find_raw` searches, in order (see the module doc)."""
    if raw_dir is not None:
        raw_dir = os.fspath(raw_dir)
        return list(dict.fromkeys([raw_dir, spec.torchvision_dir(raw_dir)]))
    dirs = []
    env = config.raw_dir()
    if env:
        dirs += [env, spec.torchvision_dir(env)]
    for root in ("data", os.path.join("~", "data")):
        dirs.append(os.path.abspath(spec.torchvision_dir(os.path.expanduser(root))))
    if spec.keras_folder is not None:
        dirs.append(os.path.normpath(os.path.expanduser(os.path.join(
            "~", ".keras", "datasets", spec.keras_folder))))
    dirs.append(raw_cache_dir(spec))
    return list(dict.fromkeys(dirs))  # without repeats (./data is ~/data when cwd is ~)


def _locate(folder: str, filename: str, aliases=()) -> str | None:
    """``folder/filename`` (``.gz``) or the same without ``.gz``, whichever exists; else the
    first of ``aliases`` (other names of the file, or of the folder extracted from it) that
    exists as a file or a folder."""
    for name in (filename, filename[:-3] if filename.endswith(".gz") else None):
        if name and os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    for name in aliases:
        if os.path.exists(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def _in_folder(spec: DatasetSpec, folder: str):
    """({split: (raw file paths)} or None, [missing file names]) for one folder."""
    found, missing = {}, []
    for split in SPLITS:
        pair = tuple(_locate(folder, f, spec.aliases.get(f, ())) for f in spec.files[split])
        missing += [f for f, p in zip(spec.files[split], pair) if p is None]
        found[split] = pair
    return (None if missing else found), list(dict.fromkeys(missing))


def raw_in(spec: DatasetSpec, folder) -> bool:
    """True when ``folder`` itself or its torchvision layout (``folder/FashionMNIST/raw``, as
    the book's ``root="../data"`` leaves it) holds all the raw files of ``spec``; that folder
    then works as ``raw_dir`` of :func:`find_raw`."""
    return any(_in_folder(spec, d)[0] is not None for d in candidate_dirs(spec, folder))


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def download_raw(spec: DatasetSpec, dest: str, mirror=None, checksums=None, progress=True) -> dict:
    """Download the raw files of ``spec`` that ``dest`` lacks into the local folder ``dest``.

    ``mirror``: a base URL or a list of them (default: the official mirrors), tried in order;
    ``checksums``: ``{file name: md5}`` (default: the published ones).  Every file is checked
    against its md5 before it is written (atomically), so a bad download leaves nothing behind.
    Returns ``{split: (raw file paths)}``; :class:`InputError` when no mirror gives a
    file with the right checksum (the message says what each mirror answered).
    """
    mirrors = list(spec.mirrors if mirror is None else
                   ([mirror] if isinstance(mirror, str) else mirror))
    sums = dict(spec.md5 if checksums is None else checksums)
    names = spec.all_files()
    todo = [f for f in names if _locate(dest, f) is None]
    bar = progress_bar(total=len(todo), desc=f"download {spec.name} into {dest}", unit="file",
                       enabled=progress)
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
    """``{split: (raw file paths)}`` of ``spec`` (IDX: ``(images path, labels path)``; CIFAR:
    ``(archive or extracted folder,)``): found in the places listed in the module doc, else
    downloaded (unless ``download`` is False or ``raw_dir`` is given).  ``mirror`` /
    ``checksums``: see :func:`download_raw`.

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
    kind = "the folder extracted from it" if spec.aliases else ".gz or not"
    tv_dir = spec.torchvision_dir("data")
    howto = (f"provide the files with --raw DIR (a folder holding {', '.join(spec.all_files())},"
             f" or {kind}), put them in ${config.RAW_DIR_ENV} or ./{tv_dir}/, "
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
