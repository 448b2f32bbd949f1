"""The IDX file format of the MNIST family (MNIST, Fashion-MNIST, KMNIST).

An IDX file is a 4-byte magic number ``0x00 0x00 <type> <ndim>`` (type ``0x08`` = uint8; magic
2049 = labels, 1-D; magic 2051 = images, 3-D), then ``ndim`` big-endian uint32 sizes, then the
data in C order.  The files are usually gzip-compressed (``.gz``); both forms are read.

Every problem is an :class:`~shardstream.errors.InputError` naming the file and what is wrong.
"""

from __future__ import annotations

import gzip
import hashlib
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


def _check_magic(magic: int, where: str, expect: int | None) -> int:
    """The number of dimensions of an IDX file whose magic number is ``magic``."""
    if magic not in _NDIM:
        raise InputError(f"{where}: wrong magic number {magic} (0x{magic:08x}); an IDX file of "
                         f"labels starts with 2049, of images with 2051; {_FIX}")
    if expect is not None and magic != expect:
        raise InputError(f"{where}: holds {_KIND[magic]} (magic {magic}) where {_KIND[expect]} "
                         f"(magic {expect}) were expected; are the images and labels files "
                         f"swapped?")
    return _NDIM[magic]


def _check_dims(dims: tuple, where: str) -> int:
    """The bytes of data the header ``dims`` promises (checked to be sensible)."""
    if len(dims) == 3 and (dims[1] == 0 or dims[2] == 0):
        raise InputError(f"{where}: wrong dimensions {dims[0]}x{dims[1]}x{dims[2]}: images of "
                         f"zero height or width; {_FIX}")
    need = int(np.prod(dims, dtype=object))
    if need > MAX_BYTES:
        raise InputError(f"{where}: wrong dimensions {'x'.join(map(str, dims))} "
                         f"({need} bytes of data); {_FIX}")
    return need


def _check_length(dims: tuple, need: int, have: int, where: str, extra: str) -> None:
    if have < need:
        raise InputError(f"{where}: truncated: the header promises {'x'.join(map(str, dims))} "
                         f"= {need} bytes of data, the file holds {have}; {_FIX}")
    if have > need:
        raise InputError(f"{where}: wrong dimensions: the header says "
                         f"{'x'.join(map(str, dims))} = {need} bytes of data, but the file "
                         f"holds {extra}; {_FIX}")


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
    ndim = _check_magic(magic, where, expect)
    head = 4 + 4 * ndim
    if len(data) < head:
        raise InputError(f"{where}: truncated: {len(data)} bytes, the IDX header of "
                         f"{_KIND[magic]} needs {head}; {_FIX}")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    need = _check_dims(dims, where)
    have = len(data) - head
    _check_length(dims, need, have, where, f"{have} ({have - need} extra)")
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


# ---------------------------------------------------------------------------------------------
# streaming: a file of any size in bounded memory


#: bytes decompressed / hashed at a time
BLOCK = 1 << 20


class _Hashing:
    """A binary file that hashes (sha256) and counts the bytes read through it."""

    def __init__(self, f):
        self.f, self.sha, self.count = f, hashlib.sha256(), 0

    def read(self, n=-1):
        data = self.f.read(n)
        self.sha.update(data)
        self.count += len(data)
        return data


def _open(path: str, raw):
    """The decompressed stream of the open file ``raw`` (gzip or plain, by its first bytes)."""
    head = raw.f.peek(2)[:2] if hasattr(raw.f, "peek") else b""
    return gzip.GzipFile(fileobj=raw, mode="rb") if head == b"\x1f\x8b" else raw


def _read_exact(stream, n: int, where: str, what: str) -> bytes:
    try:
        data = stream.read(n)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{where}: not a valid gzip file ({exc}); {_FIX}") from None
    if len(data) < n:
        raise InputError(f"{where}: truncated: {what}; {_FIX}")
    return data


def scan_idx(path, expect: int | None = None) -> tuple[tuple, int, str]:
    """Check an IDX file (``.gz`` or plain) by reading it once, in blocks: ``(dims, size of the
    file in bytes, sha256 of the file)``.  The same checks and messages as :func:`parse_idx`
    (magic, dimensions, data length), in memory O(:data:`BLOCK`) whatever the file's size."""
    path = os.fspath(path)
    try:
        f = open(path, "rb")
    except OSError:
        read_file(path)                     # the same messages as the whole-file reader
        raise
    with f:
        raw = _Hashing(f)
        stream = _open(path, raw)
        first = _read_exact(stream, 4, path, "0 bytes of data") if os.path.getsize(path) else b""
        if not first:
            raise InputError(f"{path}: the file is empty (0 bytes); {_FIX}")
        magic = int.from_bytes(first, "big")
        ndim = _check_magic(magic, path, expect)
        head = _read_exact(stream, 4 * ndim, path, f"the IDX header of {_KIND[magic]} needs "
                                                   f"{4 + 4 * ndim} bytes")
        dims = tuple(int.from_bytes(head[4 * i: 4 + 4 * i], "big") for i in range(ndim))
        need = _check_dims(dims, path)
        have = 0
        try:
            while block := stream.read(BLOCK):
                have += len(block)
                if have > need:
                    break
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"{path}: not a valid gzip file ({exc}); {_FIX}") from None
        _check_length(dims, need, have, path, "more")
        while raw.read(BLOCK):              # the rest of the file, for its sha256
            pass
        return dims, raw.count, raw.sha.hexdigest()


class IdxImages:
    """The images of an IDX file checked by :func:`scan_idx`, read in order without holding
    them: ``shape`` (N, H, W, 1), ``len()``; ``read(start, count)`` -> uint8 (count, H, W, 1),
    called with consecutive ranges (a new pass reopens the file)."""

    def __init__(self, path, dims: tuple):
        self.path, self.shape = os.fspath(path), (dims[0], dims[1], dims[2], 1)
        self._stream, self._file, self._next = None, None, 0

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, start: int, count: int) -> np.ndarray:
        if self._stream is None or start != self._next:
            self.close()
            self._file = open(self.path, "rb")
            self._stream = _open(self.path, _Hashing(self._file))
            skip = 16 + self.shape[1] * self.shape[2] * start      # header, then items
            while skip:
                step = min(skip, BLOCK)
                _read_exact(self._stream, step, self.path, "shorter than when it was checked")
                skip -= step
            self._next = start
        size = self.shape[1] * self.shape[2]
        data = _read_exact(self._stream, size * count, self.path,
                           "shorter than when it was checked")
        self._next = start + count
        return np.frombuffer(data, np.uint8).reshape(count, self.shape[1], self.shape[2], 1)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._stream = self._file = None
