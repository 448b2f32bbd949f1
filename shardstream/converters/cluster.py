"""Conversion on a Dask cluster: ``shardstream convert ... --cluster ADDRESS`` (or
``--cluster local:N``), the ``cluster`` extra (``pip install -e '.[cluster]'``).

The same conversion as :func:`.convert.convert`, byte for byte, with each shard written by one
task on the cluster (why Dask's ``distributed`` and not Ray: ``docs/architecture.md``):

1. the driver plans every split (the manifest fields known before any shard is written,
   :func:`.writer.target_header`) and refuses a different finished conversion at the output
   before any task runs (:func:`.writer.begin_split`);
2. one task per shard encodes and writes it through :mod:`shardstream.storage` with
   :func:`.writer.write_shard_files` (the one way a shard is written) and returns its
   ``{format: ShardInfo}``.  IDX datasets: the driver read the raw files and sends each task
   its shard's images.  Image folders: the task gets the file *locations* and reads, checks and
   decodes the images itself (:func:`.imagefolder.read_images`), so the driver never holds
   them — with an ``s3://`` or ``http(s)://`` folder and an ``s3://`` output the images go from
   storage to the workers to storage;
3. a second task per shard re-reads each file it wrote and checks its size and sha256;
4. the driver writes the manifest last, after every shard of the split is written and checked
   (:func:`.writer.finish_split`).

A worker that dies mid-task is the engine's problem: Dask reschedules its tasks on the other
workers (up to ``distributed.scheduler.allowed-failures`` times).  Writing a shard again is
harmless (whole files only: temp + rename locally, one PUT on S3) and a half-written temp file
is never listed, and removed when the split is finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import time

import numpy as np
from distributed import Client, LocalCluster, as_completed
from tqdm import tqdm

from .. import storage
from ..errors import InputError, ShardError
from ..shards.manifest import MANIFEST_NAME
from .convert import load_raw
from .datasets import SPLITS, get_spec
from .fetch import find_raw
from .imagefolder import (
    dataset_name,
    file_record,
    first_image,
    problems_report,
    read_images,
    scan,
    source_record,
)
from .writer import (
    begin_split,
    check_args,
    check_target,
    checked_arrays,
    finish_split,
    shard_starts,
    summary,
    target_header,
    write_shard_files,
)

#: seconds to wait for a cluster's scheduler (``--cluster ADDRESS``)
CONNECT_TIMEOUT = 30


@contextlib.contextmanager
def cluster_client(address: str):
    """A ``distributed.Client`` for ``address`` (use it in ``with``): ``"local:N"`` starts a
    local cluster of N worker processes (one thread each, bound to 127.0.0.1, no dashboard)
    and closes it afterwards; anything else is a scheduler address (``tcp://host:8786``)."""
    if address.startswith("local:"):
        try:
            n = int(address[len("local:"):])
        except ValueError:
            n = 0
        if n < 1:
            raise InputError(f"--cluster {address}: give local:N with N >= 1 worker processes, "
                             f"or a scheduler address such as tcp://host:8786")
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                          host="127.0.0.1", dashboard_address=None) as cluster, \
                Client(cluster) as client:
            yield client
        return
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT)
    except OSError as exc:
        raise InputError(f"--cluster {address}: cannot reach the Dask scheduler ({exc}); start "
                         f"one (`dask scheduler`, then `dask worker ADDRESS` on each host) or "
                         f"use --cluster local:N") from None
    with client:
        yield client


# ---------------------------------------------------------------------------------------------
# the tasks (run on the workers; plain functions of picklable arguments)


def check_shard(location: str, info, storage_options=None):
    """Re-read the shard file at ``location`` and compare its size and sha256 with ``info``
    (its :class:`ShardInfo`); returns ``info``, raises :class:`ShardError` on a mismatch."""
    digest, size = hashlib.sha256(), 0
    with storage.open_read(location, storage_options) as f:
        while block := f.read(1 << 20):
            digest.update(block)
            size += len(block)
    if size != info.bytes or digest.hexdigest() != info.sha256:
        raise ShardError(f"{location}: re-read {size} bytes (sha256 {digest.hexdigest()[:12]}), "
                         f"but {info.bytes} bytes (sha256 {info.sha256[:12]}) were written; the "
                         f"storage changed it — run the conversion again")
    return info


def folder_shard(split_loc, split, index, first_id, items, classes, root, first, *, formats,
                 encoding, storage_options=None):
    """Read, check and decode the image files ``items`` (``[(location, class name)]``) of
    shard ``index``, then write it: ``({format: ShardInfo}, digest records)``."""
    images, labels, records = read_images(items, classes, root, storage_options, first)
    infos = write_shard_files(split_loc, split, index, first_id, images, labels,
                              formats=formats, encoding=encoding, classes=classes,
                              storage_options=storage_options)
    return infos, records


def hash_files(items, root, storage_options=None) -> bytes:
    """The source-digest records of ``items`` (:func:`.imagefolder.read_images`'s third
    value) without decoding the images."""
    return b"".join(file_record(path, root, storage.read_bytes(path, storage_options))
                    for path, _ in items)


# ---------------------------------------------------------------------------------------------
# the driver


def _run_split(client, split_loc, header, submit_shard, infos_of, *, progress,
               storage_options):
    """Submit one task per shard (``submit_shard(index, first_id, size) -> future``) and
    check each file it wrote on the cluster as soon as it is done (``infos_of(result)``: the
    task's ``{format: ShardInfo}``).  Returns the tasks' results in shard order, once every
    file is checked."""
    starts, sizes = shard_starts(header), header["shard_sizes"]
    futures = {submit_shard(i, s, n): i for i, (s, n) in enumerate(zip(starts, sizes))}
    results, checks = [None] * len(starts), []
    bar = tqdm(total=header["num_samples"], desc=f"{header['dataset']}/{header['split']}",
               unit="img", disable=not progress, leave=False, file=sys.stderr)
    try:
        for future in as_completed(futures):
            index = futures[future]
            results[index] = future.result()
            infos = infos_of(results[index])
            checks += [client.submit(check_shard, storage.join(split_loc, info.name), info,
                                     storage_options, pure=False)
                       for info in infos.values()]
            bar.update(sizes[index])
        client.gather(checks)
    finally:
        bar.close()
        for future in list(futures) + checks:
            future.cancel()
    return results


def _idx_splits(client, dataset, out, raw, name, formats, shard_size, encoding, overwrite,
                progress, storage_options):
    spec = get_spec(dataset)
    out_name = name or spec.name
    data, sources = load_raw(spec, find_raw(spec, raw, progress=progress))
    planned = {}
    for split in SPLITS:  # refuse before writing anything
        images, labels = data[split]            # images: IdxImages, read shard by shard
        labels = checked_arrays(out_name, split, np.zeros((len(labels), 1, 1, 1), np.uint8),
                                labels, spec.classes)[1]
        header = target_header(out_name, split, images, labels, spec.classes, sources[split],
                               formats=formats, shard_size=shard_size, encoding=encoding)
        check_target(storage.join(out, out_name, split), header, overwrite, storage_options)
        planned[split] = (images, labels, header)
    manifests = []
    for split, (images, labels, header) in planned.items():
        split_loc = storage.join(out, out_name, split)
        begin_split(split_loc, split, header, overwrite, storage_options)

        def submit(index, start, size, split=split, split_loc=split_loc, images=images,
                   labels=labels):
            # the shard's arrays travel inside the task (not scattered): a task whose worker
            # died can then run again elsewhere
            return client.submit(write_shard_files, split_loc, split, index, start,
                                 images.read(start, size), labels[start:start + size],
                                 formats=formats, encoding=encoding, classes=spec.classes,
                                 storage_options=storage_options, pure=False)

        infos = _run_split(client, split_loc, header, submit, lambda r: r, progress=progress,
                           storage_options=storage_options)
        manifests.append(finish_split(split_loc, header, infos, storage_options))
    return manifests


def _folder_splits(client, folder, out, name, formats, shard_size, encoding, overwrite,
                   progress, storage_options):
    dataset = dataset_name(folder, name)
    found, classes, problems = scan(folder, storage_options)
    if problems:    # --skip-bad is for the conversion in one process
        raise InputError(problems_report(folder, problems))
    planned = {}
    for split, items in found.items():  # refuse before writing anything
        first = first_image(items, storage_options)
        (w, h), c = first[1], 1 if first[2] == "L" else 3
        index = {c: i for i, c in enumerate(classes)}
        labels = np.array([index[cls] for _, cls in items], dtype=np.int64)
        shape_only = np.broadcast_to(np.uint8(0), (len(items), h, w, c))
        split_loc = storage.join(out, dataset, split)
        header = target_header(dataset, split, shape_only, labels, classes,
                               source_record(dataset, len(items), ""), formats=formats,
                               shard_size=shard_size, encoding=encoding)
        if not overwrite and storage.exists(storage.join(split_loc, MANIFEST_NAME),
                                            storage_options):
            # a conversion is there: compare sources, which needs the files' digest first
            parts = client.gather([client.submit(hash_files, items[s:s + n], folder,
                                                 storage_options, pure=False)
                                   for s, n in zip(shard_starts(header), header["shard_sizes"])])
            header["source"]["sha256"] = hashlib.sha256(b"".join(parts)).hexdigest()
            check_target(split_loc, header, overwrite, storage_options)
        planned[split] = (items, first, header)
    manifests = []
    for split, (items, first, header) in planned.items():
        split_loc = storage.join(out, dataset, split)
        begin_split(split_loc, split, header, True, storage_options)  # compared above

        def submit(index, start, size, split=split, split_loc=split_loc, items=items,
                   first=first):
            return client.submit(folder_shard, split_loc, split, index, start,
                                 items[start:start + size], classes, folder, first,
                                 formats=formats, encoding=encoding,
                                 storage_options=storage_options, pure=False)

        results = _run_split(client, split_loc, header, submit, lambda r: r[0],
                             progress=progress, storage_options=storage_options)
        header["source"]["sha256"] = hashlib.sha256(b"".join(r for _, r in results)).hexdigest()
        manifests.append(finish_split(split_loc, header, [i for i, _ in results],
                                      storage_options))
    return manifests


def convert_on_cluster(dataset: str, out: str, *, cluster: str, source=None, raw=None,
                       formats=("tar", "parquet"), shard_size: int = 10000,
                       encoding: str = "npy", overwrite: bool = False, name=None,
                       progress: bool = True, storage_options=None) -> list:
    """:func:`.convert.convert` with one task per shard on the Dask cluster ``cluster``
    (``"local:N"`` or a scheduler address); the output is byte-identical.  ``source``: the
    image folder (``imagefolder``; local, ``s3://`` or ``http(s)://``); ``storage_options``:
    for the source folder and the output (docs/storage.md).  Returns the manifests."""
    t0 = time.perf_counter()
    formats = check_args(formats, shard_size, encoding)
    out = os.fspath(out)
    if dataset == "imagefolder" and source is None:
        raise InputError("convert imagefolder needs the image folder: "
                         "`shardstream convert imagefolder DIR OUT --cluster ...`")
    if dataset != "imagefolder" and source is not None:
        raise InputError(f"unexpected argument {source!r}: `shardstream convert {dataset} OUT` "
                         f"takes one folder (the output); give the raw files with --raw DIR")
    with cluster_client(cluster) as client:
        if dataset == "imagefolder":
            manifests = _folder_splits(client, os.fspath(source), out, name, formats,
                                       shard_size, encoding, overwrite, progress,
                                       storage_options)
        else:
            manifests = _idx_splits(client, dataset, out, raw, name, formats, shard_size,
                                    encoding, overwrite, progress, storage_options)
    if progress:
        print(summary(manifests, out, time.perf_counter() - t0))
    return manifests
