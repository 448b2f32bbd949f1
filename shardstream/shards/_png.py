"""The compiled half of :func:`shardstream.shards.imagecodec.decode_pngs`' fast path (numba):
PNG's row filters undone for a whole batch of images in one call.

PNG stores each image row as a filter type byte followed by the filtered bytes (RFC 2083 /
ISO 15948, section 9): 0 None, 1 Sub, 2 Up, 3 Average, 4 Paeth, each predicting a byte from
its left (``a``, ``bpp`` bytes back), upper (``b``) and upper-left (``c``) neighbours, modulo
256.  Undoing them is integer arithmetic, so the result is exact: bitwise what any PNG decoder
(Pillow's included) gives.  The row-by-row dependency is what makes this a compiled loop: numpy
cannot vectorise Average or Paeth along a row.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["unfilter"]


@njit(nogil=True, cache=True)
def unfilter(raw, ok, out, bpp):
    """Undo the row filters of ``raw`` uint8 (N, h, 1 + r) -- per image its h rows, each a filter
    type byte and ``r`` = w * ``bpp`` filtered bytes -- into ``out`` uint8 (N, h, r), for the
    images ``i`` with ``ok[i]`` (bool (N,)); an image with an unknown filter type (> 4) gets
    ``ok[i] = False`` (its ``out`` is then undefined).  Returns nothing."""
    n, h, r1 = raw.shape
    r = r1 - 1
    for i in range(n):
        if not ok[i]:
            continue
        for y in range(h):
            f = raw[i, y, 0]
            src = raw[i, y, 1:]
            dst = out[i, y]
            if f == 0:
                for x in range(r):
                    dst[x] = src[x]
            elif f == 1:  # Sub: + a
                for x in range(min(bpp, r)):
                    dst[x] = src[x]
                for x in range(bpp, r):
                    dst[x] = (np.int32(src[x]) + np.int32(dst[x - bpp])) & 255
            elif f == 2:  # Up: + b (0 on the first row)
                if y == 0:
                    for x in range(r):
                        dst[x] = src[x]
                else:
                    up = out[i, y - 1]
                    for x in range(r):
                        dst[x] = (np.int32(src[x]) + np.int32(up[x])) & 255
            elif f == 3:  # Average: + floor((a + b) / 2)
                for x in range(r):
                    a = np.int32(dst[x - bpp]) if x >= bpp else np.int32(0)
                    b = np.int32(out[i, y - 1, x]) if y > 0 else np.int32(0)
                    dst[x] = (np.int32(src[x]) + ((a + b) >> 1)) & 255
            elif f == 4:  # Paeth: + whichever of a, b, c is nearest a + b - c (ties: a, b, c)
                for x in range(r):
                    a = np.int32(dst[x - bpp]) if x >= bpp else np.int32(0)
                    b = np.int32(out[i, y - 1, x]) if y > 0 else np.int32(0)
                    c = np.int32(out[i, y - 1, x - bpp]) if (y > 0 and x >= bpp) else np.int32(0)
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    if pa <= pb and pa <= pc:
                        pred = a
                    elif pb <= pc:
                        pred = b
                    else:
                        pred = c
                    dst[x] = (np.int32(src[x]) + pred) & 255
            else:
                ok[i] = False
                break
