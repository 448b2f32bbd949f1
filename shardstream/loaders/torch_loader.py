"""The PyTorch adapter: :func:`torch_loader` -> :class:`ShardLoader`.

It executes the plan (:mod:`.plan`, :mod:`.execute`) and yields its batches in plan order: the
same for every ``num_workers`` and ``worker_mode``, and the same as ``tf_dataset``'s.

``worker_mode="thread"`` (the default): the workers are threads of this process
(:func:`_thread_batches`): one thread executes the plan (reading each shard once) and
``num_workers`` threads convert its batches (the compiled resize, which releases the GIL), in
parallel with each other and with your loop, with no pickling, no inter-process copies and no
process start-up (the way SPDL and Grain run pipelines).  ``worker_mode="process"``:
DataLoader worker processes run an ``IterableDataset`` (:class:`ShardDataset`), each
executing runs of the plan and sending each run to the main process as one item -- for code of
your own that holds the GIL (e.g. a Python transform around ``loader.dataset``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import queue
import threading
import warnings

import numpy as np
import torch
import torch.utils.data

from ..errors import InputError
from ..service.client import BatchService
from . import interrupt
from .execute import track
from .lazyexec import iter_batches
from .normalize import normalize_
from .options import LoaderOptions, check_int, loader_options
from .pixels import compiled_uint8, converter
from .resize import compiled_kernel

#: with process workers, each worker executes runs of this many consecutive batches (worker w
#: executes runs w, w + W, ...), and collected round-robin they are the plan order again; a run
#: is sent as one item: one inter-process transfer per run instead of per batch, which costs
#: ~1 ms each on a small machine
WORKER_GROUP = 8
#: the values of ``worker_mode``
WORKER_MODES = ("thread", "process")


def _default_rank_world(rank, world_size):
    """rank / world_size: the given values, else torch.distributed's when it is initialised,
    else 0 / 1."""
    dist = torch.distributed
    initialised = dist.is_available() and dist.is_initialized()
    if world_size is None:
        world_size = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    return rank, world_size


def to_torch(images: np.ndarray, labels: np.ndarray, convert, normalize=None):
    """uint8 images (b, H, W, C), labels (b,) -> X float32 tensor (b, C, h, w) in [0, 1]
    (contiguous; standardised with ``normalize``, see :mod:`.normalize`) or, with
    ``dtype="uint8"``, uint8 (b, C, h, w); y int64 tensor (b,).  ``convert``: the loader's
    :func:`pixels.converter` (``channels_first=True``), i.e. :func:`pixels.to_pixels`."""
    X = torch.from_numpy(normalize_(convert(images), normalize, 1))
    y = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
    return X, y


def to_torch_image(image: np.ndarray):
    """One float32 image (h, w, C) -> a contiguous torch tensor (C, h, w) (the layout of the
    loader's batches)."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


class ShardDataset(torch.utils.data.IterableDataset):
    """One epoch of one rank, from batch ``opts.start_batch``; yields ``(X, y)`` batches.

    In the main process it yields every batch ``(X, y)``.  In DataLoader worker ``w`` of ``W``
    (``torch.utils.data.get_worker_info``) it executes only the runs ``w, w + W, ...`` of
    :data:`WORKER_GROUP` consecutive batches and yields each run as one item
    ``(X, y, sizes)`` (the run's batches concatenated); :class:`ShardLoader` splits them.
    Picklable:
    holds the checked options, the manifest and the shard source (whose fetcher is safe to
    fork or pickle into workers), or opens the source on first use."""

    def __init__(self, opts: LoaderOptions, manifest, source=None):
        super().__init__()
        self.opts = opts
        self.manifest = manifest
        self._source = source

    def source(self):
        """The shard source of this process (opened on first use)."""
        if self._source is None:
            self._source = self.opts.open(self.manifest)
        return self._source

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        plan = self.opts.plan(self.manifest)
        convert = converter(self.opts.resize, self.opts.dtype, channels_first=True)
        if info is None:
            for _, images, labels in iter_batches(self.source(), plan):
                yield to_torch(images, labels, convert, self.opts.normalize)
            return
        # a worker: runs of WORKER_GROUP consecutive batches, each run sent as one item
        run = []
        for k, images, labels in iter_batches(self.source(), plan, info.id, info.num_workers,
                                              group=WORKER_GROUP):
            run.append(to_torch(images, labels, convert, self.opts.normalize))
            if len(run) == WORKER_GROUP or k == plan.num_batches - 1:
                yield _join(run)
                run = []
        if run:
            yield _join(run)


def _join(run):
    """[(X (b_i, C, h, w), y (b_i,))] -> one item (X (sum b_i, C, h, w), y (sum b_i,), sizes);
    :func:`_split` gives the batches back, as contiguous views."""
    return torch.cat([X for X, _ in run]), torch.cat([y for _, y in run]), [len(y) for _, y in run]


_split = lambda item: zip(torch.split(item[0], item[2]), torch.split(item[1], item[2]))  # noqa: E731


def _can_pin() -> bool:
    """Whether pinned memory can be used here (an accelerator is available)."""
    accelerator = getattr(torch, "accelerator", None)
    return accelerator.is_available() if accelerator is not None else torch.cuda.is_available()


def _convert_run(run, opts: LoaderOptions):
    """[(images, labels)] -> [(X, y)] (:func:`to_torch` of each, with ``opts``' resize,
    normalize and dtype)."""
    convert = converter(opts.resize, opts.dtype, channels_first=True)
    return [to_torch(images, labels, convert, opts.normalize) for images, labels in run]


def _thread_batches(opts: LoaderOptions, manifest, source, num_workers: int, prefetch: int):
    """The batches ``(X, y)`` of the plan of ``opts`` in plan order, made by threads: one
    thread executes the plan (:func:`execute.iter_batches`: each shard read once, by its
    read-ahead thread) and hands runs of :data:`WORKER_GROUP` batches (uint8 pixels) to a pool
    of ``num_workers`` threads that convert them (:func:`to_torch`: the compiled resize, GIL
    released); the consumer takes the runs in order, at most ``num_workers * prefetch`` runs
    ahead.  A run, not a batch, per hand-over: each costs a thread wake-up, which on a busy
    machine can take longer than converting a batch.  Stopping early (``close``) stops the
    threads; an error in any of them is raised here."""
    stop = threading.Event()
    ahead = queue.Queue(maxsize=max(1, num_workers * prefetch))
    pool = concurrent.futures.ThreadPoolExecutor(num_workers,
                                                 thread_name_prefix="shardstream-worker")

    def put(item) -> bool:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                ahead.put(item, timeout=0.1)
                return True
        return False

    def produce():
        try:
            batches = iter_batches(source, opts.plan(manifest))
            run = []
            try:
                for _, images, labels in batches:
                    run.append((images, labels))
                    if len(run) == WORKER_GROUP:
                        if not put(pool.submit(_convert_run, run, opts)):
                            return
                        run = []
            finally:
                batches.close()
            if run and not put(pool.submit(_convert_run, run, opts)):
                return
            put(None)
        except BaseException as exc:  # re-raised in the consumer
            put(exc)

    producer = track(threading.Thread(target=produce, name="shardstream-plan", daemon=True))
    producer.start()
    try:
        while True:
            item = ahead.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield from item.result()
    finally:
        stop.set()
        producer.join()
        pool.shutdown(wait=True, cancel_futures=True)


class ShardLoader:
    """Iterable of ``(X, y)`` batches: X float32 (b, C, h, w) in [0, 1] (uint8 with
    ``dtype="uint8"``), y int64 (b,).

    ``len(loader)``: batches the next iteration yields (this rank's epoch from the current
    start);
    ``set_epoch(e)``: switch to epoch ``e`` (a new order) from its first batch;
    ``state_dict()`` / ``load_state_dict(sd)``: the resume point, plain ints
    (seed, epoch, next batch index, plus the arguments a resume must not change).
    ``.manifest``: the split's manifest; ``.num_samples``: the epoch's samples (of the split,
    or of its slice); ``.classes``: its class names; ``.dataset``: the
    ``IterableDataset`` (current epoch); ``repr(loader)`` shows the location, batch size,
    resize, epoch, rank / world size, workers and length.

    The state counts batches handed to you.  After a full pass it says the epoch is finished
    (``batch == total``); iterating again without ``set_epoch`` repeats the same epoch from its
    start, as a DataLoader with a ``DistributedSampler`` does."""

    def __init__(self, opts: LoaderOptions, manifest, *, num_workers=0, pin_memory=False,
                 prefetch_factor=None, worker_mode="thread",
                 service: BatchService | None = None):
        self._opts = opts
        self.manifest = manifest
        self.num_workers = num_workers
        self.worker_mode = worker_mode
        self.pin_memory = pin_memory
        self.prefetch_factor = prefetch_factor
        self._total = opts.plan(manifest, start_batch=0).num_batches
        self._batch = opts.start_batch
        self._service = service  # the batch service computes the batches (docs/service.md)
        self._source = None if service else opts.open(manifest)  # shared with (forked) workers

    @property
    def epoch(self) -> int:
        return self._opts.epoch

    @property
    def classes(self) -> tuple:
        """The class names (label ``i`` is ``classes[i]``), from the manifest."""
        return tuple(self.manifest.classes)

    @property
    def num_samples(self) -> int:
        """The samples of an epoch (of the split, or of its slice: ``"train[:90%]"``)."""
        return int(self._opts.view(self.manifest).num_samples)

    _first_sample = property(lambda self: int(getattr(self._opts.view(self.manifest), "lo", 0)))

    def __repr__(self) -> str:
        o = self._opts
        workers = f"{self.num_workers} ({self.worker_mode})" if self.num_workers else "0"
        source = " via the batch service" if self._service is not None else ""
        return (f"ShardLoader({o.where!r}{source}, {self.num_samples} samples, "
                f"batch_size={o.batch_size}, resize={o.resize}, "
                f"{'' if o.dtype == 'float32' else f'dtype={o.dtype!r}, '}epoch={o.epoch}, "
                f"rank={o.rank}/world_size={o.world_size}, num_workers={workers}, "
                f"len={len(self)})")

    @property
    def dataset(self) -> ShardDataset:
        """The IterableDataset for the current epoch from the current start batch."""
        return ShardDataset(self._opts.with_(start_batch=self._batch), self.manifest,
                            self._source)

    def __len__(self) -> int:
        """Batches the next iteration yields: the rest of the epoch from the resume point, or the
        whole epoch once it has been finished (iterating again repeats it)."""
        return self._total if self._batch >= self._total else self._total - self._batch

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s order from its first batch on the next iteration."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise InputError(f"set_epoch({epoch!r}): the epoch must be an integer >= 0")
        self._opts = self._opts.with_(epoch=int(epoch))
        self._batch = 0

    def state_dict(self) -> dict:
        """Plain ints: ``seed, epoch, batch`` (the next batch to hand out), ``batch_size,
        world_size, rank, num_samples, first_sample`` (a slice's start, else 0; checked)."""
        o = self._opts
        return {"seed": o.seed, "epoch": o.epoch, "batch": self._batch,
                "batch_size": o.batch_size, "world_size": o.world_size, "rank": o.rank,
                "num_samples": self.num_samples, "first_sample": self._first_sample}

    def load_state_dict(self, state: dict) -> None:
        """Resume from ``state`` (from :meth:`state_dict`): the next iteration starts at batch
        ``state["batch"]`` of epoch ``state["epoch"]`` with seed ``state["seed"]``."""
        if not isinstance(state, dict) or not {"seed", "epoch", "batch"} <= set(state):
            raise InputError("load_state_dict: expected the dict from ShardLoader.state_dict() "
                             "with keys seed, epoch, batch")
        o = self._opts
        for key, mine in (("batch_size", o.batch_size), ("world_size", o.world_size),
                          ("num_samples", self.num_samples), ("first_sample", self._first_sample)):
            if key in state and state[key] != mine:
                raise InputError(f"load_state_dict: the state was saved with {key}={state[key]}, "
                                 f"this loader has {key}={mine}; batch indices would not match — "
                                 f"build the loader with the same arguments")
        for key in ("seed", "epoch", "batch"):
            v = state[key]
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise InputError(f"load_state_dict: {key}={v!r} must be an integer >= 0")
        if state["batch"] > self._total:
            raise InputError(f"load_state_dict: batch={state['batch']} is past the end of the "
                             f"epoch ({self._total} batches)")
        self._opts = o.with_(seed=int(state["seed"]), epoch=int(state["epoch"]))
        self._batch = int(state["batch"])

    def __iter__(self):
        if self._batch >= self._total:
            self._batch = 0
        if self._service is not None:
            yield from self._from_service()
            return
        pin = self.pin_memory and _can_pin()
        if self.pin_memory and not pin:  # as the DataLoader does
            warnings.warn("pin_memory=True but no accelerator is available: the batches are "
                          "not pinned", UserWarning, stacklevel=2)
        if self.num_workers == 0:  # no DataLoader: it would only add ~40 us per batch
            batches = iter(self.dataset)
        elif self.worker_mode == "thread":
            batches = _thread_batches(self._opts.with_(start_batch=self._batch), self.manifest,
                                      self._source, self.num_workers, self.prefetch_factor or 2)
        else:
            extra = {}
            if self.prefetch_factor is not None:
                extra["prefetch_factor"] = self.prefetch_factor
            loader = torch.utils.data.DataLoader(
                self.dataset, batch_size=None, num_workers=self.num_workers,
                persistent_workers=False, pin_memory=pin, **extra)
            batches = interrupt.unlocking(iter(loader), _split)  # (Ctrl-C: see interrupt.py)
            pin = False  # the DataLoader pins
            interrupt.unlock_queues_at_exit()
        try:
            for X, y in batches:
                if pin:
                    X, y = X.pin_memory(), y.pin_memory()
                self._batch += 1
                yield X, y
        finally:
            batches.close()

    def _from_service(self):
        """The batches from the batch service: tensors on the received buffers (no copy)."""
        opts = self._opts.with_(start_batch=self._batch)
        for x, y in self._service.batches(opts, self.manifest, layout="nchw"):
            X, y = torch.from_numpy(x), torch.from_numpy(y)
            if self.pin_memory and torch.cuda.is_available():
                X, y = X.pin_memory(), y.pin_memory()
            self._batch += 1
            yield X, y


def torch_loader(location, *, batch_size, resize=None, shuffle=True, shuffle_buffer=10_000,
                 shard_shuffle=True, seed=0, epoch=0, drop_last=False, rank=None,
                 world_size=None, start_batch=0, format="auto", num_workers=0,
                 storage_options=None, cache_dir=None, cache_limit=None, token=None,
                 pin_memory=False, prefetch_factor=None, worker_mode="thread",
                 check_shards=True, service=None, normalize=None,
                 dtype="float32") -> ShardLoader:
    """A PyTorch loader over the converted split at ``location`` (path or URL).

    Yields ``(X, y)``: X float32 (b, C, h, w) in [0, 1] (``resize=(h, w)`` or the stored size), y
    int64 (b,); ``normalize=(mean, std)`` standardises X per channel (:mod:`.normalize`);
    ``dtype="uint8"``: X uint8 (b, C, h, w), the stored values (resized: rounded, see
    :mod:`.pixels`), not with ``normalize``. The order is the plan's (``docs/design.md``): the same
    for every ``num_workers``, bitwise the same batches as :func:`shardstream.tf_dataset` with the
    same arguments. ``rank`` / ``world_size`` default to ``torch.distributed``'s when it is
    initialised, else 0 / 1; every rank gets the same number of batches. ``start_batch`` skips the
    first batches of this rank's epoch (resume). ``worker_mode``: ``"thread"`` (default: workers are
    threads of this process; the per-batch work releases the GIL) or ``"process"`` (DataLoader
    worker processes); the batches are the same either way. ``check_shards=False`` uses the shard
    files without the once-per-version sha256 check (docs/storage.md). ``service=["http://in1:9100",
    ...]`` (or a :class:`~shardstream.service.BatchService`): the batches are computed by
    ``shardstream serve-batches`` servers, ``location`` names the dataset under their root and
    ``token`` is theirs (docs/service.md); the same batches. Every argument is checked here: a bad
    one raises :class:`~shardstream.errors.InputError` (or ``ManifestError`` for a missing manifest
    or shard) before any data is read."""
    num_workers = check_int("num_workers", num_workers, 0)
    if worker_mode not in WORKER_MODES:
        raise InputError(f"worker_mode={worker_mode!r}: must be one of {WORKER_MODES}")
    if prefetch_factor is not None:
        prefetch_factor = check_int("prefetch_factor", prefetch_factor, 1)
        if num_workers == 0:
            raise InputError("prefetch_factor needs num_workers > 0 (it is how many batches "
                             "each worker prepares ahead)")
    rank, world_size = _default_rank_world(rank, world_size)
    client = None if service is None else BatchService.of(service, token)
    if client is not None and num_workers:
        raise InputError("num_workers with service=: the batch servers compute the batches; "
                         "leave num_workers=0")
    opts, manifest = (loader_options if client is None else client.options)(
        location, batch_size=batch_size, resize=resize, shuffle=shuffle,
        shuffle_buffer=shuffle_buffer, shard_shuffle=shard_shuffle, seed=seed, epoch=epoch,
        drop_last=drop_last, rank=rank, world_size=world_size, start_batch=start_batch,
        format=format, storage_options=storage_options, cache_dir=cache_dir,
        cache_limit=cache_limit, token=token, check_shards=check_shards,
        normalize=normalize, dtype=dtype)
    # load (or rule out, warning once) the resize kernel before workers start
    (compiled_uint8 if opts.dtype == "uint8" else compiled_kernel)()
    interrupt.install()
    return ShardLoader(opts, manifest, num_workers=num_workers, pin_memory=bool(pin_memory),
                       prefetch_factor=prefetch_factor, worker_mode=worker_mode,
                       service=client)
