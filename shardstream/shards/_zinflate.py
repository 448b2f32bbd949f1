"""The compiled first half of the PNG fast path (numba + zlib's C library): for a whole shard
in one call that holds no GIL, each PNG's chunks are checked and its image data inflated.

Python's own :mod:`zlib` is a thin wrapper of this same C library; calling it from a Python
loop costs ~3 µs an image of interpreter work around ~5 µs of inflating, all of it under the
GIL but the inflate itself.  Here the loop is compiled and calls ``crc32`` and ``uncompress``
directly (numba's ``ExternalFunction``: the symbols are resolved by name when the code is
linked, which is why the library must be loaded first, and why the cached code stays valid).
Only the layout our converters write is taken -- signature + the expected IHDR, one IDAT,
IEND, nothing after it; every other payload is left to the general walk in
:mod:`.imagecodec` (several IDATs, bytes after IEND) and then to Pillow.

Importing this module raises ImportError when numba or the zlib library cannot be loaded
(:func:`.imagecodec._compiled_inflate` then warns once and keeps the Python walk).
"""

from __future__ import annotations

import ctypes
import ctypes.util

import llvmlite.binding as llvm
import numpy as np
from numba import njit, types

__all__ = ["ULONG", "inflate_idat"]


def _load_libz() -> None:
    """Make zlib's C functions visible to numba-compiled code (ImportError if no library
    that has them loads)."""
    tried = []
    names = (ctypes.util.find_library("z"), "libz.so.1", "libz.dylib",  # Linux, macOS
             "zlib1.dll", "zlib.dll")  # Windows: the names zlib's own and conda's builds use
    for name in dict.fromkeys(names):
        if not name:
            continue
        try:
            llvm.load_library_permanently(name)
        except RuntimeError as exc:
            tried.append(f"{name}: {exc}")
            continue
        if llvm.address_of_symbol("uncompress") and llvm.address_of_symbol("crc32"):
            return
        tried.append(f"{name}: no uncompress/crc32 symbols")
    raise ImportError(f"zlib's shared library was not found ({'; '.join(tried) or 'no libz'})")


_load_libz()
#: dtype of C ``unsigned long`` (zlib's ``uLong``: the output length ``uncompress`` updates)
ULONG = np.dtype(ctypes.c_ulong)
_ulong = types.uint64 if ULONG.itemsize == 8 else types.uint32
_crc32 = types.ExternalFunction("crc32", _ulong(_ulong, types.voidptr, types.uint32))
_uncompress = types.ExternalFunction(
    "uncompress", types.intc(types.voidptr, types.voidptr, types.voidptr, _ulong))


@njit(nogil=True, cache=True)
def _be32(buf, p):
    """The big-endian uint32 at ``buf[p:p + 4]``, as int64."""
    return (np.int64(buf[p]) << 24) | (np.int64(buf[p + 1]) << 16) | (
        np.int64(buf[p + 2]) << 8) | np.int64(buf[p + 3])


@njit(nogil=True, cache=True)
def inflate_idat(buf, starts, stops, head, tail, raw, ok, length):
    """For each payload ``i``, ``buf[starts[i]:stops[i]]`` (uint8 (m,) buffer; int64 (n,)
    offsets within it, checked by :class:`.spans.Spans`): if it is ``head`` (uint8: signature +
    IHDR chunk) followed by one IDAT chunk and ``tail`` (uint8 (12,): the IEND chunk) ending
    the payload, the IDAT CRC
    is right and its zlib stream inflates (checksum verified by zlib) to exactly ``raw[i].size``
    bytes, those bytes go to ``raw[i]`` (uint8 (n, h, 1 + r), C-contiguous) and ``ok[i]`` (bool
    (n,)) is set True; otherwise ``ok[i]`` is left as it is and ``raw[i]`` is undefined.
    ``length``: ULONG (1,) scratch for ``uncompress``.  Every read stays inside the payload:
    the chunk length is checked against the payload's size before it is used."""
    n = starts.size
    size = raw[0].size if n else 0
    hn = head.size
    for i in range(n):
        a, b = starts[i], stops[i]
        if b - a != hn + 24 + (_be32(buf, a + hn) if b - a >= hn + 24 else 0):
            continue  # the size must be head + IDAT (12 + data) + IEND (12)
        same = True
        for j in range(hn):
            if buf[a + j] != head[j]:
                same = False
                break
        p = a + hn  # the IDAT chunk: length, type, data, CRC
        q = b - 16  # its CRC
        if not same or buf[p + 4] != 73 or buf[p + 5] != 68 or buf[p + 6] != 65 or (
                buf[p + 7] != 84) or q - p - 4 >= 2**31:
            continue
        for j in range(12):
            if buf[q + 4 + j] != tail[j]:
                same = False
                break
        crc = np.int64(_crc32(0, buf[p + 4:].ctypes.data, np.uint32(q - p - 4)))
        if not same or crc != _be32(buf, q):
            continue
        length[0] = size
        if _uncompress(raw[i].ctypes.data, length.ctypes.data, buf[p + 8:].ctypes.data,
                       q - p - 8) == 0 and length[0] == size:
            ok[i] = True
