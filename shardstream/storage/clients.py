"""One client (filesystem object) per key per process; a forked child makes its own."""

from __future__ import annotations

import os
import threading

_FS_CACHE: dict = {}
_FS_LOCK = threading.Lock()
_FS_PID = os.getpid()
#: a forked child's copies of its parent's filesystem objects, kept alive and never used: their
#: finalisers would close the parent's pooled connections from the child, which then break in
#: the parent (its next request on them hung until the read timeout; measured)
_PARENTS_FS: list = []


def cached(key, make):
    """The client for ``key`` in this process, made by ``make()`` on first use."""
    global _FS_PID
    with _FS_LOCK:
        if os.getpid() != _FS_PID:
            _PARENTS_FS.extend(_FS_CACHE.values())
            _FS_CACHE.clear()
            _FS_PID = os.getpid()
        fs = _FS_CACHE.get(key)
        if fs is None:
            fs = _FS_CACHE[key] = make()
        return fs
