"""Byte counts as people write and read them: one parser, one formatter."""

from __future__ import annotations

import re

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
