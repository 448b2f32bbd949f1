"""The shard cache's folder: stale temp files, use times, eviction under the file lock."""

from __future__ import annotations

import fcntl
import os
import time

#: a temp file untouched this long belongs to a download that died (killed process)
STALE_TEMP_SECONDS = 900


def remove_stale_temps(folder):
    """Delete temp files (``.<name>.<random>.tmp``) in ``folder`` left by dead downloads."""
    now = time.time()
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                    try:
                        if now - entry.stat().st_mtime > STALE_TEMP_SECONDS:
                            os.unlink(entry.path)
                    except OSError:
                        pass
    except OSError:
        pass


def touch(path):
    """Mark a cached shard as just used (its lock file's mtime orders the LRU eviction; the
    shard file itself is left alone, so its version stays the one that was checked)."""
    try:
        os.utime(path)
    except OSError:
        pass


def evict(path, lock_path) -> bool:
    """Delete a cached shard unless some process holds a lock on it. True if deleted."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        return True
    finally:
        os.close(fd)
