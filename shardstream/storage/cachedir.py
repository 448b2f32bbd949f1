"""The shard cache's folder: stale temp files, use times, eviction under the file lock."""

from __future__ import annotations

import fcntl
import os
import sys
import time

#: a temp file untouched this long belongs to a download that died, whatever its lock says
STALE_TEMP_SECONDS = 900


def _nobody_downloads(lock_path: str) -> bool:
    """True when no process holds the shard's lock, so no download of it is under way (a
    download holds the lock exclusively from before its temp file exists until after the
    rename).  The probe takes the lock for an instant and lets it go."""
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def remove_stale_temps(folder: str, lock_folder: str) -> None:
    """Delete the temp files (``.<name>.<random>.tmp``) in ``folder`` that belong to dead
    downloads: their shard's lock (``<lock_folder>/<name>.lock``) is held by no process (a
    downloader killed mid-shard lets go of it with its life), or they are older than
    :data:`STALE_TEMP_SECONDS`."""
    now = time.time()
    try:
        with os.scandir(folder) as it:
            temps = [e for e in it if e.name.startswith(".") and e.name.endswith(".tmp")]
    except OSError:
        return
    for entry in temps:
        name = entry.name[1:].rsplit(".", 2)[0]       # ".<name>.<random>.tmp" -> <name>
        try:
            if (_nobody_downloads(os.path.join(lock_folder, name + ".lock"))
                    or now - entry.stat().st_mtime > STALE_TEMP_SECONDS):
                os.unlink(entry.path)
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


#: created in the cache folder by the first download into it (see :func:`announce`)
ANNOUNCED = ".announced"


def announce(cache_dir: str) -> None:
    """Say on stderr, once per cache folder (the first download into it, whichever process
    makes it), where remote shards are cached and how to see and clear them."""
    try:
        fd = os.open(os.path.join(cache_dir, ANNOUNCED), os.O_CREAT | os.O_EXCL | os.O_WRONLY,
                     0o644)
    except OSError:
        return          # said before (or the folder cannot be written: the download says so)
    os.close(fd)
    print(f"shardstream: caching remote shards in {cache_dir} (once per shard per machine; "
          f"`shardstream cache` shows its size, `shardstream cache --clear` empties it)",
          file=sys.stderr, flush=True)
