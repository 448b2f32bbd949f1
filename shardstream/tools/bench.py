"""``shardstream bench``: D2L §4.2's reading experiment on shards.

The chapter times one pass over the training set, doing nothing with the batches::

    tic = time.time()
    for X, y in data.train_dataloader():
        continue
    f'{time.time() - tic:.2f} sec'

:func:`bench` runs exactly that for the torch loader and the tf.data loader, over batch sizes and
worker counts, and reports the median of several epochs and the samples per second (exercise 1
of the chapter: batch size 1 against 64).  :func:`profile_epoch` answers exercise 2 (where the
time goes): it runs the execution core in this process, instrumented, and splits an epoch into
reading shards, decoding images, gathering batches and resizing; the rest of the measured epoch
is the framework handoff (tensor creation, the DataLoader's or tf.data's own machinery).

Neither framework is imported here: loaders come from :mod:`.torch_loader` and :mod:`.tf_loader`.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np

from .. import storage
from ..errors import InputError
from ..loaders.execute import open_stream
from ..loaders.plan import plan_epoch
from ..loaders.resize import to_float
from ..shards import formats
from ..shards.manifest import load_manifest

FRAMEWORKS = ("torch", "tf")
#: the parts of an epoch :func:`profile_epoch` times separately
PARTS = ("read", "decode", "gather", "resize")


def _check(frameworks, batch_sizes, workers, epochs):
    """Validate the bench arguments (InputError naming the bad one)."""
    frameworks = list(frameworks)
    bad = [f for f in frameworks if f not in FRAMEWORKS]
    if bad or not frameworks:
        raise InputError(f"--framework {','.join(map(str, frameworks)) or '(empty)'}: choose from "
                         f"{','.join(FRAMEWORKS)}")
    if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
        raise InputError(f"--batch-size {batch_sizes}: every batch size must be >= 1")
    if not workers or any(int(w) < 0 for w in workers):
        raise InputError(f"--workers {workers}: every worker count must be >= 0")
    if int(epochs) < 1:
        raise InputError(f"--epochs {epochs}: must be >= 1")
    return frameworks, [int(b) for b in batch_sizes], [int(w) for w in workers], int(epochs)


def epoch_runner(framework, location, *, batch_size, workers=0, resize=None, format="auto",
                 seed=0, token=None, storage_options=None):
    """A function ``run(epoch) -> iterable of (X, y)`` for one loader configuration.

    torch: one :func:`torch_loader` (``num_workers=workers``), ``set_epoch(epoch)`` per call.
    tf: one :func:`tf_dataset` with ``reshuffle_each_iteration=True`` (its k-th pass is epoch
    k), ``num_parallel=max(workers, 1)`` (tf.data has no separate worker processes; its
    parallel streams play that role); asked for another epoch than its next pass, a new one
    is built for it.
    """
    if framework == "torch":
        from ..loaders.torch_loader import torch_loader  # noqa: PLC0415 - the framework only when asked for

        loader = torch_loader(location, batch_size=batch_size, resize=resize, format=format,
                              seed=seed, num_workers=workers, token=token,
                              storage_options=storage_options)

        def run(epoch):
            loader.set_epoch(epoch)
            return loader

        return run
    if framework == "tf":
        from ..loaders.tf_loader import tf_dataset  # noqa: PLC0415 - the framework only when asked for

        def build(epoch):
            return tf_dataset(location, batch_size=batch_size, resize=resize, format=format,
                              seed=seed, epoch=epoch, reshuffle_each_iteration=True,
                              num_parallel=max(workers, 1), token=token,
                              storage_options=storage_options)

        current = {"epoch": 0, "ds": build(0)}  # checks the arguments now, like torch's

        def run(epoch):
            if epoch != current["epoch"]:
                current["ds"] = build(epoch)
            current["epoch"] = epoch + 1  # the dataset's next pass
            return current["ds"]

        return run
    raise InputError(f"framework={framework!r}: choose from {', '.join(FRAMEWORKS)}")


def time_epoch(loader):
    """Seconds for ``for X, y in loader: continue`` (the book's experiment) and the number of
    samples seen (the first dimension of every ``y``)."""
    samples = 0
    tic = time.perf_counter()
    for _X, y in loader:
        samples += len(y)
    return time.perf_counter() - tic, samples


def bench(location, frameworks=FRAMEWORKS, batch_sizes=(64,), workers=(0,), epochs=3, resize=None,
          format="auto", seed=0, profile=False, token=None, storage_options=None, report=None):
    """Time ``epochs`` epochs per (framework, batch size, workers); returns one dict per row:
    framework, batch_size, workers, epochs (list of seconds), seconds (median), samples,
    samples_per_s (samples / median), resize, format.

    ``profile=True`` adds, to every row with ``workers == 0`` (one process, so the parts add
    up), the breakdown of :func:`profile_epoch`: after each timed epoch the same epoch runs
    once more, instrumented, so both see the same machine load. ``read_s``, ``decode_s``,
    ``gather_s``, ``resize_s``, ``plan_s`` are medians over the epochs, ``handoff_s`` the
    median over the epochs of (timed epoch − instrumented parts), at least 0: the framework's
    part (tensor creation, DataLoader / tf.data machinery, Python iteration). Rows with workers
    run the same work in parallel processes and get no breakdown. ``report``: called with a
    line of progress after each timed epoch (``shardstream bench`` writes them to stderr)."""
    frameworks, batch_sizes, workers, epochs = _check(frameworks, batch_sizes, workers, epochs)
    rows = []
    for fw in frameworks:
        for b in batch_sizes:
            for w in workers:
                run = epoch_runner(fw, location, batch_size=b, workers=w, resize=resize,
                                   format=format, seed=seed, token=token,
                                   storage_options=storage_options)
                times, parts = [], []
                for e in range(epochs):
                    seconds, samples = time_epoch(run(e))
                    times.append(seconds)
                    if report is not None:
                        report(f"bench: {fw} batch_size={b} workers={w}: epoch {e + 1}/{epochs} "
                               f"{seconds:.2f} s ({samples} samples)")
                    if profile and w == 0:
                        parts.append(profile_epoch(location, batch_size=b, resize=resize,
                                                   format=format, seed=seed, epoch=e,
                                                   token=token,
                                                   storage_options=storage_options))
                med = statistics.median(times)
                row = dict(framework=fw, batch_size=b, workers=w, epochs=times, seconds=med,
                           samples=samples,
                           samples_per_s=samples / med if med > 0 else float("inf"),
                           resize=list(resize) if resize else None, format=format)
                if parts:
                    for k in PARTS + ("plan",):
                        row[f"{k}_s"] = statistics.median(p[k] for p in parts)
                    row["handoff_s"] = max(0.0, statistics.median(
                        t - sum(p[k] for k in PARTS + ("plan",)) for t, p in zip(times, parts)))
                rows.append(row)
    return rows


def profile_epoch(location, *, batch_size, resize=None, format="auto", seed=0, epoch=0,
                  token=None, storage_options=None):
    """Where one epoch's time goes inside the execution core, measured in this process.

    Reads every shard of the epoch's plan (shuffled, ``seed``/``epoch``) and executes all its
    batches the way the loaders do, timing each step separately (seconds):

    - ``read``: fetching the shard bytes (the local file, or the verified cached copy) and
      parsing the container (tar members / Parquet columns) into raw image payloads;
    - ``decode``: raw payloads -> uint8 (n, H, W, C) (PNG decoding; ~0 for npy);
    - ``gather``: picking each batch's samples, in plan order, out of the decoded shards;
    - ``resize``: :func:`to_float` on each batch ((b, H, W, C) uint8 -> (b, h, w, C) float32).

    Also returns ``plan`` (computing the plan) and ``samples``. The framework handoff is what a
    measured epoch takes beyond the sum of these (see :func:`bench`).
    """
    source = open_stream(location, format=format, token=token,
                         storage_options=storage_options)
    manifest = source.manifest
    t = {"plan": 0.0, "read": 0.0, "decode": 0.0, "gather": 0.0, "resize": 0.0}
    tic = time.perf_counter()
    plan = plan_epoch(manifest.shard_sizes, batch_size=batch_size, seed=seed, epoch=epoch)
    t["plan"] = time.perf_counter() - tic
    images, labels = [], []
    for s in range(len(manifest.shard_sizes)):
        tic = time.perf_counter()
        with open(source.fetcher.local_file(s), "rb") as f:
            data = f.read()
        payloads, y = formats.read_payloads(source.format, data, manifest, s)
        t["read"] += time.perf_counter() - tic
        tic = time.perf_counter()
        x = formats.decode_payloads(payloads, manifest, s)
        t["decode"] += time.perf_counter() - tic
        images.append(x)
        labels.append(y)
        source.release(s)
    images = np.concatenate(images)
    labels = np.concatenate(labels)
    for k in range(plan.num_batches):
        tic = time.perf_counter()
        ids = plan.batch(k)
        xb, _ = images[ids], labels[ids]
        t["gather"] += time.perf_counter() - tic
        tic = time.perf_counter()
        to_float(xb, resize)
        t["resize"] += time.perf_counter() - tic
    t["samples"] = int(len(plan.ids))
    return t


def format_table(rows, num_epochs):
    """The rows as a fixed-width text table (the one ``shardstream bench`` prints)."""
    prof = any("read_s" in r for r in rows)
    head = ["framework", "batch", "workers", f"s/epoch (median of {num_epochs})", "samples/s"]
    if prof:
        head += ["read s", "decode s", "gather s", "resize s", "handoff s"]
    lines = []
    for r in rows:
        cells = [r["framework"], str(r["batch_size"]), str(r["workers"]), f"{r['seconds']:.3f}",
                 f"{r['samples_per_s']:,.0f}"]
        if prof:
            cells += ([f"{r[k]:.3f}" for k in ("read_s", "decode_s", "gather_s", "resize_s",
                                               "handoff_s")]
                      if "read_s" in r else ["-"] * 5)
        lines.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(head)]
    out = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(head, widths)))]
    out += ["  ".join(c.rjust(w) if i else c.ljust(w)
                      for i, (c, w) in enumerate(zip(cells, widths)))
            for cells in lines]
    return "\n".join(out)


def bench_command(location, frameworks=FRAMEWORKS, batch_sizes=(64,), workers=(0,), epochs=3,
                  resize=None, format="auto", profile=False, as_json=False, token=None,
                  storage_options=None):
    """``shardstream bench``: run :func:`bench` (with the breakdown for ``--profile``), print
    the table (or, with ``--json``, one JSON list of the rows), and a progress line per timed
    epoch on stderr. Returns the rows."""
    manifest = load_manifest(location, storage.with_token(location, storage_options, token))
    rows = bench(location, frameworks, batch_sizes, workers, epochs, resize=resize, format=format,
                 profile=profile, token=token, storage_options=storage_options,
                 report=lambda line: print(line, file=sys.stderr, flush=True))
    if as_json:
        print(json.dumps(rows, indent=1))
        return rows
    size = "x".join(map(str, resize)) if resize else "none"
    print(f"{location}: {manifest.num_samples} samples, {manifest.encoding} images "
          f"{'x'.join(map(str, manifest.image_shape))}, resize {size}, format {format}; "
          f"one epoch = `for X, y in loader: continue`")
    print(format_table(rows, epochs))
    if profile:
        print("read = shard bytes + container parsing, decode = image payloads -> uint8, "
              "gather = batch assembly in plan order, resize = to_float, handoff = the rest of "
              "the epoch (tensors, DataLoader / tf.data); breakdown for workers=0 rows only")
    return rows
