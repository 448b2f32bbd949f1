"""Amounts as people write and read them: byte counts (one parser, one formatter) and progress.

:func:`progress_bar` is ``tqdm`` drawn only when its stream (stderr) is a terminal; when the
output goes to a file or a pipe (a job log, CI) it writes one plain line when the work starts
and one when it ends (``desc: 60,000/60,000 img in 3.2 s``) instead of a bar's carriage returns.
``enabled=False`` (``-q``) writes nothing at all. Every progress report of shardstream (convert,
synth, download, verify, upload) goes through it.
"""

from __future__ import annotations

import re
import sys
import time

from tqdm import tqdm

from .errors import InputError

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(value, what="cache_limit") -> int | None:
    """Bytes from an int or a string like ``"2GB"``, ``"1.5 GiB"``, ``"500MB"`` (None -> None).

    Decimal units (kB, MB, GB, TB) are powers of 1000, binary ones (KiB, MiB, GiB, TiB) of 1024.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise InputError(f"{what}={value!r}: give a number of bytes or a size such as '2GB'")
    if isinstance(value, int):
        n = value
    elif isinstance(value, float) and value.is_integer():
        n = int(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([A-Za-z]*)\s*", value)
        if not m or m.group(2).lower() not in _UNITS:
            raise InputError(f"{what}={value!r}: not a size; write e.g. 2000000000, '2GB', "
                             f"'500MB' or '1.5GiB'")
        n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    else:
        raise InputError(f"{what}={value!r}: give a number of bytes or a size such as '2GB'")
    if n <= 0:
        raise InputError(f"{what}={value!r}: must be positive")
    return n


def human_bytes(n: int) -> str:
    """A byte count as people read it: ``512 B``, ``25.6 MB`` (powers of 1000)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


# ---------------------------------------------------------------------------------------------
# progress


class _Bar(tqdm):
    """tqdm that counts (and reports in plain lines) even when not drawn; see the module doc."""

    def __init__(self, *args, enabled=True, **kw):
        stream = kw.setdefault("file", sys.stderr)
        drawn = enabled and _is_terminal(stream)
        self._plain, self._count, self._t0 = enabled and not drawn, 0, time.perf_counter()
        self._stream = stream
        kw["disable"] = not drawn
        super().__init__(*args, **kw)
        self._what = (kw.get("desc") or "progress", kw.get("total"), kw.get("unit", "it"))
        if self._plain:
            desc, total, unit = self._what
            print(f"{desc}: {'' if total is None else f'{total:,} '}{unit} to go",
                  file=stream, flush=True)

    def update(self, n=1):
        self._count += n
        return super().update(n)

    def close(self):
        if getattr(self, "_plain", False):
            self._plain = False
            desc, total, unit = self._what
            of = "" if total is None else f"/{total:,}"
            print(f"{desc}: {self._count:,}{of} {unit} in {time.perf_counter() - self._t0:.1f} s",
                  file=self._stream, flush=True)
        super().close()


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress_bar(*, total=None, desc=None, unit="it", enabled=True, **kw) -> tqdm:
    """A progress bar for ``total`` units (``update(n)``, ``close()``, use in ``with``): drawn on
    a terminal, plain start and end lines otherwise, nothing when ``enabled`` is False.
    Other keywords go to ``tqdm`` (``unit_scale``, ``leave``, ``file`` ...)."""
    return _Bar(total=total, desc=desc, unit=unit, enabled=enabled, **kw)
