"""Tar shards (webdataset layout): writing through ``webdataset.TarWriter``, reading with a small
validating reader over the shard's bytes.

Layout of a shard holding samples ``first_id .. first_id+n-1``: for each sample, in order, two
adjacent members ``<key>.cls`` (the label as ASCII decimal) and ``<key>.<ext>`` (``ext`` is
``npy`` — ``numpy.save`` of the uint8 (H, W, C) array — or ``png``), with
``key = "%09d" % global_id``.  Every header is POSIX ustar (no PAX headers), mtime 0, mode 0444,
uid/gid 0, user/group ``shardstream``; so identical input gives byte-identical shards.

Reading validates every header (ustar magic, checksum, regular file, exact member name and
order, sizes within the file) and raises :class:`~shardstream.errors.ShardError` naming the
shard and the problem.  Shards as :func:`write_tar` writes them take a vectorised path: for npy
every sample occupies the same number of bytes, so all headers are checked at once and the
images cut out of the buffer with one strided view (~4 ms for 10,000 28x28 images); for png one
light pass finds the headers and numpy checks them all.  Anything unusual falls back to a
member-by-member reader that names the exact problem (and reads valid but unusual layouts).
"""

from __future__ import annotations

import io
import tarfile

import numpy as np

from ..errors import ShardError
from .imagecodec import npy_header
from .names import key_digits, sample_key
from .spans import Spans

BLOCK = 512
USER = GROUP = "shardstream"
MODE = 0o444
MTIME = 0
_MAX_CLS = 20  # bytes of a label's decimal text


def _pad(size: int) -> int:
    return (size + BLOCK - 1) // BLOCK * BLOCK


# ---------------------------------------------------------------------------------------------
# writing


def write_tar(fileobj, keys, labels, payloads, ext: str) -> None:
    """Write one tar shard to ``fileobj`` (a binary file object).

    ``keys``: n sample keys (``"%09d"``); ``labels``: n ints; ``payloads``: n bytes-like image
    members (already encoded); ``ext``: ``"npy"`` or ``"png"``.  Deterministic.
    """
    from webdataset.writer import TarWriter  # noqa: PLC0415 - reading never needs webdataset (which imports torch)

    with TarWriter(fileobj, user=USER, group=GROUP, mode=MODE, encoder=False, mtime=MTIME,
                   format="USTAR_FORMAT") as writer:
        # TarWriter 1.0.2 does not hand `format` to tarfile; ustar makes tarfile refuse
        # anything that would need a PAX header instead of silently writing one.
        writer.tarstream.format = tarfile.USTAR_FORMAT
        for key, label, payload in zip(keys, labels, payloads, strict=True):
            writer.write({"__key__": key, "cls": str(int(label)).encode("ascii"), ext: payload})


# ---------------------------------------------------------------------------------------------
# reading


def read_tar(data, shard: str, first_id: int, n: int, shape: tuple, encoding: str):
    """Parse a tar shard's bytes.

    ``data``: bytes-like; ``shard``: its name for messages; the shard must hold exactly the
    samples ``first_id .. first_id+n-1``; ``shape`` = (H, W, C).

    Returns ``(payloads, labels)``: labels int64 (n,); payloads uint8 (n, H, W, C) for npy,
    a :class:`.spans.Spans` of the n PNG members for png.  Raises :class:`ShardError`.
    """
    buf = memoryview(data).cast("B")
    if encoding == "npy":
        fast = _read_uniform_npy(buf, first_id, n, tuple(shape))
    else:
        fast = _read_scanned(buf, first_id, n, encoding)
    if fast is not None:
        return fast
    return _read_members(buf, shard, first_id, n, tuple(shape), encoding)


def _header(name: str, size: int) -> bytes:
    """The ustar header block :func:`write_tar` writes for a member."""
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode, ti.uname, ti.gname = size, MTIME, MODE, USER, GROUP
    return ti.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")


def _octal(fields: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values int64 (n,), ok bool (n,)) of the ASCII octal fields (n, k)."""
    d = fields.astype(np.int64) - 48
    ok = ((d >= 0) & (d <= 7)).all(axis=1)
    return d @ (8 ** np.arange(fields.shape[1] - 1, -1, -1, dtype=np.int64)), ok


def _var_mask(width: int, size_varies: bool) -> np.ndarray:
    """bool (512,): the header bytes that differ between the members of one kind (``.cls`` or
    the image) that :func:`write_tar` writes: the key digits, the checksum, and the size field
    when the sizes differ."""
    var = np.zeros(BLOCK, bool)
    var[:width] = True
    var[148:156] = True
    if size_varies:
        var[124:136] = True
    return var


def _headers_ok(h: np.ndarray, digits: np.ndarray, template: np.ndarray,
                size_varies: bool) -> bool:
    """True when every header row of ``h`` (n, 512) uint8 equals ``template`` (512,) outside the
    key digits (which must be ``digits`` (n, width)), the checksum (which must be right) and,
    if ``size_varies``, the size field (11 octal digits and a NUL)."""
    width = digits.shape[1]
    var = _var_mask(width, size_varies)
    # constant bytes, compared 8 at a time under a mask
    mask = np.where(var, 0, 0xFF).astype(np.uint8).view(np.uint64)
    words = np.bitwise_xor(h.view(np.uint64), template.view(np.uint64))
    np.bitwise_and(words, mask, out=words)
    if words.any() or not np.array_equal(h[:, :width], digits):
        return False
    extra = 0
    if size_varies:
        _, ok = _octal(h[:, 124:135])
        if not ok.all() or (h[:, 135] != 0).any():
            return False
        extra = h[:, 124:136].sum(axis=1, dtype=np.int64)
    # checksum (6 octal digits, NUL, space) = the sum of the header with the field read as
    # spaces = the constant bytes + the key digits (+ the size field)
    stored, ok = _octal(h[:, 148:154])
    if not ok.all() or (h[:, 154] != 0).any() or (h[:, 155] != 32).any():
        return False
    const = int(template[~var].sum(dtype=np.int64)) + 8 * 32
    return np.array_equal(stored, digits.sum(axis=1, dtype=np.int64) + extra + const)


def _labels(text: np.ndarray, sizes: np.ndarray):
    """int64 (n,) labels from the ``.cls`` data: ``text`` (n, k) uint8 holding ``sizes`` (n,)
    ASCII decimal digits each (k >= sizes.max()); None when a label is not all digits."""
    maxlen = int(sizes.max())
    digits = text[:, :maxlen].astype(np.int64) - 48
    pos = np.arange(maxlen)
    inside = pos[None, :] < sizes[:, None]
    if not (((digits >= 0) & (digits <= 9)) | ~inside).all():
        return None
    power = np.where(inside, sizes[:, None] - 1 - pos[None, :], 0)
    return (np.where(inside, digits, 0) * 10 ** power).sum(axis=1)


def _key_width(first_id, n):
    width = len(sample_key(first_id + n - 1))
    return width if n > 0 and width == len(sample_key(first_id)) else None


def _read_uniform_npy(buf, first_id, n, shape):
    """The fast path for npy shards exactly as :func:`write_tar` writes them: every sample takes
    the same number of bytes, so all headers are checked and all images cut out with strided
    views of the buffer.  None when anything differs (the member-by-member reader then names
    the problem, or reads an unusual but valid layout)."""
    width = _key_width(first_id, n)
    if width is None:
        return None
    npy_head = npy_header(shape)
    nbytes = int(np.prod(shape))
    npy_size = len(npy_head) + nbytes
    stride = 3 * BLOCK + _pad(npy_size)  # cls header + cls data block + npy header + npy data
    end = n * stride
    if len(buf) < end + 2 * BLOCK:
        return None
    arr = np.frombuffer(buf, dtype=np.uint8, count=end).reshape(n, stride)
    digits = key_digits(first_id, n)
    cls_h, npy_h = arr[:, :BLOCK], arr[:, 2 * BLOCK:3 * BLOCK]
    if not (_headers_ok(cls_h, digits, np.frombuffer(_header("0" * width + ".cls", 1), np.uint8),
                        size_varies=True)
            and _headers_ok(npy_h, digits, np.frombuffer(_header("0" * width + ".npy", npy_size),
                                                         np.uint8), size_varies=False)):
        return None
    cls_size, _ = _octal(cls_h[:, 124:135])
    if cls_size.min() < 1 or cls_size.max() > _MAX_CLS:
        return None
    labels = _labels(arr[:, BLOCK:BLOCK + _MAX_CLS], cls_size)
    data_at = 3 * BLOCK
    if labels is None or not np.array_equal(
            arr[:, data_at:data_at + len(npy_head)],
            np.broadcast_to(np.frombuffer(npy_head, np.uint8), (n, len(npy_head)))):
        return None
    # the archive must end right after the last member: end-of-archive zero blocks
    if any(buf[end:end + 2 * BLOCK]):
        return None
    start = data_at + len(npy_head)
    images = np.ascontiguousarray(arr[:, start:start + nbytes]).reshape((n,) + shape)
    return images, labels


def _read_scanned(buf, first_id, n, ext):
    """The fast path for shards of variable-size members (png) as :func:`write_tar` writes
    them: one light pass finds the 2n headers, then all are checked at once with numpy.
    Returns (the n image payloads as :class:`Spans` of ``buf``, labels int64 (n,)), or None
    when anything differs (the member-by-member reader then names the problem)."""
    width = _key_width(first_id, n)
    if width is None:
        return None
    size_of = len(buf)
    offsets = np.empty(2 * n, dtype=np.int64)
    sizes = np.empty(2 * n, dtype=np.int64)
    pos = 0
    try:
        for i in range(2 * n):
            if pos + BLOCK > size_of:
                return None
            size = int(bytes(buf[pos + 124:pos + 135]), 8)
            if size < 0:
                return None
            offsets[i] = pos
            sizes[i] = size
            pos += BLOCK + (size + BLOCK - 1) // BLOCK * BLOCK
    except ValueError:
        return None
    if pos + 2 * BLOCK > size_of or any(buf[pos:pos + 2 * BLOCK]):
        return None
    blocks = np.frombuffer(buf, dtype=np.uint8, count=pos // BLOCK * BLOCK).reshape(-1, BLOCK)
    headers = blocks[offsets // BLOCK]
    digits = key_digits(first_id, n)
    if not (_headers_ok(headers[0::2], digits,
                        np.frombuffer(_header("0" * width + ".cls", 1), np.uint8), True)
            and _headers_ok(headers[1::2], digits,
                            np.frombuffer(_header(f"{'0' * width}.{ext}", 1), np.uint8), True)):
        return None
    cls_size = sizes[0::2]
    if cls_size.min() < 1 or cls_size.max() > _MAX_CLS:
        return None
    labels = _labels(blocks[offsets[0::2] // BLOCK + 1][:, :_MAX_CLS], cls_size)
    if labels is None:
        return None
    starts = offsets[1::2] + BLOCK
    return Spans(buf, starts, starts + sizes[1::2]), labels


class _Members:
    """Member-by-member tar reader with precise messages (the general, slower path)."""

    def __init__(self, buf, shard):
        self.buf, self.shard, self.pos, self.prev = buf, shard, 0, None

    def fail(self, problem):
        raise ShardError(f"{self.shard}: {problem}; the shard is damaged or was not written by "
                         f"shardstream: run `shardstream verify` and re-create or re-download it")

    def where(self):
        return f"after {self.prev}" if self.prev else "at the start of the archive"

    def next(self):
        """(name, data memoryview) of the next member, or None at the end of the archive."""
        buf, pos = self.buf, self.pos
        if pos > len(buf):
            self.fail(f"truncated: the file ends inside the padding {self.where()}")
        if pos == len(buf):
            return None
        if pos + BLOCK > len(buf):
            self.fail(f"truncated: a partial header of {len(buf) - pos} bytes {self.where()} "
                      f"(offset {pos})")
        header = bytes(buf[pos:pos + BLOCK])
        if header.count(0) == BLOCK:
            return None
        if header[257:265] != b"ustar\x0000":
            self.fail(f"the header {self.where()} (offset {pos}) is not a ustar header "
                      f"(magic {header[257:265]!r})")
        try:
            stored = int(header[148:156].replace(b"\0", b" ").strip() or b"x", 8)
        except ValueError:
            self.fail(f"the header {self.where()} (offset {pos}) has an unreadable checksum field")
        unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
        if stored != unsigned:
            self.fail(f"the header {self.where()} (offset {pos}) has a wrong checksum "
                      f"(stored {stored}, computed {unsigned}): it is corrupted")
        typeflag = header[156:157]
        name = header[:100].split(b"\0", 1)[0]
        prefix = header[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
        try:
            name = name.decode("ascii")
        except UnicodeDecodeError:
            self.fail(f"the member name {name!r} {self.where()} is not ASCII")
        if typeflag in (b"x", b"g"):
            self.fail(f"PAX extended header {self.where()}: shardstream shards are plain ustar")
        if typeflag not in (b"0", b"\0"):
            self.fail(f"member {name} {self.where()} is not a regular file (type {typeflag!r})")
        try:
            size = int(header[124:136].replace(b"\0", b" ").strip() or b"x", 8)
        except ValueError:
            self.fail(f"member {name} {self.where()} has an unreadable size field")
        start = pos + BLOCK
        if start + size > len(buf):
            self.fail(f"truncated: member {name} needs {size} bytes at offset {start} but the file "
                      f"ends at {len(buf)}")
        self.pos = start + _pad(size)
        return name, buf[start:start + size]


def _read_members(buf, shard, first_id, n, shape, encoding):
    m = _Members(buf, shard)
    labels = np.empty(n, dtype=np.int64)
    payloads = []
    nbytes = int(np.prod(shape))
    for i in range(n):
        key = sample_key(first_id + i)
        for ext in ("cls", encoding):
            expected = f"{key}.{ext}"
            member = m.next()
            if member is None:
                m.fail(f"truncated or short: member {expected} missing {m.where()} (the archive "
                       f"ends; {n - i} of {n} samples missing)")
            name, body = member
            if name != expected:
                m.fail(f"member {expected} missing {m.where()} (found {name} instead)")
            m.prev = name
            if ext == "cls":
                text = bytes(body).strip()
                if not text or len(text) > _MAX_CLS or not text.isdigit():
                    m.fail(f"member {name} does not hold a label (a decimal integer): "
                           f"{bytes(body)[:_MAX_CLS]!r}")
                labels[i] = int(text)
            elif ext == "npy":
                payloads.append(_parse_npy(body, shape, nbytes, m, name))
            else:
                payloads.append(body)
    member = m.next()
    if member is not None:
        m.fail(f"extra member {member[0]} {m.where()}: the shard holds more than the manifest's "
               f"{n} samples")
    if np.frombuffer(buf, np.uint8, offset=min(m.pos, len(buf))).any():
        m.fail(f"unexpected data after the end-of-archive marker (offset {m.pos})")
    if encoding == "npy":
        images = np.stack(payloads) if payloads else np.empty((0,) + shape, np.uint8)
        return images, labels
    return Spans.of(payloads), labels


def _parse_npy(body, shape, nbytes, m, name):
    """uint8 (H, W, C) from an ``.npy`` member, checking dtype and shape."""
    f = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            hshape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            hshape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    except Exception as exc:  # numpy raises ValueError / SyntaxError / ... on garbage
        m.fail(f"member {name} is not a valid .npy array ({exc})")
    if dtype != np.uint8 or tuple(hshape) != shape or (fortran and len(shape) > 1):
        m.fail(f"member {name} holds a {dtype} array of shape {tuple(hshape)}"
               f"{' (Fortran order)' if fortran else ''}; expected uint8 {shape}")
    offset = f.tell()
    if len(body) - offset != nbytes:
        m.fail(f"member {name} holds {len(body) - offset} data bytes, expected {nbytes} for "
               f"uint8 {shape}")
    return np.frombuffer(body, np.uint8, count=nbytes, offset=offset).reshape(shape)
