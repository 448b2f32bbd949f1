"""The helpers a reader of D2L §4.2 types (and of its earlier edition, §3.5), on shards.

Same names, arguments and results as the book's, in PyTorch (default) and TensorFlow::

    train_iter, test_iter = load_data_fashion_mnist(32, resize=64)   # framework="tf" too
    for X, y in train_iter:       # torch: X (32, 1, 64, 64) float32, y int64
        ...                       # tf:    X (32, 64, 64, 1) float32, y int32
    get_fashion_mnist_labels(y[:4])      # ['t-shirt', 'trouser', ...] as in the book
    show_images(X[:18].reshape(18, 64, 64), 2, 9, titles=get_fashion_mnist_labels(y[:18]))

The iterators are, in PyTorch, :class:`~.datamodule.EpochLoader` s (the data module's loaders,
iterated like the book's ``DataLoader``) and, in TensorFlow, ``tf.data.Dataset`` s as the
book's are (``model.fit`` takes them). Each pass over ``train_iter`` is a new shuffled epoch
(pass k = epoch k, reproducible from ``seed``; as the book's ``shuffle=True`` /
``.shuffle(...)``), ``test_iter`` is in order, ``len()`` is the number of batches; epoch k is
bitwise the same batches in both frameworks. The data comes from the shards under ``root``
(converted once, see :class:`~.datamodule.FashionMNIST`).
"""

from __future__ import annotations

from .. import loaders
from ..converters.datasets import DATASETS
from .datamodule import FashionMNIST, _indices
from .show import show_images

__all__ = ["load_data_fashion_mnist", "get_fashion_mnist_labels", "get_dataloader_workers",
           "show_images"]

#: the book's ``get_dataloader_workers()``: "Use 4 processes to read the data."
DATALOADER_WORKERS = 4


def get_dataloader_workers() -> int:
    """The number of data loader processes the book uses: 4."""
    return DATALOADER_WORKERS


def get_fashion_mnist_labels(labels) -> list[str]:
    """The text labels of Fashion-MNIST class indices ``labels`` (an int, a list, a numpy
    array, a torch or tf tensor), as the book's function: ``['t-shirt', 'trouser', ...]``."""
    names = DATASETS["fashion-mnist"].classes
    return [names[int(i)] for i in _indices(labels)]


def load_data_fashion_mnist(batch_size, resize=None, *, framework="torch", root="shards",
                            num_workers=None, **kw):
    """The book's ``load_data_fashion_mnist``: ``(train_iter, test_iter)``.

    ``resize``: ``None`` (the stored 28x28), ``n`` or ``(h, w)`` (PIL bilinear, as the book's
    ``transforms.Resize``); ``num_workers``: torch DataLoader workers, tf parallel readers
    (default :func:`get_dataloader_workers`); ``root`` and the other keywords go to
    :class:`~.datamodule.FashionMNIST` (e.g. ``dtype="uint8"``, ``normalize=(mean, std)``:
    the loaders' options, both iterators)."""
    if num_workers is None:
        num_workers = get_dataloader_workers()
    data = FashionMNIST(batch_size=batch_size, resize=resize, framework=framework, root=root,
                        num_workers=num_workers, **kw)
    if framework != "tf":
        return data.train_dataloader(), data.val_dataloader()
    common = dict(batch_size=data.batch_size, resize=data._resize, seed=data.seed,
                  shuffle_buffer=data.shuffle_buffer, format=data.format, dtype=data.dtype,
                  normalize=data.normalize,
                  storage_options=data.storage_options, num_parallel=max(data.num_workers, 1))
    train, val = data.locations
    return (loaders.tf_dataset(train, shuffle=True, reshuffle_each_iteration=True, **common),
            loaders.tf_dataset(val, shuffle=False, **common))
