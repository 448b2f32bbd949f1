"""The CIFAR-10 / CIFAR-100 "python version" archives: reading them safely, and writing them.

``cifar-10-python.tar.gz`` holds ``cifar-10-batches-py/`` with ``data_batch_1`` .. ``_5``
(training, 10,000 images each), ``test_batch`` and ``batches.meta``; ``cifar-100-python.tar.gz``
holds ``cifar-100-python/`` with ``train``, ``test`` and ``meta``.  Each member is a Python 2
pickle (protocol 2) of a dict: ``data``, a uint8 numpy array (N, 3072) holding each 32x32 image
as three channel planes (1024 red, 1024 green, 1024 blue values, rows in order), and the labels
as a list of ints (``labels``; CIFAR-100: ``fine_labels`` and ``coarse_labels``); the meta
member lists the class names (``label_names``; ``fine_label_names``, ``coarse_label_names``).

Safety: the pickles are read by :class:`SafeUnpickler`, which builds nothing but dicts, lists,
tuples, bytes, ints, None/bools and uint8 arrays: the three globals a pickled numpy array names
(``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``) are mapped to inert
stand-ins of this module, so no numpy (or other) code runs on the archive's data, and any other
global is refused.  A malicious archive cannot run code.

The archive is read as a stream, member by member (its sha256 computed on the way); the
extracted folder (``cifar-10-batches-py/``, as torchvision and keras leave it) is read too.
Every problem is an :class:`~shardstream.errors.InputError` naming the file and the member.
Writing archives (the stand-in of ``shardstream synth``) is :mod:`.cifar_synth`'s.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
import zlib

import numpy as np

from ..errors import InputError
from .datasets import SPLITS, DatasetSpec

IMAGE_SHAPE = (32, 32, 3)
ROW = 32 * 32 * 3
# refuse members beyond this (a decompression bomb or not a CIFAR archive): 1 GiB
MAX_MEMBER = 1 << 30
_FIX = "re-download the archive (or make a stand-in with `shardstream synth`)"


class Layout:
    """Where one CIFAR archive keeps what: its folder, the members of each split, the meta
    member, and the pickle keys of the labels and class names for ``label`` fine / coarse."""

    def __init__(self, dataset, folder, splits, meta, labels, names):
        self.dataset, self.folder, self.splits, self.meta = dataset, folder, splits, meta
        self.labels, self.names = labels, names

    def members(self) -> tuple:
        """Every member this converter reads: training batches, test batch(es), meta."""
        return tuple(m for split in SPLITS for m in self.splits[split]) + (self.meta,)


LAYOUTS = {
    "cifar-10": Layout("cifar-10", "cifar-10-batches-py",
                       {"train": tuple(f"data_batch_{i}" for i in range(1, 6)),
                        "test": ("test_batch",)},
                       "batches.meta", {"fine": b"labels"}, {"fine": b"label_names"}),
    "cifar-100": Layout("cifar-100", "cifar-100-python",
                        {"train": ("train",), "test": ("test",)}, "meta",
                        {"fine": b"fine_labels", "coarse": b"coarse_labels"},
                        {"fine": b"fine_label_names", "coarse": b"coarse_label_names"}),
}


# ---------------------------------------------------------------------------------------------
# the restricted unpickler


class _Inert:
    """Base of the stand-ins the unpickler hands out: no ``__dict__``, and no attribute can be
    set on them (a pickle's BUILD opcode cannot alter them)."""

    __slots__ = ()

    def __setattr__(self, name, value):
        raise pickle.UnpicklingError(f"refused to set the attribute {name!r} of a stand-in")


class _NDArrayType(_Inert):
    """What ``numpy.ndarray`` stands for: a marker, only ever passed to :class:`_Reconstruct`."""

    __slots__ = ()


class _DType(_Inert):
    """A ``numpy.dtype(code, align, copy)`` stand-in; only ``u1`` (uint8) is accepted."""

    __slots__ = ()

    def __setstate__(self, state):
        pass  # byte order and flags: meaningless for uint8


class _DTypeFactory(_Inert):
    """What ``numpy.dtype`` stands for."""

    __slots__ = ()

    def __call__(self, code, align=0, copy=1):
        code = code.decode("ascii", "replace") if isinstance(code, bytes) else str(code)
        if code not in ("u1", "|u1", "B"):
            raise pickle.UnpicklingError(f"an array of dtype {code!r}; CIFAR arrays are uint8")
        return _DType()


class PickledArray(_Inert):
    """Stand-in for a pickled numpy array; ``.value`` is the uint8 array, read-only, made with
    ``np.frombuffer`` from the pickle's bytes once ``__setstate__`` has checked them (None
    until then)."""

    __slots__ = ("value",)

    def __init__(self):
        object.__setattr__(self, "value", None)

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("an array with a malformed state")
        shape, dtype, fortran, raw = state[-4:]
        if (not isinstance(shape, tuple) or not all(type(d) is int and d >= 0 for d in shape)
                or not isinstance(dtype, _DType) or not isinstance(raw, bytes)):
            raise pickle.UnpicklingError("an array with a malformed state")
        count = int(np.prod(shape, dtype=object))
        if len(raw) != count:
            raise pickle.UnpicklingError(f"an array of shape {shape} with {len(raw)} bytes "
                                         f"of data")
        a = np.frombuffer(raw, dtype=np.uint8)
        object.__setattr__(self, "value", a.reshape(shape[::-1]).T if fortran
                           else a.reshape(shape))


class _Reconstruct(_Inert):
    """What ``numpy.core.multiarray._reconstruct`` stands for: makes an empty
    :class:`PickledArray` (filled by BUILD)."""

    __slots__ = ()

    def __call__(self, cls, shape, typecode):
        if not isinstance(cls, _NDArrayType):
            raise pickle.UnpicklingError("_reconstruct of something other than an ndarray")
        return PickledArray()


_GLOBALS = {("numpy.core.multiarray", "_reconstruct"): _Reconstruct(),
            ("numpy._core.multiarray", "_reconstruct"): _Reconstruct(),
            ("numpy", "ndarray"): _NDArrayType(),
            ("numpy", "dtype"): _DTypeFactory()}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global but the three of a pickled numpy array, which
    it maps to inert stand-ins (:class:`PickledArray` holds the array)."""

    def find_class(self, module, name):
        try:
            return _GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused to load the global {module}.{name} (a CIFAR "
                                         f"batch holds only dicts, lists, bytes, ints and "
                                         f"uint8 arrays)") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused a persistent id")


def safe_loads(data: bytes, where: str):
    """Unpickle ``data`` (Python 2 strings as bytes) with :class:`SafeUnpickler`; any problem
    is an :class:`InputError` naming ``where``."""
    try:
        return SafeUnpickler(io.BytesIO(data), encoding="bytes", fix_imports=False).load()
    except Exception as exc:  # UnpicklingError, EOFError, ValueError, TypeError, ...
        raise InputError(f"{where}: not a CIFAR batch pickle ({type(exc).__name__}: {exc}); "
                         f"{_FIX}") from None


# ---------------------------------------------------------------------------------------------
# reading an archive or its extracted folder


class _HashingReader(io.RawIOBase):
    """A read-only file object over ``f`` that feeds every byte read into ``self.sha256``."""

    def __init__(self, f):
        self.f, self.sha256, self.size = f, hashlib.sha256(), 0

    def readable(self):
        return True

    def readinto(self, b):
        n = self.f.readinto(b)
        self.sha256.update(memoryview(b)[:n])
        self.size += n
        return n


def _wanted(name: str, layout: Layout) -> str | None:
    """The member name (``data_batch_1``) that the archive path ``name`` holds, or None."""
    parts = name.strip("/").split("/")
    if parts[-1] in layout.members() and parts[:-1] in ([], [layout.folder]):
        return parts[-1]
    return None


def read_archive(path: str, layout: Layout) -> tuple[dict, dict]:
    """``({member: bytes}, {name, bytes, sha256} of the archive)``: the members of ``layout``
    read from the tar archive ``path`` (gzip or plain) as a stream, one member at a time."""
    found, current = {}, None
    try:
        with open(path, "rb") as raw:
            hashing = _HashingReader(raw)
            stream = io.BufferedReader(hashing, 1 << 20)
            with tarfile.open(fileobj=stream, mode="r|*") as tar:
                for member in tar:
                    current = member.name
                    key = _wanted(member.name, layout)
                    if key is None or not member.isfile():
                        continue
                    if key in found:
                        raise InputError(f"{path}: member {member.name} appears twice; {_FIX}")
                    if member.size > MAX_MEMBER:
                        raise InputError(f"{path}: member {member.name} is {member.size:,} "
                                         f"bytes, too large for a CIFAR batch; {_FIX}")
                    found[key] = tar.extractfile(member).read()
                    if len(found[key]) != member.size:
                        raise EOFError(f"{len(found[key])} of {member.size} bytes")
                current = None
            while hashing.read(1 << 20):  # the rest of the file, for its checksum
                pass
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        at = f" (member {current})" if current else ""
        raise InputError(f"{path}: truncated or damaged archive{at}: {type(exc).__name__}: "
                         f"{exc}; {_FIX}") from None
    missing = [m for m in layout.members() if m not in found]
    if missing:
        lacks = ", ".join(f"{layout.folder}/{m}" for m in missing)
        raise InputError(f"{path}: the archive lacks {lacks}; is it the python version archive "
                         f"of {layout.dataset}? {_FIX}")
    info = {"name": os.path.basename(path), "bytes": hashing.size,
            "sha256": hashing.sha256.hexdigest()}
    return found, info


def read_folder(path: str, layout: Layout) -> tuple[dict, list]:
    """``({member: bytes}, [{name, bytes, sha256} per member file])`` from the folder extracted
    from an archive (``path`` is that folder or the one holding it)."""
    if os.path.isdir(os.path.join(path, layout.folder)):
        path = os.path.join(path, layout.folder)
    found, files = {}, []
    for m in layout.members():
        p = os.path.join(path, m)
        try:
            with open(p, "rb") as f:
                found[m] = f.read()
        except OSError as exc:
            raise InputError(f"{p}: cannot be read ({exc.strerror or exc}); the extracted "
                             f"folder {path} must hold {', '.join(layout.members())}; "
                             f"{_FIX}") from None
        files.append({"name": f"{layout.folder}/{m}", "bytes": len(found[m]),
                      "sha256": hashlib.sha256(found[m]).hexdigest()})
    return found, files


# ---------------------------------------------------------------------------------------------
# checking the pickles' layout


def _layout_error(where, problem, spec):
    return InputError(f"{where}: {problem}; this is not the layout of a {spec.name} python "
                      f"version batch: {_FIX}")


def _batch(data: bytes, where: str, spec: DatasetSpec, label_key: bytes, num_classes: int):
    """(images uint8 (n, 32, 32, 3), labels int64 (n,)) of one batch member's bytes."""
    d = safe_loads(data, where)
    if not isinstance(d, dict):
        raise _layout_error(where, f"the pickle holds a {type(d).__name__}, not a dict", spec)
    for key in (b"data", label_key):
        if key not in d:
            have = ", ".join(k.decode("ascii", "replace") if isinstance(k, bytes) else repr(k)
                             for k in d)
            raise _layout_error(where, f"no {key.decode()!r} entry (it has: {have})", spec)
    arr = d[b"data"]
    value = arr.value if isinstance(arr, PickledArray) else None
    if value is None or value.ndim != 2 or value.shape[1] != ROW:
        what = value.shape if value is not None else type(arr).__name__
        raise _layout_error(where, f"'data' is {what}, expected a uint8 array (N, {ROW})", spec)
    labels = d[label_key]
    if not isinstance(labels, list) or not all(type(v) is int for v in labels):
        raise _layout_error(where, f"{label_key.decode()!r} is not a list of ints", spec)
    n = value.shape[0]
    if len(labels) != n:
        raise _layout_error(where, f"{n:,} images but {len(labels):,} labels", spec)
    labels = np.asarray(labels, dtype=np.int64)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        raise _layout_error(where, f"label {labels[bad[0]]} of image {bad[0]} is outside the "
                                   f"{num_classes} classes", spec)
    images = value.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1)  # planes -> (H, W, C)
    return np.ascontiguousarray(images), labels


def _names(data: bytes, where: str, spec: DatasetSpec, key: bytes) -> tuple:
    d = safe_loads(data, where)
    names = d.get(key) if isinstance(d, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(v, bytes) for v in names):
        raise _layout_error(where, f"no list of class names under {key.decode()!r}", spec)
    return tuple(v.decode("utf-8", "replace") for v in names)


def check_label(spec: DatasetSpec, label) -> str:
    """``label`` (None: ``"fine"``) if ``spec`` has such labels, else :class:`InputError`."""
    layout = LAYOUTS[spec.name]
    label = "fine" if label is None else label
    if label not in layout.labels:
        raise InputError(f"--label {label}: {spec.name} has {' and '.join(layout.labels)} "
                         f"labels")
    return label


def load_cifar(spec: DatasetSpec, path, label: str = "fine"):
    """Read the CIFAR archive (or extracted folder) ``path`` of ``spec``:
    ``({split: (images uint8 (N, 32, 32, 3), labels int64 (N,))}, classes, {split: source})``;
    ``label``: ``"fine"`` or (CIFAR-100) ``"coarse"``.  The sources are JSON-able dicts for
    the manifests (without the ``synthetic`` flag, which the caller adds)."""
    layout = LAYOUTS[spec.name]
    label = check_label(spec, label)
    path = os.fspath(path)
    if os.path.isdir(path):
        members, files = read_folder(path, layout)
        prefix = path
    else:
        members, info = read_archive(path, layout)
        files, prefix = [info], f"{path}: member {layout.folder}"
    where = {m: f"{prefix}/{m}" for m in members}
    classes = _names(members[layout.meta], where[layout.meta], spec, layout.names[label])
    data, sources = {}, {}
    for split in SPLITS:
        parts = [_batch(members[m], where[m], spec, layout.labels[label], len(classes))
                 for m in layout.splits[split]]
        data[split] = (np.concatenate([p[0] for p in parts]),
                       np.concatenate([p[1] for p in parts]))
        sources[split] = {"dataset": spec.name, "label": label, "files": files}
    return data, classes, sources
