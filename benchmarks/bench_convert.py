"""Conversion speed (issue 2) and the 1,000,000-sample scale row (issue 7 item 6).

    .venv/bin/python benchmarks/bench_convert.py                 # 70k: ~1 minute on 2 cores
    .venv/bin/python benchmarks/bench_convert.py --scale --write # + 1M samples; writes the doc

Synthesizes the stand-in Fashion-MNIST (60,000 + 10,000 images, ``shardstream synth``), then
times ``convert`` (both formats, tar + Parquet, shards of 10,000) with the npy and png encodings,
each into an empty folder, in this process (imports excluded).  ``--scale`` also times
synthesizing 1,000,000 + 10,000 samples and converting them (npy).  ``--write`` replaces the
section "## Conversion (issue 2)" of docs/benchmarks.md with the results (nothing else).
"""

import argparse
import datetime
import os
import platform
import shutil
import sys
import tempfile
import time

from shardstream.converters.convert import convert
from shardstream.converters.synth import synthesize

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchdoc import machine, write_section  # noqa: E402

SECTION = "## Conversion (issue 2)"


def folder_bytes(root) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)


def timed(fn):
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def run(work, num_train, encodings, label):
    raw = os.path.join(work, f"raw-{num_train}")
    t_synth, _ = timed(lambda: synthesize("fashion-mnist", raw, num_train=num_train,
                                          num_test=10000, progress=False))
    n = num_train + 10000
    rows = [(label, "synth (IDX .gz)", "-", t_synth, n / t_synth, folder_bytes(raw))]
    for enc in encodings:
        out = os.path.join(work, f"out-{num_train}-{enc}")
        t, manifests = timed(lambda: convert("fashion-mnist", out, raw=raw, encoding=enc,
                                             progress=False))
        size = folder_bytes(out)
        rows.append((label, f"convert --encoding {enc}", "tar + parquet", t, n / t, size))
        per = {fmt: sum(s.bytes for m in manifests for s in m.shards[fmt]) / n
                    for fmt in manifests[0].formats}
        print(f"  {enc}: {t:.1f} s, bytes per image: "
              + ", ".join(f"{f} {b:.0f}" for f, b in per.items()), file=sys.stderr)
        shutil.rmtree(out)
    shutil.rmtree(raw)
    return rows


def table(rows) -> str:
    lines = ["| dataset | step | formats | seconds | images/s | output MB |",
             "|---|---|---|---:|---:|---:|"]
    for label, step, fmts, t, rate, size in rows:
        lines.append(f"| {label} | {step} | {fmts} | {t:.1f} | {rate:,.0f} | {size / 1e6:,.1f} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", action="store_true", help="also 1,000,000 samples (npy)")
    p.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    p.add_argument("--work", default=None, help="scratch folder (default: a temp folder)")
    args = p.parse_args(argv)
    work = args.work or tempfile.mkdtemp(prefix="bench_convert_")
    # imports the converter makes on first use (webdataset pulls in torch): not timed
    import pyarrow.parquet  # noqa: F401
    import webdataset.writer  # noqa: F401
    from PIL import PngImagePlugin  # noqa: F401
    try:
        rows = run(work, 60000, ("npy", "png"), "70k (60k + 10k)")
        if args.scale:
            rows += run(work, 1_000_000, ("npy",), "1.01M (1M + 10k)")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    import numpy
    import pyarrow

    cmd = "`.venv/bin/python benchmarks/bench_convert.py" + (" --scale" if args.scale else "") \
        + " --write`"
    text = (f"{SECTION}\n\n{cmd} — {datetime.date.today().isoformat()}, {machine()} (shared "
            f"with other developers' jobs, so expect ~30% wobble); Python "
            f"{platform.python_version()}, numpy {numpy.__version__}, pyarrow "
            f"{pyarrow.__version__}. Stand-in Fashion-MNIST from `shardstream synth`; "
            f"`convert` writes both formats (tar + Parquet) in shards of 10,000, one run each, "
            f"timed in-process (imports excluded). PNG images are encoded once and the bytes "
            f"shared by both formats. Targets for 70k images (issue 2): npy <= 10 s, "
            f"png <= 30 s.\n\n{table(rows)}\n")
    print(text)
    if args.write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
