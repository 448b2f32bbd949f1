"""The tf.data adapter: :func:`tf_dataset` and :func:`tf_dataset_fn`.

The work (reading shards, gathering, :func:`pixels.to_pixels`) is Python and numpy; it crosses
into tf.data in *chunks* of up to :data:`CHUNK` consecutive plan batches -- one
``tf.numpy_function`` call per chunk, split back into batches in the graph
(``from_tensor_slices``).  Per-batch Python inside tf.data costs 0.15-0.4 ms, as much as the
resize itself, so it is paid once per chunk instead.  ``Dataset.from_generator`` is not used:
besides being the slowest way in, its kernel sets glibc's ``M_TRIM_THRESHOLD`` for the whole
process, after which every allocation of 128 KiB or more is a fresh ``mmap`` (measured: 220,000
page faults and 3-4x the CPU time per epoch).

``num_parallel=P`` runs ``P`` streams: the plan's batches are dealt in runs of ``CHUNK``
(:func:`execute.worker_batches` with ``group=CHUNK``), stream ``p`` making the chunks of runs
``p, p + P, ...``; a deterministic ``interleave(cycle_length=P, block_length=CHUNK)`` takes one
run from each in turn, which is the plan order again.  The plan is executed once per pass
(:class:`_Pass`: each shard read once, whatever ``P``), and the streams convert their batches in
parallel (the compiled resize releases the GIL).  Pixels come from the same
:func:`pixels.to_pixels` as the torch loader's, so the batches are bitwise equal to
``torch_loader``'s (after NCHW -> NHWC).

State: every pass over the dataset first draws a fresh *pass id* (a ``numpy_function`` of no
input, run again each time the dataset is iterated); the state of that pass (:class:`_Pass`)
lives in the dataset's :class:`_Passes` under its pass id, and is dropped after the last chunk
of its last stream.  Pass ids count the passes started (0, 1, ...); with
``reshuffle_each_iteration`` pass k is epoch ``epoch + k``.  tf.data gives no signal when an
iterator is dropped, so a pass abandoned half way (``break``, ``take``) keeps its memory (its
shuffle pool, up to the buffer plus one shard) until more than :data:`MAX_OPEN_PASSES` passes
of the dataset are open: the least recently used is then closed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from .. import config

config.quiet_tensorflow()   # before TensorFlow's import: warnings only, no oneDNN notice

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from ..errors import InputError  # noqa: E402
from ..service.client import BatchService  # noqa: E402
from .execute import worker_batches  # noqa: E402
from .interrupt import install as _redeliver_dropped_ctrl_c  # noqa: E402
from .lazyexec import iter_batches  # noqa: E402
from .normalize import normalize_  # noqa: E402
from .options import LoaderOptions, check_int, loader_options  # noqa: E402
from .pixels import to_pixels  # noqa: E402
from .tfexit import counted  # noqa: E402
from .tfexit import register as _stop_at_exit  # noqa: E402

#: consecutive batches handed to tf.data at once (one ``numpy_function`` call)
CHUNK = 8
#: passes over one dataset that may be open (started, not finished) at once; beyond that the
#: least recently used one is closed
MAX_OPEN_PASSES = 4


#: tf.data's model-based autotuning off (prefetch's own buffer sizing stays): with it on, a
#: pass over this pipeline was often held to a fixed 0.64 s (or 1.28 s) on a 2-core machine,
#: whatever the chunk size or num_parallel, its last batches waiting long after the last chunk
#: was made (docs/benchmarks.md, "tf.data autotuning"); the user's own options, set later with
#: ``ds.with_options``, override this
_OPTIONS = tf.data.Options()
_OPTIONS.autotune.enabled = False


def chunk_sizes(batch_sizes: np.ndarray, group: int = CHUNK) -> list[int]:
    """How a stream cuts its batches into chunks: ``batch_sizes`` int (m,) the sizes of the
    batches it executes, in order (runs of ``group`` consecutive plan batches); returns the
    number of batches in each chunk, in order.  A chunk is at most ``group`` batches of one
    run, all of the same size (the epoch's short last batch, if any, is a chunk of its own), so
    that it is one (k, b, h, w, C) array."""
    sizes = []
    for start in range(0, len(batch_sizes), group):
        run = batch_sizes[start:start + group]
        full = int(np.count_nonzero(run == run[0]))
        sizes.append(full)
        if full < len(run):
            sizes.append(len(run) - full)
    return sizes


def _aligned_empty(shape, dtype=np.float32, align: int = 64) -> np.ndarray:
    """An uninitialised array aligned to ``align`` bytes: ``numpy_function`` hands such an array
    to tf.data without copying it (numpy's own are 16-byte aligned and get copied), and the
    batches sliced from it by ``from_tensor_slices`` share it too."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buf = np.empty(nbytes + align, np.uint8)
    start = -buf.ctypes.data % align
    return buf[start:start + nbytes].view(dtype).reshape(shape)


class _Pass:
    """One pass over the dataset: a single execution of its plan (:func:`execute.iter_batches`,
    each shard read once whatever ``num_parallel``), shared by the pass's streams: a stream
    takes the uint8 batches of its chunk (``take``), under the pass's lock, and converts them
    outside it -- in parallel with the other streams, the resize releasing the GIL.  Batches
    executed for another stream wait in ``buffer`` until that stream takes them."""

    def __init__(self, opts: LoaderOptions, manifest):
        self.opts, self.manifest = opts, manifest
        self.batches = None  # the iter_batches generator, started by the first take
        self.buffer: dict = {}  # plan batch index -> (images, labels), executed, not yet taken
        self.closed = False
        self.lock = threading.Lock()

    def take(self, ks) -> list:
        """[(images uint8 (b, H, W, C), labels (b,))] of plan batches ``ks`` (increasing)."""
        with self.lock:
            if self.closed:
                raise RuntimeError(
                    f"this pass over the dataset was closed because more than {MAX_OPEN_PASSES} "
                    f"passes over it were open at once; finish or drop old iterators")
            if self.batches is None:
                self.batches = iter_batches(self.opts.open(self.manifest),
                                            self.opts.plan(self.manifest))
            out = []
            for k in ks:
                while k not in self.buffer:
                    kk, images, labels = next(self.batches)
                    self.buffer[kk] = (images, labels)
                out.append(self.buffer.pop(k))
            return out

    def close(self) -> None:
        """Stop the pass: its plan execution is closed (its read-ahead shard released)."""
        self.closed = True
        if self.batches is not None:
            _close(self.batches)
        self.buffer = {}


def _close(it) -> None:
    """Close an :func:`execute.iter_batches` generator; one running in another thread right now
    is left to be finalised when that call returns (its last reference is then gone)."""
    try:
        it.close()
    except ValueError:  # "generator already executing"
        pass


class _ServicePass:
    """One pass whose chunks come from the batch service: one iterator of chunks per stream
    (:meth:`BatchService.chunks`), made on the stream's first chunk."""

    def __init__(self, service, opts: LoaderOptions, manifest, num_streams: int, chunks):
        self.service, self.opts, self.manifest = service, opts, manifest
        self.num_streams, self.chunks = num_streams, chunks
        self.iterators: dict = {}

    def next_chunk(self, stream: int):
        it = self.iterators.get(stream)
        if it is None:
            sizes = [len(ks) for ks in self.chunks[stream]]
            it = self.iterators[stream] = self.service.chunks(
                self.opts, self.manifest, stream, self.num_streams, sizes, CHUNK)
        return next(it)

    def close(self) -> None:
        for it in self.iterators.values():
            _close(it)
        self.iterators = {}


class _Passes:
    """The open passes of one dataset: pass id -> its :class:`_Pass`.  ``chunks[p][i]``: the
    plan batch indices (int64 (k,)) of chunk ``i`` of stream ``p``.  Pass ids count the passes
    started, from 0; with ``reshuffle`` pass k is epoch ``opts.epoch + k``, else every pass is
    ``opts.epoch``."""

    def __init__(self, opts: LoaderOptions, manifest, num_streams: int, chunks,
                 reshuffle: bool = False, service: BatchService | None = None):
        self.opts, self.manifest = opts, manifest
        self.num_streams, self.chunks = num_streams, chunks
        self.reshuffle = reshuffle
        self.service = service  # the batch service computes the chunks (docs/service.md)
        self.open: OrderedDict = OrderedDict()  # pass id -> _Pass
        self.finished: dict = {}  # pass id -> streams of it that have handed out their last chunk
        self.closed: set = set()
        self.started = 0  # passes started so far; the next pass id
        self.lock = threading.Lock()
        self.stopped = False  # set at interpreter exit (tfexit.stop_all)
        _stop_at_exit(self)
        _redeliver_dropped_ctrl_c()

    def shutdown(self) -> None:
        """Python is exiting: close every open pass; later requests get empty chunks at once
        (an exception would make TensorFlow log a warning per call)."""
        with self.lock:
            self.stopped = True
            states = list(self.open.values())
            self.open.clear()
        for state in states:
            state.close()

    def new_pass(self):
        """A fresh pass id (int64 scalar); closes the least recently used open passes beyond
        :data:`MAX_OPEN_PASSES`."""
        with self.lock:
            if self.stopped:  # Python is exiting: an empty pass (no chunk is read)
                return np.int64(-1)
            pass_id = self.started
            self.started += 1
            idle = sum(1 for ch in self.chunks if not ch)  # streams with no chunks
            if idle == self.num_streams:  # an empty pass: nothing to keep
                return np.int64(pass_id)
            opts = self.opts.with_(epoch=self.opts.epoch + pass_id) if self.reshuffle else self.opts
            self.open[pass_id] = (_Pass(opts, self.manifest) if self.service is None else
                              _ServicePass(self.service, opts, self.manifest, self.num_streams,
                                           self.chunks))
            self.finished[pass_id] = idle
            while len(self.open) > MAX_OPEN_PASSES:
                old, state = self.open.popitem(last=False)
                self.finished.pop(old, None)
                self.closed.add(old)
                state.close()
        return np.int64(pass_id)

    def _stopped_chunk(self):
        """An empty chunk (no batch), handed out once Python is exiting (:meth:`shutdown`)."""
        h, w, c = self.opts.image_size(self.manifest)
        return np.empty((0, 0, h, w, c), self.opts.dtype), np.empty((0, 0), np.int32)

    def _convert(self, batches):
        """[(images uint8 (b, H, W, C), labels (b,))] of k batches of one size -> the chunk:
        X (k, b, h, w, C) (64-byte aligned: tf.data takes it without a copy), y int32 (k, b).
        The k batches' images are converted by one :func:`pixels.to_pixels` call (one
        kernel call, one release of the GIL, per chunk; each image is resized on its own,
        so the bits are those of k separate calls)."""
        k, b = len(batches), len(batches[0][1])
        h, w, c = self.opts.image_size(self.manifest)
        X = _aligned_empty((k, b, h, w, c), self.opts.dtype)
        images = np.concatenate([images for images, _ in batches]) if k > 1 else batches[0][0]
        to_pixels(images, self.opts.resize, self.opts.dtype, out=X.reshape(k * b, h, w, c))
        normalize_(X, self.opts.normalize, -1)
        y = np.empty((k, b), np.int32)
        for j, (_, labels) in enumerate(batches):
            y[j] = labels
        return X, y

    def next_chunk(self, pass_id, stream, index):
        """Chunk ``index`` of stream ``stream`` of pass ``pass_id`` (called in order)."""
        pass_id, stream, index = int(pass_id), int(stream), int(index)
        with self.lock:
            if self.stopped:  # Python is exiting: an empty chunk, quietly (an error is logged)
                return self._stopped_chunk()
            if pass_id in self.closed:
                raise RuntimeError(
                    f"this pass over the dataset was closed because more than {MAX_OPEN_PASSES} "
                    f"passes over it were open at once; finish or drop old iterators")
            state = self.open[pass_id]
            self.open.move_to_end(pass_id)
        if isinstance(state, _ServicePass):
            X, y = state.next_chunk(stream)
        else:
            ks = self.chunks[stream][index]
            try:
                batches = state.take(ks)
            except RuntimeError:
                if self.stopped:  # shut down while this stream waited for the pass
                    return self._stopped_chunk()
                raise
            X, y = self._convert(batches)
        if index == len(self.chunks[stream]) - 1:  # the stream's last chunk
            # the pass ends when all its streams have (not when none is busy: one may not
            # have started)
            with self.lock:
                self.finished[pass_id] = self.finished.get(pass_id, 0) + 1
                if self.finished[pass_id] >= self.num_streams:
                    self.open.pop(pass_id, None)
                    self.finished.pop(pass_id, None)
                    state.close()
        return X, y


def _build(opts: LoaderOptions, manifest, num_parallel: int,
           reshuffle: bool = False, service: BatchService | None = None) -> tf.data.Dataset:
    h, w, c = opts.image_size(manifest)
    plan = opts.plan(manifest)
    total = plan.num_batches
    sizes = np.full(total, plan.batch_size, np.int64)
    if total:
        sizes[-1] = plan.num_ids - (total - 1) * plan.batch_size
    chunks = []  # chunks[p][i]: the plan batches of chunk i of stream p
    for p in range(num_parallel):
        ks = worker_batches(total, p, num_parallel, CHUNK)
        bounds = np.cumsum([0] + chunk_sizes(sizes[ks], CHUNK))
        chunks.append([ks[a:b] for a, b in zip(bounds[:-1], bounds[1:])])
    num_chunks = tf.constant([len(ch) for ch in chunks], tf.int64)
    x_type = tf.uint8 if opts.dtype == "uint8" else tf.float32
    passes = _Passes(opts, manifest, num_parallel, chunks, reshuffle, service)
    next_chunk, new_pass = counted(passes.next_chunk), counted(passes.new_pass)

    def stream(pass_id, p):
        def chunk(i):
            X, y = tf.numpy_function(next_chunk, [pass_id, p, i], (x_type, tf.int32),
                                     name="shardstream_chunk")
            X.set_shape((None, None, h, w, c))
            y.set_shape((None, None))
            return X, y
        return (tf.data.Dataset.range(num_chunks[p]).map(chunk)
                .flat_map(lambda X, y: tf.data.Dataset.from_tensor_slices((X, y))))

    def one_pass(pass_id):
        if num_parallel == 1:
            return stream(pass_id, tf.constant(0, tf.int64))
        return tf.data.Dataset.range(num_parallel).interleave(
            lambda p: stream(pass_id, p), cycle_length=num_parallel, block_length=CHUNK,
            num_parallel_calls=num_parallel, deterministic=True)

    pass_ids = tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).map(
        lambda _: tf.numpy_function(new_pass, [], tf.int64, name="shardstream_pass"))
    ds = pass_ids.flat_map(one_pass)
    ds = ds.apply(tf.data.experimental.assert_cardinality(total))
    ds = ds.prefetch(tf.data.AUTOTUNE).with_options(_OPTIONS)
    ds._shardstream_passes = passes  # for tests and inspection
    ds.classes = tuple(manifest.classes)  # the class names, as the torch loader's .classes
    return ds


def to_tf_image(image: np.ndarray) -> tf.Tensor:
    """One float32 image (h, w, C) -> a tf tensor (h, w, C) (the layout of the batches)."""
    return tf.convert_to_tensor(image)


def tf_dataset(location, *, batch_size, resize=None, shuffle=True, shuffle_buffer=10_000,
               shard_shuffle=True, seed=0, epoch=0, reshuffle_each_iteration=False,
               drop_last=False, rank=None, world_size=None, start_batch=0, format="auto",
               num_parallel=1, storage_options=None, cache_dir=None, cache_limit=None,
               token=None, check_shards=True, service=None,
               normalize=None, dtype="float32") -> tf.data.Dataset:
    """A ``tf.data.Dataset`` of one epoch of the converted split at ``location`` (path or URL).

    Elements are ``(X, y)``: X float32 (b, h, w, C) in [0, 1] (standardised per channel with
    ``normalize=(mean, std)``; uint8 with ``dtype="uint8"``, see :mod:`.pixels`), y int32
    (b,) — bitwise the
    batches of :func:`shardstream.torch_loader` with the same arguments, for every
    ``num_parallel`` (the number of streams run in parallel).  The dataset knows its length
    (``len(ds)``, ``ds.cardinality()``); ``ds.classes`` are the class names (label ``i`` is
    ``ds.classes[i]``; a transformed dataset, ``ds.map(...)``, no longer has them).
    Iterating it again gives the same epoch again (build a new one with ``epoch=e`` for the
    next epoch), unless
    ``reshuffle_each_iteration=True``: then the k-th iteration of this dataset object
    (k = 0, 1, ...; every iteration started counts, ``ds.take(1)`` too) is epoch
    ``epoch + k`` -- what ``model.fit(ds, epochs=n)`` needs, like tf.data's
    ``shuffle(reshuffle_each_iteration=True)`` and torch's ``set_epoch``.
    ``start_batch`` skips the first batches of this rank's epoch (resume; not with
    ``reshuffle_each_iteration``).  For ``tf.distribute`` use :func:`tf_dataset_fn`, which
    takes rank and world size from the input context (``rank`` / ``world_size`` default to
    0 / 1 here).  Every argument is checked here (InputError / ManifestError).
    ``service=[urls]`` (or a :class:`~shardstream.service.BatchService`): the batches are
    computed by ``shardstream serve-batches`` servers, ``location`` names the dataset under
    their root and ``token`` is theirs (docs/service.md); the same batches."""
    num_parallel = check_int("num_parallel", num_parallel, 1)
    if not isinstance(reshuffle_each_iteration, bool):
        raise InputError(f"reshuffle_each_iteration={reshuffle_each_iteration!r}: must be "
                         f"True or False")
    client = None if service is None else BatchService.of(service, token)
    opts, manifest = (loader_options if client is None else client.options)(
        location, batch_size=batch_size, resize=resize, shuffle=shuffle,
        shuffle_buffer=shuffle_buffer, shard_shuffle=shard_shuffle, seed=seed, epoch=epoch,
        drop_last=drop_last, rank=0 if rank is None else rank,
        world_size=1 if world_size is None else world_size,
        start_batch=start_batch, format=format, storage_options=storage_options,
        cache_dir=cache_dir, cache_limit=cache_limit, token=token, check_shards=check_shards,
        normalize=normalize, dtype=dtype)
    if reshuffle_each_iteration and start_batch:
        raise InputError(f"start_batch={start_batch!r} with reshuffle_each_iteration=True: a "
                         f"resumed epoch is shorter than the next ones; resume the rest of epoch "
                         f"{epoch!r} with start_batch, then build the next epochs without it")
    return _build(opts, manifest, num_parallel, reshuffle_each_iteration, client)


def tf_dataset_fn(location, *, global_batch_size, **kwargs):
    """A function ``fn(input_context) -> tf.data.Dataset`` for
    ``strategy.distribute_datasets_from_function(fn)``.

    Input pipeline ``input_context.input_pipeline_id`` of ``num_input_pipelines`` gets rank /
    world size from the context, and batches of
    ``input_context.get_per_replica_batch_size(global_batch_size)``; ``kwargs`` are
    :func:`tf_dataset`'s other arguments (not ``batch_size``, ``rank``, ``world_size``).
    The arguments are checked once here, before the strategy calls ``fn``."""
    for key in ("batch_size", "rank", "world_size"):
        if key in kwargs:
            raise InputError(f"tf_dataset_fn: {key} comes from the input context; pass "
                             f"global_batch_size and leave {key} out")
    # check everything now (with this process as the only pipeline), so errors surface early
    tf_dataset(location, batch_size=global_batch_size, **kwargs)

    def fn(input_context):
        return tf_dataset(location,
                          batch_size=input_context.get_per_replica_batch_size(global_batch_size),
                          rank=input_context.input_pipeline_id,
                          world_size=input_context.num_input_pipelines, **kwargs)

    return fn
