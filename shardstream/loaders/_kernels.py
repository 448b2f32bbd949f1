"""The compiled twin of :func:`shardstream.loaders.resize.to_float_reference` (numba).

One call per batch: uint8 images (N, H, W, C) in, float32 written straight into the caller's
array in its final layout, seen as a (N, C, h, w) view (the batch itself for NCHW, a
transposed view of (N, h, w, C) for NHWC), clamp included; the GIL is released (``nogil``)
so that batches resize in parallel in threads.

Bits: every output value is the same float32 expression, evaluated in the same order, as in the
numpy reference: the height pass ``t = x[r0] * c0 + x[r1] * c1 + ...`` over its taps in input
order (``/ 255`` folded into the first pass's weights), the width pass likewise over ``t``, then
``min(max(v, 0), 1)``; no resize is ``x / 255``.  numba emits plain ``fmul`` / ``fadd`` /
``fdiv`` (no ``fastmath``: no reassociation, no FMA contraction, no reciprocal), and
:mod:`shardstream.loaders.resize` checks the bits against the reference on first use.

Layout (the reference's): the batch is worked on as (H*W, N*C), every pixel position holding
the whole batch, so that each multiply-add of either pass runs over N*C contiguous floats -- a
loop that LLVM vectorises without help.  (Per image, the width pass is a short gather per output
value, and the 8-wide block form that avoids it needs numba's SLP vectoriser, which is off by
default; measured 2-3x slower.)  The kernel reads the images once into that layout and writes
the clamped result once into ``out``: two transposing copies, which are most of its time
(docs/benchmarks.md).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["resize_into", "divide_into"]


@njit(nogil=True, cache=True)
def resize_into(images, out, hidx, hcoef, widx, wcoef, x, t, u):
    """Resize ``images`` uint8 (N, H, W, C), C-contiguous, into ``out`` float32 (N, C, h, w)
    (any strides).

    ``hidx`` intp (K, h) / ``hcoef`` float32 (K, h): the height taps (``resize._taps``; K = 0
    when h == H: no height pass); ``widx`` / ``wcoef`` (L, w): the width taps (L = 0 when
    w == W: no width pass).  Scratch: ``x`` uint8 (H, W, N*C), ``t`` float32 (h, W, N*C) (the
    height pass), ``u`` float32 (h, w, N*C) (the width pass).  Returns nothing."""
    n, hin, win, c = images.shape
    h = out.shape[2]
    w = out.shape[3]
    k = hidx.shape[0]
    taps = widx.shape[0]
    nc = n * c
    src = images.reshape(n, hin * win, c)
    xf = x.reshape(hin * win, n, c)
    for q in range(hin * win):  # into (H*W, N*C): contiguous writes
        for b in range(n):
            for ch in range(c):
                xf[q, b, ch] = src[b, q, ch]
    # height pass: t[i] = sum_j x[hidx[j, i]] * hcoef[j, i], in tap order
    if k == 0:
        for i in range(h):
            for col in range(win):
                for m in range(nc):
                    t[i, col, m] = np.float32(x[i, col, m])
    else:
        for i in range(h):
            r = hidx[0, i]
            cf = hcoef[0, i]
            for col in range(win):
                for m in range(nc):
                    t[i, col, m] = np.float32(x[r, col, m]) * cf
            for j in range(1, k):
                r = hidx[j, i]
                cf = hcoef[j, i]
                for col in range(win):
                    for m in range(nc):
                        t[i, col, m] = t[i, col, m] + np.float32(x[r, col, m]) * cf
    # width pass: u[:, o] = sum_j t[:, widx[j, o]] * wcoef[j, o], in tap order
    if taps == 0:
        res = t
    else:
        for i in range(h):
            for o in range(w):
                q = widx[0, o]
                cf = wcoef[0, o]
                for m in range(nc):
                    u[i, o, m] = t[i, q, m] * cf
                for j in range(1, taps):
                    q = widx[j, o]
                    cf = wcoef[j, o]
                    for m in range(nc):
                        u[i, o, m] = u[i, o, m] + t[i, q, m] * cf
        res = u
    # clamp to [0, 1], into out (N, C, h, w)
    zero = np.float32(0.0)
    one = np.float32(1.0)
    for b in range(n):
        for ch in range(c):
            m = b * c + ch
            for i in range(h):
                for o in range(w):
                    out[b, ch, i, o] = min(max(res[i, o, m], zero), one)


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
