"""The data module of *Dive into Deep Learning* §4.2, backed by shards.

The chapter's ``d2l.FashionMNIST(batch_size=64, resize=(28, 28))`` with the same members --
``train``, ``val``, ``text_labels``, ``get_dataloader``, ``train_dataloader``,
``val_dataloader``, ``visualize`` -- for PyTorch (default) or TensorFlow::

    data = FashionMNIST(batch_size=64, resize=(32, 32), root="shards")   # framework="tf" too
    len(data.train), len(data.val)            # (60000, 10000)
    X, y = next(iter(data.train_dataloader()))
    data.visualize((X, y))

``root`` is a location (a folder, ``http(s)://``, ``s3://``) holding ``<dataset>/train`` and
``<dataset>/test`` as written by ``shardstream convert``; when it is a *local* folder without
them the module converts the raw dataset once, from raw files in ``root`` itself or in the
book's layout ``root/FashionMNIST/raw`` (what ``torchvision.datasets.FashionMNIST(root=
"../data")`` leaves), else from the usual places, else downloaded. A remote root is never
converted into: a missing conversion there is an error (so a typo'd ``s3://`` root writes
nothing), and a denied one (HTTP 401/403, S3 AccessDenied) an :class:`AccessError` naming it
(``token=`` is the bearer token of an http(s) root). ``val`` is the ``val`` (``valid``,
``validation``) split when there is one, else ``test`` (the chapter's choice); a dataset of
one split (an image folder) gets a deterministic validation split with ``val_fraction=``
(:mod:`.carve`). Split slices stream parts of a split without a copy:
``train_split="train[:90%]", val_split="train[90%:]"`` (:mod:`shardstream.loaders.slicing`:
contiguous ranges in the stored order -- right for Fashion-MNIST, not for an image folder,
stored class by class). With ``framework="tf"``, ``data.train`` and ``data.val`` are the
book's ``(images, labels)`` pairs (:mod:`.arrays`): ``len(data.train[0])`` is 60000.

Framework tensors are made by the adapters (:mod:`.torch_loader`, :mod:`.tf_loader`); this
module imports neither framework.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .. import storage
from ..converters.convert import convert
from ..converters.datasets import DATASETS, canonical_name
from ..converters.fetch import raw_in
from ..errors import AccessError, InputError, NotFoundError
from ..loaders.execute import open_stream
from ..loaders.normalize import normalize_
from ..loaders.options import check_resize
from ..loaders.pixels import check_pixel_options, to_pixels
from ..loaders.plan import plan_epoch
from ..shards.names import MANIFEST_NAME
from .arrays import book_split
from .carve import VAL_SPLITS, carve_validation
from .show import show_images

FRAMEWORKS = ("torch", "tf")
#: decoded shards kept by a map-style dataset (random access reads whole shards)
SHARD_CACHE = 2


def _image_tensor(framework, image):
    """float32 or uint8 (h, w, C) -> the framework's image: torch (C, h, w) tensor, tf
    (h, w, C) tensor (the layouts of the loaders' batches)."""
    if framework == "torch":
        from ..loaders.torch_loader import to_torch_image  # noqa: PLC0415 - the framework only when asked for

        return to_torch_image(image)
    from ..loaders.tf_loader import to_tf_image  # noqa: PLC0415 - the framework only when asked for

    return to_tf_image(image)


def _indices(indices):
    """Class indices from an int, list, numpy array, torch or tf tensor -> int64 (n,)."""
    if hasattr(indices, "detach"):
        indices = indices.detach().cpu()
    a = np.asarray(indices)
    if a.dtype.kind not in "iu":
        raise InputError(f"text_labels: expected integer class indices, got {a.dtype} values")
    return a.reshape(-1).astype(np.int64)


class SplitDataset:
    """Map-style view of one converted split: ``len(ds)`` samples, ``ds[i]`` -> (image, label).

    The image is the sample with ``resize`` applied (float32 in [0, 1], standardised with
    ``normalize``; or uint8 with ``dtype="uint8"``: the pixels of the loaders' batches) as a
    framework tensor -- torch: (C, h, w), tf: (h, w, C) -- and the label a Python int. Random
    access by global index: the shard holding ``i`` is found with ``np.searchsorted`` on the
    manifest's offsets, read whole and kept in a small LRU of decoded shards, so neighbouring
    indices cost one shard read. Negative indices count from the end.
    """

    def __init__(self, location, *, resize=None, framework="torch", format="auto",
                 storage_options=None, dtype="float32", normalize=None):
        self.location = location
        self.framework = framework
        self._source = open_stream(location, format=format, storage_options=storage_options)
        self.manifest = self._source.manifest
        self.resize = check_resize(resize)
        if self.resize == tuple(self.manifest.image_shape[:2]):
            self.resize = None  # the stored size: no resampling, exactly x / 255
        self.dtype, self.normalize = check_pixel_options(dtype, normalize,
                                                         self.manifest.image_shape[-1])
        self._offsets = np.asarray(self.manifest.offsets, dtype=np.int64)
        self._shards = OrderedDict()

    def __len__(self):
        return int(self.manifest.num_samples)

    def __repr__(self):
        return (f"SplitDataset({self.location!r}, {len(self)} samples, resize={self.resize}, "
                f"framework={self.framework!r})")

    def _shard(self, s):
        """Decoded shard ``s``: images uint8 (n, H, W, C), labels int64 (n,) (LRU-cached)."""
        if s in self._shards:
            self._shards.move_to_end(s)
        else:
            self._shards[s] = self._source.load(s)
            while len(self._shards) > SHARD_CACHE:
                self._shards.popitem(last=False)
        return self._shards[s]

    def sample(self, index):
        """Sample ``index`` as numpy: image float32 (h, w, C) in [0, 1] (or standardised, or
        uint8: see the class doc), label int."""
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise InputError(f"index {index!r}: expected an integer sample index")
        n = len(self)
        i = int(index) + n if index < 0 else int(index)
        if not 0 <= i < n:
            raise IndexError(f"sample index {index} is out of range for {self.location} "
                             f"({n} samples)")
        s = int(np.searchsorted(self._offsets, i, side="right") - 1)
        images, labels = self._shard(s)
        j = i - int(self._offsets[s])
        image = to_pixels(images[j:j + 1], self.resize, self.dtype)[0]
        return normalize_(image, self.normalize, -1), int(labels[j])

    def __getitem__(self, index):
        image, label = self.sample(index)
        return _image_tensor(self.framework, image), label


class EpochLoader:
    """The chapter's data loader: iterate it once per epoch.

    Each pass (``iter``) is one epoch of the streaming loader; pass ``k`` uses epoch ``k``
    (a new shuffle each time, reproducible from ``seed``), like a shuffled
    ``torch.utils.data.DataLoader``. ``set_epoch(e)`` makes the next pass epoch ``e``.
    ``len()`` is the number of batches of a pass.
    """

    def __init__(self, module, train):
        self.module = module
        self.train = train
        self.epoch = 0
        self._torch = None
        location = module.locations[0 if train else 1]
        kw = dict(batch_size=module.batch_size, resize=module._resize, shuffle=train,
                  shuffle_buffer=module.shuffle_buffer, seed=module.seed, format=module.format,
                  storage_options=module.storage_options, dtype=module.dtype,
                  normalize=module.normalize)
        self.location, self._kw = location, kw
        if module.framework == "torch":
            from ..loaders.torch_loader import torch_loader  # noqa: PLC0415 - the framework only when asked for

            self._torch = torch_loader(location, num_workers=module.num_workers, **kw)
            self._len = len(self._torch)
        else:
            self.loader(0)  # checks the arguments now, as the torch loader does
            sizes = module.datasets[0 if train else 1].manifest.shard_sizes
            self._len = plan_epoch(sizes, batch_size=module.batch_size, shuffle=False).num_batches

    def loader(self, epoch):
        """The framework loader of ``epoch``: a torch ``ShardLoader`` or a ``tf.data.Dataset``."""
        if self._torch is not None:
            self._torch.set_epoch(epoch)
            return self._torch
        from ..loaders.tf_loader import tf_dataset  # noqa: PLC0415 - the framework only when asked for

        return tf_dataset(self.location, epoch=epoch,
                          num_parallel=max(self.module.num_workers, 1), **self._kw)

    def set_epoch(self, epoch):
        """Make the next pass epoch ``epoch``."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise InputError(f"set_epoch({epoch!r}): the epoch must be an integer >= 0")
        self.epoch = int(epoch)

    def __len__(self):
        return int(self._len)

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        return iter(self.loader(epoch))


class DataModule:
    """A D2L-style data module over a converted dataset (``shardstream datasets`` lists them).

    Arguments: ``name`` (``"fashion-mnist"``, ``"mnist"``, ``"kmnist"``, ``"cifar-10"``,
    ``"cifar-100"`` -- or an alias: ``"FashionMNIST"``, ``"fashion_mnist"``, ``"CIFAR10"`` --
    or any converted dataset's name), ``batch_size``, ``resize`` ((h, w);
    ``None`` or the stored size = no resize), ``root`` (location holding ``<name>/train`` and
    a validation split: ``val``, ``valid``, ``validation`` or ``test``), ``framework``
    (``"torch"`` or ``"tf"``), ``num_workers`` (DataLoader workers; tf: parallel readers),
    ``seed``, ``shuffle_buffer`` (samples; see docs/determinism.md), ``format`` (``"auto"``,
    ``"tar"``, ``"parquet"``), ``raw`` (folder of raw files for the one-time conversion),
    ``storage_options`` (remote roots), ``token`` (bearer token of an http(s) root),
    ``val_fraction`` (a dataset with only ``train``: carve this fraction of it into a
    validation split, deterministically from ``seed``; see :mod:`.carve`), ``train_split`` /
    ``val_split`` (the splits to use, by name under ``<root>/<name>/``, each optionally with a
    tfds-style slice: ``train_split="train[:90%]", val_split="train[90%:]"`` streams a
    validation split out of train without writing anything; default ``"train"`` and the first
    of ``val``, ``valid``, ``validation``, ``test`` there), ``dtype``
    (``"float32"``: images in [0, 1]; ``"uint8"``: the stored 0..255 values, for preprocessing
    on the GPU) and ``normalize`` (``(mean, std)`` per channel, float32 only) as the loaders'
    (docs/loaders.md): the dataloaders' batches and, in torch, ``train[i]`` / ``val[i]``.
    """

    def __init__(self, name, batch_size=64, resize=None, root="shards", framework="torch",
                 num_workers=0, seed=0, shuffle_buffer=10_000, format="auto", raw=None,
                 storage_options=None, token=None, val_fraction=None, train_split=None,
                 val_split=None, dtype="float32", normalize=None):
        if framework not in FRAMEWORKS:
            raise InputError(f"framework={framework!r}: choose 'torch' or 'tf'")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise InputError(f"batch_size={batch_size!r}: must be a positive integer")
        if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) \
                or num_workers < 0:
            raise InputError(f"num_workers={num_workers!r}: must be an integer >= 0")
        if isinstance(name, str):  # an alias (FashionMNIST, fashion_mnist) -> fashion-mnist
            name = canonical_name(name) or name
        self.name, self.root, self.framework = name, str(root), framework
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.seed, self.shuffle_buffer, self.format = seed, shuffle_buffer, format
        self.storage_options = storage.with_token(self.root, storage_options, token)
        self.resize = check_resize(resize)
        self.dtype, _ = check_pixel_options(dtype, normalize)  # normalize: by the datasets
        self._ensure_converted(raw)
        self.locations = self._splits(val_fraction, train_split, val_split)
        self.datasets = tuple(SplitDataset(loc, resize=self.resize, framework=framework,
                                           format=format, storage_options=self.storage_options,
                                           dtype=self.dtype, normalize=normalize)
                              for loc in self.locations)
        self.normalize = self.datasets[0].normalize
        if framework == "tf":   # the book's TF tab: (images, labels) pairs
            self.train, self.val = (book_split(d) for d in self.datasets)
        else:
            self.train, self.val = self.datasets
        self.classes = tuple(self.datasets[0].manifest.classes)
        self._resize = self.datasets[0].resize

    def _location(self, split):
        return storage.join(self.root, self.name, split)

    def _has(self, split):
        """True when ``split`` of the dataset has a manifest; an :class:`AccessError` (denied,
        not absent) is raised, naming the root."""
        where = storage.join(self._location(split), MANIFEST_NAME)
        try:
            return storage.exists(where, storage_options=self.storage_options)
        except AccessError as exc:
            raise AccessError(f"root={self.root!r}: access denied reading {where}; pass the "
                              f"token (token=..., or $SHARDSTREAM_TOKEN) or the credentials "
                              f"it needs ({exc})") from None
        except NotFoundError:
            return False

    def _splits(self, val_fraction, train_split=None, val_split=None):
        """(train location, validation location) (see the module doc)."""
        for arg, v in (("train_split", train_split), ("val_split", val_split)):
            if v is not None and (not isinstance(v, str) or not v.strip("/")):
                raise InputError(f"{arg}={v!r}: must be a split name under "
                                 f"{self._location('')}, optionally sliced: 'train[:90%]'")
        if val_fraction is not None and (train_split or val_split) is not None:
            raise InputError(f"val_fraction={val_fraction!r} carves its own splits: leave "
                             f"train_split / val_split out (or val_fraction, and slice: "
                             f"train_split='train[:90%]', val_split='train[90%:]')")
        train = self._location(train_split or "train")
        if val_split is not None:
            return train, self._location(val_split)
        val = next((s for s in VAL_SPLITS if self._has(s)), None)
        if val_fraction is None:
            if val is None:
                raise NotFoundError(
                    f"{self._location('train')} has no validation split next to it (none of "
                    f"{', '.join(VAL_SPLITS)}); pass val_fraction=0.1 to carve one out of "
                    f"train, or stream one: train_split='train[:90%]', "
                    f"val_split='train[90%:]'")
            return train, self._location(val)
        if val is not None:
            raise InputError(f"val_fraction={val_fraction!r}: {self.name} already has a "
                             f"validation split ({self._location(val)}); leave val_fraction "
                             f"out")
        return carve_validation(self.root, self.name, val_fraction, seed=self.seed,
                                storage_options=self.storage_options)

    def _ensure_converted(self, raw):
        """Convert ``name`` into the local folder ``root`` once, when it does not hold it."""
        if self._has("train"):
            return
        if storage.is_remote(self.root):
            raise NotFoundError(
                f"root={self.root!r} holds no converted {self.name} (no "
                f"{storage.join(self._location('train'), MANIFEST_NAME)}); shardstream converts "
                f"automatically only into a local folder: check root= for a typo, or convert "
                f"locally and copy it there (`shardstream convert {self.name} DIR`, then "
                f"`shardstream upload DIR/{self.name} {storage.join(self.root, self.name)}`)")
        if self.name not in DATASETS:
            raise NotFoundError(
                f"{self._location('train')} holds no converted data for {self.name!r}, and "
                f"{self.name!r} is not a dataset shardstream can fetch ({', '.join(DATASETS)}); "
                f"convert it first (`shardstream convert imagefolder DIR {self.root}`) or check "
                f"root=")
        if raw is None and raw_in(DATASETS[self.name], storage.local_path(self.root)):
            raw = storage.local_path(self.root)     # the book's root="../data" layout
        print(f"{self.root} has no converted {self.name}; converting it once "
              f"(`shardstream convert {self.name} {self.root}`) ...")
        convert(self.name, self.root, raw=raw)  # its error says where it looked, what to do

    def text_labels(self, indices):
        """Class names of ``indices`` (an int, a list, a numpy array, a torch or tf tensor)."""
        idx = _indices(indices)
        bad = idx[(idx < 0) | (idx >= len(self.classes))]
        if len(bad):
            raise InputError(f"text_labels: class index {int(bad[0])} is outside 0..."
                             f"{len(self.classes) - 1} ({self.name} has "
                             f"{len(self.classes)} classes)")
        return [self.classes[i] for i in idx]

    def get_dataloader(self, train):
        """The streaming loader of the training split (``train=True``; shuffled, a new epoch
        each pass) or of the validation split (in order). See :class:`EpochLoader`."""
        return EpochLoader(self, bool(train))

    def train_dataloader(self):
        return self.get_dataloader(train=True)

    def val_dataloader(self):
        return self.get_dataloader(train=False)

    def visualize(self, batch, nrows=1, ncols=8, labels=()):
        """Draw ``batch = (X, y)`` as the chapter does: the first ``nrows * ncols`` images with
        their text labels (``labels`` if given). Returns the picture (a PIL image: shown inline
        in Jupyter, ``.save("batch.png")`` writes it)."""
        X, y = batch
        if not len(labels):
            labels = self.text_labels(y)
        return show_images(X, nrows, ncols, titles=labels)


class FashionMNIST(DataModule):
    """Fashion-MNIST (Xiao et al., 2017): 60,000 + 10,000 grey 28x28 images of 10 clothes
    classes. ``FashionMNIST(batch_size=64, resize=(28, 28))`` as in D2L §4.2."""

    def __init__(self, batch_size=64, resize=(28, 28), **kw):
        super().__init__("fashion-mnist", batch_size=batch_size, resize=resize, **kw)


class MNIST(DataModule):
    """MNIST handwritten digits: 60,000 + 10,000 grey 28x28 images, classes '0' .. '9'."""

    def __init__(self, batch_size=64, resize=(28, 28), **kw):
        super().__init__("mnist", batch_size=batch_size, resize=resize, **kw)


class KMNIST(DataModule):
    """Kuzushiji-MNIST: 60,000 + 10,000 grey 28x28 images of 10 cursive Japanese characters."""

    def __init__(self, batch_size=64, resize=(28, 28), **kw):
        super().__init__("kmnist", batch_size=batch_size, resize=resize, **kw)


class CIFAR10(DataModule):
    """CIFAR-10: 50,000 + 10,000 colour 32x32 images of 10 classes (airplane ... truck), the
    dataset of D2L's Kaggle CIFAR-10 chapter. Batches are (N, 3, h, w) in torch, (N, h, w, 3)
    in tf."""

    def __init__(self, batch_size=64, resize=(32, 32), **kw):
        super().__init__("cifar-10", batch_size=batch_size, resize=resize, **kw)


class CIFAR100(DataModule):
    """CIFAR-100: 50,000 + 10,000 colour 32x32 images of 100 classes (the fine labels; for the
    20 superclasses convert with ``--label coarse`` and use ``DataModule("cifar-100-coarse")``)."""

    def __init__(self, batch_size=64, resize=(32, 32), **kw):
        super().__init__("cifar-100", batch_size=batch_size, resize=resize, **kw)
