"""``shardstream serve``: run the application until SIGINT/SIGTERM, with a banner and access log."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from .. import config
from .app import CONFIG, NoTracebacks, access_log, make_app, start_app
from .listing import example_path


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
        example = url + example_path(index)
    else:
        example = url + "/<dataset>/<split>"
        lines.append("  no converted datasets (manifest.json) found yet; the index rescans as "
                     "they appear")
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
        token = config.token()
    app = make_app(root, token=token, quiet=quiet)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(NoTracebacks())
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
