"""The HTTP shard server behind ``shardstream serve``: a converted folder, read-only, over HTTP.

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
import html
import json
import logging
import math
import os
import re
import signal
import socket
import stat
import sys
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote_to_bytes

from aiohttp import web
from multidict import CIMultiDict
from aiohttp.http_exceptions import HttpProcessingError

from ..errors import InputError
from .manifest import MANIFEST_NAME, Manifest
from .storage import human_bytes

TOKEN_ENV = "SHARDSTREAM_TOKEN"
ALLOWED_METHODS = ("GET", "HEAD")
INDEX_TTL = 2.0                 # seconds an index scan is reused (rescanned sooner if root changes)
INDEX_MAX_DEPTH = 4             # root/<dataset>/<split>/manifest.json is depth 2
INDEX_MAX_DIRS = 10_000         # folders looked at per scan, at most
LISTING_MAX_ENTRIES = 10_000    # entries shown per folder listing, at most
SHUTDOWN_TIMEOUT = 60.0         # seconds in-flight responses get to finish after SIGINT/SIGTERM
TEMP_SUFFIXES = (".tmp", ".part", "~")

log = logging.getLogger("shardstream.server")
access_log = logging.getLogger("shardstream.server.access")

_TOKEN_RE = re.compile(r"^[!-~]+$")          # printable ASCII, no spaces
_RANGE_SPEC = re.compile(r"^(\d*)-(\d*)$")
_BIG = 10 ** 19                               # stands in for any position past every file


# ---------------------------------------------------------------------------------------------
# paths


class _Reject(Exception):
    """A request path that must not be served; ``status`` is 400 or 404."""

    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _is_hidden(name: str) -> bool:
    """Hidden or temporary names are never served (``.x``, ``x.tmp``, ``x.part``, ``x~``)."""
    return name.startswith(".") or name.endswith(TEMP_SUFFIXES)


def split_request_path(raw_path: str) -> tuple[list[str], bool]:
    """Decode a raw (still percent-encoded) request path into its segments, refusing every
    segment that could name something outside the served folder.

    Returns ``(segments, is_folder)``; ``is_folder`` when the path ends in ``/``.  Raises
    :class:`_Reject` (400: encoded ``/``, backslash, NUL or control character, bad UTF-8,
    not starting with ``/``; 404: empty, ``.`` or ``..`` segment, hidden or temp name).
    """
    if not raw_path.startswith("/"):
        raise _Reject(400, "the path must start with /")
    body = raw_path[1:]
    is_folder = body == "" or body.endswith("/")
    if is_folder:
        body = body[:-1] if body else body
    if body == "":
        return [], True
    segments = []
    for raw in body.split("/"):
        try:
            name = unquote_to_bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise _Reject(400, "the path is not valid UTF-8") from None
        if "/" in name or "\\" in name:
            raise _Reject(400, "encoded slashes and backslashes are not allowed in paths")
        if any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise _Reject(400, "control characters (NUL, ...) are not allowed in paths")
        if name in ("", ".", ".."):
            raise _Reject(404, "empty, '.' and '..' path segments are not served")
        if _is_hidden(name):
            raise _Reject(404, "hidden and temporary files are not served")
        segments.append(name)
    return segments, is_folder


def resolve(root: str, segments: list[str]) -> tuple[str, os.stat_result]:
    """The real path and stat of ``root/segments`` if it lies under the real folder ``root``
    (symlinks resolved) and no part of that real path is hidden; :class:`_Reject` (404)
    otherwise.  Blocking (call it in an executor)."""
    real = os.path.realpath(os.path.join(root, *segments))
    if not _inside(root, real):
        raise _Reject(404, "outside the served folder")
    rel = os.path.relpath(real, root)
    if rel != "." and any(_is_hidden(part) for part in rel.split(os.sep)):
        raise _Reject(404, "hidden and temporary files are not served")
    try:
        st = os.stat(real)
    except (OSError, ValueError):
        raise _Reject(404, "no such file") from None
    return real, st


def _inside(root: str, real: str) -> bool:
    """Whether the real path ``real`` is the real folder ``root`` or lies under it."""
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def _url_path(parts) -> str:
    """The URL path (percent-encoded) of a folder or file given its segments."""
    return "/" + "/".join(quote(p, safe="") for p in parts)


# ---------------------------------------------------------------------------------------------
# ranges and conditional requests


def _etag(st: os.stat_result) -> str:
    """The strong ETag aiohttp's FileResponse sends (size and mtime in ns, hex), unquoted."""
    return f"{st.st_mtime_ns:x}-{st.st_size:x}"


def _position(digits: str) -> int:
    """A Range position; absurdly long numbers become a position past every file."""
    return int(digits) if len(digits) <= 18 else _BIG


def normalize_range(header: str | None, size: int) -> str | None:
    """The ``Range`` header to hand to FileResponse for a file of ``size`` bytes.

    ``None``: answer 200 with the whole file (no Range, a unit other than bytes, a syntax
    error, several ranges).  Otherwise a single absolute ``bytes=first-last`` within the
    file, or ``bytes=<size or more>-``, which FileResponse answers with 416 and
    ``Content-Range: bytes */size``.
    """
    if header is None:
        return None
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    specs = [s.strip() for s in spec.split(",")]
    if len(specs) != 1:
        return None                 # multi-range: the whole file (RFC 9110 allows ignoring Range)
    m = _RANGE_SPEC.match(specs[0])
    if not m or m.group(0) == "-":
        return None
    first, last = m.groups()
    if first == "":                 # suffix: the last n bytes
        n = _position(last)
        if n == 0 or size == 0:
            return f"bytes={size}-"
        return f"bytes={max(0, size - n)}-{size - 1}"
    start = _position(first)
    end = _position(last) if last else None
    if end is not None and end < start:
        return None                 # invalid: ignored
    if start >= size:
        return f"bytes={max(start, size)}-"
    end = size - 1 if end is None else min(end, size - 1)
    return f"bytes={start}-{end}"


def _if_range_holds(value: str, st: os.stat_result) -> bool:
    """Whether ``If-Range`` allows the Range: a strong ETag equal to the file's, or a date
    equal to its Last-Modified (RFC 9110 13.1.5)."""
    value = value.strip()
    if value.startswith('"'):
        return value == f'"{_etag(st)}"'
    if value.startswith("W/"):
        return False
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return False
    if when is None:
        return False
    try:   # aiohttp's Last-Modified is the mtime rounded up to the second
        return int(when.timestamp()) == math.ceil(st.st_mtime)
    except (OverflowError, OSError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------
# the index of datasets


def _summary(m: Manifest, parts) -> dict:
    """What the index says about one split."""
    formats = {fmt: {"shards": len(m.shards[fmt]), "bytes": int(sum(s.bytes for s in m.shards[fmt]))}
               for fmt in m.formats}
    return {
        "dataset": m.dataset,
        "split": m.split,
        "path": "/".join(parts),
        "url": _url_path(parts) + "/" if parts else "/",
        "num_samples": int(m.num_samples),
        "image_shape": [int(d) for d in m.image_shape],
        "encoding": m.encoding,
        "classes": len(m.classes),
        "synthetic": bool(m.synthetic),
        "formats": formats,
        "bytes": int(sum(f["bytes"] for f in formats.values())),
    }


def _read_summary(root: str, parts) -> tuple[dict | None, str | None]:
    """(summary, None) for the manifest in folder ``root/parts``, (None, problem) if it is
    unreadable, (None, None) if there is none."""
    path = os.path.realpath(os.path.join(root, *parts, MANIFEST_NAME))
    if not _inside(root, path) or not os.path.isfile(path):
        return None, None
    where = "/".join([*parts, MANIFEST_NAME])
    try:
        with open(path, "rb") as f:
            text = f.read(64 << 20).decode("utf-8")
        return _summary(Manifest.from_json(text, where), parts), None
    except Exception as exc:  # noqa: BLE001 - any broken manifest becomes a listed problem
        return None, f"{where}: {exc}"


def scan_index(root: str) -> dict:
    """Walk ``root`` (not into hidden folders or folder symlinks, at most ``INDEX_MAX_DEPTH``
    deep) and summarise every split found through its manifest.  Blocking."""
    splits, problems = [], []
    queue = [()]
    seen = 0
    while queue and seen < INDEX_MAX_DIRS:
        parts = queue.pop(0)
        seen += 1
        summary, problem = _read_summary(root, parts)
        if summary is not None:
            splits.append(summary)
            continue                    # a split's folder holds shards, not more splits
        if problem is not None:
            problems.append({"path": "/".join(parts), "error": problem})
        if len(parts) >= INDEX_MAX_DEPTH:
            continue
        try:
            with os.scandir(os.path.join(root, *parts)) as it:
                names = sorted(e.name for e in it
                               if not _is_hidden(e.name) and e.is_dir(follow_symlinks=False))
        except OSError:
            continue
        queue.extend((*parts, n) for n in names)
    splits.sort(key=lambda s: s["path"])
    return {"datasets": splits, "problems": problems}


@dataclass
class _IndexCache:
    """The last index scan, reused for ``INDEX_TTL`` seconds unless the root folder changed."""

    root: str
    stamp: tuple = ()
    at: float = -1e9
    value: dict = field(default_factory=dict)
    lock: asyncio.Lock | None = None

    async def get(self) -> dict:
        loop = asyncio.get_running_loop()
        if self.lock is None:
            self.lock = asyncio.Lock()
        async with self.lock:
            try:
                st = await loop.run_in_executor(None, os.stat, self.root)
                stamp = (st.st_mtime_ns, st.st_ino)
            except OSError:
                stamp = ()
            if stamp != self.stamp or time.monotonic() - self.at > INDEX_TTL:
                self.value = await loop.run_in_executor(None, scan_index, self.root)
                self.stamp, self.at = stamp, time.monotonic()
            return self.value


# ---------------------------------------------------------------------------------------------
# HTML


_STYLE = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}"
          "table{border-collapse:collapse}td,th{padding:.25em .8em;text-align:left;"
          "border-bottom:1px solid #ddd}td.n{text-align:right}code{background:#f4f4f4}")


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title><style>{_STYLE}</style></head><body>\n{body}</body></html>\n")


def _splits_table(splits, origin: str) -> str:
    e = html.escape
    rows = []
    for s in splits:
        shards = ", ".join(f"{f['shards']} {e(fmt)}" for fmt, f in s["formats"].items())
        rows.append(
            f"<tr><td><a href=\"{e(s['url'])}\">{e(s['dataset'])}</a></td><td>{e(s['split'])}</td>"
            f"<td class=n>{s['num_samples']:,}</td><td>{shards}</td>"
            f"<td class=n>{human_bytes(s['bytes'])}</td><td>{e(s['encoding'])}</td>"
            f"<td>{'yes' if s['synthetic'] else 'no'}</td>"
            f"<td><code>{e(origin + s['url'].rstrip('/'))}</code></td></tr>")
    return ("<table><tr><th>dataset</th><th>split</th><th>samples</th><th>shards</th>"
            "<th>bytes</th><th>encoding</th><th>synthetic</th><th>location</th></tr>\n"
            + "\n".join(rows) + "</table>\n")


def _example(index: dict) -> str:
    """URL path of the split used in examples: a training split if there is one."""
    splits = index["datasets"]
    pick = next((s for s in splits if s["split"] == "train"), splits[0])
    return pick["url"].rstrip("/")


def _index_html(index: dict, origin: str) -> str:
    e = html.escape
    body = "<h1>shardstream shard server</h1>\n"
    if index["datasets"]:
        example = origin + _example(index)
        body += _splits_table(index["datasets"], origin)
        body += ("<p>Stream a split: <code>shardstream.torch_loader(&quot;"
                 f"{e(example)}&quot;, batch_size=256)</code> or <code>shardstream.tf_dataset("
                 f"&quot;{e(example)}&quot;, batch_size=256)</code>.</p>\n")
    else:
        body += "<p>No converted datasets (no manifest.json) under this folder.</p>\n"
    for p in index["problems"]:
        body += f"<p>Unreadable manifest: {e(p['error'])}</p>\n"
    body += '<p><a href="/?format=json">this index as JSON</a></p>\n'
    return _page("shardstream", body)


def _listing_html(parts, entries, summary, origin: str) -> str:
    e = html.escape
    title = _url_path(parts) + "/"
    body = f"<h1>{e('/' + '/'.join(parts) + '/')}</h1>\n"
    if summary is not None:
        body += _splits_table([summary], origin)
    links = ['<li><a href="../">../</a></li>']
    for ent in entries:
        label = ent["name"] + ("/" if ent["folder"] else "")
        size = "" if ent["folder"] else f" ({human_bytes(ent['bytes'])})"
        links.append(f"<li><a href=\"{e(ent['url'])}\">{e(label)}</a>{size}</li>")
    body += "<ul>\n" + "\n".join(links) + "\n</ul>\n"
    return _page(title, body)


def _list_folder(root: str, real: str) -> list[dict]:
    """Servable entries of the folder ``real`` (under ``root``): names, relative URLs, sizes.
    Blocking."""
    out = []
    with os.scandir(real) as it:
        for ent in sorted(it, key=lambda x: x.name):
            if len(out) >= LISTING_MAX_ENTRIES:
                break
            if _is_hidden(ent.name) or any(ord(c) < 32 or c == "\\" for c in ent.name):
                continue
            try:
                target = os.path.realpath(ent.path)
                if not _inside(root, target) or target == root:
                    continue
                st = os.stat(target)
            except (OSError, ValueError):
                continue
            folder = stat.S_ISDIR(st.st_mode)
            if not folder and not stat.S_ISREG(st.st_mode):
                continue
            out.append({"name": ent.name, "folder": folder,
                        "url": quote(ent.name, safe="") + ("/" if folder else ""),
                        "bytes": None if folder else st.st_size})
    return out


# ---------------------------------------------------------------------------------------------
# the application


@dataclass(frozen=True)
class _Config:
    root: str
    token: bytes | None
    index: _IndexCache


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
        return _html(_index_html(index, _origin(request)))
    from .. import __version__

    return _json({"server": f"shardstream {__version__}", **index})


async def _folder(request, cfg: _Config, parts) -> web.Response:
    loop = asyncio.get_running_loop()
    real, st = await loop.run_in_executor(None, resolve, cfg.root, parts)
    if not stat.S_ISDIR(st.st_mode):
        raise _Reject(404, "not a folder")
    try:
        entries = await loop.run_in_executor(None, _list_folder, cfg.root, real)
    except OSError:
        raise _Reject(404, "folder cannot be listed") from None
    summary, problem = await loop.run_in_executor(None, _read_summary, cfg.root, parts)
    if _wants(request, "html") == "json":
        return _json({"path": "/".join(parts), "split": summary, "problem": problem,
                      "entries": entries})
    return _html(_listing_html(parts, entries, summary, _origin(request)))


async def _file(request, cfg: _Config, parts) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    real, st = await loop.run_in_executor(None, resolve, cfg.root, parts)
    if not stat.S_ISREG(st.st_mode):
        raise _Reject(404, "not a file (folder URLs end in /)")
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
            len(if_range) == 1 and _if_range_holds(if_range[0], st)):
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
    except _Reject as rej:
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
                     f"or ${TOKEN_ENV})\n")
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


class _NoTracebacks(logging.Filter):
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
                         "(e.g. the output of: python -c 'import secrets; print(secrets.token_urlsafe())')")
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
    cfg = _Config(root=real, token=_check_token(token), index=_IndexCache(real))
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
            msg = f"no permission to listen on port {port} on {host}; pick a port above 1023 with --port"
        elif isinstance(exc, socket.gaierror) or getattr(exc, "errno", None) == errno.EADDRNOTAVAIL:
            msg = (f"cannot listen on {host}: not an address of this machine; use 127.0.0.1 "
                   "(this machine only) or 0.0.0.0 (every interface) with --host")
        else:
            msg = f"cannot listen on {host} port {port}: {exc.strerror or exc}"
        raise InputError(msg) from None
    bound_host, bound_port = runner.addresses[0][:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    return runner, f"http://{shown}:{bound_port}"


def _banner(root: str, url: str, token, index: dict, host: str) -> str:
    lines = [f"serving {root} (read-only) at {url}/"]
    if host in ("0.0.0.0", "::", ""):
        lines.append("  listening on every interface: other machines use this machine's address "
                     "in place of the one above")
    auth = ' -H "Authorization: Bearer $SHARDSTREAM_TOKEN"' if token else ""
    lines.append(f"  what is served:  curl{auth} {url}/")
    for s in index["datasets"]:
        shards = ", ".join(f"{fmt} x{info['shards']}" for fmt, info in s["formats"].items())
        lines.append(f"  {s['path'] or '.'}: {s['num_samples']} samples, {shards} -> "
                     f"{url}{s['url'].rstrip('/')}")
    if index["datasets"]:
        example = url + _example(index)
    else:
        example = url + "/<dataset>/<split>"
        lines.append("  no converted datasets (manifest.json) found yet; the index rescans as they appear")
    tok = ", token=...  # or set $SHARDSTREAM_TOKEN" if token else ""
    lines.append(f"  stream it:       shardstream.torch_loader(\"{example}\", batch_size=256{tok})")
    if token:
        lines.append("  every request needs the bearer token (401 without it)")
    lines.append("  stop with Ctrl+C (in-flight downloads finish first)")
    return "\n".join(lines)


async def _serve_async(app, host, port, root, token) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    runner, url = await start_app(app, host, port)
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        index = await app[CONFIG].index.get()
        print(_banner(root, url, token, index, host), flush=True)
        await stop.wait()
        print("shutting down: no new connections; waiting for in-flight responses to finish",
              file=sys.stderr, flush=True)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await runner.cleanup()
    return 0


def serve(root, host="127.0.0.1", port=8000, token=None, quiet=False) -> int:
    """Serve the folder ``root`` over HTTP until SIGINT/SIGTERM (the ``shardstream serve``
    command).  Prints the URL and how to point loaders at it; access log lines on stderr unless
    ``quiet``.  ``token`` defaults to ``$SHARDSTREAM_TOKEN``.  Returns 0 after a clean
    shutdown (in-flight responses finish, up to ``SHUTDOWN_TIMEOUT`` seconds);
    :class:`InputError` for a missing folder or a busy/unusable address."""
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    app = make_app(root, token=token, quiet=quiet)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(_NoTracebacks())
    loggers = [access_log, logging.getLogger("aiohttp.server"), logging.getLogger("aiohttp.web")]
    saved = [(lg, lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.propagate = False
    access_log.setLevel(logging.INFO)
    try:
        return asyncio.run(_serve_async(app, host, port, app[CONFIG].root, token))
    finally:
        for lg, level, propagate in saved:
            lg.removeHandler(handler)
            lg.setLevel(level)
            lg.propagate = propagate
