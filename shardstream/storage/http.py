"""The http(s) backend (read-only): fsspec's aiohttp ``HTTPFileSystem`` and its event loop.

A bearer token (``storage_options={"token": ...}``; :func:`shardstream.storage.with_token` adds
``$SHARDSTREAM_TOKEN`` for the locations a user names) is sent as ``Authorization: Bearer
<token>`` only to the scheme, host and port it was given for (``token_origin``, set by
``with_token``; else the URL being read): never to another origin, and — since aiohttp drops the
header on a redirect to another origin — never after such a redirect.  Over plain ``http://`` it
is sent only to a loopback host unless ``allow_http_token=True``.  Listing reads the links of the
server's index page.
"""

from __future__ import annotations

import asyncio
import ipaddress
from urllib.parse import unquote, urlsplit

from .. import config
from ..errors import InputError, StorageError
from .clients import cached
from .retry import Denied, Fatal, Missing, Transient, retrying

NAME = "http"
SCHEMES = ("http", "https")
OPTION_KEYS = ("retries", "retry_wait", "timeout", "token", "token_origin", "allow_http_token",
               "headers")
HINT = ("check the URL's path and, if the server needs one, the bearer token "
        f"(storage_options={{'token': ...}} or ${config.TOKEN_ENV})")


def to_path(location: str) -> str:
    return location


def origin(url: str) -> str:
    """``scheme://host:port`` of a URL (default ports made explicit, names lower-cased)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise InputError(f"{url}: not a valid URL (bad port)") from None
    host = (parts.hostname or "").lower()
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bearer(url: str, opts: dict) -> str | None:
    """The token to send with a request for ``url``, or None (see the module doc)."""
    token = opts.get("token")
    if not token or origin(url) != opts.get("token_origin", origin(url)):
        return None
    parts = urlsplit(url)
    if (parts.scheme.lower() == "http" and not _loopback((parts.hostname or "").lower())
            and not opts.get("allow_http_token")):
        raise InputError(f"refusing to send the bearer token in clear text to {origin(url)}: "
                         f"use https://, or pass storage_options={{'allow_http_token': True}} "
                         f"if that network is private")
    return token


def _fs(opts, url):
    token = bearer(url, opts)
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
    if isinstance(exc, aiohttp.ClientResponseError):     # e.g. fsspec's listing of a page
        return status_error(exc.status, exc.message)
    if isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError, TimeoutError, ConnectionError,
                        OSError)):
        return Transient(f"{type(exc).__name__}: {exc}")
    return Fatal(f"{type(exc).__name__}: {exc}")


def status_error(status, reason):
    """The failure class for an HTTP error status."""
    text = f"HTTP {status} {reason or ''}".strip()
    if status in (401, 403):
        return Denied(text)
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
    fs = _fs(opts, url)
    return retrying(location, opts, "reading", lambda: _get(fs, url), classify, HINT)


class _Stream:
    """One streaming GET as a binary file object (``read(n)``, ``close``, ``with``), run on the
    filesystem's event loop.  aiohttp raises on a body cut short of its ``Content-Length``."""

    def __init__(self, fs, url):
        from fsspec.asyn import sync  # noqa: PLC0415 - see _fs

        self._sync, self._loop = sync, fs.loop

        async def start():
            session = await fs.set_session()
            resp = await session.get(url)
            if resp.status >= 400:
                resp.close()
                raise status_error(resp.status, resp.reason)
            return resp

        self._resp = sync(fs.loop, start)

    def read(self, n: int = -1) -> bytes:
        return self._sync(self._loop, self._resp.content.read, n)

    def close(self) -> None:
        self._resp.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_raw(location, url, opts):
    """A streaming GET of ``url``, without retries."""
    return _Stream(_fs(opts, url), url)


def open_read(location, url, opts):
    return retrying(location, opts, "reading", lambda: open_raw(location, url, opts), classify,
                    HINT)


def write(location, url, data, opts) -> None:
    raise StorageError(f"cannot write {location}: http(s) locations are read-only; "
                       f"write to a local folder (and serve it with 'shardstream serve') or "
                       f"to s3://")


def size(location, url, opts) -> int:
    fs = _fs(opts, url)

    def attempt():
        n = _head(fs, url)
        if n is None:
            raise Missing("HTTP 404 Not Found")
        if n < 0:
            return len(_get(fs, url))
        return n

    return retrying(location, opts, "reading the size of", attempt, classify, HINT)


def exists(location, url, opts) -> bool:
    fs = _fs(opts, url)
    return retrying(location, opts, "checking", lambda: _head(fs, url) is not None, classify,
                    HINT)


def listdir(location, url, opts) -> list[str]:
    fs = _fs(opts, url)
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
