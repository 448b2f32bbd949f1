"""Issues 3 and 12: one pass over a 60,000-image training set, batch 64, resize 32x32.

Compares, in one run and on one machine:

- ``F`` (the floor, issue 12; independent of our code): the uint8 array in RAM, gather of 64
  random rows, two ``np.matmul`` with the PIL weight matrices (:func:`resize_weights`), / 255;
  every row's time is also printed as a multiple of F;
- ``gather + to_float``: the same gather, then :func:`to_float` (the compiled kernel) or
  :func:`to_float_reference` (numpy);
- ``T`` (TensorFlow's own floor): ``for X, y in ds`` over a ``from_tensor_slices`` dataset of
  the epoch's batches, ready in RAM (no reading, no resize);
- ``ours torch``: :func:`shardstream.torch_loader` (num_workers 0, 2, 4 thread workers -- the
  default -- and 2 process workers; batch_size 1);
- ``ours tf p1/p2``: :func:`shardstream.tf_dataset` (num_parallel 1 and 2), built once with
  ``reshuffle_each_iteration=True`` (each pass the next epoch), and also built anew each epoch;
- ``book torch``: D2L's PyTorch pipeline — a map-style dataset that turns each image into a PIL
  image, ``resize((32, 32), BILINEAR)`` and to-tensor (exactly what torchvision's
  ``Resize`` + ``ToTensor`` do; torchvision itself is not installed), through
  ``DataLoader(shuffle=True)``;
- ``book tf``: D2L's tf.data pipeline — ``from_tensor_slices -> batch -> map(resize_with_pad)
  -> shuffle``;
- PNG shards: ours (torch w0/w2) against the stock webdataset pipeline
  (``WebDataset -> shuffle -> decode("pil") -> resize -> batched``) at the same worker counts.

Run: ``.venv/bin/python benchmarks/bench_loaders.py [--data DIR] [--repeat 5]``.  The stand-in
data (smooth synthetic 28x28 "garments", npy and PNG shards of 10,000) is written under
``--data`` once.  Prints a markdown table (the best of ``--repeat`` epochs of each pipeline,
after one warm-up epoch, timed round-robin) for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchdoc import machine  # noqa: E402

from shardstream.loaders.plan import plan_epoch  # noqa: E402
from shardstream.loaders.resize import resize_weights, to_float, to_float_reference  # noqa: E402
from shardstream.shards import shard_name, write_shard  # noqa: E402
from shardstream.shards.manifest import MANIFEST_NAME, Manifest, ShardInfo  # noqa: E402

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot")
BATCH = 64
RESIZE = (32, 32)
F_ROW = "F: uint8 in RAM, gather 64 rows, two np.matmul with the PIL weights, / 255"
T_ROW = "T: tf.data floor, from_tensor_slices over the epoch's ready float32 batches, iterated"


# ---------------------------------------------------------------------------------------------
# data


def garments(n: int, seed: int = 0, chunk: int = 10_000):
    """Stand-in Fashion-MNIST: images uint8 (n, 28, 28, 1) — a dark background and a smooth,
    textured ellipse per image (so PNG compresses as it does on the real data) — and labels
    int64 (n,)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    out = np.empty((n, 28, 28, 1), np.uint8)
    yy, xx = np.mgrid[0:28, 0:28].astype(np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        cy, cx = (rng.uniform(11, 17, (2, m, 1, 1))).astype(np.float32)
        ry, rx = (rng.uniform(5, 13, (2, m, 1, 1))).astype(np.float32)
        level = rng.uniform(80, 230, (m, 1, 1)).astype(np.float32)
        d = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        texture = 20 * np.sin(xx * rng.uniform(0.3, 1.2, (m, 1, 1)).astype(np.float32))
        img = np.where(d < 1, level * (1 - 0.4 * d) + texture, 0)
        out[start:start + m, ..., 0] = np.clip(img, 0, 255).astype(np.uint8)
    return out, labels


def write_split(folder: str, chunks, *, encoding: str, formats=("tar", "parquet"),
                dataset="bench", split="train") -> None:
    """Shards + manifest through the formats module (the converters' on-disk layout), one shard
    per ``(images (n, H, W, C) uint8, labels (n,))`` in ``chunks``; nothing is done when
    ``folder`` already holds a manifest."""
    if os.path.exists(os.path.join(folder, MANIFEST_NAME)):
        return
    os.makedirs(folder, exist_ok=True)
    shards = {fmt: [] for fmt in formats}
    start, counts, shape = 0, np.zeros(len(CLASSES), np.int64), None
    for index, (images, labels) in enumerate(chunks):
        shape = tuple(images.shape[1:])
        for fmt in formats:
            buf = io.BytesIO()
            write_shard(fmt, buf, start, images, labels, encoding, CLASSES)
            data = buf.getvalue()
            name = shard_name(split, index, fmt)
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)
            shards[fmt].append(ShardInfo(name, len(labels), len(data),
                                         hashlib.sha256(data).hexdigest()))
        start += len(labels)
        counts += np.bincount(labels, minlength=len(CLASSES))
    manifest = Manifest(dataset=dataset, split=split, num_samples=start, image_shape=shape,
                        encoding=encoding, classes=CLASSES,
                        label_counts=tuple(int(c) for c in counts),
                        shards={f: tuple(v) for f, v in shards.items()},
                        source={"synthetic": True, "generator": "benchmarks"})
    with open(os.path.join(folder, MANIFEST_NAME), "w") as f:
        f.write(manifest.to_json())


def in_shards(images, labels, shard_size=10_000):
    """The chunks of ``images`` / ``labels`` for :func:`write_split`."""
    for start in range(0, len(labels), shard_size):
        yield images[start:start + shard_size], labels[start:start + shard_size]


# ---------------------------------------------------------------------------------------------
# the pipelines; each returns a function running one epoch


def floor_matmul(images, labels):
    """F: gather 64 random rows of the uint8 array, resize them with two ``np.matmul`` by the
    PIL BILINEAR weight matrices (height (32, 28) @ image @ width (28, 32)), divide by 255."""
    flat = images.reshape(images.shape[:3])
    height = resize_weights(flat.shape[1], RESIZE[0])
    width_t = np.ascontiguousarray(resize_weights(flat.shape[2], RESIZE[1]).T)

    def run(epoch):
        order = np.random.default_rng(epoch).permutation(len(labels))
        for start in range(0, len(order), BATCH):
            ids = order[start:start + BATCH]
            np.matmul(np.matmul(height, flat[ids]), width_t) / np.float32(255), labels[ids]
    return run


def floor(images, labels, fn=to_float):
    """The plan's batches gathered from the uint8 array in RAM and converted by ``fn``."""
    sizes = np.full(len(labels) // 10_000, 10_000)

    def run(epoch):
        plan = plan_epoch(sizes, batch_size=BATCH, seed=0, epoch=epoch)
        for k in range(plan.num_batches):
            ids = plan.batch(k)
            fn(images[ids], RESIZE), labels[ids]
    return run


def tf_floor(num_batches, function=False):
    """T (the floor TensorFlow itself sets on ``for X, y in ds``): a ``tf.data.Dataset`` of
    ``num_batches`` ready batches, float32 (64, 32, 32, 1) and int32 (64,), already in RAM
    (``from_tensor_slices`` over one stacked array), built once and iterated each epoch: no
    reading, no resize, only tf.data's per-element cost and its Python in the loop.
    ``function=True``: T', the same dataset iterated inside a ``tf.function``
    (:func:`in_function`)."""
    import tensorflow as tf

    X = np.full((num_batches, BATCH, *RESIZE, 1), 0.5, np.float32)
    y = np.zeros((num_batches, BATCH), np.int32)
    ds = tf.data.Dataset.from_tensor_slices((X, y))
    del X, y
    if function:  # consumed inside a tf.function, as model.fit does (in_function)
        count = in_function()
        return lambda epoch: count(ds)

    def run(epoch):
        for _X, _y in ds:
            pass
    return run


def ours_torch(location, workers, fmt="auto", mode="thread", batch_size=BATCH):
    import shardstream as ss

    loader = ss.torch_loader(location, batch_size=batch_size, resize=RESIZE,
                             num_workers=workers, format=fmt, worker_mode=mode)

    def run(epoch):
        loader.set_epoch(epoch)
        for _X, _y in loader:
            pass
    return run


def in_function():
    """``count(ds)``: iterates ``ds`` inside a ``tf.function``, the way a Keras training step
    takes its batches (``next(iterator)`` in the graph): no Python per element, so TensorFlow
    holds no GIL while it takes elements -- not cheaper per element on its own (T' is no faster
    than T), but our chunks' Python no longer waits for the consumer's."""
    import tensorflow as tf

    @tf.function
    def count(ds):
        n = tf.constant(0, tf.int64)
        for _X, _y in ds:
            n += 1
        return n
    return count


def ours_tf(location, parallel, fmt="auto", function=False):
    """One :func:`shardstream.tf_dataset` with ``reshuffle_each_iteration=True``: each pass
    is the next epoch (as ``model.fit(ds, epochs=n)`` uses it; built once, like the torch
    loader with ``set_epoch``); iterated by a Python ``for`` loop, or with ``function=True``
    inside a ``tf.function`` (:func:`in_function`, as a Keras training step takes batches)."""
    import shardstream as ss

    ds = ss.tf_dataset(location, batch_size=BATCH, resize=RESIZE, num_parallel=parallel,
                       format=fmt, reshuffle_each_iteration=True)
    if function:
        count = in_function()
        return lambda epoch: count(ds)

    def run(epoch):
        for _X, _y in ds:
            pass
    return run


def ours_tf_rebuilt(location):
    """A new :func:`shardstream.tf_dataset` built for every epoch (``epoch=e``): the same
    passes plus building the pipeline (tracing its functions) each time."""
    import shardstream as ss

    def run(epoch):
        for _X, _y in ss.tf_dataset(location, batch_size=BATCH, resize=RESIZE, epoch=epoch):
            pass
    return run


def book_torch(images, labels, workers, batch_size=BATCH):
    """D2L §4.2 (PyTorch): :func:`shardstream.book.torch_baseline.book_torch_pipeline`
    (torchvision's FashionMNIST with Compose([Resize(32), ToTensor()]) rebuilt) through
    DataLoader(batch_size, shuffle=True, num_workers=workers)."""
    from shardstream.book.torch_baseline import book_torch_pipeline

    loader = book_torch_pipeline(images, labels, batch_size, RESIZE, num_workers=workers)

    def run(epoch):
        for _X, _y in loader:
            pass
    return run


def book_tf(images, labels, reuse=False):
    """D2L §4.2 (TensorFlow): :func:`shardstream.book.tf_baseline.book_tf_pipeline`
    (from_tensor_slices -> batch -> map(resize_with_pad) -> shuffle).  The book times
    ``for X, y in data.train_dataloader()``, which builds the pipeline again each epoch
    (``reuse=False``); ``reuse=True`` builds it once and iterates the same object."""
    from shardstream.book.tf_baseline import book_tf_pipeline

    built = book_tf_pipeline(images, labels, BATCH, RESIZE) if reuse else None

    def run(epoch):
        ds = built if reuse else book_tf_pipeline(images, labels, BATCH, RESIZE)
        for _X, _y in ds:
            pass
    return run


def stock_webdataset(location, workers):
    """The stock webdataset pipeline over the PNG tar shards: WebDataset -> shuffle(1000) ->
    decode("pil") -> to_tuple -> resize + to-tensor -> batched(64), in a DataLoader."""
    import torch
    import webdataset as wds
    from PIL import Image

    from shardstream.book.torch_baseline import pil_to_tensor
    from shardstream.shards.manifest import load_manifest

    manifest = load_manifest(location)
    urls = [os.path.join(location, s.name) for s in manifest.shards["tar"]]

    def transform(pil):
        return pil_to_tensor(pil.resize((RESIZE[1], RESIZE[0]), Image.BILINEAR))

    pipeline = (wds.WebDataset(urls, shardshuffle=len(urls), empty_check=False)
                .shuffle(1000).decode("pil").to_tuple("png", "cls")
                .map_tuple(transform, int).batched(BATCH))
    loader = torch.utils.data.DataLoader(pipeline, batch_size=None, num_workers=workers)

    def run(epoch):
        for _X, _y in loader:
            pass
    return run


def epoch_seconds(run, epoch) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and its threads) of one epoch."""
    t, c = time.perf_counter(), time.process_time()
    run(epoch)
    return time.perf_counter() - t, time.process_time() - c


def timed_rows(rows, repeat):
    """Seconds per epoch of each row ``(key, make)``, and its CPU seconds (this process; not
    worker processes): every pipeline is built and warmed up with one epoch, then timed
    round-robin (epoch r of every row, then epoch r + 1, ...) so that load from other jobs on a
    shared machine hits them alike; the best of ``repeat`` is kept."""
    runs = [(key, make()) for key, make in rows]
    for _, run in runs:
        run(99)
    best = {key: float("inf") for key, _ in runs}
    cpu = dict(best)
    for e in range(repeat):
        for key, run in runs:
            wall, used = epoch_seconds(run, e)
            best[key] = min(best[key], wall)
            cpu[key] = min(cpu[key], used)
    return best, cpu


def torchvision_row(python, images, labels, data, repeat):
    """Seconds per epoch of the book's torch pipeline with the real torchvision, run by
    ``book_torchvision.py`` in the benchmark-only venv ``python`` over the same images (written
    as the IDX files torchvision reads); best of ``repeat``; CPU time is not measured (nan)."""
    import json
    import subprocess

    from shardstream.converters.idx import write_idx

    raw = os.path.join(data, "raw")
    os.makedirs(raw, exist_ok=True)
    for prefix, n in (("train", len(labels)), ("t10k", 1000)):
        write_idx(os.path.join(raw, f"{prefix}-images-idx3-ubyte.gz"), images[:n, :, :, 0])
        write_idx(os.path.join(raw, f"{prefix}-labels-idx1-ubyte.gz"),
                  np.asarray(labels[:n], np.uint8))
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "book_torchvision.py")
    best = float("inf")
    for _ in range(repeat):
        out = subprocess.run([python, script, raw, "--batch-size", str(BATCH), "--resize",
                              str(RESIZE[0]), "--limit-batches", "200"],
                             capture_output=True, text=True, check=True).stdout
        best = min(best, json.loads(out.strip().splitlines()[-1])["seconds"])
    return best, float("nan")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.path.join("/tmp", "shardstream-bench-loaders"))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", default="", help="comma-separated row names to run (default all)")
    ap.add_argument("--torchvision-python", default=None, metavar="PYTHON",
                    help="python of a benchmark-only venv with torch==2.14.1 torchvision==0.29.1 "
                         "(benchmarks/README.md): adds the real torchvision row")
    args = ap.parse_args(argv)

    images, labels = garments(60_000)
    npy = os.path.join(args.data, "npy")
    png = os.path.join(args.data, "png")
    write_split(npy, in_shards(images, labels), encoding="npy")
    write_split(png, in_shards(images, labels), encoding="png")
    n = len(labels)

    rows = [  # (name, workers, make)
        (F_ROW, 0, lambda: floor_matmul(images, labels)),
        ("uint8 in RAM, gather + to_float (compiled kernel)", 0, lambda: floor(images, labels)),
        ("uint8 in RAM, gather + to_float_reference (numpy)", 0,
         lambda: floor(images, labels, to_float_reference)),
        (T_ROW, 0, lambda: tf_floor(-(-n // BATCH))),
        ("ours torch, npy", 0, lambda: ours_torch(npy, 0)),
        ("ours torch, npy", 1, lambda: ours_torch(npy, 1)),
        ("ours torch, npy", 2, lambda: ours_torch(npy, 2)),
        ("ours torch, npy", 4, lambda: ours_torch(npy, 4)),
        ("ours torch, npy, process workers", 2, lambda: ours_torch(npy, 2, mode="process")),
        ("ours torch, npy, batch_size=1", 0, lambda: ours_torch(npy, 0, batch_size=1)),
        ("ours torch, npy, tar", 0, lambda: ours_torch(npy, 0, "tar")),
        ("ours tf, npy", 1, lambda: ours_tf(npy, 1)),
        ("ours tf, npy", 2, lambda: ours_tf(npy, 2)),
        ("ours tf, npy", 4, lambda: ours_tf(npy, 4)),
        ("ours tf, npy, a new tf_dataset(epoch=e) each epoch", 1, lambda: ours_tf_rebuilt(npy)),
        ("T': T iterated inside a tf.function", 0,
         lambda: tf_floor(-(-n // BATCH), function=True)),
        ("ours tf, npy, iterated inside a tf.function (as a Keras training step)", 1,
         lambda: ours_tf(npy, 1, function=True)),
        ("ours tf, npy, iterated inside a tf.function (as a Keras training step)", 2,
         lambda: ours_tf(npy, 2, function=True)),
        ("(a) book torch (PIL resize + ToTensor, DataLoader)", 0,
         lambda: book_torch(images, labels, 0)),
        ("(a) book torch (PIL resize + ToTensor, DataLoader)", 2,
         lambda: book_torch(images, labels, 2)),
        ("(a) book torch, batch_size=1", 0, lambda: book_torch(images, labels, 0, 1)),
        ("(b) book tf.data (from_tensor_slices, resize_with_pad), built each epoch as the book "
         "times it", 0, lambda: book_tf(images, labels)),
        ("(b) book tf.data, one dataset object iterated again", 0,
         lambda: book_tf(images, labels, reuse=True)),
        ("ours torch, png", 0, lambda: ours_torch(png, 0)),
        ("ours torch, png", 2, lambda: ours_torch(png, 2)),
        ("ours tf, png", 2, lambda: ours_tf(png, 2)),
        ("stock webdataset, png (WebDataset, shuffle, decode, resize, batched)", 0,
         lambda: stock_webdataset(png, 0)),
        ("stock webdataset, png", 2, lambda: stock_webdataset(png, 2)),
    ]
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {machine()}; "
          f"{n} images, batch {BATCH}, resize {RESIZE[0]}x{RESIZE[1]}")
    print("| pipeline | workers | s / epoch | images / s | x F | CPU s / epoch |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = [((name, workers), make) for name, workers, make in rows
            if name == F_ROW or not only or any(o in name for o in only)]
    results, cpu = timed_rows(rows, args.repeat)
    if args.torchvision_python:
        name = ("(a') real torchvision FashionMNIST + Resize + ToTensor, DataLoader "
                "(first 200 batches, extrapolated)")
        results[(name, 0)], cpu[(name, 0)] = torchvision_row(args.torchvision_python, images,
                                                             labels, args.data, args.repeat)
        rows.append(((name, 0), None))
    f = results[(F_ROW, 0)]
    for (name, workers), _ in rows:
        seconds = results[(name, workers)]
        print(f"| {name} | {workers} | {seconds:.3f} | {n / seconds:,.0f} | {seconds / f:.1f} "
              f"| {cpu[(name, workers)]:.3f} |", flush=True)
    return results


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
