"""The aiohttp application behind ``shardstream serve``: a converted folder, read-only, over HTTP.

Built on aiohttp (the library fsspec's HTTP client already uses).  Files are sent by
:class:`aiohttp.web.FileResponse` (``sendfile``; never read whole into memory), which also
answers ``ETag`` / ``Last-Modified`` / ``If-None-Match`` (304) / ``If-Match`` (412) and single
byte ranges.  What it does not get right for a shard server is fixed here before the request
reaches it:

- the path is decoded *per segment* from the raw request target, so ``%2f`` can never become a
  separator and ``..`` / ``%2e%2e`` / backslashes / NUL bytes / hidden and temp names are
  refused; the resolved real path must lie under the root (symlinks pointing out are refused);
- ``Range`` is parsed here (RFC 9110): a syntactically invalid header or a multi-range request
  is ignored (200 with the whole file), ``bytes=-0`` is unsatisfiable (416), and ``If-Range``
  with an ETag is honoured (aiohttp only understands dates there);
- ``Accept-Encoding`` is dropped, so a sibling ``x.tar.gz`` is never sent in place of ``x.tar``
  (shards are checked against the manifest's sha256; their bytes must be the file's bytes).

Requests: ``GET``/``HEAD`` only (anything else 405 with ``Allow``); ``/`` is an index of the
datasets found through their ``manifest.json`` files (JSON; HTML for browsers or
``?format=html``); a folder URL ending in ``/`` lists the folder (HTML links, which fsspec's
HTTP ``ls`` understands; JSON with ``?format=json`` or ``Accept: application/json``), with the
manifest summary when the folder holds a split.  With a token every request needs
``Authorization: Bearer <token>`` (401 otherwise; constant-time comparison; never logged).
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import json
import logging
import os
import re
import socket
import stat
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict

from .. import __version__, config
from ..errors import InputError
from .listing import IndexCache, index_html, list_folder, listing_html, read_summary
from .paths import Reject, resolve, split_request_path
from .ranges import if_range_holds, normalize_range

ALLOWED_METHODS = ("GET", "HEAD")
SHUTDOWN_TIMEOUT = 60.0         # seconds in-flight responses get to finish after SIGINT/SIGTERM

access_log = logging.getLogger("shardstream.server.access")

_TOKEN_RE = re.compile(r"^[!-~]+$")          # printable ASCII, no spaces



# ---------------------------------------------------------------------------------------------
# the application


@dataclass(frozen=True)
class _Config:
    root: str
    token: bytes | None
    index: IndexCache


CONFIG = web.AppKey("shardstream_config", _Config)


def _wants(request: web.Request, default: str) -> str:
    """``"json"`` or ``"html"``: ``?format=`` first, then the Accept header, else ``default``."""
    fmt = request.query.get("format")
    if fmt is not None:
        if fmt not in ("json", "html"):
            raise web.HTTPBadRequest(text="format must be json or html\n")
        return fmt
    accept = request.headers.get("Accept", "").lower()
    if "text/html" in accept and default == "json":
        return "html"
    if "application/json" in accept and default == "html":
        return "json"
    return default


def _origin(request: web.Request) -> str:
    try:
        return f"{request.scheme}://{request.host}"
    except Exception:  # noqa: BLE001 - a hostile Host header only spoils the example URLs
        return ""


def _json(data) -> web.Response:
    return web.Response(text=json.dumps(data, indent=2) + "\n", content_type="application/json",
                        headers={"Cache-Control": "no-cache"})


def _html(text) -> web.Response:
    return web.Response(text=text, content_type="text/html", headers={"Cache-Control": "no-cache"})


async def _index(request: web.Request, cfg: _Config) -> web.Response:
    index = await cfg.index.get()
    if _wants(request, "json") == "html":
        return _html(index_html(index, _origin(request)))
    return _json({"server": f"shardstream {__version__}", **index})


async def _folder(request, cfg: _Config, parts) -> web.Response:
    loop = asyncio.get_running_loop()
    real, st = await loop.run_in_executor(None, resolve, cfg.root, parts)
    if not stat.S_ISDIR(st.st_mode):
        raise Reject(404, "not a folder")
    try:
        entries = await loop.run_in_executor(None, list_folder, cfg.root, real)
    except OSError:
        raise Reject(404, "folder cannot be listed") from None
    summary, problem = await loop.run_in_executor(None, read_summary, cfg.root, parts)
    if _wants(request, "html") == "json":
        return _json({"path": "/".join(parts), "split": summary, "problem": problem,
                      "entries": entries})
    return _html(listing_html(parts, entries, summary, _origin(request)))


async def _file(request, cfg: _Config, parts) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    real, st = await loop.run_in_executor(None, resolve, cfg.root, parts)
    if not stat.S_ISREG(st.st_mode):
        raise Reject(404, "not a file (folder URLs end in /)")
    # a copy of the headers without Range/If-Range/Accept-Encoding; bytes that are not UTF-8
    # (kept by aiohttp as surrogates, which its clone() cannot encode) become U+FFFD
    headers = CIMultiDict(
        (k, v.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
        for k, v in request.headers.items())
    headers.popall("Accept-Encoding", None)
    if_range = headers.popall("If-Range", None)
    rng = headers.popall("Range", None)
    wanted = normalize_range(rng[0] if rng and len(rng) == 1 else None, st.st_size)
    if wanted is not None and if_range is not None and not (
            len(if_range) == 1 and if_range_holds(if_range[0], st)):
        wanted = None
    if wanted is not None:
        headers["Range"] = wanted
    return _ShardFile(real, request.clone(headers=headers))


class _ShardFile(web.FileResponse):
    """FileResponse prepared against the normalised copy of the request (Range, If-Range and
    Accept-Encoding already dealt with; see the module doc)."""

    def __init__(self, path, normalized):
        super().__init__(path)
        self._normalized = normalized

    async def prepare(self, request):
        return await super().prepare(self._normalized)


async def _handle(request: web.Request) -> web.StreamResponse:
    cfg = request.app[CONFIG]
    if request.method not in ALLOWED_METHODS:
        raise web.HTTPMethodNotAllowed(request.method, ALLOWED_METHODS,
                                       text="this server is read-only: GET and HEAD only\n")
    try:
        parts, is_folder = split_request_path(request.rel_url.raw_path)
        if not parts:
            return await _index(request, cfg)
        if is_folder:
            return await _folder(request, cfg, parts)
        return await _file(request, cfg, parts)
    except Reject as rej:
        cls = web.HTTPBadRequest if rej.status == 400 else web.HTTPNotFound
        raise cls(text=f"{rej.status}: {rej.reason}\n") from None


@web.middleware
async def _auth(request: web.Request, handler):
    """401 unless ``Authorization: Bearer <token>`` carries the server's token."""
    token = request.app[CONFIG].token
    if token is not None:
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.strip().partition(" ")
        presented = value.strip().encode("utf-8", "surrogateescape")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented, token):
            challenge = 'Bearer realm="shardstream"'
            if given:
                challenge += ', error="invalid_token"'
            raise web.HTTPUnauthorized(
                headers={"WWW-Authenticate": challenge},
                text="401: this server needs 'Authorization: Bearer <token>' (loaders: token=... "
                     f"or ${config.TOKEN_ENV})\n")
    return await handler(request)


class AccessLogger(web.AbstractAccessLogger):
    """One line per request: client, method, path (no query string), status, body bytes, ms.
    Headers (and so the bearer token) are never logged."""

    def log(self, request, response, time):
        path = request.rel_url.raw_path if request is not None else "-"
        if len(path) > 200:
            path = path[:200] + "..."
        # body bytes: the Content-Length sent (sendfile bypasses aiohttp's byte counter)
        if request is None or request.method == "HEAD" or response.status in (204, 304):
            sent = 0
        else:
            sent = response.content_length
            if sent is None:
                sent = response.body_length
        self.logger.info('%s "%s %s" %d %d B %.1f ms', request.remote if request else "-",
                         request.method if request else "-", path, response.status, sent,
                         time * 1000.0)


class NoTracebacks(logging.Filter):
    """aiohttp logs malformed requests with a traceback (and the offending line, which may hold
    a header); turn that into one line naming only the kind of error."""

    def filter(self, record):
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = f"rejected a malformed request ({type(exc).__name__})"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def _check_token(token):
    if token is None or token == "":
        return None
    if not isinstance(token, str) or not _TOKEN_RE.match(token):
        raise InputError("--token / $SHARDSTREAM_TOKEN must be printable ASCII without spaces "
                         "(e.g. the output of: "
                         "python -c 'import secrets; print(secrets.token_urlsafe())')")
    return token.encode("ascii")


def make_app(root, token=None, quiet=False) -> web.Application:
    """The aiohttp application serving the folder ``root`` read-only.

    ``token``: require ``Authorization: Bearer <token>`` on every request (``None``/"" = open;
    the environment is not read here, see :func:`serve`).  ``quiet``: no access log; otherwise
    one line per request goes to the ``shardstream.server.access`` logger.
    :class:`InputError` if ``root`` is not a folder or the token is malformed.
    """
    real = os.path.realpath(os.fspath(root))
    if not os.path.isdir(real):
        raise InputError(f"cannot serve {root}: not a folder (give the folder that holds your "
                         "converted datasets, e.g. the output folder of 'shardstream convert')")
    cfg = _Config(root=real, token=_check_token(token), index=IndexCache(real))
    app = web.Application(
        middlewares=[_auth],
        handler_args={"access_log_class": AccessLogger,
                      "access_log": None if quiet else access_log},
    )
    app[CONFIG] = cfg
    app.router.add_route("*", "/{tail:.*}", _handle)
    return app


async def start_app(app: web.Application, host="127.0.0.1", port=0,
                    shutdown_timeout=SHUTDOWN_TIMEOUT) -> tuple[web.AppRunner, str]:
    """Start ``app`` listening on ``host:port`` (0 = a free port) in the running event loop.
    Returns the runner (``await runner.cleanup()`` stops it, letting in-flight responses
    finish) and the base URL (``http://host:port``).  :class:`InputError` if the address
    cannot be bound (port in use, unknown host, no permission)."""
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise InputError(f"port {port!r} is not a port number: use 1-65535, or 0 for a free one")
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except (OSError, socket.gaierror) as exc:
        await runner.cleanup()
        if getattr(exc, "errno", None) == errno.EADDRINUSE:
            msg = f"port {port} on {host} is in use; pick another with --port"
        elif getattr(exc, "errno", None) == errno.EACCES:
            msg = (f"no permission to listen on port {port} on {host}; pick a port above 1023 "
                   f"with --port")
        elif isinstance(exc, socket.gaierror) or getattr(exc, "errno", None) == errno.EADDRNOTAVAIL:
            msg = (f"cannot listen on {host}: not an address of this machine; use 127.0.0.1 "
                   "(this machine only) or 0.0.0.0 (every interface) with --host")
        else:
            msg = f"cannot listen on {host} port {port}: {exc.strerror or exc}"
        raise InputError(msg) from None
    bound_host, bound_port = runner.addresses[0][:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    return runner, f"http://{shown}:{bound_port}"
