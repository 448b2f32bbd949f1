"""One trainer fed by the batch service (1 and 2 ``serve-batches`` servers) vs the local loader.

    .venv/bin/python benchmarks/bench_service.py [--train 60000] [--batch-size 64]
                                                 [--resize 32] [--epochs 3] [--root DIR] [--write]

Makes the 60k stand-in Fashion-MNIST (synthetic, same format; npy, tar + Parquet, 10,000 per
shard) unless ``--root`` names a conversion, then times epochs of ``torch_loader`` in this
process -- the trainer, which does nothing with the batches -- three ways: local (the trainer
reads and resizes itself), and through ``python -m shardstream serve-batches`` servers (own
processes, loopback, bearer token) with 1 and 2 servers.  For each: samples/s, the trainer's
own CPU seconds per epoch (``time.process_time``: every thread of this process) and the
servers' CPU seconds per epoch (psutil, their processes).  The median epoch of ``--epochs``
(after one warm-up epoch) is reported; the first batches of every service epoch are checked
bitwise against the local ones.  From the servers' CPU per sample it sizes, on paper, the
input servers a trainer consuming K samples/s needs.

``--write`` puts the table into the "## Batch service (issue 16)" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import pathlib
import secrets
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import psutil

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from benchdoc import machine, write_section  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
SECTION = "## Batch service (issue 16)"
DATASET = "fashion-mnist/train"
#: batches of each epoch compared bitwise with the local loader's
CHECKED = 50


def make_root(train: int) -> pathlib.Path:
    import shardstream as ss

    work = pathlib.Path(tempfile.mkdtemp(prefix="bench_service_"))
    ss.synthesize("fashion-mnist", str(work / "raw"), num_train=train, num_test=1000, seed=0,
                  progress=False)
    ss.convert("fashion-mnist", str(work / "shards"), raw=str(work / "raw"), encoding="npy",
               progress=False)
    return work / "shards"


def start_server(root, token):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "shardstream", "serve-batches", str(root),
                             "--port", "0", "--token", token, "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line = proc.stdout.readline()
    if " at http" not in line:
        proc.kill()
        raise SystemExit(f"serve-batches did not start: {line!r}")
    return proc, line.split(" at ")[1].strip()


def cpu_seconds(procs) -> float:
    return sum(sum(psutil.Process(p.pid).cpu_times()[:2]) for p in procs)


def time_epochs(make_loader, epochs, servers=(), check=None):
    """[(wall s, trainer CPU s, servers' CPU s)] per epoch, after one warm-up epoch."""
    rows = []
    for e in range(epochs + 1):
        loader = make_loader(e)
        s0, c0, w0 = cpu_seconds(servers), time.process_time(), time.perf_counter()
        batches = []
        for X, y in loader:       # a trainer drops each batch after its step; keep 50 to check
            if len(batches) < CHECKED:
                batches.append((X, y))
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        srv = cpu_seconds(servers) - s0
        if check is not None:
            check(e, batches)
        if e:
            rows.append((wall, cpu, srv))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=60000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--resize", type=int, default=32, help="0: no resize")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--root", default=None, help="an existing conversion root")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)

    import shardstream as ss

    root = pathlib.Path(args.root) if args.root else make_root(args.train)
    location = str(root / DATASET)
    kw = dict(batch_size=args.batch_size, seed=0,
              resize=(args.resize, args.resize) if args.resize else None)
    n = ss.load_manifest(location).num_samples
    reference = {}

    def keep(e, batches):
        reference[e] = [(X.numpy(), y.numpy()) for X, y in batches]

    results = {"local": time_epochs(lambda e: ss.torch_loader(location, epoch=e, **kw),
                                    args.epochs, check=keep)}
    token = secrets.token_urlsafe()
    for count in (1, 2):
        started = [start_server(root, token) for _ in range(count)]
        procs = [p for p, _ in started]
        urls = [u for _, u in started]

        def check(e, batches):
            for (X, y), (eX, ey) in zip(batches, reference[e]):
                if not (np.array_equal(X.numpy(), eX) and np.array_equal(y.numpy(), ey)):
                    raise SystemExit(f"service batches differ from the local ones (epoch {e})")

        try:
            results[f"service, {count} server{'s' * (count > 1)}"] = time_epochs(
                lambda e, urls=urls: ss.torch_loader(DATASET, epoch=e, service=urls,
                                                     token=token, **kw),
                args.epochs, procs, check)
        finally:
            for p in procs:
                p.terminate()
                p.wait(60)

    lines = ["| trainer fed by | samples/s | trainer CPU s/epoch | trainer CPU µs/sample | "
             "servers' CPU s/epoch | servers' CPU µs/sample |", "|---|---:|---:|---:|---:|---:|"]
    per_sample = {}
    for name, rows in results.items():
        wall, cpu, srv = (statistics.median(r[i] for r in rows) for i in range(3))
        per_sample[name] = (cpu + srv) / n * 1e6 if name == "local" else srv / n * 1e6
        srv_cols = ("—", "—") if name == "local" else (f"{srv:.2f}", f"{srv / n * 1e6:.1f}")
        lines.append(f"| {name} | {n / wall:,.0f} | {cpu:.2f} | {cpu / n * 1e6:.1f} | "
                     f"{srv_cols[0]} | {srv_cols[1]} |")
    table = "\n".join(lines)
    cost = per_sample["service, 1 server"]
    cores = psutil.cpu_count()
    side = args.resize or 28
    sample_bytes = side * side * 4 + 8              # float32 pixels (1 channel) + int64 label
    sizing = ["| trainer consumes K samples/s | server cores needed (K x "
              f"{cost:.1f} µs) | {cores}-core servers (at 70% use) | into the trainer "
              f"(K x {sample_bytes:,} B) |", "|---:|---:|---:|---:|"]
    for k in (10_000, 50_000, 100_000, 500_000):
        need = k * cost / 1e6
        sizing.append(f"| {k:,} | {need:.1f} | {math.ceil(need / (cores * 0.7))} | "
                      f"{k * sample_bytes * 8 / 1e9:.1f} Gbit/s |")
    resize = f"resize {args.resize}x{args.resize}" if args.resize else "no resize"
    text = (f"{SECTION}\n\n`.venv/bin/python benchmarks/bench_service.py --train {args.train} "
            f"--batch-size {args.batch_size} --resize {args.resize} --epochs {args.epochs}"
            f"{' --write' if args.write else ''}` — {datetime.date.today().isoformat()}, "
            f"{machine()} (shared with other jobs; trainer and servers on the same machine, "
            f"loopback). One trainer (`torch_loader`, batch {args.batch_size}, {resize}, "
            f"this process, doing nothing with the batches) reads {n:,} samples per epoch, "
            f"locally or from `serve-batches` servers (own processes, default workers, bearer "
            f"token). Median of {args.epochs} epochs after a warm-up; the first {CHECKED} "
            f"batches of every service epoch were checked bitwise against the local ones. "
            f"Trainer CPU = `time.process_time()` of the trainer process (all its threads); "
            f"servers' CPU from psutil.\n\n{table}\n\n"
            f"Sizing on paper: a server spends **{cost:.1f} µs of CPU per sample** (1 server "
            f"row) for this batch size and resize, so a trainer consuming K samples/s needs "
            f"K x {cost:.1f} µs of server CPU per second; loopback here shares its {cores} "
            f"cores with the trainer, so the 2-server row measures the protocol, not more "
            f"capacity. Batches travel as float32, so the network into the trainer is the "
            f"other bound: past a few Gbit/s, send smaller images or use more NICs.\n\n"
            + "\n".join(sizing) + "\n")
    print(text)
    if args.write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
