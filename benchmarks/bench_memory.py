"""Issues 3 and 7: peak memory of one epoch does not grow with the dataset.

Writes two stand-in splits of 28x28 images (npy, Parquet shards of 10,000): 60,000 samples and
1,000,000 samples (about 0.8 GB of shards).  Then, in a fresh process per row, builds a loader
(batch 64, resize 32x32, shuffle_buffer 10,000), reads the resident set size after
construction, runs one epoch and reads the peak resident set size (``ru_maxrss``).  The
difference is what the epoch itself held: the executor's sample pool (shuffle buffer), the
shard being read, the plan (8 bytes per sample of this rank) and the framework's own buffers.

Run: ``.venv/bin/python benchmarks/bench_memory.py [--data DIR]``; prints a markdown table for
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_loaders import garments, write_split  # noqa: E402
from benchdoc import machine  # noqa: E402

SIZES = {"60k": 60_000, "1M": 1_000_000}


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(framework: str, location: str, workers: int) -> dict:
    """One epoch in this process; returns the memory figures (MiB) and the epoch's seconds."""
    import shardstream as ss

    kw = dict(batch_size=64, resize=(32, 32), shuffle_buffer=10_000, seed=0)
    if framework == "torch":
        import torch  # noqa: F401

        loader = ss.torch_loader(location, num_workers=workers, **kw)
    else:
        import tensorflow as tf  # noqa: F401

        loader = ss.tf_dataset(location, num_parallel=max(workers, 1), **kw)
    base = rss_mib()
    t = time.perf_counter()
    batches = sum(1 for _ in loader)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"base": base, "peak": peak, "worker_peak": children, "batches": batches,
            "seconds": seconds}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.path.join("/tmp", "shardstream-bench-memory"))
    ap.add_argument("--child", nargs=3, metavar=("FRAMEWORK", "LOCATION", "WORKERS"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        framework, location, workers = args.child
        print(json.dumps(child(framework, location, int(workers))))
        return 0

    for name, n in SIZES.items():
        folder = os.path.join(args.data, name)
        chunks = (garments(min(10_000, n - s), seed=s // 10_000) for s in range(0, n, 10_000))
        write_split(folder, chunks, encoding="npy", formats=("parquet",))
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {machine()}; batch 64, "
          f"resize 32x32, shuffle_buffer 10,000, npy Parquet shards of 10,000")
    print("| loader | samples | RSS after construction (MiB) | peak RSS (MiB) | "
          "epoch adds (MiB) | worker peak (MiB) | s / epoch |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for framework, workers in (("torch", 0), ("torch", 2), ("tf", 1)):
        for name in SIZES:
            out = subprocess.run(
                [sys.executable, __file__, "--child", framework,
                 os.path.join(args.data, name), str(workers)],
                capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            label = f"{framework} ({'num_workers' if framework == 'torch' else 'num_parallel'}="
            label += f"{workers if framework == 'torch' else max(workers, 1)})"
            worker = f"{r['worker_peak']:.0f}" if framework == "torch" and workers else "-"
            print(f"| {label} | {SIZES[name]:,} | {r['base']:.0f} | {r['peak']:.0f} | "
                  f"{r['peak'] - r['base']:.0f} | {worker} | {r['seconds']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
