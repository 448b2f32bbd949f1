"""Load on ``shardstream serve``: 50 concurrent clients reading whole shards and random ranges.

    .venv/bin/python benchmarks/bench_server.py [--train 60000] [--clients 50] [--requests 2000]
                                                [--root DIR] [--write]

Makes the 60k stand-in Fashion-MNIST (synthetic, same format) and converts it (tar + Parquet,
npy, 10,000 per shard) unless ``--root`` names an existing conversion, starts
``python -m shardstream.cli serve ROOT --port 0 --quiet --token ...`` as its own process, and
sends a fixed number of requests from ``--clients`` concurrent aiohttp clients in one event
loop: one request in four reads a whole shard (its sha256 checked against the manifest while
it streams), the others read a random byte range of 64 KiB - 1 MiB (compared with the file's
bytes).  Reports throughput (MB/s of body bytes), requests/s and p50/p99 latency (request sent
to last byte read), per kind and overall; any wrong byte or non-2xx answer is an error and
makes the exit status 1.

``--write`` puts the table into the "## Shard server (issue 5)" section of docs/benchmarks.md
(only that section is touched).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import mmap
import os
import pathlib
import random
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from benchdoc import machine, write_section  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
SECTION = "## Shard server (issue 5)"
RANGE_MIN, RANGE_MAX = 64 << 10, 1 << 20


def make_root(train: int) -> pathlib.Path:
    """A fresh conversion of the stand-in Fashion-MNIST with ``train`` training images."""
    import shardstream as ss

    work = pathlib.Path(tempfile.mkdtemp(prefix="bench_server_"))
    ss.synthesize("fashion-mnist", str(work / "raw"), num_train=train, num_test=1000, seed=0,
                  progress=False)
    ss.convert("fashion-mnist", str(work / "shards"), raw=str(work / "raw"), encoding="npy",
               progress=False)
    return work / "shards"


def start_server(root, token):
    """``shardstream serve`` in a subprocess; returns (process, base URL)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "shardstream.cli", "serve", str(root), "--port", "0", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "SHARDSTREAM_TOKEN": token},
        cwd=ROOT)
    line = proc.stdout.readline().decode()
    m = re.search(r"at (http://[^ ]+?)/?\s*$", line)
    if not m:
        proc.kill()
        raise SystemExit(f"the server did not start: {line}{proc.stderr.read().decode()}")
    return proc, m.group(1).rstrip("/")


def shard_files(root: pathlib.Path):
    """[(url path, local path, size, sha256)] of every shard of every split under ``root``."""
    from shardstream.shards.manifest import Manifest

    out = []
    for mpath in sorted(root.rglob("manifest.json")):
        m = Manifest.from_json(mpath.read_text(), str(mpath))
        rel = mpath.parent.relative_to(root).as_posix()
        for fmt in m.formats:
            for s in m.shards[fmt]:
                out.append((f"/{rel}/{s.name}", mpath.parent / s.name, s.bytes, s.sha256))
    return out


async def load(url, token, shards, clients, requests, seed):
    """Run the load; returns (rows of (kind, latency s, body bytes), errors, wall seconds)."""
    import aiohttp

    maps = {}
    for _, path, _size, _ in shards:
        with open(path, "rb") as f:
            maps[path] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    rows, errors = [], []
    auth = {"Authorization": f"Bearer {token}"}
    per_client = [requests // clients + (1 if k < requests % clients else 0)
                  for k in range(clients)]

    async def client(session, k):
        rng = random.Random(seed * 1000 + k)
        for i in range(per_client[k]):
            upath, path, size, sha = shards[rng.randrange(len(shards))]
            whole = (i + k) % 4 == 0
            headers = dict(auth)
            if not whole:
                n = rng.randint(RANGE_MIN, min(RANGE_MAX, size))
                a = rng.randrange(size - n + 1)
                headers["Range"] = f"bytes={a}-{a + n - 1}"
            t0 = time.perf_counter()
            try:
                async with session.get(url + upath, headers=headers) as r:
                    if r.status != (200 if whole else 206):
                        errors.append(f"{upath} {headers.get('Range', '')}: HTTP {r.status}")
                        continue
                    if whole:
                        h = hashlib.sha256()
                        got = 0
                        async for chunk in r.content.iter_chunked(1 << 20):
                            h.update(chunk)
                            got += len(chunk)
                        ok = got == size and h.hexdigest() == sha
                    else:
                        body = await r.read()
                        got = len(body)
                        ok = body == maps[path][a:a + n]
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                errors.append(f"{upath}: {type(exc).__name__}: {exc}")
                continue
            rows.append(("whole shard" if whole else "range", time.perf_counter() - t0, got))
            if not ok:
                errors.append(f"{upath} {headers.get('Range', '')}: wrong bytes")

    conn = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout,
                                     auto_decompress=False) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(session, k) for k in range(clients)))
        wall = time.perf_counter() - t0
    for mm in maps.values():
        mm.close()
    return rows, errors, wall


def summarize(rows, wall):
    """[(kind, requests, MB, p50 ms, p99 ms)] per kind and overall."""
    out = []
    for kind in ("whole shard", "range", "all"):
        sel = [r for r in rows if kind == "all" or r[0] == kind]
        if not sel:
            continue
        lat = np.array([r[1] for r in sel]) * 1000
        out.append((kind, len(sel), sum(r[2] for r in sel) / 1e6, float(np.percentile(lat, 50)),
                    float(np.percentile(lat, 99))))
    return out


def run(args):
    root = pathlib.Path(args.root) if args.root else make_root(args.train)
    try:
        return measure(args, root)
    finally:
        if not args.root:
            shutil.rmtree(root.parent, ignore_errors=True)


def measure(args, root):
    """Serve ``root``, run the load, print (and with --write record) the table; exit status."""
    shards = shard_files(root)
    if not shards:
        raise SystemExit(f"no manifest.json under {root}: convert a dataset first")
    token = secrets.token_urlsafe(16)
    proc, url = start_server(root, token)
    try:
        rows, errors, wall = asyncio.run(load(url, token, shards, args.clients, args.requests,
                                              args.seed))
    finally:
        proc.terminate()
        proc.communicate(timeout=120)
    total_mb = sum(r[2] for r in rows) / 1e6
    shard_mb = sum(s[2] for s in shards) / len(shards) / 1e6
    what = (f"the conversion in {args.root}" if args.root else
            f"the stand-in Fashion-MNIST, {args.train} training images + 1,000 test images "
            f"(tar + Parquet, npy, 10,000 per shard)")
    command = (f"--root {args.root}" if args.root else f"--train {args.train}")
    lines = [
        SECTION,
        "",
        f"`.venv/bin/python benchmarks/bench_server.py {command} --clients "
        f"{args.clients} --requests {args.requests} --write` — "
        f"{datetime.date.today().isoformat()}, "
        f"{machine()} (shared with other jobs; server and clients on the same machine, loopback). "
        f"`shardstream serve` (own process, bearer token, access log off) serving {what}: "
        f"{len(shards)} shards, {shard_mb:.1f} MB on average. {args.clients} concurrent "
        f"aiohttp clients in "
        f"one process send {args.requests} requests: one in four a whole shard (sha256 checked "
        f"against the manifest), the rest a random range of 64 KiB - 1 MiB (compared with the "
        f"file). Latency = request sent to last byte read. The clients' sha256 and byte "
        f"comparisons share the 2 cores with the server: the server alone does better.",
        "",
        f"Overall: **{total_mb / wall:,.0f} MB/s**, **{len(rows) / wall:,.0f} requests/s**, "
        f"{len(rows)} requests in {wall:.1f} s, {len(errors)} errors.",
        "",
        "| requests | count | MB | p50 latency (ms) | p99 latency (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind, n, mb, p50, p99 in summarize(rows, wall):
        lines.append(f"| {kind} | {n} | {mb:,.1f} | {p50:,.1f} | {p99:,.1f} |")
    lines.append("")
    table = "\n".join(lines)
    print(table)
    for e in errors[:20]:
        print("error:", e, file=sys.stderr)
    if args.write and not errors:
        write_section(SECTION, table)
    return 1 if errors else 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", type=int, default=60000, help="training samples (default 60000)")
    p.add_argument("--root", default=None, help="serve this existing conversion instead")
    p.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    p.add_argument("--requests", type=int, default=2000, help="requests in all (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the request mix (default 0)")
    p.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
