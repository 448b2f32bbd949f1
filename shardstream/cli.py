"""The ``shardstream`` command.

Each sub-command is a thin shell: it parses arguments and calls the library function that does
the work, so everything the command line does is also available from Python.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import __version__, config
from .errors import AccessError, ShardstreamError
from .tools import commands


def _csv(kind):
    """argparse type: a comma-separated list of ``kind``."""

    def parse(text):
        try:
            return [kind(part) for part in text.split(",") if part.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None

    return parse


def _size(text):
    """argparse type: ``32`` or ``32x24`` (height x width)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 32 or 32x24") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 32 or 32x24 (positive)")
    return tuple(parts)


def _remote_options(parser, token=True):
    """--timeout and --retries (every remote location), --token (http(s) locations)."""
    if token:
        parser.add_argument("--token", default=None,
                            help="bearer token for an http(s) location (default "
                                 "$SHARDSTREAM_TOKEN); sent only to that location's host")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="connect / read timeout of remote requests (default 60)")
    parser.add_argument("--retries", type=int, default=None, metavar="N",
                        help="retries of a failed remote request, with back-off (default 5)")


def build_parser():
    p = argparse.ArgumentParser(
        prog="shardstream",
        description="Convert image datasets into tar + Parquet shards, host them, and stream "
                    "identical minibatches into PyTorch and tf.data.",
        epilog="Locations may be a local path, file://, http(s):// or s3://bucket/prefix. "
               "Run 'shardstream demo' to see everything work offline.",
    )
    p.add_argument("--version", action="version", version=f"shardstream {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("synth", help="write a deterministic stand-in dataset in the raw format",
                       description="Write a synthetic stand-in for a dataset (Fashion-MNIST, "
                                   "MNIST, KMNIST: the four IDX files; CIFAR-10/100: the python "
                                   "version archive, colour images): same files, same format, "
                                   "marked synthetic in every manifest made from it.")
    s.add_argument("dataset", help="fashion-mnist, mnist, kmnist, cifar-10 or cifar-100")
    s.add_argument("out", help="folder to write the raw files into")
    s.add_argument("--train", type=int, default=None,
                   help="training samples (default: the real dataset's, 60000 / 50000)")
    s.add_argument("--test", type=int, default=None, help="test samples (default 10000)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=commands.cmd_synth)

    s = sub.add_parser("convert", help="convert a raw dataset into tar + Parquet shards",
                       description="Convert a raw dataset into <out>/<dataset>/<split>/ with tar "
                                   "and/or Parquet shards and a checksummed manifest.json.")
    s.add_argument("dataset", help="fashion-mnist, mnist, kmnist, cifar-10, cifar-100; or "
                                   "imagefolder, webdataset, parquet with a SOURCE")
    s.add_argument("source", nargs="?", default=None,
                   help="imagefolder: folder of class subfolders (or of train/, test/ folders "
                        "of them); webdataset / parquet: folder, http(s):// or s3:// location "
                        "of *.tar / *.parquet files (train-*, test-* name the split)")
    s.add_argument("out", help="output location (path, file://, s3://...)")
    s.add_argument("--raw", default=None,
                   help="folder holding the raw files: IDX files or a CIFAR archive (default: "
                        "search the usual places, then download)")
    s.add_argument("--label", default=None,
                   help="cifar-100: fine (default, 100 classes) or coarse (20); parquet: the "
                        "label column (default the ClassLabel column)")
    s.add_argument("--classes", type=_csv(str), default=None,
                   help="webdataset / parquet: comma-separated class names for labels 0, 1, .. "
                        "(default the source's metadata, else the numbers)")
    s.add_argument("--size", type=_size, default=None,
                   help="imagefolder / webdataset / parquet: resize images of another size to "
                        "HxW at conversion (PIL BILINEAR) instead of refusing them, e.g. 32 or "
                        "32x24")
    s.add_argument("--skip-bad", action="store_true",
                   help="imagefolder: leave unreadable or odd images out (listed in the "
                        "manifest's source.skipped) instead of refusing the folder")
    s.add_argument("--format", type=_csv(str), default=["tar", "parquet"],
                   help="comma-separated shard formats: tar, parquet (default both)")
    s.add_argument("--shard-size", type=int, default=10000,
                   help="samples per shard (default 10000)")
    s.add_argument("--encoding", choices=["npy", "png"], default="npy",
                   help="image encoding: npy (raw uint8, fastest) or png (default npy)")
    s.add_argument("--name", default=None,
                   help="dataset name in the output (default the dataset's name, cifar-100-coarse "
                        "for --label coarse, or the source folder's name)")
    s.add_argument("--overwrite", action="store_true",
                   help="replace a different dataset already at the output")
    s.add_argument("--cluster", default=None, metavar="ADDRESS",
                   help="write each shard as one task on a Dask cluster: a scheduler address "
                        "(tcp://host:8786) or local:N (N local worker processes); needs "
                        "pip install 'shardstream[cluster]' (docs/distributed.md)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    _remote_options(s)   # a remote webdataset / parquet SOURCE
    s.set_defaults(func=commands.cmd_convert)

    s = sub.add_parser("datasets", help="list the datasets shardstream can convert",
                       description="List the datasets `shardstream convert` knows (name, "
                                   "classes, image size, samples, where the raw files come "
                                   "from) and the source kinds (imagefolder, webdataset, "
                                   "parquet).")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=commands.cmd_datasets)

    s = sub.add_parser("info", help="describe a converted split (samples, classes, shards, bytes)",
                       description="Describe a converted split: samples, classes with counts, "
                                   "shards per format, bytes, encoding, image shape, synthetic "
                                   "or real. A dataset folder or root lists its splits.")
    s.add_argument("location", help="a split's location, e.g. shards/fashion-mnist/train")
    s.add_argument("--json", action="store_true", help="print the manifest summary as JSON")
    _remote_options(s)
    s.set_defaults(func=commands.cmd_info)

    s = sub.add_parser("verify",
                       help="check every shard's sha256 and sample count against the manifest",
                       description="Exit status 0 when every shard matches its manifest, 1 "
                                   "otherwise "
                                   "(the failing shards are named).")
    s.add_argument("location", help="a split's location, or a folder of datasets")
    s.add_argument("-q", "--quiet", action="store_true", help="print problems only")
    _remote_options(s)
    s.set_defaults(func=commands.cmd_verify)

    s = sub.add_parser("upload",
                       help="copy a conversion to another location, verified and restartable",
                       description="Copy a local conversion (a split, a dataset or a root) to "
                                   "another location, e.g. s3://bucket/datasets: shards first, "
                                   "each verified, manifests last; a re-run skips what is "
                                   "there.")
    s.add_argument("src", help="local folder of converted data (a split, a dataset or a root)")
    s.add_argument("dest", help="destination location, e.g. s3://bucket/datasets")
    s.add_argument("--jobs", type=int, default=4, help="parallel uploads (default 4)")
    _remote_options(s, token=False)
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=commands.cmd_upload)

    s = sub.add_parser("serve", help="serve a folder of shards over HTTP",
                       description="Serve converted shards read-only over HTTP (GET/HEAD, byte "
                                   "ranges, ETag), with an index of datasets at /. Ctrl+C or "
                                   "SIGTERM stops it after in-flight downloads finish. Guide: "
                                   "docs/serve.md.")
    s.add_argument("root", help="folder to serve")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0: every "
                        "interface, use a token then)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    s.add_argument("--token", default=config.token(),
                   help="require 'Authorization: Bearer TOKEN' (default $SHARDSTREAM_TOKEN)")
    s.add_argument("-q", "--quiet", action="store_true", help="no access log")
    s.set_defaults(func=commands.cmd_serve)

    s = sub.add_parser("serve-batches",
                       help="compute ready batches for trainers (torch_loader/tf_dataset "
                            "service=[...])",
                       description="Serve ready batches of the datasets under ROOT (a folder, "
                                   "s3://bucket/prefix or an http(s) URL this server reads): "
                                   "trainers call torch_loader(\"<dataset>/<split>\", ..., "
                                   "service=[\"http://HOST:PORT\"], token=T) and receive "
                                   "the same batches as the local loader. Stateless: run any "
                                   "number. Ctrl+C or SIGTERM stops it after the requests in "
                                   "flight. Guide: docs/service.md.")
    s.add_argument("root", help="folder (or s3:// / http(s):// location) holding the datasets")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; 0.0.0.0: every interface, use a "
                        "token then)")
    s.add_argument("--port", type=int, default=9100,
                   help="port (default 9100; 0 picks a free one)")
    s.add_argument("--token", default=config.token(),
                   help="require 'Authorization: Bearer TOKEN' (default $SHARDSTREAM_TOKEN)")
    s.add_argument("--workers", type=int, default=None,
                   help="threads computing batches (default: the usable cores)")
    s.add_argument("--cache-memory", default="1GiB",
                   help="decoded shards kept in memory for all requests (default 1GiB)")

    s.add_argument("-q", "--quiet", action="store_true", help="no access log")
    s.set_defaults(func=commands.cmd_serve_batches)

    s = sub.add_parser("show", help="draw a batch as a PNG grid with its text labels",
                       description="Draw the first (or a random) batch of a split, exactly as "
                                   "the loaders deliver it, as a grid of images with their "
                                   "class names; writes a PNG (or JPEG for .jpg), no display "
                                   "needed.")
    s.add_argument("location", help="a split's location")
    s.add_argument("-o", "--output", default="batch.png",
                   help="picture to write: .png, or .jpg / .jpeg for JPEG (default batch.png)")
    s.add_argument("--rows", type=int, default=2, help="rows of images (default 2)")
    s.add_argument("--cols", type=int, default=8, help="images per row (default 8)")
    s.add_argument("--random", action="store_true", help="a shuffled batch instead of the first")
    s.add_argument("--seed", type=int, default=0,
                   help="shuffle seed of --random (default 0: the loaders' seed=0 epoch 0)")
    s.add_argument("--resize", type=_size, default=None, help="resize first, e.g. 32 or 32x24")
    s.add_argument("--scale", type=float, default=1.5, help="size of each image (default 1.5)")
    _remote_options(s)
    s.set_defaults(func=commands.cmd_show)

    s = sub.add_parser("bench",
                       help="time epochs through the torch and tf loaders (D2L 4.2's experiment)",
                       description="Time `for X, y in loader: continue` over a split, per "
                                   "framework, batch size and worker count; prints the median "
                                   "epoch and samples/s (a progress line per epoch on stderr).")
    s.add_argument("location", help="a split's location")
    s.add_argument("--framework", type=_csv(str), default=["torch", "tf"], help="torch,tf")
    s.add_argument("--batch-size", type=_csv(int), default=[64], help="e.g. 1,64,256")
    s.add_argument("--workers", type=_csv(int), default=[0],
                   help="e.g. 0,2: torch DataLoader workers; for tf, num_parallel=max(W, 1)")
    s.add_argument("--epochs", type=int, default=3, help="epochs per row; the median is reported")
    s.add_argument("--resize", type=_size, default=None,
                   help="resize in the loader, e.g. 32 or 32x24 (default none)")
    s.add_argument("--format", default="auto", help="tar, parquet or auto")
    s.add_argument("--profile", action="store_true",
                   help="break the time down into read / decode / resize / framework handoff")
    s.add_argument("--json", action="store_true", help="print JSON rows")
    _remote_options(s)
    s.set_defaults(func=commands.cmd_bench)

    s = sub.add_parser("demo",
                       help="offline end-to-end demo: synth, convert, stream, compare, time, draw",
                       description="Offline end to end: the full 70,000 Fashion-MNIST images "
                                   "(the real ones when already on this machine, else a "
                                   "synthetic stand-in of 60,000 + 10,000), converted, streamed "
                                   "through "
                                   "torch and tf.data, batches checked identical, "
                                   "an epoch timed against the book's pipelines, a batch drawn.")
    s.add_argument("--out", default="shardstream-demo",
                   help="working folder (default ./shardstream-demo)")
    s.add_argument("--quick", action="store_true",
                   help="a synthetic stand-in of 1,500 + 300 images instead of the full 70,000 "
                        "(seconds instead of minutes; for tests)")
    s.set_defaults(func=commands.cmd_demo)

    s = sub.add_parser("cache", help="show (or clear) the shard cache: location, size, limit",
                       description="Show where remote shards are cached ($SHARDSTREAM_CACHE_DIR"
                                   " or the user cache folder), how much it holds and its "
                                   "limit; --clear deletes the cached shards no process uses.")
    s.add_argument("--clear", action="store_true",
                   help="delete the cached shards (those in use are kept)")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=commands.cmd_cache)
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except ShardstreamError as exc:
        tip = ""
        if isinstance(exc, AccessError) and "token" in vars(args) and args.token is None:
            tip = "; here: pass --token TOKEN (an http(s) location's bearer token)"
        print(f"error: {exc}{tip}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `shardstream info ... | head`: the reader went away; not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
