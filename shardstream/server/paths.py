"""Request paths: decoded per segment, confined to the served root (symlinks included)."""

from __future__ import annotations

import os
from urllib.parse import quote, unquote_to_bytes

from ..shards.names import is_plain_name

# ---------------------------------------------------------------------------------------------
# paths


class Reject(Exception):
    """A request path that must not be served; ``status`` is 400 or 404."""

    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def is_hidden(name: str) -> bool:
    """Names that are never served: every name that is not plain (hidden ``.x``, temporary
    ``x.tmp`` / ``x.part`` / ``x~``, ``..`` inside, over 255 characters; the one rule of
    :func:`shardstream.shards.names.is_plain_name`)."""
    return not is_plain_name(name)


def split_request_path(raw_path: str) -> tuple[list[str], bool]:
    """Decode a raw (still percent-encoded) request path into its segments, refusing every
    segment that could name something outside the served folder.

    Returns ``(segments, is_folder)``; ``is_folder`` when the path ends in ``/``.  Raises
    :class:`Reject` (400: encoded ``/``, backslash, NUL or control character, bad UTF-8,
    not starting with ``/``; 404: empty, ``.`` or ``..`` segment, hidden or temp name).
    """
    if not raw_path.startswith("/"):
        raise Reject(400, "the path must start with /")
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
            raise Reject(400, "the path is not valid UTF-8") from None
        if "/" in name or "\\" in name:
            raise Reject(400, "encoded slashes and backslashes are not allowed in paths")
        if any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise Reject(400, "control characters (NUL, ...) are not allowed in paths")
        if name in ("", ".", ".."):
            raise Reject(404, "empty, '.' and '..' path segments are not served")
        if is_hidden(name):
            raise Reject(404, "hidden and temporary files are not served")
        segments.append(name)
    return segments, is_folder


def resolve(root: str, segments: list[str]) -> tuple[str, os.stat_result]:
    """The real path and stat of ``root/segments`` if it lies under the real folder ``root``
    (symlinks resolved) and no part of that real path is hidden; :class:`Reject` (404)
    otherwise.  Blocking (call it in an executor)."""
    real = os.path.realpath(os.path.join(root, *segments))
    if not inside(root, real):
        raise Reject(404, "outside the served folder")
    rel = os.path.relpath(real, root)
    if rel != "." and any(is_hidden(part) for part in rel.split(os.sep)):
        raise Reject(404, "hidden and temporary files are not served")
    try:
        st = os.stat(real)
    except (OSError, ValueError):
        raise Reject(404, "no such file") from None
    return real, st


def inside(root: str, real: str) -> bool:
    """Whether the real path ``real`` is the real folder ``root`` or lies under it."""
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def url_path(parts) -> str:
    """The URL path (percent-encoded) of a folder or file given its segments."""
    return "/" + "/".join(quote(p, safe="") for p in parts)
