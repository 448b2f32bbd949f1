"""Storage: every location string in shardstream is read and written here.

Public operations — each resolves the location once (:func:`.location.resolve`) and calls the
same-named function of that backend (``local``, ``http``, ``s3``; adding a backend is adding
one module to :data:`.location.BACKENDS`):

- :func:`read_bytes`, :func:`open_read` (a binary stream), :func:`download` (streamed into a
  local file, hashed on the way), :func:`write_bytes` (atomic),
  :func:`size`, :func:`exists`, :func:`listdir`, :func:`remove`;
- naming: :func:`join`, :func:`local_path`, :func:`is_remote`;
- :func:`with_token` (adds an HTTP bearer token to ``storage_options``).

The shard cache (:mod:`.cache`, ``ShardFetcher``) and ``shardstream upload`` (:mod:`.upload`)
live here too.

``storage_options`` keys (anything else is an :class:`InputError`):

======================  ======  =============================================================
key                     for     meaning
======================  ======  =============================================================
``retries``             remote  retries of a transient failure (default 5; 0 = try once)
``retry_wait``          remote  first back-off wait in seconds (default 0.25; doubles, with jitter)
``timeout``             remote  connect / read timeout in seconds (default 60)
``token``               http    bearer token (:func:`with_token` adds ``$SHARDSTREAM_TOKEN``)
``token_origin``        http    ``scheme://host:port`` the token is for (set by :func:`with_token`)
``allow_http_token``    http    ``True``: send the token over plain http to a non-loopback host
``headers``             http    extra request headers (dict)
``endpoint_url``        s3      e.g. ``http://127.0.0.1:9000`` -> ``endpoint_override``
``key``                 s3      access key id -> ``access_key``
``secret``              s3      secret access key -> ``secret_key``
``session_token``       s3      -> ``session_token``
``region``              s3      -> ``region``
``anon``                s3      ``True``: unsigned requests -> ``anonymous``
======================  ======  =============================================================

Failures: a missing object, bucket or URL, and access denied (HTTP 401/403/404/410, S3
NoSuchKey/NoSuchBucket/AccessDenied) raise :class:`NotFoundError` at once, naming the URL and
what to check.  Transient failures (connection refused or reset, timeouts, HTTP 408/429/5xx, a
body shorter than its ``Content-Length``) are retried with exponential back-off and jitter, at
most ``retries`` times, then raise :class:`StorageError` naming the URL.
"""

from __future__ import annotations

import hashlib
import os

from .. import config
from ..errors import InputError, StorageError
from . import http, local
from .local import atomic_write as atomic_write_local
from .location import is_remote, join, local_path, resolve
from .retry import retrying
from .s3 import settings as s3_settings

__all__ = ["read_bytes", "open_read", "download", "write_bytes", "size", "exists", "listdir",
           "remove", "join", "local_path", "is_remote", "with_token", "atomic_write_local",
           "s3_settings"]


def _target(location, storage_options):
    """``(backend, location text, path, checked options)``."""
    backend, path = resolve(location)
    opts = dict(storage_options or {})
    unknown = sorted(set(opts) - set(backend.OPTION_KEYS))
    loc = os.fspath(location)
    if unknown:
        raise InputError(f"storage_options for {loc}: unknown key(s) {unknown}; known for "
                         f"{backend.NAME}: {', '.join(backend.OPTION_KEYS)} "
                         f"(see docs/storage.md)")
    retries = opts.get("retries", 0)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise InputError(f"storage_options['retries'] must be an integer >= 0, not {retries!r}")
    for key in ("retry_wait", "timeout"):
        if key in opts and (not isinstance(opts[key], (int, float)) or opts[key] <= 0):
            raise InputError(f"storage_options[{key!r}] must be a positive number of seconds, "
                             f"not {opts[key]!r}")
    return backend, loc, path, opts


def read_bytes(location, storage_options=None) -> bytes:
    """All bytes of the object/file at ``location``.

    Remote reads check the length against ``Content-Length`` / the object size (a short body
    is retried).  Raises :class:`NotFoundError` (missing / denied) or :class:`StorageError`.
    """
    backend, loc, path, opts = _target(location, storage_options)
    return backend.read(loc, path, opts)


def open_read(location, storage_options=None):
    """A binary file object streaming the object/file at ``location`` (use it in ``with``).

    Opening is retried like any operation; a failure while reading raises the client's own
    error.
    """
    backend, loc, path, opts = _target(location, storage_options)
    return backend.open_read(loc, path, opts)


class WriteFailed(StorageError):
    """:func:`download` could not write its local file; ``.cause`` is the ``OSError``."""

    def __init__(self, message, cause):
        super().__init__(message)
        self.cause = cause


class _ReadFailed(Exception):
    def __init__(self, cause):
        self.cause = cause


def download(location, dest: str, storage_options=None, accept=None) -> tuple[int, str, bool]:
    """Stream the object at ``location`` into the local file ``dest``, hashing as it goes,
    without holding it in memory: ``(bytes, sha256 hex, kept)``.

    The bytes go to a temp file beside ``dest``; it becomes ``dest`` only if
    ``accept(nbytes, sha256)`` (default: always) says yes, else it is removed (``kept`` False).
    A transfer that fails part way is retried whole (``retries``, as every operation);
    a local write that fails is a :class:`WriteFailed`.
    """
    backend, loc, path, opts = _target(location, storage_options)

    def attempt():
        digest, count = hashlib.sha256(), [0]
        with backend.open_raw(loc, path, opts) as f:
            def chunks():
                while True:
                    try:
                        block = f.read(1 << 20)
                    except Exception as exc:  # noqa: BLE001 - the transfer's, classified below
                        raise _ReadFailed(exc) from exc
                    if not block:
                        return
                    digest.update(block)
                    count[0] += len(block)
                    yield block

            def check():
                if accept is not None and not accept(count[0], digest.hexdigest()):
                    raise _Refused

            try:
                local.atomic_write(dest, chunks(), check)
            except _ReadFailed as exc:
                raise exc.cause from None
            except _Refused:
                return count[0], digest.hexdigest(), False
            except OSError as exc:
                raise WriteFailed(str(local.error("writing", dest, exc)), exc) from exc
        return count[0], digest.hexdigest(), True

    return retrying(loc, opts, "downloading", attempt, backend.classify, backend.HINT)


class _Refused(Exception):
    pass


def write_bytes(location, data, storage_options=None) -> None:
    """Write ``data`` (bytes-like) to ``location``, replacing what was there.

    Local: atomic (temp file, fsync, rename; parent folders created).  s3: one upload; the
    object appears whole or not at all.  http(s) is read-only (:class:`StorageError`).
    """
    backend, loc, path, opts = _target(location, storage_options)
    backend.write(loc, path, data, opts)


def size(location, storage_options=None) -> int:
    """Size in bytes of the file/object at ``location`` (:class:`NotFoundError` if missing)."""
    backend, loc, path, opts = _target(location, storage_options)
    return backend.size(loc, path, opts)


def exists(location, storage_options=None) -> bool:
    """True when a file/object (or folder/prefix) exists at ``location``.

    Access denied is not "absent": it raises :class:`NotFoundError` with what to check.
    """
    backend, loc, path, opts = _target(location, storage_options)
    return backend.exists(loc, path, opts)


def listdir(location, storage_options=None) -> list[str]:
    """Sorted names (not paths) of the entries directly inside the folder/prefix ``location``.

    :class:`NotFoundError` if there is no such folder (or, remotely, nothing under the prefix).
    http(s): the links of the server's index page for that URL.
    """
    backend, loc, path, opts = _target(location, storage_options)
    return backend.listdir(loc, path, opts)


def remove(location, storage_options=None) -> None:
    """Delete the file/object at ``location`` (:class:`NotFoundError` if missing)."""
    backend, loc, path, opts = _target(location, storage_options)
    backend.remove(loc, path, opts)


def with_token(location, storage_options=None, token=None) -> dict | None:
    """``storage_options`` for reading the user-named ``location``, with its bearer token bound.

    For an http(s) location the token is ``token``, else ``storage_options["token"]``, else
    ``$SHARDSTREAM_TOKEN``; it is bound to the location's scheme, host and port
    (``token_origin``), so it is never sent anywhere else (see :mod:`.http`).  For other
    locations an explicit ``token`` is an :class:`InputError` (S3 takes its credentials from
    the AWS settings or ``storage_options``) and ``$SHARDSTREAM_TOKEN`` is not used.
    """
    loc = os.fspath(location)
    if resolve(loc)[0] is not http:
        if token is not None:
            raise InputError(f"token= is an HTTP bearer token, but {loc} is not an http(s) "
                             f"location; for S3 use the AWS settings or storage_options "
                             f"(see docs/storage.md)")
        return storage_options
    opts = dict(storage_options or {})
    if token is not None:
        if not isinstance(token, str) or not token:
            raise InputError("token= must be a non-empty string")
        opts["token"] = token
    elif not opts.get("token"):
        if config.token() is None:
            return storage_options
        opts["token"] = config.token()
    opts.setdefault("token_origin", http.origin(loc))
    http.bearer(loc, opts)          # refuses clear-text http to another host now, not later
    return opts
