"""Where the splits of a conversion are: :func:`find_splits` (used by ``verify``, ``info`` and
``upload``) and the hint every "no manifest here" error gives when the location is a dataset
folder rather than a split (:func:`split_hint`).

A conversion is ``<root>/<dataset>/<split>/manifest.json``. Below a local folder every folder
holding a manifest is a split; below an ``s3://`` prefix the same, found by listing (two
levels: a root of datasets, a dataset of splits); below an ``http(s)://`` URL by the server's
index pages where it has them (``shardstream serve`` does), else by asking for the manifests
of the usual split names (:data:`SPLIT_NAMES`).
"""

from __future__ import annotations

import os

from .. import storage
from ..errors import AccessError, ShardstreamError
from .names import MANIFEST_NAME, SHARD_EXTENSIONS

#: the split names a remote location without listings is searched for
SPLIT_NAMES = ("train", "test", "val", "valid", "validation")
#: levels below a remote location searched: a root holds datasets, a dataset holds splits
REMOTE_DEPTH = 2
_FILES = tuple(SHARD_EXTENSIONS.values())


def _is_split(location, opts) -> bool:
    return storage.exists(storage.join(location, MANIFEST_NAME), opts)


def _remote(location, opts, depth) -> list[str]:
    try:
        names = storage.listdir(location, opts)
    except AccessError:
        raise
    except ShardstreamError:
        names = None
    if names is None:   # no listing (a plain web server): the usual split names
        return [s for s in (storage.join(location, n) for n in SPLIT_NAMES) if _is_split(s, opts)]
    found = []
    for name in names:
        if name.startswith(".") or name == MANIFEST_NAME or name.endswith(_FILES):
            continue
        sub = storage.join(location, name)
        if _is_split(sub, opts):
            found.append(sub)
        elif depth > 1:
            found += _remote(sub, opts, depth - 1)
    return sorted(found)


def find_splits(location: str, storage_options=None) -> list[str]:
    """Split locations at or below ``location``: ``[location]`` when it holds a manifest;
    otherwise every split below it (see the module doc), sorted; ``[]`` when there is none."""
    if _is_split(location, storage_options):
        return [location]
    local = storage.local_path(location)
    if local is None:
        return _remote(location, storage_options, REMOTE_DEPTH)
    if not os.path.isdir(local):
        return []
    found = []
    for root, dirs, files in os.walk(local):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if MANIFEST_NAME in files:
            found.append(root)
            dirs[:] = []  # a split folder holds no further splits
    return sorted(found)


def split_hint(location: str, storage_options=None) -> str:
    """For a location without a manifest: what to pass instead, when splits lie below it
    (``"; it is a dataset folder, not a split: pass …/train or …/test"``), else ``""``.
    Remote locations are only asked for the usual split names (a few requests)."""
    try:
        if storage.local_path(location) is not None:
            below = find_splits(location, storage_options)
        else:
            below = [s for s in (storage.join(location, n) for n in SPLIT_NAMES)
                     if _is_split(s, storage_options)]
    except ShardstreamError:
        return ""
    if not below:
        return ""
    order = {n: i for i, n in enumerate(SPLIT_NAMES)}
    below = sorted(below, key=lambda b: (order.get(b.rstrip("/").rsplit("/", 1)[-1], 99), b))
    names = [b.rstrip("/").rsplit("/", 1)[-1] for b in below]
    base = location.rstrip("/")
    if all(storage.join(base, n) == b or os.path.join(base, n) == b
           for n, b in zip(names, below)):
        return (f"; {location} is a dataset folder, not a split: pass "
                f"{' or '.join(storage.join(base, n) for n in names[:3])}")
    return f"; {location} is not a split but holds {len(below)}: pass one of {', '.join(below[:4])}"
