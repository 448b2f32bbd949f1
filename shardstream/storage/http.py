"""The http(s) backend (read-only): fsspec's aiohttp ``HTTPFileSystem`` and its event loop.

A bearer token (``storage_options={"token": ...}`` or ``$SHARDSTREAM_TOKEN``) is sent as
``Authorization: Bearer <token>``.  Listing reads the links of the server's index page.
"""

from __future__ import annotations

import asyncio
from urllib.parse import unquote

from .. import config
from ..errors import StorageError
from .clients import cached
from .retry import Fatal, Missing, Transient, retrying

NAME = "http"
SCHEMES = ("http", "https")
OPTION_KEYS = ("retries", "retry_wait", "timeout", "token", "headers")
HINT = ("check the URL's path and, if the server needs one, the bearer token "
        f"(storage_options={{'token': ...}} or ${config.TOKEN_ENV})")


def to_path(location: str) -> str:
    return location


def _fs(opts):
    token = opts.get("token") or config.token()
    headers = dict(opts.get("headers") or {})
    headers.setdefault("Accept-Encoding", "identity")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    timeout = float(opts.get("timeout", config.DEFAULT_TIMEOUT))
    key = ("http", tuple(sorted(headers.items())), timeout)

    def make():
        import aiohttp  # noqa: PLC0415 - aiohttp and fsspec's http only when a URL is used
        from fsspec.implementations.http import HTTPFileSystem  # noqa: PLC0415

        return HTTPFileSystem(
            skip_instance_cache=True,
            client_kwargs={"headers": headers,
                           "timeout": aiohttp.ClientTimeout(total=None, sock_connect=timeout,
                                                            sock_read=timeout)})

    return cached(key, make)


def classify(exc):
    import aiohttp  # noqa: PLC0415 - loaded already by the filesystem that failed

    if isinstance(exc, (Transient, Missing, Fatal)):
        return exc
    if isinstance(exc, FileNotFoundError):
        return Missing("HTTP 404 Not Found")
    if isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError, TimeoutError, ConnectionError,
                        OSError)):
        return Transient(f"{type(exc).__name__}: {exc}")
    return Fatal(f"{type(exc).__name__}: {exc}")


def status_error(status, reason):
    """The failure class for an HTTP error status."""
    text = f"HTTP {status} {reason or ''}".strip()
    if status in (401, 403):
        return Missing(text + " (access denied)")
    if status in (404, 410):
        return Missing(text)
    if status in (408, 429) or status >= 500:
        return Transient(text)
    return Fatal(text)


def _run(fs, coro_fn):
    from fsspec.asyn import sync  # noqa: PLC0415 - see _fs

    async def go():
        session = await fs.set_session()
        return await coro_fn(session)

    return sync(fs.loop, go)


def _get(fs, url):
    async def get(session):
        async with session.get(url) as resp:
            if resp.status >= 400:
                raise status_error(resp.status, resp.reason)
            data = await resp.read()
            expected = resp.headers.get("Content-Length")
            encoded = resp.headers.get("Content-Encoding", "identity") not in ("identity", "")
            if expected is not None and not encoded and int(expected) != len(data):
                raise Transient(f"incomplete body: {len(data)} of {expected} bytes")
            return data

    return _run(fs, get)


def _head(fs, url):
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
                        raise status_error(r2.status, r2.reason)
                    rng = r2.headers.get("Content-Range", "")
                    if "/" in rng and rng.rsplit("/", 1)[1].isdigit():
                        return int(rng.rsplit("/", 1)[1])
                    return len(await r2.read())
            if resp.status >= 400:
                raise status_error(resp.status, resp.reason)
            length = resp.headers.get("Content-Length")
            return int(length) if length is not None else -1

    return _run(fs, head)


def read(location, url, opts) -> bytes:
    fs = _fs(opts)
    return retrying(location, opts, "reading", lambda: _get(fs, url), classify, HINT)


def open_read(location, url, opts):
    fs = _fs(opts)

    def attempt():
        if _head(fs, url) is None:
            raise Missing("HTTP 404 Not Found")
        return fs.open(url, "rb", block_size=0)     # block_size=0: a streaming GET

    return retrying(location, opts, "reading", attempt, classify, HINT)


def write(location, url, data, opts) -> None:
    raise StorageError(f"cannot write {location}: http(s) locations are read-only; "
                       f"write to a local folder (and serve it with 'shardstream serve') or "
                       f"to s3://")


def size(location, url, opts) -> int:
    fs = _fs(opts)

    def attempt():
        n = _head(fs, url)
        if n is None:
            raise Missing("HTTP 404 Not Found")
        if n < 0:
            return len(_get(fs, url))
        return n

    return retrying(location, opts, "reading the size of", attempt, classify, HINT)


def exists(location, url, opts) -> bool:
    fs = _fs(opts)
    return retrying(location, opts, "checking", lambda: _head(fs, url) is not None, classify,
                    HINT)


def listdir(location, url, opts) -> list[str]:
    fs = _fs(opts)
    base = url.rstrip("/") + "/"

    def attempt():
        links = fs.ls(base, detail=False)
        names = set()
        for link in links:
            if link.startswith(base):
                name = link[len(base):].strip("/")
                if name and "/" not in name and "?" not in name and "#" not in name:
                    names.add(unquote(name))
        return sorted(names)

    return retrying(location, opts, "listing", attempt, classify, HINT)


def remove(location, url, opts) -> None:
    raise StorageError(f"cannot remove {location}: http(s) locations are read-only")
