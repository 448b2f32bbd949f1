"""The IDX file format of the MNIST family (MNIST, Fashion-MNIST, KMNIST).

An IDX file is a 4-byte magic number ``0x00 0x00 <type> <ndim>`` (type ``0x08`` = uint8; magic
2049 = labels, 1-D; magic 2051 = images, 3-D), then ``ndim`` big-endian uint32 sizes, then the
data in C order.  The files are usually gzip-compressed (``.gz``); both forms are read.

Every problem is an :class:`~shardstream.errors.InputError` naming the file and what is wrong.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib

import numpy as np

from .. import storage
from ..errors import InputError

MAGIC_LABELS = 2049   # 0x00000801: uint8, 1-D
MAGIC_IMAGES = 2051   # 0x00000803: uint8, 3-D
_NDIM = {MAGIC_LABELS: 1, MAGIC_IMAGES: 3}
_KIND = {MAGIC_LABELS: "labels", MAGIC_IMAGES: "images"}
# refuse a decompressed size beyond this (a gzip bomb or a nonsense header): 16 GiB
MAX_BYTES = 16 << 30
_FIX = "re-download the file, or check that it is the right one"


def _gunzip(data: bytes, where: str) -> bytes:
    """The decompressed bytes of the gzip stream ``data`` (concatenated members allowed)."""
    try:
        out = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{where}: not a valid gzip file ({exc}); {_FIX}") from None
    return out


def parse_idx(data: bytes, where: str, expect: int | None = None) -> np.ndarray:
    """Parse the bytes of an IDX file (gzip-compressed or plain) into a uint8 array:
    (N,) for labels (magic 2049), (N, H, W) for images (magic 2051).

    ``where`` names the file in error messages; ``expect`` (2049 or 2051) requires that magic.
    """
    if len(data) == 0:
        raise InputError(f"{where}: the file is empty (0 bytes); {_FIX}")
    if data[:2] == b"\x1f\x8b":
        data = _gunzip(data, where)
        if len(data) == 0:
            raise InputError(f"{where}: the gzip stream holds no data; {_FIX}")
    if len(data) < 4:
        raise InputError(f"{where}: truncated: {len(data)} bytes, too short for the IDX "
                         f"header; {_FIX}")
    magic = int.from_bytes(data[:4], "big")
    if magic not in _NDIM:
        raise InputError(f"{where}: wrong magic number {magic} (0x{magic:08x}); an IDX file of "
                         f"labels starts with 2049, of images with 2051; {_FIX}")
    if expect is not None and magic != expect:
        raise InputError(f"{where}: holds {_KIND[magic]} (magic {magic}) where {_KIND[expect]} "
                         f"(magic {expect}) were expected; are the images and labels files "
                         f"swapped?")
    ndim = _NDIM[magic]
    head = 4 + 4 * ndim
    if len(data) < head:
        raise InputError(f"{where}: truncated: {len(data)} bytes, the IDX header of "
                         f"{_KIND[magic]} needs {head}; {_FIX}")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if ndim == 3 and (dims[1] == 0 or dims[2] == 0):
        raise InputError(f"{where}: wrong dimensions {dims[0]}x{dims[1]}x{dims[2]}: images of "
                         f"zero height or width; {_FIX}")
    need = int(np.prod(dims, dtype=object))
    have = len(data) - head
    if need > MAX_BYTES:
        raise InputError(f"{where}: wrong dimensions {'x'.join(map(str, dims))} "
                         f"({need} bytes of data); {_FIX}")
    if have < need:
        raise InputError(f"{where}: truncated: the header promises {'x'.join(map(str, dims))} "
                         f"= {need} bytes of data, the file holds {have}; {_FIX}")
    if have > need:
        raise InputError(f"{where}: wrong dimensions: the header says "
                         f"{'x'.join(map(str, dims))} = {need} bytes of data, but the file "
                         f"holds {have} ({have - need} extra); {_FIX}")
    return np.frombuffer(data, dtype=np.uint8, count=need, offset=head).reshape(dims)


def read_file(path) -> bytes:
    """The bytes of the local file ``path``; :class:`InputError` naming it when it is missing
    or unreadable."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file; check the path (see `shardstream convert "
                         f"--help` for where raw files are looked for)") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not an IDX file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def read_idx(path, expect: int | None = None) -> np.ndarray:
    """Read an IDX file (``.gz`` or plain): uint8 (N,) labels or (N, H, W) images.

    ``expect`` = :data:`MAGIC_LABELS` or :data:`MAGIC_IMAGES` requires that kind.
    :class:`InputError` naming the file for a missing, empty, truncated or non-gzip file, a
    wrong magic number or dimensions that do not match the data.
    """
    return parse_idx(read_file(path), os.fspath(path), expect)


def idx_bytes(array: np.ndarray, compress: bool = True) -> bytes:
    """The bytes of ``array`` (uint8, 1-D labels or 3-D images) as an IDX file, gzip-compressed
    when ``compress`` (deterministic: mtime 0, empty file-name field, level 1 — as small as the
    published files within a few percent, and several times faster to write than level 9)."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8 or array.ndim not in (1, 3):
        raise InputError(f"IDX arrays are uint8 1-D (labels) or 3-D (images), got "
                         f"{array.dtype} {array.shape}")
    magic = MAGIC_LABELS if array.ndim == 1 else MAGIC_IMAGES
    head = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    if not compress:
        return head + array.tobytes()
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=1) as gz:
        gz.write(head)
        gz.write(memoryview(array.reshape(-1)))
    return buf.getvalue()


def write_idx(path, array: np.ndarray, compress: bool = True) -> None:
    """Write ``array`` (uint8 (N,) labels or (N, H, W) images) to the local file ``path`` as
    IDX, gzip-compressed when ``compress``; atomic, deterministic (same array -> same bytes)."""
    storage.write_bytes(os.fspath(path), idx_bytes(array, compress=compress))
