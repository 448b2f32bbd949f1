"""``shardstream demo``: the whole system, offline, in under a minute.

1. data: real Fashion-MNIST when it is already on this machine (never downloaded here), else a
   synthetic stand-in in the same raw IDX format (``shardstream synth``);
2. convert it to tar and Parquet shards (``shardstream convert``);
3. stream one epoch through the torch loader and one through the tf.data loader and check that
   every batch is identical (``np.array_equal``, after NCHW -> NHWC), with different worker
   counts and shard formats on the two sides;
4. time the loaders against the book's own pipelines (D2L §4.2: a map-style dataset with a PIL
   resize per image in a ``DataLoader``; ``from_tensor_slices -> batch -> map(resize_with_pad)
   -> shuffle`` in tf.data);
5. draw a batch (``shardstream show``) and say where everything went.
"""

from __future__ import annotations

import os
import time

import numpy as np

from ..book.show import show_command
from ..converters.convert import convert
from ..converters.datasets import DATASETS
from ..converters.fetch import find_raw
from ..converters.idx import read_idx
from ..converters.synth import synthesize
from ..errors import ShardstreamError
from .bench import time_epoch

DATASET = "fashion-mnist"
BATCH = 64
RESIZE = (32, 32)
#: (train, test, samples per shard, batches of the book's torch pipeline to time)
FULL = (60_000, 10_000, 10_000, 100)
QUICK = (1_500, 300, 500, 10)


def _say(text=""):
    print(text, flush=True)


def find_local_raw():
    """The raw Fashion-MNIST files if they are already on this machine, else None (no
    download is tried)."""
    try:
        return find_raw(DATASETS[DATASET], download=False, progress=False)
    except ShardstreamError:
        return None


def prepare_raw(raw_dir, train, test, quick):
    """(raw folder to convert from, description): the real dataset when found locally (not in
    quick mode), else a synthetic stand-in of ``train``/``test`` images written to ``raw_dir``."""
    if not quick:
        found = find_local_raw()
        if found:
            folder = os.path.dirname(found["train"][0])
            return folder, f"real Fashion-MNIST found in {folder}"
    synthesize(DATASET, raw_dir, num_train=train, num_test=test, seed=0, progress=False)
    return raw_dir, (f"synthetic stand-in ({train:,} + {test:,} images in the raw IDX format; "
                     f"no internet needed)")


def compare_epoch(train_location):
    """Stream one epoch of both loaders side by side, differently configured (torch: tar
    shards, 2 DataLoader workers; tf: Parquet shards, 2 parallel readers), and check each batch
    bitwise. Returns (batches, samples); raises AssertionError naming the first differing
    batch."""
    from ..loaders.tf_loader import tf_dataset  # noqa: PLC0415 - the framework only when asked for
    from ..loaders.torch_loader import torch_loader  # noqa: PLC0415 - the framework only when asked for

    args = dict(batch_size=BATCH, resize=RESIZE, seed=0, epoch=0)
    torch_side = torch_loader(train_location, format="tar", num_workers=2, **args)
    tf_side = tf_dataset(train_location, format="parquet", num_parallel=2, **args)
    batches = samples = 0
    for k, ((Xt, yt), (Xf, yf)) in enumerate(zip(torch_side, tf_side, strict=True)):
        xt = Xt.numpy().transpose(0, 2, 3, 1)
        if not (np.array_equal(xt, Xf.numpy()) and np.array_equal(yt.numpy(), yf.numpy())):
            raise AssertionError(f"batch {k} differs between torch and tf.data")
        batches += 1
        samples += len(yt)
    return batches, samples


def time_pipelines(train_location, raw_dir, torch_batches):
    """Seconds per epoch of shardstream's two loaders (one epoch each, workers 0 / one stream;
    tf.data: its second epoch, the first one is reported in the note) and of the book's two
    pipelines over the same images in memory. The book's torch pipeline
    is timed over its first ``torch_batches`` batches and extrapolated to the epoch (it is slow;
    the table says so); the book's tf.data pipeline runs a whole epoch (its shuffle after batch
    holds every batch before the first comes out, so a partial run would not be shorter).
    Returns a list of (pipeline, seconds per epoch, note)."""
    from ..book import tf_baseline, torch_baseline  # noqa: PLC0415 - the framework only when asked for
    from ..loaders import tf_loader, torch_loader  # noqa: PLC0415 - the framework only when asked for

    rows = []
    loader = torch_loader.torch_loader(train_location, batch_size=BATCH, resize=RESIZE, seed=0)
    seconds, n = time_epoch(loader)
    rows.append(("shardstream torch_loader (num_workers=0)", seconds, ""))
    ds = tf_loader.tf_dataset(train_location, batch_size=BATCH, resize=RESIZE, seed=0,
                              reshuffle_each_iteration=True)
    first, _ = time_epoch(ds)   # TensorFlow sets up its iterator machinery on the first pass
    seconds, _ = time_epoch(ds)
    rows.append(("shardstream tf_dataset", seconds, f"2nd epoch; the 1st took {first:.2f} s"))

    images_file, labels_file = find_raw(DATASETS[DATASET], raw_dir=raw_dir, download=False)["train"]
    images, labels = read_idx(images_file), read_idx(labels_file)
    book = torch_baseline.book_torch_pipeline(images, labels, BATCH, RESIZE)
    tic = time.perf_counter()
    done = 0
    for k, (_X, y) in enumerate(book):
        done += len(y)
        if k + 1 == torch_batches:
            break
    seconds = (time.perf_counter() - tic) * n / done
    rows.append(("book torch: PIL resize per image + DataLoader", seconds,
                 f"first {torch_batches} batches, extrapolated"))
    tic = time.perf_counter()  # the book times building the pipeline too (/255 of the array)
    book = tf_baseline.book_tf_pipeline(images, labels, BATCH, RESIZE)
    time_epoch(book)
    seconds = time.perf_counter() - tic
    rows.append(("book tf.data: batch -> map(resize_with_pad) -> shuffle", seconds, ""))
    return rows


def demo(out="shardstream-demo", quick=False):
    """Run the demo into folder ``out`` (created; re-running replaces what it wrote there).

    ``quick=True`` uses a small stand-in (1,500 + 300 images) so that it takes seconds.
    Returns a dict: ``raw``, ``shards``, ``picture`` (paths), ``identical_batches`` (count),
    ``timings`` (list of (pipeline, seconds per epoch, note)).
    """
    started = time.perf_counter()
    train, test, shard_size, torch_batches = QUICK if quick else FULL
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    raw_dir = os.path.join(out, "raw")
    shards = os.path.join(out, "shards")

    _say(f"1/5 data: {DATASET}")
    raw, what = prepare_raw(raw_dir, train, test, quick)
    _say(f"    {what}")

    _say("2/5 converting to tar + Parquet shards")
    tic = time.perf_counter()
    manifests = convert(DATASET, shards, raw=raw, formats=("tar", "parquet"),
                        shard_size=shard_size, encoding="npy", overwrite=True, progress=False)
    for m in manifests:
        _say(f"    {m.split}: {m.num_samples:,} samples, {len(m.shard_sizes)} shard(s) per format")
    _say(f"    ({time.perf_counter() - tic:.1f} s)")
    train_location = os.path.join(shards, DATASET, "train")

    _say(f"3/5 one epoch through torch (tar, 2 workers) and tf.data (Parquet, 2 readers), "
         f"batch {BATCH}, resize {RESIZE[0]}x{RESIZE[1]}")
    batches, samples = compare_epoch(train_location)
    _say(f"    all {batches} batches ({samples:,} samples) identical: torch == tf.data, "
         f"bitwise (np.array_equal after NCHW -> NHWC)")

    _say("4/5 seconds per epoch (one pass over the training set, `for X, y in loader: continue`)")
    timings = time_pipelines(train_location, raw, torch_batches)
    ours = min(s for name, s, _ in timings[:2])
    width = max(len(name) for name, _, _ in timings)
    _say(f"    {'pipeline'.ljust(width)}  {'s/epoch':>10}  {'vs ours':>7}")
    for name, seconds, note in timings:
        ratio = f"{seconds / ours:6.1f}x" if ours > 0 else ""
        _say(f"    {name.ljust(width)}  {seconds:8.3f} s  {ratio}  {note}".rstrip())

    _say("5/5 picture of the first test batch")
    picture = os.path.join(out, "batch.png")
    show_command(os.path.join(shards, DATASET, "test"), out=picture, rows=2, cols=8)

    _say("")
    _say(f"done in {time.perf_counter() - started:.0f} s. Where everything went:")
    _say(f"    raw data       {raw}")
    _say(f"    shards         {shards}/{DATASET}/{{train,test}}/  "
         f"(manifest.json, *.tar, *.parquet)")
    _say(f"    picture        {picture}")
    _say(f"next: shardstream info {train_location}")
    _say(f"      shardstream bench {train_location} --batch-size 1,64 --profile")
    return dict(raw=raw, shards=shards, picture=picture, identical_batches=batches,
                timings=timings)
