"""Epoch time streaming from loopback S3 (moto server) and HTTP, cold and warm cache, vs local.

    .venv/bin/python benchmarks/bench_remote.py [--train 60000] [--workers 0,2] [--epochs 3] \
        [--write]

Makes the 60k stand-in Fashion-MNIST (synthetic, same format), converts it (npy, 10,000 per
shard), puts it behind a moto S3 server and an aiohttp file server on 127.0.0.1, and times full
epochs of ``torch_loader(batch_size=64, resize=32)``:

- local folder (best of ``--epochs``);
- S3 / HTTP with an empty cache (cold: includes fetching and verifying every shard);
- S3 / HTTP again with the cache filled (warm; best of ``--epochs - 1``).

``--write`` puts the table into the "## Remote streaming (issue 4)" section of
docs/benchmarks.md (only that section is touched).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import os
import pathlib
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchdoc import machine, write_section  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
SECTION = "## Remote streaming (issue 4)"


def start_http(root):
    """An aiohttp static file server (Range, HEAD) on 127.0.0.1 in a thread; returns (url, stop)."""
    from aiohttp import web

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    app = web.Application()
    app.router.add_static("/", str(root), show_index=True)

    async def start():
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, site._server.sockets[0].getsockname()[1]

    runner, port = asyncio.run_coroutine_threadsafe(start(), loop).result(30)

    def stop():
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)

    return f"http://127.0.0.1:{port}", stop


def start_s3():
    """A moto S3 server on 127.0.0.1; returns (endpoint, stop)."""
    from moto.server import ThreadedMotoServer

    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    return f"http://127.0.0.1:{port}", server.stop


def epoch_time(location, workers, **kw) -> float:
    """Seconds for one full epoch of torch_loader(batch 64, resize 32)."""
    import shardstream as ss

    loader = ss.torch_loader(location, batch_size=64, resize=(32, 32), num_workers=workers, **kw)
    start = time.perf_counter()
    n = 0
    for x, _y in loader:
        n += len(x)
    elapsed = time.perf_counter() - start
    expected = ss.load_manifest(location, storage_options=kw.get("storage_options")).num_samples
    if n != expected:
        raise SystemExit(f"{location}: epoch gave {n} samples, expected {expected}")
    return elapsed


def run(args):
    import shardstream as ss
    from shardstream import storage

    work = pathlib.Path(tempfile.mkdtemp(prefix="bench_remote_"))
    raw, shards = work / "raw", work / "shards"
    ss.synthesize("fashion-mnist", str(raw), num_train=args.train, num_test=1000, seed=0,
                  progress=False)
    ss.convert("fashion-mnist", str(shards), raw=str(raw), formats=("tar",), encoding="npy",
               progress=False)
    local = str(shards / "fashion-mnist" / "train")
    total_bytes = sum(p.stat().st_size for p in pathlib.Path(local).glob("*.tar"))

    endpoint, stop_s3 = start_s3()
    url_http, stop_http = start_http(shards)
    rows = []
    t_local = {}
    try:
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket="bench")
        opts = {"endpoint_url": endpoint}
        ss.upload(str(shards), "s3://bench/datasets", progress=False, storage_options=opts)
        remotes = (("S3 (moto, loopback)", "s3://bench/datasets/fashion-mnist/train",
                    {"storage_options": opts}),
                   ("HTTP (aiohttp, loopback)", f"{url_http}/fashion-mnist/train", {}))
        shard_names = sorted(p.name for p in pathlib.Path(local).glob("*.tar"))
        for name, loc, kw in remotes:
            # the endpoint alone: every shard fetched once, one after the other, no loader
            start = time.perf_counter()
            for shard in shard_names:
                storage.read_bytes(storage.join(loc, shard), kw.get("storage_options"))
            rows.append((name, "–", "endpoint only", time.perf_counter() - start))
        # the local disk alone: every shard written once the way the cache writes it
        start = time.perf_counter()
        for shard in shard_names:
            with open(os.path.join(local, shard), "rb") as f:
                data = f.read()
            storage.atomic_write_local(str(work / "disk_probe" / shard), data)
        rows.append(("cache disk (write every shard once)", "–", "disk only",
                     time.perf_counter() - start))
        for workers in args.workers:
            cold, warm = {}, {}
            for name, loc, kw in remotes:
                cache = work / f"cache_{name.split()[0]}_{workers}"
                cold[name] = epoch_time(loc, workers, cache_dir=str(cache), **kw)
            # local and warm epochs interleaved, best of each: the machine is shared, so
            # interleaving spreads any burst of outside load over all three sources
            local_times, warm_times = [], {name: [] for name, _, _ in remotes}
            for _ in range(args.epochs):
                local_times.append(epoch_time(local, workers))
                for name, loc, kw in remotes:
                    cache = work / f"cache_{name.split()[0]}_{workers}"
                    warm_times[name].append(epoch_time(loc, workers, cache_dir=str(cache), **kw))
            t_local[workers] = min(local_times)
            rows.append(("local folder", workers, "–", t_local[workers]))
            for name, _, _ in remotes:
                rows.append((name, workers, "cold", cold[name]))
                rows.append((name, workers, "warm", min(warm_times[name])))
    finally:
        stop_http()
        stop_s3()
        storage._FS_CACHE.clear()

    lines = [
        SECTION,
        "",
        f"`.venv/bin/python benchmarks/bench_remote.py --train {args.train} --workers "
        f"{','.join(map(str, args.workers))} --epochs {args.epochs} --write` — "
        f"{datetime.date.today().isoformat()}, "
        f"{machine()} (shared with other jobs). Stand-in Fashion-MNIST, {args.train} training "
        f"images, tar shards of 10,000 (npy), {total_bytes / 1e6:.1f} MB; "
        f"`torch_loader(batch_size=64, resize=(32, 32), num_workers=W)`, one full epoch, timed "
        f"from the first batch request to the last batch (loader construction excluded). "
        f"Cold = empty cache (fetch + sha256 check of every shard); warm = cache filled (best "
        f"of {args.epochs}, interleaved with the {args.epochs} local epochs); local = best of "
        f"{args.epochs}. \"endpoint only\" = the time to download every shard once, one after "
        f"another, without the loader; \"disk only\" = writing every shard once into a folder "
        f"on the "
        f"cache's disk (temp file, fsync, rename). A cold epoch downloads, checks and writes "
        f"every shard, so these two rows are its floor. Both servers run in the "
        f"benchmark's own process, competing with it for the 2 cores.",
        "",
        "| source | W | cache | time (s) | samples/s | vs local |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for name, workers, cache, t in rows:
        ratio = f"{t_local[workers] / t:.2f}x" if workers in t_local else "–"
        lines.append(f"| {name} | {workers} | {cache} | {t:.2f} | {args.train / t:,.0f} | "
                     f"{ratio} |")
    warm = [t_local[w] / t for _, w, cache, t in rows if cache == "warm"]
    floors = {name: t for name, _, cache, t in rows if cache == "endpoint only"}
    disk = next(t for _, _, cache, t in rows if cache == "disk only")
    cold0 = {name: t for name, w, cache, t in rows if cache == "cold" and w == args.workers[0]}
    lines.append("")
    lines.append(f"Warm epochs run at {min(warm):.2f}–{max(warm):.2f}x the local folder's speed "
                 f"(target ≥ 0.8x). Cold epochs (W={args.workers[0]}): " + "; ".join(
                     f"{name.split()[0]} {cold0[name]:.2f} s against a floor of "
                     f"{floors[name] + disk:.2f} s (endpoint + disk)" for name in cold0) +
                 " — the rest is the sha256 check and the epoch's own work, overlapped with the "
                 "downloads by the prefetch threads.")
    lines.append("")
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_section(SECTION, table)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", type=int, default=60000, help="training samples (default 60000)")
    p.add_argument("--workers", type=lambda t: [int(x) for x in t.split(",")], default=[0, 2],
                   help="comma-separated DataLoader worker counts (default 0,2)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per source (default 3)")
    p.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
