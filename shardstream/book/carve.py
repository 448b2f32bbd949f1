"""A validation split carved out of ``train``, for datasets of one split (an image folder).

``DataModule(..., val_fraction=f, seed=s)`` on a dataset with only ``train``: the samples are
split once, deterministically, by :func:`carve_ids` and written as an ordinary conversion of
two splits, ``train`` and ``val``, in ``<root>/<name>-val<f>-seed<s>/`` (a local root; for a
remote root under the shard cache folder, ``<cache dir>/carved/``), so both frameworks stream
the carved splits with the same loaders (bitwise identical batches). A later call with the
same fraction and seed reuses it when it was carved from the same ``train`` (its manifest's
sha256 is in the carved manifests' ``source``); anything else carves anew.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from .. import config, storage
from ..converters.writer import write_splits
from ..errors import InputError, ManifestError, NotFoundError
from ..loaders.execute import open_stream
from ..shards.manifest import load_manifest
from ..shards.names import MANIFEST_NAME

#: the splits that play the chapter's ``val``, in order of preference (``test`` is the book's
#: choice for Fashion-MNIST, which has no other)
VAL_SPLITS = ("val", "valid", "validation", "test")


def carve_ids(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train ids, val ids), int64, each sorted, disjoint, together ``0 .. n-1``.

    ``round(n * fraction)`` samples (at least 1, at most ``n - 1``) go to val: the first ones of
    ``np.random.default_rng(seed).permutation(n)``. Pure: the same arguments give the same
    split on every machine."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
            or not 0 < fraction < 1:
        raise InputError(f"val_fraction={fraction!r}: must be a number between 0 and 1 "
                         f"(e.g. 0.1)")
    if n < 2:
        raise InputError(f"val_fraction: train has {n} sample(s); at least 2 are needed to "
                         f"carve a validation split")
    k = min(n - 1, max(1, round(n * fraction)))
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[k:]).astype(np.int64), np.sort(perm[:k]).astype(np.int64)


def _target(root: str, name: str, fraction: float, seed: int) -> tuple[str, str]:
    """(output root, dataset name) of the carved conversion."""
    dataset = f"{name}-val{fraction:g}-seed{seed}"
    if storage.is_remote(root):
        key = hashlib.sha256(root.encode()).hexdigest()[:16]
        return os.path.join(config.cache_dir(), "carved", key), dataset
    return root, dataset


def _reusable(out, dataset, source) -> bool:
    for split in ("train", "val"):
        try:
            m = load_manifest(storage.join(out, dataset, split))
        except (ManifestError, NotFoundError):
            return False
        if m.source.get("carved_from") != source["carved_from"]:
            return False
    return True


def carve_validation(root, name, fraction, *, seed=0, storage_options=None) -> tuple[str, str]:
    """Carve ``fraction`` of ``<root>/<name>/train`` into a validation split (see the module
    doc); returns the (train, val) locations of the carved conversion."""
    train_loc = storage.join(root, name, "train")
    raw_manifest = storage.read_bytes(storage.join(train_loc, MANIFEST_NAME), storage_options)
    source = open_stream(train_loc, storage_options=storage_options)
    m = source.manifest
    train_ids, val_ids = carve_ids(m.num_samples, fraction, int(seed))
    out, dataset = _target(str(root), name, fraction, seed)
    origin = {"location": train_loc, "manifest_sha256": hashlib.sha256(raw_manifest).hexdigest(),
              "val_fraction": fraction, "seed": int(seed)}
    base = {"synthetic": m.synthetic, "carved_from": origin}
    if _reusable(out, dataset, base):
        return storage.join(out, dataset, "train"), storage.join(out, dataset, "val")
    parts = [source.load(s) for s in range(len(m.shard_sizes))]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    data = {"train": (images[train_ids], labels[train_ids]),
            "val": (images[val_ids], labels[val_ids])}
    sources = {s: dict(base, samples=len(ids)) for s, ids in (("train", train_ids),
                                                              ("val", val_ids))}
    print(f"carving {len(val_ids)} of {m.num_samples} samples of {train_loc} into a validation "
          f"split (val_fraction={fraction:g}, seed={seed}): {storage.join(out, dataset)}")
    write_splits(out, dataset, data, m.classes, sources, formats=m.formats,
                 shard_size=int(max(m.shard_sizes)), encoding=m.encoding, overwrite=True,
                 progress=False)
    return storage.join(out, dataset, "train"), storage.join(out, dataset, "val")
