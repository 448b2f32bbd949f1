"""Interrupted conversion (issue 7 item 3): ``kill -9`` a conversion at random points; the
same command again gives byte-identical output and leaves no temp files, and a split without
its manifest is never read as a dataset."""

import glob
import hashlib
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from shardstream.converters.convert import convert
from shardstream.converters.synth import synthesize
from shardstream.errors import ManifestError
from shardstream.shards.manifest import load_manifest


def _tree(root):
    out = {}
    for p in sorted(glob.glob(os.path.join(root, "**", "*"), recursive=True)
                    + glob.glob(os.path.join(root, "**", ".*"), recursive=True)):
        if os.path.isfile(p):
            out[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


ARGS = dict(encoding="png", shard_size=100, progress=False)


def _command(raw, out):
    return [sys.executable, "-m", "shardstream.cli", "convert", "fashion-mnist", str(out),
            "--raw", str(raw), "--encoding", ARGS["encoding"], "--shard-size",
            str(ARGS["shard_size"]), "-q"]


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kill_raw")
    synthesize("fashion-mnist", folder, num_train=2000, num_test=400, seed=2, progress=False)
    return folder


def _wait_for(path, proc, timeout=60):
    """Wait until ``path`` exists (the conversion started writing) or the process ended."""
    end = time.monotonic() + timeout
    while not path.exists() and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.005)


def test_kill_9_then_rerun_gives_identical_bytes(raw, tmp_path):
    ref = tmp_path / "ref"
    # the reference: one uninterrupted run (in this process), timing it
    t0 = time.monotonic()
    convert("fashion-mnist", str(ref), raw=str(raw), **ARGS)
    writing = time.monotonic() - t0
    reference = _tree(ref)
    assert len(reference) == 2 * (20 + 4) + 2 * 2  # shards, manifest + index
    assert not [k for k in reference if os.path.basename(k).startswith(".")]

    rng = random.Random(7)
    interrupted = 0
    for run in range(3):
        out = tmp_path / f"run{run}"
        proc = subprocess.Popen(_command(raw, out))
        _wait_for(out / "fashion-mnist", proc)
        time.sleep(rng.uniform(0.05, 0.9) * writing)   # a random point while writing
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        for split in ("train", "test"):
            loc = out / "fashion-mnist" / split
            if not (loc / "manifest.json").exists():
                interrupted += split == "train"
                # a split without its manifest is never read as a dataset
                with pytest.raises(ManifestError, match="not a finished conversion"):
                    load_manifest(str(loc))
        # every file under a final name is complete (temp files aside)
        for name, digest in _tree(out).items():
            if not os.path.basename(name).startswith("."):
                assert reference[name] == digest, name
        # the same arguments again: identical bytes, no temp files left
        convert("fashion-mnist", str(out), raw=str(raw), **ARGS)
        assert _tree(out) == reference, f"run {run}"
    assert interrupted >= 2, "the kills should land mid-conversion"
