"""Epoch time streaming from loopback S3 (moto server) and HTTP, cold and warm cache, vs local.

    .venv/bin/python benchmarks/bench_remote.py [--train 60000] [--workers 0] [--epochs 2] [--write]

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
import platform
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
SECTION = "## Remote streaming (issue 4)"


def machine() -> str:
    """CPU model name (from lscpu) and core count."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines()
                      if ln.startswith("Model name")), platform.processor())
    except (OSError, subprocess.CalledProcessError):
        model = platform.processor() or "unknown CPU"
    return f"{model}, {os.cpu_count()} cores"


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
    from shardstream.shards import storage

    work = pathlib.Path(tempfile.mkdtemp(prefix="bench_remote_"))
    raw, shards = work / "raw", work / "shards"
    ss.synthesize("fashion-mnist", str(raw), num_train=args.train, num_test=1000, seed=0,
                  progress=False)
    ss.convert("fashion-mnist", str(shards), raw=str(raw), formats=("tar",), encoding="npy",
               progress=False)
    local = str(shards / "fashion-mnist" / "train")
    total_bytes = sum(p.stat().st_size for p in pathlib.Path(local).glob("*.tar"))

    rows = []
    times = [epoch_time(local, args.workers) for _ in range(args.epochs)]
    t_local = min(times)
    rows.append(("local folder", "–", t_local))

    endpoint, stop_s3 = start_s3()
    url_http, stop_http = start_http(shards)
    try:
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket="bench")
        opts = {"endpoint_url": endpoint}
        ss.upload(str(shards), "s3://bench/datasets", progress=False, storage_options=opts)
        for name, loc, kw in (
                ("S3 (moto, loopback)", "s3://bench/datasets/fashion-mnist/train",
                 {"storage_options": opts}),
                ("HTTP (aiohttp, loopback)", f"{url_http}/fashion-mnist/train", {})):
            cache = work / ("cache_" + name.split()[0])
            cold = epoch_time(loc, args.workers, cache_dir=str(cache), **kw)
            warm = min(epoch_time(loc, args.workers, cache_dir=str(cache), **kw)
                       for _ in range(max(1, args.epochs - 1)))
            rows.append((name, "cold", cold))
            rows.append((name, "warm", warm))
    finally:
        stop_http()
        stop_s3()
        storage._FS_CACHE.clear()

    lines = [
        SECTION,
        "",
        f"`.venv/bin/python benchmarks/bench_remote.py --train {args.train} --workers "
        f"{args.workers} --epochs {args.epochs} --write` — {datetime.date.today().isoformat()}, "
        f"{machine()} (shared with other jobs). Stand-in Fashion-MNIST, {args.train} training "
        f"images, tar shards of 10,000 (npy), {total_bytes / 1e6:.1f} MB; "
        f"`torch_loader(batch_size=64, resize=(32, 32), num_workers={args.workers})`, one full "
        f"epoch. Cold = empty cache (fetch + sha256 check of every shard); warm = cache filled "
        f"(best of {max(1, args.epochs - 1)}); local = best of {args.epochs}.",
        "",
        "| source | cache | epoch (s) | samples/s | vs local |",
        "|---|---|---:|---:|---:|",
    ]
    for name, cache, t in rows:
        lines.append(f"| {name} | {cache} | {t:.2f} | {args.train / t:,.0f} | "
                     f"{t_local / t:.2f}x |")
    lines.append("")
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_section(table)


def write_section(text: str) -> None:
    """Replace the body of SECTION in docs/benchmarks.md (create the file/section if missing)."""
    path = ROOT / "docs" / "benchmarks.md"
    doc = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if SECTION in doc:
        start = doc.index(SECTION)
        nxt = doc.find("\n## ", start + len(SECTION))
        end = len(doc) if nxt < 0 else nxt + 1
        doc = doc[:start] + text + "\n" + doc[end:]
    else:
        doc = doc.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(doc)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", type=int, default=60000, help="training samples (default 60000)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (default 0)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per source (default 2)")
    p.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
