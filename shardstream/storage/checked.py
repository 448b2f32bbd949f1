"""Shard files checked against their manifest's sha256 once per file version, remembered per
machine.

A local shard (or a cached copy of a remote one) could change after it was converted or
downloaded: a disk error, a half-finished copy, a hand that edited it.  Before the loaders use
such a file, :meth:`CheckedFiles.check` makes sure its bytes are the manifest's: the first use of
each *version* of the file — its real path, size, modification and change times, inode and
device, and the sha256 the manifest promises — reads it whole and compares the sha256; the
result is remembered as an empty marker file named after a hash of that version in the
``checked/`` folder of the shard cache (shared by every process of the machine) and in the
process.  Later uses cost one ``stat``.  Any write to the file changes its change time (which no
user call can set back), so a changed file is read again before it is used.

Loaders can skip the check with ``check_shards=False`` (docs/loaders.md).
"""

from __future__ import annotations

import hashlib
import os

from ..errors import ShardError
from .local import atomic_write

#: bytes read at a time while hashing
BLOCK = 1 << 20


def file_sha256(path: str) -> str:
    """The sha256 (hex) of a local file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


class CheckedFiles:
    """Which file versions have been checked; ``folder``: where the markers go (None: this
    process only)."""

    def __init__(self, folder: str | None):
        self.folder = folder
        self._seen: set[str] = set()

    def _version(self, path: str, sha256: str) -> str:
        st = os.stat(path)
        key = "\0".join(map(str, (os.path.realpath(path), st.st_size, st.st_mtime_ns,
                                  st.st_ctime_ns, st.st_ino, st.st_dev, sha256)))
        return hashlib.sha256(key.encode()).hexdigest()[:40]

    def known(self, path: str, sha256: str) -> bool:
        """Whether this version of ``path`` was checked against ``sha256`` before."""
        version = self._version(path, sha256)
        if version in self._seen:
            return True
        if self.folder is not None and os.path.exists(os.path.join(self.folder, version)):
            self._seen.add(version)
            return True
        return False

    def remember(self, path: str, sha256: str) -> None:
        """Record that this version of ``path`` holds bytes with ``sha256`` (best effort: a
        folder that cannot be written only costs a check per process)."""
        version = self._version(path, sha256)
        self._seen.add(version)
        if self.folder is not None:
            try:
                atomic_write(os.path.join(self.folder, version), b"")
            except OSError:
                pass

    def holds(self, path: str, sha256: str) -> bool:
        """Whether the file at ``path`` holds bytes with ``sha256`` (read only for a version not
        checked before; a match is remembered)."""
        if self.known(path, sha256):
            return True
        if file_sha256(path) != sha256:
            return False
        self.remember(path, sha256)
        return True

    def check(self, path: str, size: int, sha256: str, what: str) -> None:
        """:class:`ShardError` naming ``what`` unless the file at ``path`` holds ``size`` bytes
        whose sha256 is ``sha256`` (read only for a version not checked before)."""
        actual = os.stat(path).st_size
        if actual != size:
            raise ShardError(f"{what} has {actual} bytes, its manifest says {size}: the file "
                             f"changed after it was written; re-run the conversion (or run "
                             f"`shardstream verify` on the split to list every changed shard)")
        if self.known(path, sha256):
            return
        digest = file_sha256(path)
        if digest != sha256:
            raise ShardError(f"{what} changed after it was written: sha256 {digest}, its "
                             f"manifest says {sha256}; re-run the conversion (or run "
                             f"`shardstream verify` on the split to list every changed shard)")
        self.remember(path, sha256)


def marker_folder(cache_root: str) -> str | None:
    """``<cache root>/checked``, created if need be; None when it cannot be (then each process
    checks each file once)."""
    folder = os.path.join(cache_root, "checked")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return None
    return folder
