"""The batch service's wire format: one run of consecutive batches in one response body.

No pickle, nothing executable: a fixed prefix, a small JSON header, then raw little-endian
arrays, each starting at a multiple of :data:`ALIGN` bytes so that a client that reads the body
into an aligned buffer hands the arrays to torch (``torch.from_numpy``) and tf.data without a
copy.  Layout (docs/service.md)::

    offset 0   8 bytes   MAGIC  b"SSBATCH1"
    offset 8   4 bytes   uint32 LE: header length L
    offset 12  L bytes   header: UTF-8 JSON, padded with spaces so that 12 + L is a multiple
                         of ALIGN
    then the arrays the header lists, each at its ``offset`` (a multiple of ALIGN), zero padding
    between them

Header: ``{"first": a, "sizes": [b_0, ...], "layout": "nchw" | "nhwc", "arrays": [{"name":
"x", "dtype": "<f4" | "|u1", "shape": [n, C, h, w] | [n, h, w, C], "offset": o, "nbytes": m},
{"name": "y", "dtype": "<i8", "shape": [n], ...}]}``: batches ``a, a + 1, ...`` of sizes ``b_i``
(``n = sum b_i``), concatenated; batch ``i`` is ``x[s_i:s_i + b_i]`` with ``s_i = b_0 + ... +
b_(i-1)``.  Pure numpy: no network, no framework.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import numpy as np

MAGIC = b"SSBATCH1"
ALIGN = 64
#: a header longer than this is refused (a run of 4,096 batches needs ~30 KB)
MAX_HEADER = 1 << 16
LAYOUTS = ("nchw", "nhwc")
#: the only dtypes that may appear on the wire
DTYPES = {"x": "<f4", "y": "<i8"}
#: the pixels' wire dtype of each loader ``dtype`` (the ``x`` array: float32 or uint8)
X_DTYPES = {"float32": "<f4", "uint8": "|u1"}
CONTENT_TYPE = "application/x-shardstream-batches"


class WireError(ValueError):
    """A body that is not a well-formed run (truncated, corrupt, or not this format)."""


@dataclass
class Run:
    """One decoded run: batches ``first, first + 1, ...`` of ``sizes``; ``x`` float32 or uint8
    (n, C, h, w) or (n, h, w, C) per ``layout``, ``y`` int64 (n,); both are views of the body."""

    first: int
    sizes: list
    layout: str
    x: np.ndarray
    y: np.ndarray

    def batches(self):
        """The run's batches ``(x_i, y_i)``: contiguous views, in order."""
        start = 0
        for b in self.sizes:
            yield self.x[start:start + b], self.y[start:start + b]
            start += b


def _up(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def aligned_buffer(nbytes: int) -> np.ndarray:
    """An uninitialised, writable uint8 array of ``nbytes`` whose data starts at a multiple of
    :data:`ALIGN` bytes (receive a body into it; its arrays are then aligned too)."""
    raw = np.empty(nbytes + ALIGN, np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start:start + nbytes]


def x_shape(n: int, image_size, layout: str) -> tuple:
    """The shape of ``x`` for ``n`` images of (h, w, C) = ``image_size`` in ``layout``."""
    h, w, c = image_size
    return (n, c, h, w) if layout == "nchw" else (n, h, w, c)


def _header(first: int, sizes, image_size, layout: str,
            dtype: str = "float32") -> tuple[bytes, list]:
    n = int(sum(sizes))
    xs = x_shape(n, image_size, layout)
    x_bytes = int(np.prod(xs)) * np.dtype(X_DTYPES[dtype]).itemsize
    arrays = [{"name": "x", "dtype": X_DTYPES[dtype], "shape": list(xs), "nbytes": x_bytes},
              {"name": "y", "dtype": DTYPES["y"], "shape": [n], "nbytes": 8 * n}]
    # offsets depend on the header's length, which depends on the offsets' digits: iterate
    # until the padded header length stops changing (twice at most in practice)
    start = 0
    while True:
        offset = start
        for a in arrays:
            offset = _up(offset)
            a["offset"] = offset
            offset += a["nbytes"]
        text = json.dumps({"first": int(first), "sizes": [int(b) for b in sizes],
                           "layout": layout, "arrays": arrays}, separators=(",", ":"))
        data = text.encode()
        padded = _up(12 + len(data))
        if padded == start:
            return data + b" " * (padded - 12 - len(data)), arrays
        start = padded


def run_nbytes(sizes, image_size, layout: str = "nchw", dtype: str = "float32") -> int:
    """Bytes of the body :func:`new_run` makes for these batch sizes (the work limit's measure)."""
    header, arrays = _header(0, sizes, image_size, layout, dtype)
    return arrays[-1]["offset"] + arrays[-1]["nbytes"]


def new_run(first: int, sizes, image_size, layout: str,
            dtype: str = "float32") -> tuple[bytearray, np.ndarray, np.ndarray]:
    """A body for batches ``first, ...`` of ``sizes`` with the header written and the arrays
    left to fill: returns ``(body, x, y)``, ``x`` / ``y`` writable views of ``body`` (the
    shapes of :func:`x_shape` and (n,); ``x`` of ``dtype``, "float32" or "uint8").  Filling
    them in place is the only copy made."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: must be one of {LAYOUTS}")
    if dtype not in X_DTYPES:
        raise ValueError(f"dtype {dtype!r}: must be one of {list(X_DTYPES)}")
    header, arrays = _header(first, sizes, image_size, layout, dtype)
    total = arrays[-1]["offset"] + arrays[-1]["nbytes"]
    body = bytearray(total)
    body[:8] = MAGIC
    body[8:12] = struct.pack("<I", len(header))
    body[12:12 + len(header)] = header
    views = [np.frombuffer(body, a["dtype"], int(np.prod(a["shape"])), a["offset"]).reshape(
        a["shape"]) for a in arrays]
    return body, views[0], views[1]


def decode_run(body) -> Run:
    """The :class:`Run` in ``body`` (bytes, bytearray, memoryview or uint8 array), its arrays
    views of ``body`` (no copy; writable when ``body`` is).  :class:`WireError` naming what is
    wrong for anything malformed: bad magic, header too long or not JSON, a dtype other than
    :data:`DTYPES` (for ``x``: :data:`X_DTYPES`), an array past the end of the body or not
    aligned, sizes that do not add up."""
    buf = memoryview(body).cast("B")
    if len(buf) < 12 or bytes(buf[:8]) != MAGIC:
        raise WireError("not a shardstream batch run (bad magic): is the URL a "
                        "`shardstream serve-batches` server?")
    (hlen,) = struct.unpack("<I", buf[8:12])
    if hlen > MAX_HEADER or 12 + hlen > len(buf):
        raise WireError(f"header length {hlen} is past the body's {len(buf)} bytes or over "
                        f"{MAX_HEADER}")
    try:
        head = json.loads(bytes(buf[12:12 + hlen]).decode("utf-8"))
        first, sizes, layout = int(head["first"]), [int(b) for b in head["sizes"]], head["layout"]
        arrays = {a["name"]: a for a in head["arrays"]}
        specs = [(arrays[name], dtype) for name, dtype in DTYPES.items()]
        if arrays["x"]["dtype"] in X_DTYPES.values():   # float32 or uint8 pixels
            specs[0] = (arrays["x"], arrays["x"]["dtype"])
    except (ValueError, KeyError, TypeError) as exc:
        raise WireError(f"malformed run header: {exc}") from None
    if layout not in LAYOUTS or any(b < 1 for b in sizes):
        raise WireError(f"malformed run header: layout {layout!r}, sizes {sizes}")
    views = []
    for spec, dtype in specs:
        shape = [int(d) for d in spec["shape"]]
        offset, nbytes = int(spec["offset"]), int(spec["nbytes"])
        count = int(np.prod(shape)) if shape else 1
        if (spec["dtype"] != dtype or min(shape, default=0) < 0 or offset % ALIGN or
                offset < 12 + hlen or nbytes != count * np.dtype(dtype).itemsize or
                offset + nbytes > len(buf)):
            raise WireError(f"array {spec['name']!r} of the run is malformed or past the end of "
                            f"the body ({len(buf)} bytes): {spec}")
        views.append(np.frombuffer(buf, dtype, count, offset).reshape(shape))
    x, y = views
    n = sum(sizes)
    if len(y) != n or x.ndim != 4 or x.shape[0] != n:
        raise WireError(f"run arrays x {x.shape}, y {y.shape} do not hold the {n} samples of "
                        f"sizes {sizes}")
    return Run(first, sizes, layout, x, y)
