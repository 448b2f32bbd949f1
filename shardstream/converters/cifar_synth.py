"""A deterministic synthetic stand-in for CIFAR-10 / CIFAR-100 (``shardstream synth cifar-10``).

:func:`synthesize_cifar` writes the archive the real dataset comes in (``cifar-10-python.tar.gz``
or ``cifar-100-python.tar.gz``: same members, the same dicts pickled with the opcodes Python
2's cPickle wrote them with, :func:`py2_pickle`; see :mod:`.cifar`) plus the synthetic-data
marker (:mod:`.marker`), so every manifest made from it says ``synthetic: true``.

The images are 32x32 RGB scenes in colour: a two-tone background (a "sky" and a "ground" of
the class's complementary hue) and one object (an ellipse, a box, a triangle or a ring, by
class) in the class's own hue, jittered in position, size, hue, saturation and brightness,
with a coarse texture and fine noise, then blurred.  Classes differ visibly in colour and
shape, so ``shardstream show`` draws a meaningful picture; it is a stand-in for plumbing and
timing, not for accuracy numbers.  Labels are balanced; CIFAR-100's coarse label of fine class
``c`` is ``c // 5`` (the real grouping differs).
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import time

import numpy as np

from .. import storage
from ..errors import InputError
from .cifar import LAYOUTS, ROW
from .datasets import SPLITS, DatasetSpec
from .marker import write_marker

CHUNK = 5_000  # samples generated per step (fixed: part of the determinism)
SIZE = 32
GOLDEN = 0.6180339887


def _hue_rgb(h, s):
    """float32 (...) hue and saturation in [0, 1] -> (..., 3) RGB of value 1 (the six-sector
    HSV formula; an HSV colour of value v is v times this)."""
    h = (h % 1.0) * 6.0
    i = np.floor(h).astype(np.int32) % 6
    f = h - np.floor(h)
    one = np.ones_like(h)
    p, q, t = 1 - s, 1 - s * f, 1 - s * (1 - f)
    r = np.choose(i, [one, q, p, p, t, one])
    g = np.choose(i, [t, one, one, q, p, p])
    b = np.choose(i, [p, p, t, one, one, q])
    return np.stack([r, g, b], axis=-1)


def _blur(a):
    """[1, 2, 1] / 4 blur of (n, H, W, C) float32 along H and W (edges repeated)."""
    for axis in (1, 2):
        a = np.swapaxes(a, 1, axis)
        out = a * 2
        out[:, 1:] += a[:, :-1]
        out[:, :1] += a[:, :1]
        out[:, :-1] += a[:, 1:]
        out[:, -1:] += a[:, -1:]
        out *= 0.25
        a = np.swapaxes(out, 1, axis)
    return a


def make_images(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 (n, 32, 32, 3) colour images for ``labels`` (n,) in [0, num_classes)."""
    n = len(labels)
    c = np.arange(SIZE, dtype=np.float32) + 0.5
    y, x = c[None, :, None] / SIZE, c[None, None, :] / SIZE        # (1, H, 1), (1, 1, W)
    hue = labels.astype(np.float32) * GOLDEN
    col = lambda k: rng.uniform(*k, (n, 1, 1)).astype(np.float32)  # noqa: E731
    # three colours per image (hue, saturation): sky and ground of the class's complementary
    # hue, the object of its own hue; per pixel only the value (brightness) varies
    sky_h, sky_s = hue + 0.5 + col((-0.06, 0.06))[:, 0, 0], col((0.25, 0.55))[:, 0, 0]
    fg_h, fg_s = hue + col((-0.03, 0.03))[:, 0, 0], col((0.65, 1.0))[:, 0, 0]
    colours = _hue_rgb(np.stack([sky_h, sky_h + 0.08, fg_h], axis=1),
                       np.clip(np.stack([sky_s, sky_s + 0.15, fg_s], axis=1), 0, 1))  # (n, 3, 3)
    horizon = col((0.45, 0.8))
    ground = y > horizon                                            # (n, H, 1)
    bg_v = col((0.6, 0.95)) - 0.25 * ground - 0.15 * y
    # the object: its shape by class
    cx, cy = col((0.3, 0.7)), col((0.35, 0.65))
    rx, ry = col((0.16, 0.3)), col((0.16, 0.3))
    u, v = (x - cx) / rx, (y - cy) / ry
    shape = (labels % 4)[:, None, None]
    r2 = u * u + v * v
    mask = np.where(shape == 0, r2 < 1,
                    np.where(shape == 1, (np.abs(u) < 0.9) & (np.abs(v) < 0.9),
                             np.where(shape == 2, (v < 0.9) & (np.abs(u) < (v + 1) * 0.5),
                                      (r2 < 1) & (r2 > 0.35))))
    fg_v = col((0.55, 1.0)) * (1 - 0.25 * np.clip(v, 0, 1))
    val = np.where(mask, fg_v, bg_v)
    # texture: a coarse 8x8 field upsampled 4x, then fine noise
    coarse = rng.random((n, 8, 8), dtype=np.float32)
    texture = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2)
    val = np.clip(val * (0.85 + 0.3 * texture), 0, 1) * 255
    which = np.where(mask, 2, np.broadcast_to(ground, mask.shape).astype(np.int64))
    rgb = np.take_along_axis(colours, which.reshape(n, -1, 1), axis=1).reshape(n, SIZE, SIZE, 3)
    rgb *= val[..., None]
    rgb += rng.normal(0, 4, (n, SIZE, SIZE, 3)).astype(np.float32)
    return np.clip(_blur(rgb) + 0.5, 0, 255).astype(np.uint8)


def synth_split(spec: DatasetSpec, n: int, seed: int, split: str):
    """(images uint8 (n, 32, 32, 3), labels int64 (n,)) of one split, balanced over the
    classes; deterministic in (dataset, n, seed, split), made in chunks of :data:`CHUNK`."""
    if n < 0:
        raise InputError(f"the number of {split} samples must be >= 0, got {n}")
    k = len(spec.classes)
    split_id = SPLITS.index(split)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, split_id, k])))
    labels = (np.arange(n) % k)[rng.permutation(n)].astype(np.int64)
    images = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
    for j, start in enumerate(range(0, n, CHUNK)):
        stop = min(start + CHUNK, n)
        crng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, split_id, k,
                                                                           j + 1])))
        images[start:stop] = make_images(labels[start:stop], k, crng)
    return images, labels


# ---------------------------------------------------------------------------------------------
# writing the archive: Python 2 pickles, protocol 2, as cPickle wrote them


class _Py2Pickler:
    """Emits the protocol-2 pickle of dicts, lists, bytes (Python 2 ``str``), ints, None and
    uint8 numpy arrays with the opcodes Python 2's cPickle used for the CIFAR batches
    (``SHORT_BINSTRING``/``BINSTRING`` strings, numpy's ``_reconstruct`` reduce)."""

    def __init__(self):
        self.out, self.memo = bytearray(), 0

    def _put(self):
        self.memo += 1
        self.out += (b"q" + bytes([self.memo]) if self.memo < 256
                     else b"r" + self.memo.to_bytes(4, "little"))

    def _global(self, module, name):
        self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"
        self._put()

    def _batch(self, groups, one, many):
        """``groups``: tuples of objects (a list item, or a dict's key and value); one group
        is followed by the opcode ``one``, more go in marked batches of 1,000 ending ``many``."""
        groups = list(groups)
        if len(groups) == 1:
            self.save(*groups[0])
            self.out += one
            return
        for i in range(0, len(groups), 1000):
            self.out += b"("
            for group in groups[i:i + 1000]:
                self.save(*group)
            self.out += many

    def save(self, *objs):
        for x in objs:
            if x is None:
                self.out += b"N"
            elif isinstance(x, bool):
                self.out += b"\x88" if x else b"\x89"
            elif isinstance(x, int):
                if 0 <= x < 256:
                    self.out += b"K" + bytes([x])
                elif 0 <= x < 65536:
                    self.out += b"M" + x.to_bytes(2, "little")
                else:
                    self.out += b"J" + x.to_bytes(4, "little", signed=True)
            elif isinstance(x, bytes):
                self.out += (b"U" + bytes([len(x)]) if len(x) < 256
                             else b"T" + len(x).to_bytes(4, "little")) + x
                if len(x) > 1:
                    self._put()
            elif isinstance(x, dict):
                self.out += b"}"
                self._put()
                self._batch(x.items(), b"s", b"u")
            elif isinstance(x, list):
                self.out += b"]"
                self._put()
                self._batch(((item,) for item in x), b"a", b"e")
            elif isinstance(x, np.ndarray) and x.dtype == np.uint8:
                self._array(np.ascontiguousarray(x))
            else:
                raise TypeError(f"cannot write {type(x).__name__} into a CIFAR pickle")

    def _array(self, a):
        self._global("numpy.core.multiarray", "_reconstruct")
        self._global("numpy", "ndarray")
        self.out += b"K\x00\x85" + b"U\x01b" + b"\x87R"          # (ndarray, (0,), 'b')
        self._put()
        self.out += b"(K\x01"                                      # state: (1, shape, dtype,
        self.save(*a.shape)
        self.out += {1: b"\x85", 2: b"\x86", 3: b"\x87"}[a.ndim]
        self._global("numpy", "dtype")
        self.out += b"U\x02u1K\x00K\x01\x87R"                      # dtype('u1', 0, 1)
        self._put()
        self.out += b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        self.out += b"\x89" + b"T" + a.nbytes.to_bytes(4, "little") + a.tobytes() + b"tb"

    def dumps(self, obj) -> bytes:
        self.out += b"\x80\x02"
        self.save(obj)
        self.out += b"."
        return bytes(self.out)


def py2_pickle(obj) -> bytes:
    """``obj`` as Python 2's ``cPickle.dumps(obj, 2)`` wrote a CIFAR batch (see
    :class:`_Py2Pickler`); readable with ``pickle.load(f, encoding="bytes")``."""
    return _Py2Pickler().dumps(obj)


def batch_dict(spec: DatasetSpec, images, labels, batch_label: str, first: int,
               coarse=None) -> dict:
    """The dict of one batch member, as in the real archive: images uint8 (n, 32, 32, 3),
    labels (n,) (CIFAR-100: fine labels, and ``coarse`` labels); file names made up from
    ``first`` (the index of the batch's first image)."""
    data = np.ascontiguousarray(np.asarray(images, np.uint8).transpose(0, 3, 1, 2)).reshape(
        len(images), ROW)
    names = [f"synthetic_{first + i:06d}.png".encode() for i in range(len(images))]
    if spec.name == "cifar-10":
        return {b"data": data, b"labels": [int(v) for v in labels],
                b"batch_label": batch_label.encode(), b"filenames": names}
    return {b"filenames": names, b"batch_label": batch_label.encode(),
            b"fine_labels": [int(v) for v in labels],
            b"coarse_labels": [int(v) for v in coarse], b"data": data}


def archive_bytes(members: dict, folder: str) -> bytes:
    """A ``.tar.gz`` holding ``folder/`` and, in the given order, ``folder/<name>`` for each
    ``name: bytes`` of ``members``; deterministic (mtime 0, owner 0, gzip mtime 0, level 1)."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=1) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
            info = tarfile.TarInfo(folder)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
            for name, data in members.items():
                info = tarfile.TarInfo(f"{folder}/{name}")
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def synthesize_cifar(spec: DatasetSpec, out_dir, num_train: int, num_test: int, seed: int = 0,
                     progress: bool = True) -> str:
    """Write the stand-in archive of ``spec`` (CIFAR-10 or CIFAR-100) and the marker into the
    local folder ``out_dir``; returns the archive's path.  Deterministic: the same arguments
    give byte-identical files."""
    t0 = time.perf_counter()
    layout = LAYOUTS[spec.name]
    out_dir = os.fspath(out_dir)
    counts = {"train": int(num_train), "test": int(num_test)}
    members = {}
    for split in SPLITS:
        images, labels = synth_split(spec, counts[split], seed, split)
        names = layout.splits[split]
        kind = "training" if split == "train" else "testing"
        for b, part in enumerate(np.array_split(np.arange(len(labels)), len(names))):
            first = int(part[0]) if len(part) else 0
            members[names[b]] = py2_pickle(batch_dict(
                spec, images[part], labels[part], f"{kind} batch {b + 1} of {len(names)}",
                first, coarse=labels[part] // 5))
    if spec.name == "cifar-10":
        meta = {b"num_cases_per_batch": max(1, -(-counts["train"] // 5)),
                b"label_names": [c.encode() for c in spec.classes], b"num_vis": 3072}
    else:
        meta = {b"fine_label_names": [c.encode() for c in spec.classes],
                b"coarse_label_names": [c.encode() for c in spec.coarse_classes]}
    members[layout.meta] = py2_pickle(meta)
    path = os.path.join(out_dir, spec.all_files()[0])
    storage.write_bytes(path, archive_bytes(members, layout.folder))
    write_marker(out_dir, spec.name, seed, counts)
    if progress:
        print(f"synthesized {spec.name}: {counts['train']:,} train + {counts['test']:,} test "
              f"colour images (seed {seed}) in {time.perf_counter() - t0:.1f} s -> {path}")
    return path
