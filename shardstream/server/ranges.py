"""``Range`` and ``If-Range`` handling (RFC 9110) and ETags."""

from __future__ import annotations

import math
import os
import re
from email.utils import parsedate_to_datetime

_RANGE_SPEC = re.compile(r"^(\d*)-(\d*)$")
_BIG = 10 ** 19                               # stands in for any position past every file



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


def if_range_holds(value: str, st: os.stat_result) -> bool:
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
