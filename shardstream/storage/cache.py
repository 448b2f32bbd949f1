"""The shard cache: remote shards fetched whole, verified, and shared by the processes of a machine.

:class:`ShardFetcher` turns "shard ``i`` of this split" into a local file holding exactly the
bytes the manifest promises: for a local (or ``file://``) split the shard file itself, checked
once per file version (:mod:`.checked`); for a remote one a file in the cache directory
(``cache_dir=``, else ``$SHARDSTREAM_CACHE_DIR``, else the user cache folder), downloaded once per
machine to a temp file, checked (size, sha256; a mismatch is fetched once more, then a
:class:`ShardError`) and only then renamed to ``shards/<hash of URL>-<sha256 prefix>-<name>``.

Processes share the cache through one lock file per shard: a *shared* ``flock`` while a shard is
in use (:meth:`~ShardFetcher.local_file` until :meth:`~ShardFetcher.release`), an *exclusive* one
while downloading it.  ``cache_limit`` bounds the shard bytes: least-recently-used shards that no
process uses are deleted to make room; shards in use never are.  The whole story, with every
rule: docs/storage.md, "The shard cache".
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import threading
from collections import deque

from .. import config
from ..errors import InputError, NotFoundError, ShardError, StorageError
from ..units import human_bytes, parse_size
from . import WriteFailed, download, with_token
from .cachedir import announce, evict, remove_stale_temps, touch
from .checked import CheckedFiles, marker_folder
from .location import is_remote, join, local_path


class ShardFetcher:
    """Local files holding the verified bytes of the shards of one split in one format.

    ``location``: the split's location; ``manifest``: its :class:`Manifest`; ``fmt``: ``"tar"``
    or ``"parquet"``; ``storage_options``: see :mod:`shardstream.storage`; ``cache_dir``,
    ``cache_limit``: see the module docs; ``token``: HTTP bearer token (http(s) locations only;
    default ``$SHARDSTREAM_TOKEN``).

    Safe to use from several threads, and from forked or spawned worker processes.
    """

    def __init__(self, location, manifest, fmt, *, storage_options=None, cache_dir=None,
                 cache_limit=None, token=None, check=True):
        self.location = str(location)
        self.manifest = manifest
        self.fmt = fmt
        try:
            self.shards = tuple(manifest.shards[fmt])
        except KeyError:
            raise InputError(f"{self.location} has no {fmt!r} shards (it has "
                             f"{', '.join(manifest.shards) or 'none'})") from None
        self.remote = is_remote(self.location)
        self.storage_options = dict(with_token(self.location, storage_options, token) or {})
        self.cache_limit = parse_size(cache_limit)
        cache_root = os.path.abspath(os.path.expanduser(cache_dir or config.cache_dir()))
        self.check = bool(check)
        self._checked = CheckedFiles(marker_folder(cache_root) if self.check else None)
        if not self.remote:
            self.cache_dir = None
            self._local = local_path(self.location)
            return
        self.cache_dir = cache_root
        if self.cache_limit is not None and self.shards:
            largest = max(s.bytes for s in self.shards)
            if self.cache_limit < largest:
                name = max(self.shards, key=lambda s: s.bytes).name
                raise InputError(f"cache_limit={cache_limit!r} ({human_bytes(self.cache_limit)})"
                                 f" is smaller than shard {name} of {self.location} "
                                 f"({human_bytes(largest)}); raise cache_limit to at least "
                                 f"{largest} bytes or leave it unset")
        self._shard_dir = os.path.join(self.cache_dir, "shards")
        self._lock_dir = os.path.join(self.cache_dir, "locks")
        try:
            os.makedirs(self._shard_dir, exist_ok=True)
            os.makedirs(self._lock_dir, exist_ok=True)
        except OSError as exc:
            raise self._cache_error("creating the shard cache", exc) from exc
        remove_stale_temps(self._shard_dir, self._lock_dir)
        self._names = []
        for info in self.shards:
            url = join(self.location, info.name)
            key = hashlib.sha256(url.encode()).hexdigest()[:16]
            self._names.append(f"{key}-{info.sha256[:16]}-{info.name}")
        self._reset()

    # -- per-process state -------------------------------------------------------------------

    def _reset(self):
        self._pid = os.getpid()
        self._mutex = threading.RLock()
        self._pins = {}          # shard index -> fd holding a shared flock
        self._wanted = []        # shards asked for by prefetch and not yet released, in order
        self._queued = set()     # the same, as a set
        self._todo = deque()     # prefetches not started yet
        self._threads = 0        # prefetch threads running
        self._failed = {}        # shard index -> final error from a prefetch
        self._busy = {}          # shard index -> Lock: one thread of ours checks/fetches it

    def _check_pid(self):
        if self.remote and os.getpid() != self._pid:
            # a forked child: the parent's threads are gone and its lock fds are the parent's
            for fd in list(self._pins.values()):
                try:
                    os.close(fd)      # closing our copy leaves the parent's lock alone
                except OSError:
                    pass
            self._reset()

    def __getstate__(self):
        state = self.__dict__.copy()
        for key in ("_mutex", "_pins", "_wanted", "_queued", "_todo", "_threads", "_failed",
                    "_busy"):
            state.pop(key, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.remote:
            self._reset()

    # -- public interface ----------------------------------------------------------------------

    def local_file(self, shard_index: int) -> str:
        """Path of a local file holding shard ``shard_index``'s verified bytes.

        Remote shards are downloaded (once per machine) if not cached, and stay pinned (never
        evicted) until :meth:`release`.  Raises :class:`ShardError` when the bytes do not match
        the manifest twice, :class:`NotFoundError` / :class:`StorageError` when they cannot be
        fetched, and :class:`StorageError` when the cache directory cannot be written.
        """
        i = self._index(shard_index)
        if not self.remote:
            path = os.path.join(self._local, self.shards[i].name)
            if self.check:
                info = self.shards[i]
                try:
                    self._checked.check(path, info.bytes, info.sha256,
                                        f"shard {info.name} of {self.location}")
                except FileNotFoundError:
                    pass                # the reader names the missing file
            return path
        self._check_pid()
        with self._mutex:
            failed = self._failed.pop(i, None)
        try:
            if failed is not None:
                raise failed
            self._fetch(i, pin=True, strict=False)
        except BaseException:
            with self._mutex:             # the epoch fails: fetch nothing more for it
                self._todo.clear()
                self._queued.clear()
                self._wanted.clear()
            raise
        return os.path.join(self._shard_dir, self._names[i])

    def prefetch(self, shard_indices) -> None:
        """Start downloading these shards in the background, in this order (no-op locally).

        Already queued or pinned shards are skipped; a shard that would make the cache grow past
        ``cache_limit`` is not prefetched (it is fetched when :meth:`local_file` asks for it).
        """
        if not self.remote:
            return
        self._check_pid()
        with self._mutex:
            for idx in shard_indices:
                i = self._index(idx)
                if i in self._queued or i in self._pins:
                    continue
                self._queued.add(i)
                self._wanted.append(i)
                self._todo.append(i)
            while self._threads < min(config.PREFETCH_THREADS, len(self._todo)):
                self._threads += 1
                # daemon threads: an interpreter exiting (or a failed epoch) never waits on them;
                # an interrupted download leaves only a temp file, removed later as stale
                threading.Thread(target=self._prefetch_loop, daemon=True,
                                 name="shardstream-prefetch").start()

    def release(self, shard_index: int) -> None:
        """The current plan no longer needs shard ``shard_index``: it may be evicted."""
        i = self._index(shard_index)
        if not self.remote:
            return
        self._check_pid()
        with self._mutex:
            fd = self._pins.pop(i, None)
            if i in self._wanted:
                self._wanted.remove(i)
            if i in self._todo:
                self._todo.remove(i)
            self._queued.discard(i)
        if fd is not None:
            os.close(fd)      # drops our shared lock
            if self.cache_limit is not None:
                # shards in use may have pushed the cache past its limit: trim it back
                self._make_room(0, None, strict=False)

    def close(self) -> None:
        """Stop prefetching and release every shard (the fetcher may still be used after)."""
        if not self.remote:
            return
        self._check_pid()
        with self._mutex:
            self._todo.clear()
            self._wanted.clear()
            self._queued.clear()
            pins, self._pins = self._pins, {}
        for fd in pins.values():
            os.close(fd)

    def cache_path(self, shard_index: int) -> str | None:
        """Where shard ``shard_index`` is (or would be) cached; None for local splits."""
        if not self.remote:
            return None
        return os.path.join(self._shard_dir, self._names[self._index(shard_index)])

    # -- internals ------------------------------------------------------------------------------

    def _index(self, shard_index) -> int:
        try:
            i = int(shard_index)
        except (TypeError, ValueError):
            raise InputError(f"shard index {shard_index!r} is not an integer") from None
        if not 0 <= i < len(self.shards):
            raise InputError(f"shard index {i} out of range: {self.location} has "
                             f"{len(self.shards)} {self.fmt} shards")
        return i

    def _url(self, i) -> str:
        return join(self.location, self.shards[i].name)

    def _cache_error(self, what, exc):
        why = ("no space left on the device" if getattr(exc, "errno", None) == errno.ENOSPC
               else "permission denied" if isinstance(exc, PermissionError) else str(exc))
        return StorageError(f"{what} in {self.cache_dir} failed: {why}; free some space, set "
                            f"cache_limit, or point cache_dir= / ${config.CACHE_DIR_ENV} at a "
                            f"writable "
                            f"folder with room")

    def _lock_path(self, i) -> str:
        return os.path.join(self._lock_dir, self._names[i] + ".lock")

    def _open_lock(self, i) -> int:
        path = self._lock_path(i)
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise self._cache_error(f"creating the lock file for shard {self.shards[i].name}",
                                    exc) from exc

    def _valid(self, i) -> bool:
        path = os.path.join(self._shard_dir, self._names[i])
        info = self.shards[i]
        try:
            ok = os.stat(path).st_size == info.bytes
            if ok and self.check:
                ok = self._checked.holds(path, info.sha256)      # a file changed in the cache?
        except FileNotFoundError:
            return False
        if not ok:           # only a foreign hand can do this; never trust it
            try:
                os.unlink(path)
            except OSError:
                pass
        return ok

    def _prefetch_loop(self):
        pid = os.getpid()
        while True:
            with self._mutex:
                if not self._todo or pid != self._pid:
                    self._threads -= 1
                    return
                i = self._todo.popleft()
            self._prefetch_one(i)

    def _prefetch_one(self, i):
        try:
            self._fetch(i, pin=False, strict=True)
        except Exception:  # noqa: BLE001 - final errors are kept in _failed by _fetch for
            pass           # local_file to raise; others local_file meets again itself

    def _fetch(self, i, *, pin, strict):
        """Make shard i present and valid; keep a shared lock on it if ``pin``."""
        with self._mutex:
            if i in self._pins:
                if pin:
                    touch(self._lock_path(i))
                return
            busy = self._busy.setdefault(i, threading.Lock())
        with busy:  # a second thread waits, then finds the shard valid (not hashed again)
            self._fetch_locked(i, pin, strict)

    def _fetch_locked(self, i, pin, strict):
        fd = self._open_lock(i)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if not self._valid(i):
                fcntl.flock(fd, fcntl.LOCK_EX)          # one downloader; the others wait here
                with self._mutex:
                    if pin:
                        failed = self._failed.pop(i, None)
                        if failed is not None:          # a prefetch thread just found it bad
                            raise failed
                    elif i not in self._queued:         # released, or the epoch failed
                        return
                if not self._valid(i):
                    if not self._make_room(self.shards[i].bytes, i, strict=strict):
                        return                          # prefetch: no room now; fetched on demand
                    try:
                        self._download(i)
                    except (ShardError, NotFoundError) as exc:
                        if not pin:                     # recorded before the lock is let go
                            with self._mutex:
                                self._failed[i] = exc
                        raise
                fcntl.flock(fd, fcntl.LOCK_SH)
            touch(self._lock_path(i))         # its lock's mtime: the shard's last use (LRU)
            if pin:
                with self._mutex:
                    old = self._pins.get(i)
                    self._pins[i] = fd
                    fd = old
        finally:
            if fd is not None:
                os.close(fd)

    def _download(self, i):
        info = self.shards[i]
        url = self._url(i)
        final = os.path.join(self._shard_dir, self._names[i])
        announce(self.cache_dir)
        problem = None
        for _attempt in range(2):
            try:        # streamed to a temp file beside its final name, kept only if it matches
                nbytes, digest, kept = download(
                    url, final, self.storage_options,
                    accept=lambda n, d: n == info.bytes and d == info.sha256)
            except WriteFailed as exc:
                raise self._cache_error(f"caching shard {info.name} of {self.location}",
                                        exc.cause) from exc.cause
            if kept:
                self._checked.remember(final, info.sha256)
                return
            problem = (f"{nbytes} bytes, the manifest says {info.bytes}" if nbytes != info.bytes
                       else f"sha256 {digest}, the manifest says {info.sha256}")
        raise ShardError(f"shard {info.name} fetched from {url} does not match the manifest "
                         f"(twice): {problem}; the data at the location is damaged or was "
                         f"changed without its manifest — run `shardstream verify "
                         f"{self.location}` and re-upload the shard")

    def _make_room(self, need, i, *, strict) -> bool:
        """Evict LRU shards until ``need`` more bytes (for shard ``i``, or None) fit the limit;
        never one in use (by any process) or queued for prefetch here.  False when ``strict``
        and the room cannot be made (otherwise the shards in use exceed the limit)."""
        if self.cache_limit is None:
            return True
        with self._mutex:
            keep = ({self._names[j] for j in self._pins}
                    | {self._names[j] for j in self._wanted if j != i})
        entries = []
        total = 0
        try:
            with os.scandir(self._shard_dir) as it:
                for entry in it:
                    if entry.name.startswith(".") or not entry.is_file():
                        continue
                    try:
                        st = entry.stat()
                    except FileNotFoundError:
                        continue
                    total += st.st_size
                    try:                        # last use: the lock file's mtime
                        used = os.stat(os.path.join(self._lock_dir, entry.name + ".lock")).st_mtime
                    except OSError:
                        used = st.st_mtime
                    entries.append((used, entry.name, st.st_size))
        except OSError as exc:
            raise self._cache_error("listing the shard cache", exc) from exc
        if total + need <= self.cache_limit:
            return True
        entries.sort()
        for _mtime, name, nbytes in entries:
            if total + need <= self.cache_limit:
                break
            if name in keep or (i is not None and name == self._names[i]):
                continue
            if evict(os.path.join(self._shard_dir, name),
                      os.path.join(self._lock_dir, name + ".lock")):
                total -= nbytes
        return total + need <= self.cache_limit or not strict
