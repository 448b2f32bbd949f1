"""``shardstream serve-batches``: an aiohttp server that computes runs of batches on request.

Endpoints (docs/service.md), every one behind ``Authorization: Bearer <token>`` when the server
has a token (401 otherwise; constant-time comparison):

- ``GET /v1/manifest?dataset=NAME``: the split's ``manifest.json`` (what a client plans with);
- ``POST /v1/batches`` with a JSON request (:mod:`.request`): the run's body (:mod:`.wire`);
- ``GET /``: ``{"service": "shardstream-batches", "version": ...}``.

Refusals are ``4xx`` with a plain-text message saying what to change (400 bad argument or a
dataset outside the root, 404 unknown dataset, 409 manifest changed, 413 too much work); a
shard this server cannot read is a 500 (the client asks another server).  The work runs in a
thread pool of ``workers`` threads.  On SIGINT/SIGTERM the server stops accepting connections,
finishes the requests in flight (up to :data:`SHUTDOWN_TIMEOUT` s), then exits 0.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiohttp import web

from .. import __version__, config, storage
from ..errors import InputError, ShardstreamError
from ..server.app import start_app
from ..units import parse_size
from .compute import CACHE_MEMORY, Splits, compute_run
from .request import BadRequest, dataset_segments, parse_request
from .wire import CONTENT_TYPE

SHUTDOWN_TIMEOUT = 60.0
#: request bodies are small JSON objects
MAX_REQUEST_BYTES = 1 << 16

access_log = logging.getLogger("shardstream.service.access")


@dataclass
class _State:
    splits: Splits
    token: bytes | None
    pool: ThreadPoolExecutor
    active: int = 0


STATE = web.AppKey("shardstream_batch_service", _State)


def _refuse(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=f"{status}: {message}\n")


@web.middleware
async def _auth(request: web.Request, handler):
    token = request.app[STATE].token
    if token is not None:
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                presented.strip().encode("utf-8", "replace"), token):
            return web.Response(
                status=401, headers={"WWW-Authenticate": 'Bearer realm="shardstream"'},
                text="401: this server needs 'Authorization: Bearer <token>' (loaders: "
                     "token=...; the token the server was started with)\n")
    return await handler(request)


async def _work(request: web.Request, fn, *args):
    """Run ``fn(*args)`` in the pool; ShardstreamError / BadRequest become 4xx/5xx answers."""
    state = request.app[STATE]
    state.active += 1
    try:
        return await asyncio.get_running_loop().run_in_executor(state.pool, fn, *args)
    except BadRequest as exc:
        return _refuse(exc.status, str(exc))
    except ShardstreamError as exc:
        return _refuse(500, f"this server cannot compute the run: {exc}")
    finally:
        state.active -= 1


async def _batches(request: web.Request) -> web.StreamResponse:
    try:
        body = json.loads(await request.read())
        req = parse_request(body)
    except BadRequest as exc:
        return _refuse(exc.status, str(exc))
    except (ValueError, UnicodeDecodeError):
        return _refuse(400, "the request body is not JSON (docs/service.md)")
    state = request.app[STATE]
    out = await _work(request, compute_run, state.splits, req)
    if isinstance(out, web.Response):
        return out
    return web.Response(body=out, content_type=CONTENT_TYPE)


async def _manifest(request: web.Request) -> web.StreamResponse:
    try:
        segments = dataset_segments(request.query.get("dataset"))
    except BadRequest as exc:
        return _refuse(exc.status, str(exc))
    out = await _work(request, request.app[STATE].splits.split, segments)
    if isinstance(out, web.Response):
        return out
    return web.Response(text=out.manifest.to_json(), content_type="application/json")


async def _hello(request: web.Request) -> web.StreamResponse:
    return web.json_response({"service": "shardstream-batches", "version": __version__})


def _check_token(token) -> bytes | None:
    if token is None or token == "":
        return None
    if not isinstance(token, str) or not token.isascii() or not token.isprintable() or (
            " " in token):
        raise InputError("--token / $SHARDSTREAM_TOKEN must be printable ASCII without spaces "
                         "(e.g. python -c 'import secrets; print(secrets.token_urlsafe())')")
    return token.encode("ascii")


def make_batch_app(root, token=None, workers=None, quiet=True, cache_dir=None,
                   cache_memory=CACHE_MEMORY) -> web.Application:
    """The batch service for the datasets under ``root`` (a local folder, or an ``s3://`` /
    ``http(s)://`` location this server reads itself).  ``token``: require it as a bearer
    token (None: open).  ``workers``: threads computing runs (default: the usable cores).
    ``cache_dir``: the shard cache folder for a remote root (default: the user cache);
    ``cache_memory``: bytes (or ``"2GB"``) of decoded shards kept in memory for all requests.
    :class:`InputError` if a local ``root`` is not a folder or the token is malformed."""
    cache_memory = parse_size(cache_memory, "--cache-memory")
    root = os.fspath(root)
    if not storage.is_remote(root):
        real = os.path.realpath(storage.local_path(root))
        if not os.path.isdir(real):
            raise InputError(f"cannot serve batches from {root}: not a folder (give the folder "
                             f"that holds your converted datasets)")
        root = real
    if workers is None:
        workers = config.usable_cpus()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(f"--workers {workers!r}: must be an integer >= 1")
    app = web.Application(middlewares=[_auth], client_max_size=MAX_REQUEST_BYTES,
                          handler_args={"access_log": None if quiet else access_log})
    app[STATE] = _State(Splits(root, cache_dir, cache_memory), _check_token(token),
                        ThreadPoolExecutor(workers, thread_name_prefix="shardstream-batches"))
    app.router.add_get("/", _hello)
    app.router.add_get("/v1/manifest", _manifest)
    app.router.add_post("/v1/batches", _batches)

    async def _stop_pool(app):
        app[STATE].pool.shutdown(wait=False)

    app.on_cleanup.append(_stop_pool)
    return app


async def _serve_async(app, host, port, root) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    runner, url = await start_app(app, host, port, shutdown_timeout=SHUTDOWN_TIMEOUT)
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
        installed.append(sig)
    try:
        print(f"serving batches of the datasets under {root} at {url}\n"
              f"  trainers: shardstream.torch_loader(\"<dataset>/<split>\", batch_size=..., "
              f"service=[\"{url}\"], token=...)\n"
              f"  stop with Ctrl+C or SIGTERM (requests in flight finish first)", flush=True)
        await stop.wait()
        print(f"shutting down: no new connections; {app[STATE].active} request(s) in flight "
              f"finish first", file=sys.stderr, flush=True)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await runner.cleanup()
    print("stopped", file=sys.stderr, flush=True)
    return 0


def serve_batches(root, host="127.0.0.1", port=9100, token=None, workers=None,
                  cache_memory=CACHE_MEMORY, quiet=False) -> int:
    """Serve batches of the datasets under ``root`` until SIGINT/SIGTERM (the ``shardstream
    serve-batches`` command).  ``token`` defaults to ``$SHARDSTREAM_TOKEN``.  Prints the URL
    (stdout) and, unless ``quiet``, one access-log line per request (stderr).  Returns 0 after
    a clean shutdown.  ``workers`` and ``cache_memory``: see :func:`make_batch_app`."""
    if token is None:
        token = config.token()
    app = make_batch_app(root, token=token, workers=workers, quiet=quiet,
                         cache_memory=cache_memory)
    handler = logging.StreamHandler(sys.stderr)
    access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False
    try:
        return asyncio.run(_serve_async(app, host, port, app[STATE].splits.root))
    finally:
        access_log.removeHandler(handler)
