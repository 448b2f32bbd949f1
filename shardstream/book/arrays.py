"""The book's TensorFlow splits: ``data.train = (images, labels)``, as D2L §4.2's TF tab keeps
them (``tf.keras.datasets.fashion_mnist.load_data()``), so ``len(data.train[0])`` is 60000.

:func:`book_split` wraps a map-style :class:`~.datamodule.SplitDataset` into that pair of lazy
arrays: ``images`` uint8 (N, H, W) for grey data (the book's shape), (N, H, W, C) for colour,
and ``labels`` int64 (N,); nothing is read until indexed (a whole shard at a time, through the
dataset's small LRU of decoded shards), and ``np.asarray(view)`` reads them all.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError


class _View:
    """A read-only, lazily read array over all samples of a split (see the module doc)."""

    def __init__(self, dataset, which):
        self.dataset, self._which = dataset, which
        h, w, c = dataset.manifest.image_shape
        n = len(dataset)
        if which == "images":
            self.shape = (n, h, w) if c == 1 else (n, h, w, c)
            self.dtype = np.dtype(np.uint8)
        else:
            self.shape, self.dtype = (n,), np.dtype(np.int64)
        self.ndim = len(self.shape)

    def __len__(self):
        return self.shape[0]

    def __repr__(self):
        return (f"<{self._which} of {self.dataset.location}: shape {self.shape}, "
                f"{self.dtype}>")

    def _gather(self, ids):
        """Values of samples ``ids`` (int64 (m,), each in 0..N-1), in that order."""
        ds = self.dataset
        shards = np.searchsorted(ds._offsets, ids, side="right") - 1
        out = np.empty((len(ids),) + self.shape[1:], dtype=self.dtype)
        for s in np.unique(shards):
            rows = np.flatnonzero(shards == s)
            images, labels = ds._shard(int(s))
            part = images if self._which == "images" else labels
            got = part[ids[rows] - ds._offsets[s]]
            out[rows] = got.reshape((len(rows),) + self.shape[1:])
        return out

    def __getitem__(self, index):
        n = len(self)
        if isinstance(index, slice):
            return self._gather(np.arange(n, dtype=np.int64)[index])
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            i = int(index) + n if index < 0 else int(index)
            if not 0 <= i < n:
                raise IndexError(f"index {index} is out of range for {n} samples")
            return self._gather(np.array([i], dtype=np.int64))[0]
        ids = np.asarray(index)
        if ids.dtype.kind not in "iu":
            raise InputError(f"{self._which}[{index!r}]: index with an int, a slice or an "
                             f"integer array")
        ids = np.where(ids < 0, ids + n, ids).astype(np.int64).reshape(-1)
        if len(ids) and (ids.min() < 0 or ids.max() >= n):
            raise IndexError(f"an index is out of range for {n} samples")
        return self._gather(ids)

    def __array__(self, dtype=None, copy=None):
        a = self[:]
        return a if dtype is None else a.astype(dtype)


class BookSplit(tuple):
    """``(images, labels)`` of one split (see the module doc); ``.dataset``: the map-style
    :class:`~.datamodule.SplitDataset` behind it (``.dataset[i]`` -> (image tensor, label))."""

    dataset = None
    manifest = None


def book_split(dataset) -> BookSplit:
    """The book's TF ``(images, labels)`` pair of ``dataset`` (a ``SplitDataset``)."""
    pair = BookSplit((_View(dataset, "images"), _View(dataset, "labels")))
    pair.dataset, pair.manifest = dataset, dataset.manifest
    return pair
