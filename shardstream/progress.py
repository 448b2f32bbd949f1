"""Progress reporting, in one place: a bar on a terminal, plain lines in a log.

:func:`progress_bar` is ``tqdm`` drawn only when its stream (stderr) is a terminal; when the
output goes to a file or a pipe (a job log, CI) it writes one plain line when the work starts
and one when it ends (``desc: 60000/60000 img in 3.2 s``) instead of a bar's carriage returns.
``enabled=False`` (``-q``) writes nothing at all.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


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
