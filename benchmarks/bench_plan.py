"""Cost of the plan (and of the resize that runs on every batch), issue 3.

    .venv/bin/python benchmarks/bench_plan.py            # ~5 s on 2 cores

Prints a markdown table for docs/benchmarks.md, section "Plan (issue 3)".  The plan is timed
for 1,000,000 samples in 100 shards; "share of epoch" compares it with a lower bound on an
epoch of those samples: the resize + /255 alone (``to_float`` of 28x28 -> 32x32 on batches of
64), without any reading, decoding or training.
"""

import argparse
import datetime
import os
import platform
import statistics
import time

import numpy as np

from shardstream.loaders.plan import plan_epoch
from shardstream.loaders.resize import to_float


def best_of(fn, repeat):
    """Median and best wall time of ``repeat`` calls, seconds."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, numpy {np.__version__}, "
            f"Python {platform.python_version()}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--shards", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()

    n, s = args.samples, args.shards
    sizes = np.full(s, n // s, dtype=np.int64)
    sizes[: n - sizes.sum()] += 1

    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, size=(64, 28, 28, 1), dtype=np.uint8)
    resize_rows = []
    for resize in [None, (32, 32), (14, 14), (20, 20)]:
        def hundred():  # one result alive at a time, as in a training loop
            for _ in range(100):
                to_float(batch, resize)

        med, best = best_of(hundred, args.repeat)
        resize_rows.append((resize, med / 100, best / 100))
    per_batch_32 = resize_rows[1][1]
    epoch_floor = per_batch_32 * n / 64

    print(f"Measured {datetime.date.today().isoformat()} on {machine()}; "
          f"median of {args.repeat} runs.\n")
    print(f"Plan for {n:,} samples in {s} shards, batch_size 64 "
          f"(epoch lower bound: {n:,} samples through `to_float` 28x28->32x32 = "
          f"{epoch_floor:.2f} s):\n")
    print("| shuffle | shuffle_buffer | world_size | plan (ms, median) | best (ms) "
          "| share of epoch |")
    print("|---|---:|---:|---:|---:|---:|")
    cases = [(False, 0, 1), (True, 0, 1), (True, 1_000, 1), (True, 10_000, 1), (True, 100_000, 1),
             (True, n, 1), (True, 10_000, 8)]
    for shuffle, buffer, world in cases:
        med, best = best_of(lambda: plan_epoch(sizes, batch_size=64, seed=1, shuffle=shuffle,
                                               shuffle_buffer=buffer, world_size=world),
                             args.repeat)
        label = "full" if buffer >= n else f"{buffer:,}"
        print(f"| {shuffle} | {label} | {world} | {med * 1e3:.1f} | {best * 1e3:.1f} | "
              f"{100 * med / epoch_floor:.1f}% |")

    print("\n`to_float` on a batch of 64 uint8 images 28x28x1:\n")
    print("| resize | per batch (us, median) | best (us) | x the plain /255 |")
    print("|---|---:|---:|---:|")
    base = resize_rows[0][1]
    for resize, med, best in resize_rows:
        print(f"| {resize or 'none (exact /255)'} | {med * 1e6:.0f} | {best * 1e6:.0f} "
              f"| {med / base:.1f} |")


if __name__ == "__main__":
    main()
