"""Conversion on a cluster (issue 14): one process vs a local Dask cluster, and the cost of an
ImageNet-sized folder on N workers, on paper from a measured shard.

    .venv/bin/python benchmarks/bench_cluster.py                    # 200,000 PNGs
    .venv/bin/python benchmarks/bench_cluster.py --images 50000 --write

1. Makes a folder of ``--images`` small PNGs (28x28 grayscale, 10 class folders; not timed
   as conversion) and converts it (``--encoding``, tar + Parquet, shards of 10,000) once in
   this process (``convert``) and once on a ``LocalCluster`` of ``--workers`` worker
   processes of one thread (``convert_on_cluster``; the cluster's start is timed apart).
   Checks that the two outputs are byte-identical.
2. ImageNet on paper: times one shard task (:func:`folder_shard`: read + decode 224x224 RGB
   JPEGs, encode, write tar + Parquet) and the check task (re-read + sha256) on
   ``--paper-images`` such JPEGs in this process, then gives 1,281,167 images on N workers as
   per-image time x images / N (shards of 1,000) plus the driver's manifest step.

``--write`` replaces the section "## Conversion on a cluster (issue 14)" of
docs/benchmarks.md.
"""

import argparse
import datetime
import os
import shutil
import sys
import tempfile
import time

import numpy as np
from distributed import Client, LocalCluster
from PIL import Image

from shardstream.converters.cluster import check_shard, convert_on_cluster, folder_shard
from shardstream.converters.convert import convert
from shardstream.converters.imagefolder import first_image, scan
from shardstream.converters.writer import finish_split, target_header
from shardstream.shards.manifest import ShardInfo

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchdoc import machine, write_section  # noqa: E402

SECTION = "## Conversion on a cluster (issue 14)"
IMAGENET = 1_281_167


def make_folder(root, n, size=(28, 28), mode="L", fmt="PNG", classes=10, seed=0):
    """``n`` images in ``classes`` class folders: a dark frame and a bright random blob, so
    they compress like real small pictures."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    for c in range(classes):
        os.makedirs(os.path.join(root, f"class{c:02d}"), exist_ok=True)
    ext = ".png" if fmt == "PNG" else ".jpg"
    for i in range(n):
        cy, cx, r = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, rng.uniform(0.2, 0.4)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (r * h) ** 2))
        img = (blob * rng.uniform(120, 255) + rng.integers(0, 40, (h, w))).clip(0, 255)
        img = img.astype(np.uint8)
        if mode == "RGB":
            img = np.stack([img, np.roll(img, 3, 0), np.roll(img, 5, 1)], axis=-1)
        path = os.path.join(root, f"class{i % classes:02d}", f"{i:07d}{ext}")
        Image.fromarray(img, mode).save(path, fmt, **({"quality": 90} if fmt == "JPEG" else {}))


def tree_bytes(root):
    return {os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
            for d, _, fs in os.walk(root) for f in fs}


def timed(fn):
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def paper(tmp, n, encoding):
    """Seconds per image of one shard task and of its check, for 224x224 RGB JPEGs."""
    src = os.path.join(tmp, "imagenet-like")
    if not os.path.isdir(src):
        make_folder(src, n, size=(224, 224), mode="RGB", fmt="JPEG", classes=10)
    found, classes = scan(src)
    items = found["train"]
    first = first_image(items)
    out = os.path.join(tmp, f"paper-out-{encoding}")
    t_task, (infos, _) = timed(lambda: folder_shard(
        out, "train", 0, 0, items, classes, src, first, formats=("tar", "parquet"),
        encoding=encoding))
    t_check = sum(timed(lambda i=i: check_shard(os.path.join(out, i.name), i))[0]
                  for i in infos.values())
    shard_bytes = sum(i.bytes for i in infos.values())
    src_bytes = sum(os.path.getsize(p) for p, _ in items)
    # the manifest step: the manifest of 1,282 shards of 1,000 (both formats), written last
    labels = np.zeros(IMAGENET, np.int64)
    header = target_header("imagenet", "train",
                           np.broadcast_to(np.uint8(0), (IMAGENET, 224, 224, 3)), labels,
                           [f"n{c:08d}" for c in range(1000)], {"synthetic": True},
                           formats=("tar", "parquet"), shard_size=1000, encoding=encoding)
    fake = [{f: ShardInfo(f"train-{i:06d}.{f}", size, int(size * shard_bytes / n / 2), "0" * 64)
             for f in ("tar", "parquet")} for i, size in enumerate(header["shard_sizes"])]
    t_manifest, _ = timed(lambda: finish_split(os.path.join(tmp, f"m-{encoding}"), header,
                                               fake))
    return t_task / n, t_check / n, shard_bytes / n, src_bytes / n, t_manifest


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--encoding", default="png", choices=["png", "npy"])
    ap.add_argument("--paper-images", type=int, default=500)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_cluster_")
    try:
        src = os.path.join(tmp, "small")
        t_make, _ = timed(lambda: make_folder(src, args.images))
        print(f"made {args.images:,} PNGs in {t_make:.0f} s", flush=True)
        kw = dict(encoding=args.encoding, shard_size=10_000, progress=False)
        t_one, _ = timed(lambda: convert("imagefolder", os.path.join(tmp, "one"), source=src,
                                         **kw))
        print(f"1 process: {t_one:.1f} s", flush=True)
        t_start = time.perf_counter()
        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                          host="127.0.0.1", dashboard_address=None) as cluster, \
                Client(cluster) as client:
            client.wait_for_workers(args.workers)
            t_start = time.perf_counter() - t_start
            t_many, _ = timed(lambda: convert_on_cluster(
                "imagefolder", os.path.join(tmp, "many"), source=src,
                cluster=cluster.scheduler_address, **kw))
        print(f"cluster of {args.workers}: {t_many:.1f} s (+ {t_start:.1f} s to start it)",
              flush=True)
        identical = tree_bytes(os.path.join(tmp, "one")) == tree_bytes(os.path.join(tmp, "many"))
        print("byte-identical:", identical, flush=True)
        measured = {enc: paper(tmp, args.paper_images, enc) for enc in ("npy", "png")}
        for enc, (per_img, per_check, _, _, t_manifest) in measured.items():
            print(f"imagenet-like {enc}: {per_img * 1e3:.2f} ms/img task, "
                  f"{per_check * 1e3:.3f} ms/img check, manifest {t_manifest:.2f} s",
                  flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def cost(enc, n):
        per_img, per_check, _, _, t_manifest = measured[enc]
        total = (per_img + per_check) * IMAGENET / n + t_manifest
        return f"{total / 3600:.2f} h" if total >= 3600 else f"{total / 60:.1f} min"

    rows = [f"| {n} | {cost('npy', n)} | {cost('png', n)} |" for n in (1, 2, 8, 32, 128)]
    cells = {enc: (f"{m[0] * 1e3:.2f} ms", f"{m[1] * 1e3:.3f} ms", f"{m[2] / 1e3:.0f} KB",
                   f"{m[2] * IMAGENET / 1e9:.0f} GB", f"{m[4]:.2f} s")
             for enc, m in measured.items()}
    src_b = measured["png"][3]
    cpus = len(os.sched_getaffinity(0))
    text = f"""{SECTION}

`benchmarks/bench_cluster.py --images {args.images} --workers {args.workers} --encoding \
{args.encoding}`, {datetime.date.today().isoformat()}, {machine()} (the machine shared with
other developers' jobs: compare the numbers of one run only).

**{args.images:,} small PNGs** (28x28 grayscale, 10 class folders; made by the script in
{t_make:.0f} s), converted to tar + Parquet shards of 10,000 with `--encoding {args.encoding}`:

| | wall time | images/s |
|---|---|---|
| one process (`convert`) | {t_one:.1f} s | {args.images / t_one:,.0f} |
| `LocalCluster`, {args.workers} worker processes × 1 thread (`--cluster`) | {t_many:.1f} s \
| {args.images / t_many:,.0f} |
| starting that cluster (once) | {t_start:.1f} s | |

Speed-up {t_one / t_many:.2f}× with {args.workers} workers on {cpus} cores (1-minute load
average at the end of the run: {os.getloadavg()[0]:.1f}); outputs
byte-identical: **{identical}**. The cluster run also re-reads every shard it wrote (size +
sha256, on the workers) before writing the manifest; the one-process run does not. On this
machine the driver and the scheduler share the two cores with the workers, so
{args.workers} workers cannot reach {args.workers}×.

**ImageNet-sized, on paper.** One shard task measured here, in one process, on
{args.paper_images} 224x224 RGB JPEGs ({src_b / 1e3:.0f} KB each; ImageNet's 1,281,167
training images, resized to one size first — `convert imagefolder` needs one size): read +
decode + encode + write tar and Parquet; then the check task (re-read + sha256) and the
driver's manifest step (the manifest of 1,282 shards of 1,000, both formats):

| per image | npy | png |
|---|---|---|
| shard task (one core) | {cells['npy'][0]} | {cells['png'][0]} |
| check task | {cells['npy'][1]} | {cells['png'][1]} |
| shard bytes (tar + Parquet) | {cells['npy'][2]} | {cells['png'][2]} |
| all 1,281,167 images | {cells['npy'][3]} | {cells['png'][3]} |
| manifest step (once) | {cells['npy'][4]} | {cells['png'][4]} |

Time on N one-thread workers = (task + check) × 1,281,167 / N + manifest step, assuming
the storage keeps up:

| workers N | `--encoding npy` | `--encoding png` |
|---|---|---|
""" + "\n".join(rows) + """

Beyond a few dozen workers the storage bandwidth (S3 PUTs, the shared file system) and the
source reads decide, not the CPUs; the driver only lists files and gathers one `ShardInfo`
per shard.
"""
    print(text)
    if args.write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
