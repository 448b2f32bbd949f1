"""The book's own PyTorch pipeline with the real torchvision (D2L §4.2), timed for one epoch.

Runs in a benchmark-only virtual environment that has torchvision (see benchmarks/README.md;
never in the project's own dependencies):

    /work/benchvenv/bin/python benchmarks/book_torchvision.py RAW_DIR [--batch-size 64]
        [--resize 32] [--workers 0] [--limit-batches N]

``RAW_DIR`` holds the four Fashion-MNIST IDX ``.gz`` files (real, or ``shardstream synth``'s
stand-in); they are unpacked into torchvision's layout (``<tmp>/FashionMNIST/raw/``) first.
Prints one JSON line: ``{"seconds": epoch seconds, "samples": n, "batches": k, "extrapolated":
bool}`` — with ``--limit-batches`` the first N batches are timed and the epoch extrapolated.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import tempfile
import time

import torch
import torchvision
from torchvision import transforms

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("raw")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--resize", type=int, default=32)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--limit-batches", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as root:
        raw = os.path.join(root, "FashionMNIST", "raw")
        os.makedirs(raw)
        for name in FILES:
            with gzip.open(os.path.join(args.raw, name + ".gz"), "rb") as src, \
                    open(os.path.join(raw, name), "wb") as dst:
                shutil.copyfileobj(src, dst)
        trans = transforms.Compose([transforms.Resize(args.resize), transforms.ToTensor()])
        data = torchvision.datasets.FashionMNIST(root=root, train=True, transform=trans,
                                                 download=False)
        loader = torch.utils.data.DataLoader(data, args.batch_size, shuffle=True,
                                             num_workers=args.workers)
        total = len(data)
        tic = time.perf_counter()
        samples = batches = 0
        for _X, y in loader:
            samples += len(y)
            batches += 1
            if args.limit_batches and batches == args.limit_batches:
                break
        seconds = time.perf_counter() - tic
    extrapolated = samples < total
    print(json.dumps({"seconds": seconds * total / samples, "samples": samples,
                      "batches": batches, "extrapolated": extrapolated,
                      "torchvision": torchvision.__version__, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
