"""Argument checking shared by the torch and tf.data loaders.

Both adapters take the same keyword arguments; :func:`loader_options` checks them all once, at
construction, against the split's manifest (and the existence of its shards), so that a bad
argument is a clear :class:`~shardstream.errors.InputError` / ``ManifestError`` right away, never
a hang or a short epoch later.  The result, :class:`LoaderOptions`, is a small picklable value
that DataLoader workers and tf.data generators rebuild the plan and the shard source from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np

from .. import storage
from ..errors import InputError, ManifestError, NotFoundError, ShardError
from ..shards.manifest import MANIFEST_NAME, Manifest, load_manifest
from .execute import ShardSource, choose_format, open_stream
from .lazyplan import LazyPlan
from .pixels import check_pixel_options
from .resize import check_size
from .slicing import SplitSlice, split_location, view


def check_int(name, value, minimum=0):
    """``value`` as an int if it is an integer (not a bool) >= ``minimum``; else InputError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name}={value!r}: must be an integer >= {minimum}")
    if value < minimum:
        raise InputError(f"{name}={value!r}: must be >= {minimum}")
    return int(value)


def _bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name}={value!r}: must be True or False")
    return bool(value)


def check_resize(resize):
    """``None``, ``n`` or ``(h, w)`` -> ``None`` or ``(h, w)`` of positive ints; else InputError
    (:func:`resize.check_size`)."""
    return None if resize is None else check_size(resize, allow_n=True)


@dataclass(frozen=True)
class LoaderOptions:
    """Checked loader arguments (see :func:`loader_options`); ``format`` is resolved, never
    ``"auto"``, and ``rank`` / ``world_size`` are concrete."""

    location: str
    batch_size: int
    resize: tuple | None
    shuffle: bool
    shuffle_buffer: int
    shard_shuffle: bool
    seed: int
    epoch: int
    drop_last: bool
    rank: int
    world_size: int
    start_batch: int
    format: str
    storage_options: dict | None
    cache_dir: str | None
    cache_limit: int | None
    token: str | None
    check_shards: bool
    normalize: tuple | None = None  # (mean (C,), std (C,)) floats, see normalize.py
    split_slice: SplitSlice | None = None  # the location's slice suffix, see slicing.py
    dtype: str = "float32"  # the batches' pixels: "float32" in [0, 1] or "uint8" (pixels.py)

    @property
    def where(self) -> str:
        """The location as the user wrote it (with its slice suffix, if any)."""
        return self.location + (self.split_slice.text if self.split_slice else "")

    def view(self, manifest):
        """What the plan runs over: ``manifest`` (the split's), or its slice's
        :class:`~shardstream.loaders.slicing.SliceView`."""
        return view(manifest, self.split_slice, self.location)

    def plan(self, manifest: Manifest, epoch: int | None = None, start_batch: int | None = None):
        """The plan of this rank for ``epoch`` (default: ``self.epoch``) from ``start_batch``:
        a :class:`~shardstream.loaders.lazyplan.LazyPlan` (O(S) to make, never O(N))."""
        return LazyPlan(
            self.view(manifest).shard_sizes, batch_size=self.batch_size, seed=self.seed,
            epoch=self.epoch if epoch is None else epoch, shuffle=self.shuffle,
            shard_shuffle=self.shard_shuffle, shuffle_buffer=self.shuffle_buffer,
            drop_last=self.drop_last, rank=self.rank, world_size=self.world_size,
            start_batch=self.start_batch if start_batch is None else start_batch)

    def open(self, manifest: Manifest) -> ShardSource:
        """Open the shards (in this process) through :func:`execute.open_stream`."""
        return open_stream(self.location, format=self.format,
                           storage_options=self.storage_options, cache_dir=self.cache_dir,
                           cache_limit=self.cache_limit, token=self.token, manifest=manifest,
                           check_shards=self.check_shards, split_slice=self.split_slice)

    def image_size(self, manifest: Manifest) -> tuple[int, int, int]:
        """(h, w, C) of the batches' images after resize."""
        H, W, C = manifest.image_shape
        return (*(self.resize or (H, W)), C)

    def with_(self, **changes) -> LoaderOptions:
        """A copy with some fields changed (no re-checking; for epoch/start_batch updates)."""
        return replace(self, **changes)


def check_shards_exist(location: str, manifest: Manifest, fmt: str, storage_options=None) -> None:
    """ManifestError naming the first shard of format ``fmt`` that the manifest lists but the
    location lacks (or that has the wrong size).  Local: every shard is checked (a ``stat``
    each).  Remote: the first and the last shard are checked (one HEAD each); the others are
    verified against the manifest's sha256 when fetched."""
    shards = manifest.shards[fmt]
    local = storage.local_path(location)
    if local is not None:
        for info in shards:
            path = os.path.join(local, info.name)
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                raise ManifestError(
                    f"shard {info.name} listed in {os.path.join(local, MANIFEST_NAME)} is missing "
                    f"from {local}; copy the whole split again or re-run the conversion "
                    f"(`shardstream verify {location}` lists every problem)") from None
            if size != info.bytes:
                raise ShardError(
                    f"shard {path} has {size} bytes, its manifest says {info.bytes}; the copy is "
                    f"incomplete or the shard was changed: copy it again or re-run the conversion")
        return
    for info in {shards[0].name: shards[0], shards[-1].name: shards[-1]}.values():
        url = storage.join(location, info.name)
        try:
            found = storage.exists(url, storage_options=storage_options)
        except NotFoundError as exc:
            raise ManifestError(f"shard {url} listed in the manifest of {location} cannot be "
                                f"read: {exc}") from None
        if not found:
            raise ManifestError(
                f"shard {url} listed in the manifest of {location} does not exist; upload the "
                f"whole split again (`shardstream verify {location}` lists every problem)")


def loader_options(location, *, batch_size, resize=None, shuffle=True, shuffle_buffer=10_000,
                   shard_shuffle=True, seed=0, epoch=0, drop_last=False, rank=0, world_size=1,
                   start_batch=0, format="auto", storage_options=None, cache_dir=None,
                   cache_limit=None, token=None,
                   check_shards=True, normalize=None, dtype="float32",
                   manifest: Manifest | None = None) -> tuple[LoaderOptions, Manifest]:
    """Check every loader argument; returns the checked options and the split's manifest.

    Raises InputError for a bad argument (batch_size < 1, a resize of zero size,
    rank >= world_size, start_batch past the end of the epoch, an unknown format, a dtype other
    than "float32" / "uint8", normalize with dtype="uint8", ...),
    ManifestError / NotFoundError when ``location`` has no readable manifest, and
    ManifestError / ShardError when a shard the manifest lists is missing or truncated.
    ``manifest``: the split's manifest, read elsewhere (the batch service's client asks a
    server for it): then ``location`` is not read here at all, only the arguments are checked.
    ``location`` may end in a split slice (``.../train[:90%]``, :mod:`.slicing`): the options
    then hold the split's location and the slice apart; the manifest returned is the split's."""
    if isinstance(location, os.PathLike):
        location = os.fspath(location)
    if not isinstance(location, str) or not location:
        raise InputError(f"location={location!r}: must be a path or URL string of a converted "
                         f"split (the folder holding {MANIFEST_NAME})")
    location, split_slice = split_location(location)
    batch_size = check_int("batch_size", batch_size, 1)
    resize = check_resize(resize)
    shuffle = _bool("shuffle", shuffle)
    shuffle_buffer = check_int("shuffle_buffer", shuffle_buffer, 0)
    shard_shuffle = _bool("shard_shuffle", shard_shuffle)
    seed = check_int("seed", seed, 0)
    epoch = check_int("epoch", epoch, 0)
    drop_last = _bool("drop_last", drop_last)
    world_size = check_int("world_size", world_size, 1)
    rank = check_int("rank", rank, 0)
    if rank >= world_size:
        raise InputError(f"rank={rank} is not below world_size={world_size}: ranks are "
                         f"0 .. world_size - 1")
    start_batch = check_int("start_batch", start_batch, 0)
    if not isinstance(format, str):
        raise InputError(f"format={format!r}: must be 'auto', 'tar' or 'parquet'")
    if cache_limit is not None:
        cache_limit = check_int("cache_limit", cache_limit, 1)
    check_shards = _bool("check_shards", check_shards)
    dtype, _ = check_pixel_options(dtype, normalize)  # before any read; normalize: below
    if manifest is None:
        storage_options = storage.with_token(location, storage_options, token)
        manifest = load_manifest(location, storage_options=storage_options)
        fmt = choose_format(manifest, format)
        check_shards_exist(location, manifest, fmt, storage_options)
    else:
        fmt = choose_format(manifest, format)
    opts = LoaderOptions(
        location=location, batch_size=batch_size, resize=resize, shuffle=shuffle,
        shuffle_buffer=shuffle_buffer, shard_shuffle=shard_shuffle, seed=seed, epoch=epoch,
        drop_last=drop_last, rank=rank, world_size=world_size, start_batch=0, format=fmt,
        storage_options=storage_options,
        cache_dir=None if cache_dir is None else os.fspath(cache_dir),
        cache_limit=cache_limit, token=token, check_shards=check_shards,
        normalize=check_pixel_options(dtype, normalize, manifest.image_shape[-1])[1],
        dtype=dtype, split_slice=split_slice)
    total = opts.plan(manifest).num_batches
    if total == 0:
        raise InputError(
            f"batch_size={batch_size}, world_size={world_size}, drop_last=True leave no batch for "
            f"rank {rank} from the {opts.view(manifest).num_samples} samples of {opts.where}; use "
            f"a smaller batch_size or drop_last=False")
    if start_batch > total:
        raise InputError(f"start_batch={start_batch}: the epoch has only {total} batches for "
                         f"rank {rank} (valid: 0 .. {total})")
    return opts.with_(start_batch=start_batch), manifest
