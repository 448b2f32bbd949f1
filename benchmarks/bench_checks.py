"""Issue 13: what the once-per-file-version shard check costs an epoch.

Converts the stand-in Fashion-MNIST training split (60,000 images, npy, tar + Parquet shards of
10,000) into a temporary folder, then times one epoch of ``torch_loader`` (batch 64, resize
32x32, num_workers=0) in three ways, round robin, best of ``--rounds``:

- ``check_shards=False``: the files are trusted (the baseline);
- first epoch with checks: a fresh cache folder, so every shard file is read and hashed once;
- later epochs with checks: the markers exist, each shard use costs one ``stat``.

Target (issue 13): the later epochs within 5% of the baseline.

Run: ``.venv/bin/python benchmarks/bench_checks.py [--rounds 5] [--write]``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchdoc import machine, write_section  # noqa: E402

import shardstream as ss  # noqa: E402


def epoch(location, cache_dir, check):
    loader = ss.torch_loader(location, batch_size=64, resize=(32, 32), seed=0,
                             cache_dir=cache_dir, check_shards=check)
    tic = time.perf_counter()
    n = sum(len(y) for _, y in loader)
    assert n == 60_000
    return time.perf_counter() - tic


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ss.synthesize("fashion-mnist", os.path.join(tmp, "raw"), num_test=1000, progress=False)
        ss.convert("fashion-mnist", os.path.join(tmp, "shards"), raw=os.path.join(tmp, "raw"),
                   progress=False)
        location = os.path.join(tmp, "shards", "fashion-mnist", "train")
        epoch(location, os.path.join(tmp, "warm"), False)          # imports, page cache
        rows = {"trusted": [], "first": [], "later": []}
        for r in range(args.rounds):
            rows["trusted"].append(epoch(location, os.path.join(tmp, "c0"), False))
            fresh = os.path.join(tmp, f"fresh{r}")
            rows["first"].append(epoch(location, fresh, True))
            rows["later"].append(epoch(location, fresh, True))
        # the check itself, timed alone: a known version (one stat + the marker lookup)
        from shardstream.storage.checked import CheckedFiles

        m = ss.load_manifest(location)
        info = m.shards["parquet"][0]
        path = os.path.join(location, info.name)
        CheckedFiles(os.path.join(tmp, "micro")).check(path, info.bytes, info.sha256, "x")
        tic = time.perf_counter()
        for _ in range(1000):
            CheckedFiles(os.path.join(tmp, "micro")).check(path, info.bytes, info.sha256, "x")
        per_check = (time.perf_counter() - tic) / 1000
        uses = m.num_shards
    best = {k: min(v) for k, v in rows.items()}
    base = best["trusted"]
    lines = [
        "## Shard checks (issue 13)",
        "",
        f"`.venv/bin/python benchmarks/bench_checks.py --rounds {args.rounds} --write` — "
        f"{datetime.date.today().isoformat()}, {machine()}. One epoch of `torch_loader` over "
        "the 60,000-image stand-in (npy, Parquet shards of 10,000, batch 64, resize 32x32, "
        "num_workers=0), best of the rounds, the three kinds taken round robin in one run. "
        "Target: epochs after the first within 5% of trusting the files.",
        "",
        "| epoch | s | vs trusted |",
        "|---|---:|---:|",
        f"| `check_shards=False` (trusted) | {base:.3f} | 1.00x |",
        f"| first use of each file version (hashes ~47 MB) | {best['first']:.3f} | "
        f"{best['first'] / base:.2f}x |",
        f"| later epochs (one `stat` per shard use) | {best['later']:.3f} | "
        f"{best['later'] / base:.2f}x |",
        "",
        f"The check of a known file version timed alone: {per_check * 1e6:.0f} µs (a `stat`, "
        f"the version's hash, one marker lookup); {uses} shard uses per epoch -> "
        f"{uses * per_check * 1e3:.2f} ms, {100 * uses * per_check / base:.2f}% of the trusted "
        f"epoch: the difference between the two epoch rows above is the machine's noise (the "
        f"same code runs in both but for those {uses} calls).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        write_section("## Shard checks (issue 13)", text)


if __name__ == "__main__":
    main()
