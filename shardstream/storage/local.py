"""The local backend: plain paths and ``file://`` URLs.  Writes are atomic."""

from __future__ import annotations

import errno
import os
import tempfile
from urllib.parse import unquote

from ..errors import NotFoundError, StorageError
from .retry import Fatal, Missing

NAME = "local"
SCHEMES = ("file",)
#: local calls accept every backend's keys, so one options dict serves any location
OPTION_KEYS = ("retries", "retry_wait", "timeout", "token", "token_origin", "allow_http_token",
               "headers", "endpoint_url", "key",
               "secret", "session_token", "region", "anon")


def to_path(location: str) -> str:
    """The filesystem path of a plain path (user-expanded) or ``file://`` URL."""
    if location[:7].lower() == "file://":
        return unquote(location[len("file://"):]) or "/"
    return os.path.expanduser(location)


HINT = "check the path"


def classify(exc):
    """Local failures are never transient: a retry would meet the same disk."""
    if isinstance(exc, FileNotFoundError):
        return Missing("no such file or folder")
    return Fatal(f"{type(exc).__name__}: {exc}")


def error(what, location, exc) -> StorageError:
    """The :class:`StorageError` (or :class:`NotFoundError`) for a failed local operation."""
    if isinstance(exc, FileNotFoundError):
        return NotFoundError(f"{what} {location}: no such file or folder; check the path")
    if isinstance(exc, PermissionError):
        return StorageError(f"{what} {location}: permission denied; check the file "
                            f"permissions or choose another location")
    if getattr(exc, "errno", None) == errno.ENOSPC:
        return StorageError(f"{what} {location}: no space left on the device; free "
                            f"some space or choose another location")
    return StorageError(f"{what} {location} failed: {exc}")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write(path, data, check=None) -> None:
    """Write ``data`` (bytes-like, or an iterable of bytes-like chunks written as they come) to
    the local file ``path`` atomically: temp file in the same folder, fsync, ``check()`` (may
    raise to refuse what was written), rename, fsync the folder.  On failure the temp file is
    removed and ``path`` is untouched.  Raises plain ``OSError`` (callers translate) or what
    ``data`` / ``check`` raise."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, (bytes, bytearray, memoryview)):
                f.write(data)
            else:
                for chunk in data:
                    f.write(chunk)
            f.flush()
            # mkstemp creates 0600; give the file the mode a plain open() would (umask), so
            # shards and manifests can be served or shared like any other file.
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)
            os.fsync(f.fileno())
        if check is not None:
            check()
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def read(location, path, opts) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise error("reading", location, exc) from exc


def open_raw(location, path, opts):
    return open(path, "rb")


def open_read(location, path, opts):
    try:
        return open(path, "rb")
    except OSError as exc:
        raise error("reading", location, exc) from exc


def write(location, path, data, opts) -> None:
    try:
        atomic_write(path, data)
    except OSError as exc:
        raise error("writing", location, exc) from exc


def size(location, path, opts) -> int:
    try:
        return os.stat(path).st_size
    except OSError as exc:
        raise error("reading the size of", location, exc) from exc


def exists(location, path, opts) -> bool:
    return os.path.exists(path)


def listdir(location, path, opts) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError as exc:
        raise error("listing", location, exc) from exc


def remove(location, path, opts) -> None:
    try:
        os.remove(path)
    except OSError as exc:
        raise error("removing", location, exc) from exc
