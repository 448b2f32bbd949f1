"""Locations: the one way shardstream names where data is.

A *location* is a plain string: a local path or ``file://`` URL, an ``http(s)://`` URL, or
``s3://bucket/prefix``.  :func:`resolve` finds its backend from the scheme (the ``SCHEMES`` of
each module in :data:`BACKENDS`); a string without a scheme is a local path.
"""

from __future__ import annotations

import os
import re

from ..errors import InputError
from . import http, local, s3

#: every backend module; each has NAME, SCHEMES, OPTION_KEYS, to_path(location) and the
#: operations read, open_read, open_raw (no retries), write, size, exists, listdir, remove
#: (location, path, opts), and classify(exc) / HINT for the retries
BACKENDS = (local, http, s3)
_BY_SCHEME = {scheme: backend for backend in BACKENDS for scheme in backend.SCHEMES}
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def resolve(location):
    """``(backend module, path inside it)`` for a location; :class:`InputError` if unusable."""
    if not isinstance(location, (str, os.PathLike)):
        raise InputError(f"location {location!r} is not a string; give a path, file://, "
                         f"http(s):// or s3://bucket/prefix")
    loc = os.fspath(location)
    match = _SCHEME.match(loc)
    if not match:
        return local, local.to_path(loc)
    backend = _BY_SCHEME.get(match.group(1).lower())
    if backend is None:
        raise InputError(f"location {loc!r}: unsupported scheme {match.group(1)!r}; use a "
                         f"local path, file://, http://, https:// or s3://bucket/prefix")
    return backend, backend.to_path(loc)


def is_remote(location) -> bool:
    """True for http(s):// and s3:// locations, False for local paths and file://."""
    return resolve(location)[0] is not local


def local_path(location) -> str | None:
    """The local filesystem path of a local / ``file://`` location; None for remote ones."""
    backend, path = resolve(location)
    return path if backend is local else None


def join(location, *names) -> str:
    """``location`` with ``names`` appended as path components, in the same syntax.

    >>> join("s3://b/data", "fashion-mnist", "train")
    's3://b/data/fashion-mnist/train'
    """
    backend, _ = resolve(location)
    loc = os.fspath(location)
    parts = [str(n).strip("/") for n in names if str(n).strip("/")]
    if backend is local and not _SCHEME.match(loc):
        return os.path.join(loc, *parts)
    if not parts:
        return loc
    return loc.rstrip("/") + "/" + "/".join(parts)
