"""``shardstream cache``: where the shard cache is, how big, and clearing it.

The cache folder (``$SHARDSTREAM_CACHE_DIR``, else the user cache folder) holds ``shards/``
(remote shards, verified, shared by every process of the machine), ``locks/`` (one lock file
per shard: its mtime orders the LRU eviction), ``checked/`` (markers of local shard files whose
sha256 was checked), ``raw/`` (downloaded raw datasets) and ``carved/`` (validation splits
carved out of remote datasets); see docs/storage.md, "The shard cache".
"""

from __future__ import annotations

import json
import os

from .. import config
from ..storage.cachedir import evict
from ..units import human_bytes


def _files(folder):
    """(count, bytes) of the files below ``folder`` (0, 0 when it does not exist)."""
    count = total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
                count += 1
            except OSError:
                pass
    return count, total


def cache_info(cache_dir=None) -> dict:
    """``{"location", "shards": {"files", "bytes"}, "raw": {...}, "carved": {...},
    "checked_markers", "limit"}`` of the cache folder."""
    root = os.path.abspath(os.path.expanduser(cache_dir or config.cache_dir()))
    out = {"location": root}
    for part in ("shards", "raw", "carved"):
        n, b = _files(os.path.join(root, part))
        out[part] = {"files": n, "bytes": b}
    out["checked_markers"] = _files(os.path.join(root, "checked"))[0]
    out["limit"] = None
    return out


def clear_cache(cache_dir=None) -> tuple[int, int, int]:
    """Delete the cached shards no process is using (and the ``checked/`` markers); returns
    (shards deleted, bytes freed, shards kept because in use). Raw downloads stay."""
    root = os.path.abspath(os.path.expanduser(cache_dir or config.cache_dir()))
    shard_dir, lock_dir = os.path.join(root, "shards"), os.path.join(root, "locks")
    deleted = freed = kept = 0
    try:
        names = sorted(os.listdir(shard_dir))
    except OSError:
        names = []
    for name in names:
        path = os.path.join(shard_dir, name)
        try:
            size = os.stat(path).st_size
        except OSError:
            continue
        if name.startswith("."):        # a temp file of a download (dead or under way)
            continue
        if evict(path, os.path.join(lock_dir, name + ".lock")):
            deleted, freed = deleted + 1, freed + size
        else:
            kept += 1
    checked = os.path.join(root, "checked")
    for entry in (os.listdir(checked) if os.path.isdir(checked) else []):
        try:
            os.unlink(os.path.join(checked, entry))
        except OSError:
            pass
    return deleted, freed, kept


def cache_command(clear=False, as_json=False, cache_dir=None) -> int:
    """``shardstream cache [--clear] [--json]``: print the cache's location, size and limit;
    ``--clear`` deletes the cached shards first (those in use are kept, and said so)."""
    if clear:
        deleted, freed, kept = clear_cache(cache_dir)
        print(f"deleted {deleted} cached shard(s), {human_bytes(freed)} freed"
              f"{f'; {kept} in use kept' if kept else ''}")
    info = cache_info(cache_dir)
    if as_json:
        print(json.dumps(info, indent=2))
        return 0
    s, r, c = info["shards"], info["raw"], info["carved"]
    print(f"location  {info['location']}  (${config.CACHE_DIR_ENV} moves it)")
    print(f"shards    {s['files']} file(s), {human_bytes(s['bytes'])}")
    print(f"raw       {r['files']} file(s), {human_bytes(r['bytes'])} (downloaded raw datasets; "
          f"not cleared)")
    if c["files"]:
        print(f"carved    {c['files']} file(s), {human_bytes(c['bytes'])} (val_fraction splits "
              f"of remote datasets)")
    print("limit     none: the cache grows until cleared; bound it per loader with "
          "cache_limit='20GB' (least recently used shards are evicted)")
    return 0
