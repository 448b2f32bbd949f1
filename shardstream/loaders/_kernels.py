"""The compiled twin of :func:`shardstream.loaders.resize.to_float_reference` and of
:func:`shardstream.loaders.pixels.to_uint8_reference` (numba).

One call per batch: uint8 images (N, H, W, C) in, float32 written straight into the caller's
array in its final layout, seen as a (N, C, h, w) view (the batch itself for NCHW, a
transposed view of (N, h, w, C) for NHWC), clamp included; the GIL is released (``nogil``)
so that batches resize in parallel in threads.

Bits: every output value is the same float32 expression, evaluated in the same order, as in the
numpy reference: the height pass ``t = x[r0] * c0 + x[r1] * c1 + ...`` over its taps in input order
(``/ 255`` folded into the first pass's weights), the width pass likewise over ``t``, then
``min(max(v, 0), 1)``; no resize is ``x / 255``. For uint8 batches (``hi = 255``: the taps then
carry no ``/ 255``) the clamp is ``min(max(v, 0), 255)``, then rounded half to even as ``(v + 2**23)
- 2**23`` (exact in float32 for 0 <= v < 2**23: ``np.rint``'s bits). numba emits plain ``fmul`` /
``fadd`` / ``fdiv`` (no ``fastmath``: no reassociation, no FMA contraction, no reciprocal), and
:mod:`shardstream.loaders.resize` checks the bits against the reference on first use.

Layout (the reference's): the batch is worked on as (H*W, N*C), every pixel position holding
the whole batch, so that each multiply-add of either pass runs over N*C contiguous floats -- a
loop that LLVM vectorises without help.  (Per image, the width pass is a short gather per output
value, and the 8-wide block form that avoids it needs numba's SLP vectoriser, which is off by
default; measured 2-3x slower.)  The kernel reads the images once into that layout and writes
the clamped result once into ``out``: two transposing copies, which are most of its time
(docs/benchmarks.md).  A batch of fewer than :data:`SMALL_BATCH` planes (N * C; batch_size=1)
leaves those loops a few floats long, so it is resized plane by plane instead: the height pass
over the input columns, the width pass over the output rows (3x faster for one image).  A big
call (tf.data's chunks: 8 batches at once) is worked in blocks of whole images of at most
:data:`BLOCK_PLANES` planes, so that the row buffers stay in cache.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["resize_into", "divide_into", "SMALL_BATCH", "BLOCK_PLANES"]

#: below this many planes (N * C) a batch is resized plane by plane (:func:`resize_into`); the
#: batch layout's loops run over N * C floats, a vector of 8 (AVX) at a time, and gain from 16
#: on (measured: 1 plane 2.8 vs 8-10 us, 8 planes 14 vs 20 us, 16 planes 27-30 vs 22 us)
SMALL_BATCH = 16
#: the batch layout works on blocks of at most this many planes (whole images): its row
#: buffers, 4 * W * planes bytes each, then stay in the L1/L2 caches (measured, 28x28 -> 32x32,
#: C = 1: 512 planes in one block 1.5-1.8x slower than blocks of 48-256; a tf.data chunk of 8
#: batches of 64 is 512 planes)
BLOCK_PLANES = 256


@njit(inline="always")
def _width_pass(t, widx, wcoef, u):
    """``u[o, m] = sum_j t[widx[j, o], m] * wcoef[j, o]`` in tap order: ``t`` float32 (W, L), ``u``
    (w, L); the loop over ``m`` (L contiguous floats) is the one LLVM vectorises.  Returns
    ``u``, or ``t`` itself when there are no taps (w == W: no width pass)."""
    if widx.shape[0] == 0:
        return t
    for o in range(widx.shape[1]):
        q = widx[0, o]
        cf = wcoef[0, o]
        for m in range(t.shape[1]):
            u[o, m] = t[q, m] * cf
        for j in range(1, widx.shape[0]):
            q = widx[j, o]
            cf = wcoef[j, o]
            for m in range(t.shape[1]):
                u[o, m] = u[o, m] + t[q, m] * cf
    return u


@njit(inline="always")
def _clamp(res, hi):
    """In place: ``res`` float32 (w, L) clamped to [0, ``hi``]; for ``hi`` = 255 (uint8 batches)
    then rounded half to even as ``(v + 2**23) - 2**23``."""
    zero = np.float32(0.0)
    one = np.float32(1.0)
    magic = np.float32(8388608.0)  # 2**23: adding it rounds 0 <= v < 2**23 to an integer
    if hi == one:
        for o in range(res.shape[0]):
            for m in range(res.shape[1]):
                res[o, m] = min(max(res[o, m], zero), one)
    else:
        for o in range(res.shape[0]):
            for m in range(res.shape[1]):
                res[o, m] = (min(max(res[o, m], zero), hi) + magic) - magic


@njit(inline="always")
def _planes(images, out, hidx, hcoef, widx, wcoef, hi):
    """:func:`resize_into` for a few planes (batch_size=1): the batch layout would run its loops
    over a few floats only; instead each plane alone, the height pass vectorised over the W
    input columns, the width pass over the h output rows (the plane transposed in between) --
    the same expression per output value, in the same order, so the same bits."""
    n, hin, win, c = images.shape
    h = hidx.shape[1]
    w = widx.shape[1]
    k = hidx.shape[0]
    col = np.empty(win, np.float32)
    t = np.empty((win, h), np.float32)   # height pass, transposed: t[q, i]
    u = np.empty((w, h), np.float32)     # width pass, transposed: u[o, i]
    for b in range(n):
        for ch in range(c):
            for i in range(h):
                if k == 0:
                    for q in range(win):
                        col[q] = np.float32(images[b, i, q, ch])
                else:
                    r = hidx[0, i]
                    cf = hcoef[0, i]
                    for q in range(win):
                        col[q] = np.float32(images[b, r, q, ch]) * cf
                    for j in range(1, k):
                        r = hidx[j, i]
                        cf = hcoef[j, i]
                        for q in range(win):
                            col[q] = col[q] + np.float32(images[b, r, q, ch]) * cf
                for q in range(win):
                    t[q, i] = col[q]
            res = _width_pass(t, widx, wcoef, u)
            _clamp(res, hi)
            for i in range(h):
                for o in range(w):
                    out[b, ch, i * w + o] = res[o, i]


@njit(inline="always")
def _block(images, out, hidx, hcoef, widx, wcoef, x, trow, urow, hi):
    """:func:`resize_into` for one block of at most :data:`BLOCK_PLANES` planes in the batch
    layout; the scratch arrays are at least as long as the block needs (their heads are
    used)."""
    n, hin, win, c = images.shape
    h = hidx.shape[1]
    w = widx.shape[1]
    k = hidx.shape[0]
    nc = n * c
    p = hin * win
    # the block into (H*W, N*C): every pixel position holds the whole block, contiguous
    xf = x.reshape(-1)[:p * nc].reshape(p, nc)
    if c == 1:
        src = images.reshape(n, p)
        for q in range(p):
            for b in range(n):
                xf[q, b] = src[b, q]
    else:
        src3 = images.reshape(n, p, c)
        for q in range(p):
            for b in range(n):
                for ch in range(c):
                    xf[q, b * c + ch] = src3[b, q, ch]
    row = win * nc
    x2 = xf.reshape(hin, row)
    # 2-D views: a computed index (o * nc + m) would make numba wrap negative indices element
    # by element, which stops LLVM from vectorising the loop; m from range() does not
    tr = trow[:row]
    t2 = tr.reshape(win, nc)
    u2 = urow[:w * nc].reshape(w, nc)
    for i in range(h):  # one output row at a time: its work stays in the L1 cache
        # height pass: tr = sum_j x[hidx[j, i]] * hcoef[j, i], in tap order
        if k == 0:
            for m in range(row):
                tr[m] = np.float32(x2[i, m])
        else:
            r = hidx[0, i]
            cf = hcoef[0, i]
            for m in range(row):
                tr[m] = np.float32(x2[r, m]) * cf
            for j in range(1, k):
                r = hidx[j, i]
                cf = hcoef[j, i]
                for m in range(row):
                    tr[m] = tr[m] + np.float32(x2[r, m]) * cf
        # width pass: u2[o] = sum_j t2[widx[j, o]] * wcoef[j, o], in tap order
        res = _width_pass(t2, widx, wcoef, u2)
        # clamp to [0, hi] (vectorised; and round for uint8), then the row of every image
        _clamp(res, hi)
        base = i * w
        for b in range(n):
            for ch in range(c):
                m = b * c + ch
                for o in range(w):
                    out[b, ch, base + o] = res[o, m]


@njit(nogil=True, cache=True)
def resize_into(images, out, hidx, hcoef, widx, wcoef, x, trow, urow, hi):
    """Resize ``images`` uint8 (N, H, W, C), C-contiguous, into ``out`` float32 (N, C, h*w)
    (any strides: ``out[b, ch, i * w + o]`` is pixel (i, o) of channel ch of image b), values
    clamped to [0, ``hi``]; ``hi`` float32 1 (float batches) or 255 (``out`` uint8: the clamped
    values rounded half to even).

    ``hidx`` intp (K, h) / ``hcoef`` float32 (K, h): the height taps (``resize._taps``; K = 0
    when h == H: no height pass); ``widx`` / ``wcoef`` (L, w): the width taps (L = 0 when
    w == W: no width pass).  Scratch: ``x`` uint8 (H, W*N*C) the batch transposed, ``trow``
    float32 (W*N*C,) one row of the height pass, ``urow`` float32 (w*N*C,) one row of the
    width pass.  Returns nothing.

    The batch is worked on in blocks of whole images of up to :data:`BLOCK_PLANES` planes (one
    image when C > 256), a block of fewer than :data:`SMALL_BATCH` planes plane by plane; each
    output value is computed from its own image alone, so the blocks do not change any bit."""
    n = images.shape[0]
    c = images.shape[3]
    per_block = max(1, BLOCK_PLANES // max(c, 1))  # whole images (one when C > 256)
    for b0 in range(0, n, per_block):
        b1 = min(n, b0 + per_block)
        if (b1 - b0) * c < SMALL_BATCH:
            _planes(images[b0:b1], out[b0:b1], hidx, hcoef, widx, wcoef, hi)
        else:
            _block(images[b0:b1], out[b0:b1], hidx, hcoef, widx, wcoef, x, trow, urow, hi)


@njit(nogil=True, cache=True)
def divide_into(images, out):
    """``out`` float32 (N, C, H, W) (any strides) = ``images`` uint8 (N, H, W, C) /
    float32(255), a true division as numpy's; returns nothing."""
    n, hin, win, c = images.shape
    d = np.float32(255.0)
    for b in range(n):
        for ch in range(c):
            for i in range(hin):
                for col in range(win):
                    out[b, ch, i, col] = np.float32(images[b, i, col, ch]) / d
