"""The tf.data adapter: :func:`tf_dataset` and :func:`tf_dataset_fn`.

``num_parallel=P`` runs ``P`` Python generators, generator ``p`` executing the plan's batches
``p, p + P, p + 2P, ...`` (:func:`execute.iter_batches`); a deterministic
``interleave(cycle_length=P, block_length=1)`` takes one batch from each in turn, which is the
plan order again.  Pixels come from the same :func:`resize.to_float` as the torch loader's, so
the batches are bitwise equal to ``torch_loader``'s (after NCHW -> NHWC).
"""

from __future__ import annotations

import os
import queue
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from ..errors import InputError  # noqa: E402
from .execute import iter_batches  # noqa: E402
from .options import LoaderOptions, check_int, loader_options  # noqa: E402
from .resize import to_float  # noqa: E402

#: batches each producer thread prepares ahead of tf.data
QUEUE_DEPTH = 2


def _produce(opts: LoaderOptions, manifest, worker: int, num_workers: int, out, stop) -> None:
    """Thread body: put worker ``worker``'s batches (X float32 (b, h, w, C), y int32 (b,)) into
    the queue ``out``, then ``None``; an exception is put instead and ends the run.  Returns as
    soon as ``stop`` is set (the consumer went away)."""

    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        source = opts.open(manifest)
        plan = opts.plan(manifest)
        for _, images, labels in iter_batches(source, plan, worker, num_workers):
            if not put((to_float(images, opts.resize), labels.astype(np.int32))):
                return
        put(None)
    except BaseException as exc:  # handed to the consumer, which re-raises it
        put(exc)


def _batches(opts: LoaderOptions, manifest, worker: int, num_workers: int):
    """Generator of worker ``worker``'s batches: X float32 (b, h, w, C), y int32 (b,).

    The work (reading, gathering, :func:`to_float`) runs in a Python thread of our own feeding a
    small queue: numpy runs several times slower inside tf.data's own threads (measured; their
    large allocations keep going back to the OS), so tf.data's thread only hands the arrays on."""
    out = queue.Queue(maxsize=QUEUE_DEPTH)
    stop = threading.Event()
    thread = threading.Thread(target=_produce,
                              args=(opts, manifest, worker, num_workers, out, stop),
                              name=f"shardstream-tf-{worker}", daemon=True)
    thread.start()
    try:
        while True:
            item = out.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def _build(opts: LoaderOptions, manifest, num_parallel: int) -> tf.data.Dataset:
    h, w, c = opts.image_size(manifest)
    signature = (tf.TensorSpec((None, h, w, c), tf.float32), tf.TensorSpec((None,), tf.int32))
    total = opts.plan(manifest).num_batches

    def one(p):
        return tf.data.Dataset.from_generator(
            lambda p: _batches(opts, manifest, int(p), num_parallel), args=(p,),
            output_signature=signature)

    if num_parallel == 1:
        ds = one(tf.constant(0, tf.int64))
    else:
        ds = tf.data.Dataset.range(num_parallel).interleave(
            one, cycle_length=num_parallel, block_length=1, num_parallel_calls=num_parallel,
            deterministic=True)
    ds = ds.apply(tf.data.experimental.assert_cardinality(total))
    return ds.prefetch(tf.data.AUTOTUNE)


def to_tf_image(image: np.ndarray) -> tf.Tensor:
    """One float32 image (h, w, C) -> a tf tensor (h, w, C) (the layout of the batches)."""
    return tf.convert_to_tensor(image)


def book_tf_pipeline(images, labels, batch_size, resize) -> tf.data.Dataset:
    """The book's tf.data loader (D2L §4.2, TensorFlow tab), verbatim: ``from_tensor_slices``
    of the whole array (images uint8 (N, H, W[, 1]), labels (N,)) / 255 -> ``batch`` ->
    ``map(resize_with_pad)`` -> ``shuffle(N)``; batches X float32 (b, h, w, 1), y int32 (b,).
    A baseline for the demo and the benchmarks, not used by the loaders."""
    images = images.reshape(images.shape[:3])

    def process(X, y):
        return tf.expand_dims(X, axis=3) / 255, tf.cast(y, dtype="int32")

    def resize_fn(X, y):
        return tf.image.resize_with_pad(X, *resize), y

    return (tf.data.Dataset.from_tensor_slices(process(images, labels)).batch(batch_size)
            .map(resize_fn).shuffle(len(images)))


def tf_dataset(location, *, batch_size, resize=None, shuffle=True, shuffle_buffer=10_000,
               shard_shuffle=True, seed=0, epoch=0, drop_last=False, rank=None, world_size=None,
               start_batch=0, format="auto", num_parallel=1, storage_options=None,
               cache_dir=None, cache_limit=None, token=None) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` of one epoch of the converted split at ``location`` (path or URL).

    Elements are ``(X, y)``: X float32 (b, h, w, C) in [0, 1], y int32 (b,) — bitwise the
    batches of :func:`shardstream.torch_loader` with the same arguments, for every
    ``num_parallel`` (the number of generators run in parallel).  The dataset knows its length
    (``len(ds)``, ``ds.cardinality()``).  Iterating it again gives the same epoch again; build a
    new one with ``epoch=e`` for the next epoch (cheap: only the manifest is read).
    ``start_batch`` skips the first batches of this rank's epoch (resume).  For
    ``tf.distribute`` use :func:`tf_dataset_fn`, which takes rank and world size from the
    input context (``rank`` / ``world_size`` default to 0 / 1 here).  Every argument is
    checked here (InputError / ManifestError)."""
    num_parallel = check_int("num_parallel", num_parallel, 1)
    opts, manifest = loader_options(
        location, batch_size=batch_size, resize=resize, shuffle=shuffle,
        shuffle_buffer=shuffle_buffer, shard_shuffle=shard_shuffle, seed=seed, epoch=epoch,
        drop_last=drop_last, rank=0 if rank is None else rank,
        world_size=1 if world_size is None else world_size,
        start_batch=start_batch, format=format, storage_options=storage_options,
        cache_dir=cache_dir, cache_limit=cache_limit, token=token)
    return _build(opts, manifest, num_parallel)


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
