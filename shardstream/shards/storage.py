"""The one storage layer: every location string in shardstream is read and written here.

A *location* is a plain string:

- a local path (``shards/fashion-mnist/train``) or a ``file://`` URL;
- ``http://`` / ``https://`` URL (read-only), fetched through fsspec's aiohttp
  ``HTTPFileSystem``; a bearer token (``storage_options={"token": ...}`` or the environment
  variable ``SHARDSTREAM_TOKEN``) is sent as ``Authorization: Bearer <token>``;
- ``s3://bucket/prefix``, through ``pyarrow.fs.S3FileSystem`` wrapped in fsspec's
  ``ArrowFSWrapper``.  Credentials, region and endpoint come from the usual AWS settings
  (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``,
  ``~/.aws/credentials`` and ``~/.aws/config``, ``AWS_REGION`` / ``AWS_DEFAULT_REGION``,
  ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` or ``endpoint_url`` in the profile) unless
  ``storage_options`` names them.

``storage_options`` keys (anything else is an :class:`InputError`):

==================  ======  =================================================================
key                 for     meaning
==================  ======  =================================================================
``retries``         remote  retries of a transient failure (default 5; 0 = try once)
``retry_wait``      remote  first back-off wait in seconds (default 0.25; doubles, with jitter)
``timeout``         remote  connect / read timeout in seconds (default 60)
``token``           http    bearer token (default ``$SHARDSTREAM_TOKEN``)
``headers``         http    extra request headers (dict)
``endpoint_url``    s3      e.g. ``http://127.0.0.1:9000`` -> ``endpoint_override``
``key``             s3      access key id -> ``access_key``
``secret``          s3      secret access key -> ``secret_key``
``session_token``   s3      -> ``session_token``
``region``          s3      -> ``region``
``anon``            s3      ``True``: unsigned requests -> ``anonymous``
==================  ======  =================================================================

Failures: a missing object, bucket or URL, and access denied (HTTP 401/403/404/410, S3
NoSuchKey/NoSuchBucket/AccessDenied) raise :class:`NotFoundError` at once, naming the URL and
what to check.  Transient failures (connection refused or reset, timeouts, HTTP 408/429/5xx, a
body shorter than its ``Content-Length``) are retried with exponential back-off and jitter, at
most ``retries`` times, then raise :class:`StorageError` naming the URL.

Filesystem objects are cached per process and per (protocol, options); a forked child (a
DataLoader worker) makes its own.
"""

from __future__ import annotations

import asyncio
import configparser
import errno
import os
import random
import re
import tempfile
import threading
import time
from urllib.parse import unquote

from ..errors import InputError, NotFoundError, StorageError

DEFAULT_RETRIES = 5
DEFAULT_RETRY_WAIT = 0.25
MAX_RETRY_WAIT = 8.0
DEFAULT_TIMEOUT = 60.0
TOKEN_ENV = "SHARDSTREAM_TOKEN"

_COMMON_KEYS = ("retries", "retry_wait", "timeout")
_HTTP_KEYS = _COMMON_KEYS + ("token", "headers")
_S3_KEYS = _COMMON_KEYS + ("endpoint_url", "key", "secret", "session_token", "region", "anon")


# ---------------------------------------------------------------------------------------------
# parsing locations


def _kind(location):
    """``("local", path)``, ``("http", url)`` or ``("s3", "bucket/key")`` for a location."""
    if not isinstance(location, (str, os.PathLike)):
        raise InputError(f"location {location!r} is not a string; give a path, file://, "
                         f"http(s):// or s3://bucket/prefix")
    loc = os.fspath(location)
    lower = loc[:8].lower()
    if lower.startswith("file://"):
        return "local", unquote(loc[len("file://"):]) or "/"
    if lower.startswith(("http://", "https://")):
        return "http", loc
    if lower.startswith("s3://"):
        path = loc[len("s3://"):].strip("/")
        if not path:
            raise InputError(f"location {loc!r} names no bucket; write s3://bucket/prefix")
        return "s3", path
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", loc)
    if match:
        scheme = match.group(1)
        raise InputError(f"location {loc!r}: unsupported scheme {scheme!r}; use a local path, "
                         f"file://, http://, https:// or s3://bucket/prefix")
    return "local", os.path.expanduser(loc)


def is_remote(location) -> bool:
    """True for http(s):// and s3:// locations, False for local paths and file://."""
    return _kind(location)[0] != "local"


def join(location, *names) -> str:
    """``location`` with ``names`` appended as path components, in the same syntax.

    >>> join("s3://b/data", "fashion-mnist", "train")
    's3://b/data/fashion-mnist/train'
    """
    kind, _ = _kind(location)
    loc = os.fspath(location)
    parts = [str(n).strip("/") for n in names if str(n).strip("/")]
    if kind == "local" and not loc.lower().startswith("file://"):
        return os.path.join(loc, *parts)
    if not parts:
        return loc
    return loc.rstrip("/") + "/" + "/".join(parts)


def local_path(location) -> str | None:
    """The local filesystem path of a local / ``file://`` location; None for remote ones."""
    kind, path = _kind(location)
    return path if kind == "local" else None


def with_token(location, storage_options=None, token=None) -> dict | None:
    """``storage_options`` with an HTTP bearer ``token`` added (unchanged when token is None).

    ``token`` is for http(s) locations only; for others it is an :class:`InputError` (S3 takes
    its credentials from the AWS settings or ``storage_options``).
    """
    if token is None:
        return storage_options
    if _kind(location)[0] != "http":
        raise InputError(f"token= is an HTTP bearer token, but {display(location)} is not an "
                         f"http(s) location; for S3 use the AWS settings or storage_options "
                         f"(see docs/storage.md)")
    if not isinstance(token, str) or not token:
        raise InputError("token= must be a non-empty string")
    return {**(storage_options or {}), "token": token}


def human_bytes(n: int) -> str:
    """A byte count as people read it: ``512 B``, ``25.6 MB`` (powers of 1000)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def display(location) -> str:
    """The location as shown in messages (the string itself)."""
    return os.fspath(location)


# ---------------------------------------------------------------------------------------------
# options and filesystem objects


def _options(kind, location, storage_options):
    opts = dict(storage_options or {})
    allowed = {"http": _HTTP_KEYS, "s3": _S3_KEYS, "local": _COMMON_KEYS + ("token", "headers") +
               _S3_KEYS}[kind]
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise InputError(f"storage_options for {display(location)}: unknown key(s) {unknown}; "
                         f"known for {kind}: {', '.join(allowed)} (see docs/storage.md)")
    retries = opts.get("retries", DEFAULT_RETRIES)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise InputError(f"storage_options['retries'] must be an integer >= 0, not {retries!r}")
    for key in ("retry_wait", "timeout"):
        if key in opts and (not isinstance(opts[key], (int, float)) or opts[key] <= 0):
            raise InputError(f"storage_options[{key!r}] must be a positive number of seconds, "
                             f"not {opts[key]!r}")
    return opts


_FS_CACHE: dict = {}
_FS_LOCK = threading.Lock()
_FS_PID = os.getpid()
#: a forked child's copies of its parent's filesystem objects, kept alive and never used: their
#: finalisers would close the parent's pooled connections from the child, which then break in
#: the parent (its next request on them hung until the read timeout; measured)
_PARENTS_FS: list = []


def _cached(key, make):
    """One filesystem object per key per process (forked children rebuild theirs)."""
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


def _http_fs(opts):
    token = opts.get("token") or os.environ.get(TOKEN_ENV) or None
    headers = dict(opts.get("headers") or {})
    headers.setdefault("Accept-Encoding", "identity")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    timeout = float(opts.get("timeout", DEFAULT_TIMEOUT))
    key = ("http", tuple(sorted(headers.items())), timeout)

    def make():
        import aiohttp
        from fsspec.implementations.http import HTTPFileSystem

        return HTTPFileSystem(
            skip_instance_cache=True,
            client_kwargs={"headers": headers,
                           "timeout": aiohttp.ClientTimeout(total=None, sock_connect=timeout,
                                                            sock_read=timeout)})

    return _cached(key, make)


def _aws_profile_setting(name):
    """``name`` from the active profile of ``~/.aws/config`` (``AWS_CONFIG_FILE``), or None."""
    path = os.environ.get("AWS_CONFIG_FILE") or os.path.expanduser("~/.aws/config")
    profile = os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE") or "default"
    parser = configparser.ConfigParser()
    try:
        parser.read(path)
    except (OSError, configparser.Error):
        return None
    section = profile if profile == "default" else f"profile {profile}"
    if parser.has_option(section, name):
        return parser.get(section, name).strip() or None
    return None


def s3_settings(storage_options=None) -> dict:
    """The ``pyarrow.fs.S3FileSystem`` keyword arguments shardstream uses for these options.

    The endpoint comes from ``endpoint_url``, else ``AWS_ENDPOINT_URL_S3``, else
    ``AWS_ENDPOINT_URL``, else ``endpoint_url`` in the active ``~/.aws/config`` profile
    (pyarrow itself reads none of these).  Credentials and region not given here are found
    by the AWS SDK the usual way.  pyarrow's own retries are off: shardstream retries.
    """
    opts = dict(storage_options or {})
    kw = {}
    endpoint = (opts.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL") or _aws_profile_setting("endpoint_url"))
    if endpoint:
        kw["endpoint_override"] = endpoint
    for ours, theirs in (("key", "access_key"), ("secret", "secret_key"),
                         ("session_token", "session_token"), ("region", "region")):
        if opts.get(ours):
            kw[theirs] = opts[ours]
    if "region" not in kw:
        region = (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
                  or _aws_profile_setting("region"))
        if region:
            kw["region"] = region
        elif endpoint:
            kw["region"] = "us-east-1"   # S3-compatible stores ignore it; the SDK needs one
    if opts.get("anon"):
        kw["anonymous"] = True
    timeout = float(opts.get("timeout", DEFAULT_TIMEOUT))
    kw["connect_timeout"] = min(timeout, 10.0)
    kw["request_timeout"] = timeout
    return kw


def _s3_fs(opts):
    kw = s3_settings(opts)
    key = ("s3", tuple(sorted((k, str(v)) for k, v in kw.items())))

    def make():
        import pyarrow.fs as pafs
        from fsspec.implementations.arrow import ArrowFSWrapper

        return ArrowFSWrapper(pafs.S3FileSystem(
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1), **kw))

    return _cached(key, make)


def filesystem(location, storage_options=None):
    """``(fsspec filesystem, path)`` for a location, for code that wants an fsspec object.

    Local: ``LocalFileSystem``; http(s): ``HTTPFileSystem``; s3: ``ArrowFSWrapper`` around
    ``pyarrow.fs.S3FileSystem`` (its ``.fs`` is the pyarrow filesystem).
    """
    kind, path = _kind(location)
    opts = _options(kind, location, storage_options)
    if kind == "http":
        return _http_fs(opts), path
    if kind == "s3":
        return _s3_fs(opts), path
    from fsspec.implementations.local import LocalFileSystem

    return LocalFileSystem(), os.path.abspath(path)


# ---------------------------------------------------------------------------------------------
# error classification and retries


class _Transient(Exception):
    """A failure worth retrying (wraps the cause)."""


class _Missing(Exception):
    """Not found / access denied: never retried."""


class _Fatal(Exception):
    """Any other failure: not retried."""


_S3_MISSING = ("NO_SUCH_KEY", "NO_SUCH_BUCKET", "ACCESS_DENIED", "INVALID_ACCESS_KEY_ID",
               "SIGNATURE_DOES_NOT_MATCH", "HTTP response code: 403", "HTTP response code: 404",
               "Forbidden", "UNKNOWN (HTTP status 403)", "UNKNOWN (HTTP status 404)")


def _classify_s3(exc):
    if isinstance(exc, (_Transient, _Missing, _Fatal)):
        return exc
    if isinstance(exc, FileNotFoundError):
        return _Missing("no such object, prefix or bucket")
    text = str(exc)
    if any(marker in text for marker in _S3_MISSING):
        return _Missing(text)
    if isinstance(exc, (OSError, ConnectionError, TimeoutError)):
        return _Transient(text)
    return _Fatal(f"{type(exc).__name__}: {text}")


def _classify_http(exc):
    import aiohttp

    if isinstance(exc, (_Transient, _Missing, _Fatal)):
        return exc
    if isinstance(exc, FileNotFoundError):
        return _Missing("HTTP 404 Not Found")
    if isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError, TimeoutError, ConnectionError,
                        OSError)):
        return _Transient(f"{type(exc).__name__}: {exc}")
    return _Fatal(f"{type(exc).__name__}: {exc}")


def _http_status(status, reason):
    text = f"HTTP {status} {reason or ''}".strip()
    if status in (401, 403):
        return _Missing(text + " (access denied)")
    if status in (404, 410):
        return _Missing(text)
    if status in (408, 429) or status >= 500:
        return _Transient(text)
    return _Fatal(text)


def _hint(kind, location):
    if kind == "http":
        return ("check the URL's path and, if the server needs one, the bearer token "
                f"(storage_options={{'token': ...}} or ${TOKEN_ENV})")
    if kind == "s3":
        return ("check the bucket and key, the credentials (AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws/credentials) and, for S3-compatible "
                "stores, the endpoint (AWS_ENDPOINT_URL or storage_options={'endpoint_url': ...})")
    return "check the path"


def _retrying(kind, location, opts, what, attempt_fn, classify):
    """Run ``attempt_fn()`` with bounded exponential back-off on transient failures."""
    retries = opts.get("retries", DEFAULT_RETRIES)
    wait = float(opts.get("retry_wait", DEFAULT_RETRY_WAIT))
    last = None
    for attempt in range(retries + 1):
        try:
            return attempt_fn()
        except (InputError, StorageError):
            raise
        except Exception as exc:  # noqa: BLE001 - classified below, never swallowed
            cls = classify(exc)
            if isinstance(cls, _Missing):
                raise NotFoundError(f"{what} {display(location)}: not found or access denied "
                                    f"({cls}); {_hint(kind, location)}") from exc
            if isinstance(cls, _Fatal):
                raise StorageError(f"{what} {display(location)} failed: {cls}; "
                                   f"{_hint(kind, location)}") from exc
            last = cls
        if attempt < retries:
            time.sleep(min(MAX_RETRY_WAIT, wait * 2 ** attempt) * random.uniform(0.5, 1.5))
    raise StorageError(f"{what} {display(location)} failed after {retries + 1} attempt(s); last "
                       f"error: {last}. Check the network and the endpoint; raise the retry "
                       f"count with storage_options={{'retries': n}} if the link is flaky")


# ---------------------------------------------------------------------------------------------
# http primitives (on the fsspec HTTPFileSystem's aiohttp session and event loop)


def _http_run(fs, coro_fn):
    from fsspec.asyn import sync

    async def go():
        session = await fs.set_session()
        return await coro_fn(session)

    return sync(fs.loop, go)


def _http_get(fs, url):
    async def get(session):
        async with session.get(url) as resp:
            if resp.status >= 400:
                raise _http_status(resp.status, resp.reason)
            data = await resp.read()
            expected = resp.headers.get("Content-Length")
            encoded = resp.headers.get("Content-Encoding", "identity") not in ("identity", "")
            if expected is not None and not encoded and int(expected) != len(data):
                raise _Transient(f"incomplete body: {len(data)} of {expected} bytes")
            return data

    return _http_run(fs, get)


def _http_head(fs, url):
    """Size in bytes of the resource, or None when it does not exist (404/410)."""
    async def head(session):
        async with session.head(url, allow_redirects=True) as resp:
            if resp.status in (404, 410):
                return None
            if resp.status in (405, 501):       # no HEAD: ask for one byte instead
                async with session.get(url, headers={"Range": "bytes=0-0"}) as r2:
                    if r2.status in (404, 410):
                        return None
                    if r2.status >= 400:
                        raise _http_status(r2.status, r2.reason)
                    rng = r2.headers.get("Content-Range", "")
                    if "/" in rng and rng.rsplit("/", 1)[1].isdigit():
                        return int(rng.rsplit("/", 1)[1])
                    return len(await r2.read())
            if resp.status >= 400:
                raise _http_status(resp.status, resp.reason)
            length = resp.headers.get("Content-Length")
            return int(length) if length is not None else -1

    return _http_run(fs, head)


# ---------------------------------------------------------------------------------------------
# local helpers


def _local_error(what, location, exc):
    if isinstance(exc, FileNotFoundError):
        return NotFoundError(f"{what} {display(location)}: no such file or folder; check the path")
    if isinstance(exc, PermissionError):
        return StorageError(f"{what} {display(location)}: permission denied; check the file "
                            f"permissions or choose another location")
    if getattr(exc, "errno", None) == errno.ENOSPC:
        return StorageError(f"{what} {display(location)}: no space left on the device; free "
                            f"some space or choose another location")
    return StorageError(f"{what} {display(location)} failed: {exc}")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_local(path, data) -> None:
    """Write ``data`` to the local file ``path`` atomically: temp file in the same folder,
    fsync, rename, fsync the folder.  On failure the temp file is removed and ``path`` is
    untouched.  Raises plain ``OSError`` (callers translate)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            # mkstemp creates 0600; give the file the mode a plain open() would (umask), so
            # shards and manifests can be served or shared like any other file.
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)
            os.fsync(f.fileno())
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


# ---------------------------------------------------------------------------------------------
# the public operations


def read_bytes(location, storage_options=None) -> bytes:
    """All bytes of the object/file at ``location``.

    Remote reads check the length against ``Content-Length`` / the object size (a short body
    is retried).  Raises :class:`NotFoundError` (missing / denied) or :class:`StorageError`.
    """
    kind, path = _kind(location)
    opts = _options(kind, location, storage_options)
    if kind == "local":
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise _local_error("reading", location, exc) from exc
    if kind == "http":
        fs = _http_fs(opts)
        return _retrying(kind, location, opts, "reading", lambda: _http_get(fs, path),
                         _classify_http)
    fs = _s3_fs(opts).fs

    def attempt():
        with fs.open_input_file(path) as f:
            expected = f.size()
            data = f.read()
        if len(data) != expected:
            raise _Transient(f"incomplete body: {len(data)} of {expected} bytes")
        return data

    return _retrying(kind, location, opts, "reading", attempt, _classify_s3)


def write_bytes(location, data, storage_options=None) -> None:
    """Write ``data`` (bytes-like) to ``location``, replacing what was there.

    Local: atomic (temp file, fsync, rename; parent folders created).  s3: one upload; the
    object appears whole or not at all.  http(s) is read-only (:class:`StorageError`).
    """
    kind, path = _kind(location)
    opts = _options(kind, location, storage_options)
    if kind == "local":
        try:
            atomic_write_local(path, data)
        except OSError as exc:
            raise _local_error("writing", location, exc) from exc
        return
    if kind == "http":
        raise StorageError(f"cannot write {display(location)}: http(s) locations are read-only; "
                           f"write to a local folder (and serve it with 'shardstream serve') or "
                           f"to s3://")
    fs = _s3_fs(opts).fs

    def attempt():
        with fs.open_output_stream(path) as f:
            f.write(data)

    _retrying(kind, location, opts, "writing", attempt, _classify_s3)


def size(location, storage_options=None) -> int:
    """Size in bytes of the file/object at ``location`` (:class:`NotFoundError` if missing)."""
    kind, path = _kind(location)
    opts = _options(kind, location, storage_options)
    if kind == "local":
        try:
            return os.stat(path).st_size
        except OSError as exc:
            raise _local_error("reading the size of", location, exc) from exc
    if kind == "http":
        fs = _http_fs(opts)

        def attempt():
            n = _http_head(fs, path)
            if n is None:
                raise _Missing("HTTP 404 Not Found")
            if n < 0:
                return len(_http_get(fs, path))
            return n

        return _retrying(kind, location, opts, "reading the size of", attempt, _classify_http)
    fs = _s3_fs(opts).fs

    def attempt_s3():
        import pyarrow.fs as pafs

        info = fs.get_file_info(path)
        if info.type != pafs.FileType.File:
            raise _Missing("no such object")
        return info.size

    return _retrying(kind, location, opts, "reading the size of", attempt_s3, _classify_s3)


def exists(location, storage_options=None) -> bool:
    """True when a file/object (or folder/prefix) exists at ``location``.

    Access denied is not "absent": it raises :class:`NotFoundError` with what to check.
    """
    kind, path = _kind(location)
    opts = _options(kind, location, storage_options)
    if kind == "local":
        return os.path.exists(path)
    if kind == "http":
        fs = _http_fs(opts)
        return _retrying(kind, location, opts, "checking", lambda: _http_head(fs, path) is not None,
                         _classify_http)
    fs = _s3_fs(opts).fs

    def attempt():
        import pyarrow.fs as pafs

        try:
            return fs.get_file_info(path).type != pafs.FileType.NotFound
        except OSError as exc:
            if "NO_SUCH_BUCKET" in str(exc):
                return False
            raise

    return _retrying(kind, location, opts, "checking", attempt, _classify_s3)


def listdir(location, storage_options=None) -> list[str]:
    """Sorted names (not paths) of the entries directly inside the folder/prefix ``location``.

    :class:`NotFoundError` if there is no such folder (or, remotely, nothing under the prefix).
    http(s): the links of the server's index page for that URL.
    """
    kind, path = _kind(location)
    opts = _options(kind, location, storage_options)
    if kind == "local":
        try:
            return sorted(os.listdir(path))
        except OSError as exc:
            raise _local_error("listing", location, exc) from exc
    if kind == "http":
        fs = _http_fs(opts)
        base = path.rstrip("/") + "/"

        def attempt():
            links = fs.ls(base, detail=False)
            names = set()
            for link in links:
                if link.startswith(base):
                    name = link[len(base):].strip("/")
                    if name and "/" not in name and "?" not in name and "#" not in name:
                        names.add(unquote(name))
            return sorted(names)

        return _retrying(kind, location, opts, "listing", attempt, _classify_http)
    fs = _s3_fs(opts).fs

    def attempt_s3():
        import pyarrow.fs as pafs

        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=False))
        return sorted(info.base_name for info in infos)

    return _retrying(kind, location, opts, "listing", attempt_s3, _classify_s3)


def remove(location, storage_options=None) -> None:
    """Delete the file/object at ``location`` (:class:`NotFoundError` if missing)."""
    kind, path = _kind(location)
    opts = _options(kind, location, storage_options)
    if kind == "local":
        try:
            os.remove(path)
        except OSError as exc:
            raise _local_error("removing", location, exc) from exc
        return
    if kind == "http":
        raise StorageError(f"cannot remove {display(location)}: http(s) locations are read-only")
    fs = _s3_fs(opts).fs

    def attempt():
        import pyarrow.fs as pafs

        if fs.get_file_info(path).type != pafs.FileType.File:
            raise _Missing("no such object")
        fs.delete_file(path)

    _retrying(kind, location, opts, "removing", attempt, _classify_s3)
