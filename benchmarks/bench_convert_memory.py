"""Issue 13 item 2: conversion in bounded memory.

Synthesizes the stand-in Fashion-MNIST at 60,000 and at 1,000,000 training images (+ 10,000
test, IDX ``.gz`` files, ``shardstream synth``), then converts each (tar + Parquet, npy, shards
of 10,000) in a fresh process and reads that process's peak resident set size
(``VmHWM``).  Target: peak at 1M <= 1.3 x the peak at 60k + 100 MB.

Run: ``.venv/bin/python benchmarks/bench_convert_memory.py [--data DIR] [--write]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchdoc import machine, write_section  # noqa: E402

SIZES = {"60k": 60_000, "1M": 1_000_000}
SECTION = "## Conversion memory (issue 13)"


def peak_mib() -> float:
    """This process's peak resident set size (VmHWM: unlike ``ru_maxrss`` it starts afresh at
    ``exec``, so a parent's memory at ``fork`` does not count)."""
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return kib / 1024


def child(raw: str, out: str) -> dict:
    from shardstream.converters import convert

    tic = time.perf_counter()
    convert("fashion-mnist", out, raw=raw, progress=False)
    return {"seconds": time.perf_counter() - tic, "peak_mib": peak_mib()}


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3])))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="folder for the raw data (kept between runs)")
    ap.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = ap.parse_args()
    from shardstream.converters import synthesize

    data = args.data or tempfile.mkdtemp(prefix="bench-convert-mem-")
    rows = {}
    for label, n in SIZES.items():
        raw = os.path.join(data, f"raw-{label}")
        if not os.path.exists(os.path.join(raw, "train-images-idx3-ubyte.gz")):
            synthesize("fashion-mnist", raw, num_train=n, num_test=10_000, progress=False)
        with tempfile.TemporaryDirectory(dir=data) as out:
            res = subprocess.run([sys.executable, __file__, "--child", raw, out],
                                 capture_output=True, text=True, check=True)
        rows[label] = json.loads(res.stdout.strip().splitlines()[-1])
        print(label, rows[label], flush=True)
    small, big = rows["60k"]["peak_mib"], rows["1M"]["peak_mib"]
    limit = 1.3 * small + 100 * 1e6 / 2**20
    lines = [
        SECTION, "",
        f"`.venv/bin/python benchmarks/bench_convert_memory.py --write` — "
        f"{datetime.date.today().isoformat()}, {machine()}. `convert fashion-mnist` of the "
        "stand-in (IDX `.gz`, + 10,000 test images; tar + Parquet, npy, shards of 10,000), each "
        "in a fresh process; peak RSS = `VmHWM` of that process (imports included). The "
        "images file is checked and hashed in one streaming pass, then read again one shard at "
        "a time; only the labels (1 byte a sample) are held whole.",
        "",
        "| training images | convert (s) | peak RSS (MiB) |",
        "|---:|---:|---:|",
    ]
    for label, n in SIZES.items():
        lines.append(f"| {n:,} | {rows[label]['seconds']:.1f} | {rows[label]['peak_mib']:.0f} |")
    lines += ["", f"Target: 1M <= 1.3 x 60k + 100 MB = {limit:.0f} MiB: "
                  f"{'met' if big <= limit else 'NOT met'} ({big:.0f} MiB)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
