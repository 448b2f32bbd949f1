"""``normalize=(mean, std)``: per-channel standardisation of the float32 batches, the same in
both frameworks.

The formula, exactly: ``x = to_float(images)`` (float32 in [0, 1], :mod:`.resize`), then, per
channel ``c``, ``x = (x - mean[c]) / std[c]`` -- one float32 subtraction, then one float32
division, with ``mean`` and ``std`` rounded to float32 first (torchvision's
``Normalize(mean, std)`` computes the same).  Both adapters call :func:`normalize_` on the
array ``to_float`` wrote, so torch's batches (channels first) and tf's (channels last) are
bitwise equal, transposed.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError


def check_normalize(normalize, channels: int):
    """``None`` or ``(mean, std)`` (each a number or ``channels`` numbers; std > 0) ->
    ``None`` or ``(mean float32 (C,), std float32 (C,))``; else InputError."""
    if normalize is None:
        return None
    try:
        mean, std = normalize
        mean = np.broadcast_to(np.asarray(mean, np.float32).reshape(-1), (channels,)).copy()
        std = np.broadcast_to(np.asarray(std, np.float32).reshape(-1), (channels,)).copy()
    except (TypeError, ValueError):
        raise InputError(f"normalize={normalize!r}: must be (mean, std), each one number or "
                         f"one per channel ({channels}), e.g. normalize=((0.286,), (0.353,))"
                         ) from None
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
        raise InputError(f"normalize={normalize!r}: mean must be finite and std > 0")
    return tuple(mean.tolist()), tuple(std.tolist())


def normalize_(x: np.ndarray, normalize, channel_axis: int) -> np.ndarray:
    """In place: ``x`` float32 (..., C at ``channel_axis``, ...) -> ``(x - mean) / std`` per
    channel (float32, subtraction then division); returns ``x``.  ``normalize``: the checked
    ``(mean, std)`` of :func:`check_normalize`, or None (``x`` unchanged)."""
    if normalize is None:
        return x
    shape = [1] * x.ndim
    shape[channel_axis] = -1
    mean, std = (np.asarray(v, np.float32).reshape(shape) for v in normalize)
    np.subtract(x, mean, out=x)
    np.divide(x, std, out=x)
    return x
