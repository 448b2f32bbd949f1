"""A deterministic synthetic stand-in for an IDX dataset (Fashion-MNIST, MNIST, KMNIST); for
CIFAR-10/100 :func:`synthesize` hands over to :mod:`.cifar_synth`.

:func:`synthesize` writes the four raw files the real dataset has (same names, same IDX
format, gzip-compressed) plus a marker file :data:`MARKER` holding the generator's parameters;
``shardstream convert`` sees the marker and records ``source.synthetic = true`` in every
manifest it makes from these files.

The images imitate Fashion-MNIST's statistics, so that PNG compression and decoding cost about
the same: 28x28 uint8, a black background (about half the pixels exactly 0), and one smooth grey
silhouette per class (t-shirt with short sleeves, trousers as two legs, pullover and coat with
long sleeves, dress, sandal straps, shirt, sneaker, bag with a handle, ankle boot), each sample
jittered in size, position, brightness and texture, then blurred.  The other datasets get the
same silhouettes under their own class names: this is a stand-in for timing and plumbing, not
for accuracy numbers.  Labels are balanced (each class n/10 times when n divides by 10).
"""

from __future__ import annotations

import os
import time

import numpy as np

from .. import storage
from ..errors import InputError
from ..units import progress_bar
from .cifar_synth import synthesize_cifar
from .datasets import SPLITS, get_spec
from .idx import idx_bytes
from .marker import MARKER, write_marker  # noqa: F401  (MARKER: part of this module's API)

CHUNK = 10_000          # samples generated per step (fixed: part of the determinism)
SIZE = 28


def _grid():
    c = (np.arange(SIZE, dtype=np.float32) + 0.5) / SIZE * 2 - 1  # pixel centres in [-1, 1]
    return c[None, None, :], c[None, :, None]                    # x (1,1,W), y (1,H,1)


def _silhouette(cls: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """float32 (n, H, W) in [0, 1]: the shape of class ``cls`` at coordinates ``u`` (across)
    and ``v`` (down), both (n, H, W) in the sample's own frame (the shape fills about
    [-1, 1]^2)."""
    au = np.abs(u)
    if cls == 0:    # t-shirt: torso + short sleeves, round neck
        m = ((au < 0.52) & (v > -0.75) & (v < 0.92)) | ((au < 0.92) & (v > -0.75)
                                                        & (v < -0.25 + 0.3 * (0.92 - au)))
        m &= u * u + (v + 0.82) ** 2 > 0.05
    elif cls == 1:  # trouser: waistband + two legs
        m = ((au < 0.42) & (v > -0.95) & (v < -0.45)) | ((au > 0.05 + 0.04 * (v + 1))
                                                         & (au < 0.42 + 0.03 * (v + 1))
                                                         & (v > -0.95) & (v < 0.97))
    elif cls == 2:  # pullover: torso + long sleeves hanging down
        m = ((au < 0.5) & (v > -0.8) & (v < 0.9)) | ((au >= 0.5) & (au < 0.82 - 0.1 * v)
                                                     & (v > -0.75 + 0.6 * (au - 0.5))
                                                     & (v < 0.8))
    elif cls == 3:  # dress: narrow top, flared skirt
        m = (au < 0.16 + 0.34 * (v + 0.95)) & (v > -0.95) & (v < 0.97) & (au < 0.8)
        m &= ~((au < 0.1) & (v < -0.75))
    elif cls == 4:  # coat: wide torso, long sleeves, dark zip line
        m = ((au < 0.58) & (v > -0.85) & (v < 0.95)) | ((au >= 0.58) & (au < 0.95)
                                                        & (v > -0.8 + 0.5 * (au - 0.58))
                                                        & (v < 0.85))
        m = m.astype(np.float32) * (1 - 0.7 * (au < 0.05))
        return m
    elif cls == 5:  # sandal: low sole + straps with gaps
        sole = (au < 0.95) & (v > 0.35) & (v < 0.55)
        straps = (au < 0.85) & (v > -0.45 + 0.3 * u) & (v <= 0.35) & (np.sin(9 * u) > -0.3)
        m = sole | straps
    elif cls == 6:  # shirt: like a pullover, collar and button placket
        m = ((au < 0.5) & (v > -0.8) & (v < 0.9)) | ((au >= 0.5) & (au < 0.8 - 0.08 * v)
                                                     & (v > -0.72 + 0.55 * (au - 0.5))
                                                     & (v < 0.75))
        m &= ~((au < 0.18 - 0.3 * (v + 0.8)) & (v < -0.5))
        m = m.astype(np.float32) * (1 - 0.4 * (au < 0.04))
        return m
    elif cls == 7:  # sneaker: low shoe, collar on the left, toe to the right
        top = np.where(u < -0.3, -0.3, -0.3 + 0.6 * (u + 0.3) / 1.25)
        m = (au < 0.95) & (v < 0.55) & (v > top)
        m &= ~((u > -0.7) & (u < -0.4) & (v < -0.1))
    elif cls == 8:  # bag: box + handle arc
        box = (au < 0.8) & (v > -0.2) & (v < 0.85)
        r2 = u * u + (v + 0.2) ** 2
        handle = (r2 > 0.25) & (r2 < 0.42) & (v < -0.2)
        m = box | handle
    else:           # ankle boot: shaft on the left, foot to the right
        shaft = (u > -0.75) & (u < -0.05) & (v > -0.9) & (v < 0.6)
        foot = (u > -0.75) & (u < 0.9) & (v > 0.05) & (v < 0.6)
        foot &= (u - 0.9) ** 2 / 1.0 + (v - 0.6) ** 2 / 0.35 < 1.2
        m = shaft | foot | ((u > -0.75) & (u < 0.9) & (v >= 0.6) & (v < 0.72))
    return m.astype(np.float32)


def _blur(a: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1]/4 blur of (n, H, W) float32 along H and W (zero padding)."""
    for axis in (1, 2):
        out = a * 2
        lo, hi = [slice(None)] * 3, [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        out[tuple(hi)] += a[tuple(lo)]
        out[tuple(lo)] += a[tuple(hi)]
        out *= 0.25
        a = out
    return a


def make_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 (n, 28, 28) images for ``labels`` (n,) in [0, 10), drawn from ``rng``."""
    n = len(labels)
    x, y = _grid()
    sx = rng.uniform(0.80, 1.05, (n, 1, 1)).astype(np.float32)
    sy = rng.uniform(0.80, 1.05, (n, 1, 1)).astype(np.float32)
    dx = rng.uniform(-0.08, 0.08, (n, 1, 1)).astype(np.float32)
    dy = rng.uniform(-0.06, 0.06, (n, 1, 1)).astype(np.float32)
    shear = rng.uniform(-0.12, 0.12, (n, 1, 1)).astype(np.float32)
    bright = rng.uniform(150, 255, (n, 1, 1)).astype(np.float32)
    # texture: a coarse 7x7 random field upsampled to 28x28 (smooth), plus fine noise
    coarse = rng.random((n, 7, 7), dtype=np.float32)
    texture = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2)
    fine = rng.random((n, SIZE, SIZE), dtype=np.float32)
    u = (x - dx - shear * y) / sx
    v = (y - dy) / sy
    mask = np.empty((n, SIZE, SIZE), dtype=np.float32)
    for c in range(10):
        sel = np.flatnonzero(labels == c)
        if len(sel):
            mask[sel] = _silhouette(c, u[sel], v[sel])
    shade = 1.0 - 0.1 * (v + 1)
    img = mask * bright * shade * (0.72 + 0.25 * texture + 0.08 * fine)
    img = _blur(img)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def synth_split(n: int, seed: int, split: str, progress: bool = False):
    """(images uint8 (n, 28, 28), labels uint8 (n,)) of one split; deterministic in
    (n, seed, split), generated in chunks of :data:`CHUNK`."""
    if n < 0:
        raise InputError(f"the number of {split} samples must be >= 0, got {n}")
    split_id = SPLITS.index(split)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, split_id, 0])))
    labels = (np.arange(n) % 10).astype(np.uint8)
    labels = labels[rng.permutation(n)]
    images = np.empty((n, SIZE, SIZE), dtype=np.uint8)
    bar = progress_bar(total=n, desc=f"synth {split}", unit="img", enabled=progress, leave=False)
    for k, start in enumerate(range(0, n, CHUNK)):
        stop = min(start + CHUNK, n)
        crng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, split_id,
                                                                           k + 1])))
        images[start:stop] = make_images(labels[start:stop], crng)
        bar.update(stop - start)
    bar.close()
    return images, labels


def synthesize(name: str, out_dir, num_train=None, num_test=None, seed: int = 0,
               progress: bool = True):
    """Write a synthetic stand-in for dataset ``name`` into the local folder ``out_dir``: the
    raw files under their real names (IDX: four ``.gz`` files; CIFAR: the archive, see
    :mod:`.cifar_synth`), and :data:`MARKER` (written last).  ``num_train`` / ``num_test``
    default to the real dataset's sizes.

    Deterministic: the same arguments give byte-identical files.  Returns
    ``{split: (images path, labels path)}`` (CIFAR: the archive's path).
    """
    spec = get_spec(name)
    out_dir = os.fspath(out_dir)
    counts = {"train": int(spec.sizes["train"] if num_train is None else num_train),
              "test": int(spec.sizes["test"] if num_test is None else num_test)}
    if spec.raw_format == "cifar":
        return synthesize_cifar(spec, out_dir, counts["train"], counts["test"], seed=seed,
                                progress=progress)
    t0 = time.perf_counter()
    paths = {}
    for split in SPLITS:
        images, labels = synth_split(counts[split], seed, split, progress)
        img_name, lbl_name = spec.files[split]
        img_path, lbl_path = os.path.join(out_dir, img_name), os.path.join(out_dir, lbl_name)
        storage.write_bytes(img_path, idx_bytes(images))
        storage.write_bytes(lbl_path, idx_bytes(labels))
        paths[split] = (img_path, lbl_path)
    write_marker(out_dir, spec.name, seed, counts)
    if progress:
        print(f"synthesized {spec.name}: {counts['train']:,} train + {counts['test']:,} test "
              f"images (seed {seed}) in {time.perf_counter() - t0:.1f} s -> {out_dir}")
    return paths
