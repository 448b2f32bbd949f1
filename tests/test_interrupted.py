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


def _command(raw, out):
    return [sys.executable, "-m", "shardstream.cli", "convert", "fashion-mnist", str(out),
            "--raw", str(raw), "--encoding", "png", "--shard-size", "200", "-q"]


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kill_raw")
    synthesize("fashion-mnist", folder, num_train=3000, num_test=600, seed=2, progress=False)
    return folder


def test_kill_9_then_rerun_gives_identical_bytes(raw, tmp_path):
    ref = tmp_path / "ref"
    t0 = time.monotonic()
    subprocess.run(_command(raw, ref), check=True)
    full = time.monotonic() - t0
    reference = _tree(ref)
    assert not [k for k in reference if os.path.basename(k).startswith(".")]

    rng = random.Random(7)
    interrupted = 0
    for run in range(4):
        out = tmp_path / f"run{run}"
        proc = subprocess.Popen(_command(raw, out))
        time.sleep(rng.uniform(0.35, 0.95) * full)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        for split in ("train", "test"):
            loc = out / "fashion-mnist" / split
            if not (loc / "manifest.json").exists():
                if split == "train" or (out / "fashion-mnist" / "test").exists():
                    interrupted += 1
                with pytest.raises(ManifestError, match="not a finished conversion"):
                    load_manifest(str(loc))
        # every file under a final name is complete
        partial = _tree(out)
        for name, digest in partial.items():
            if not os.path.basename(name).startswith("."):
                assert reference[name] == digest, name
        subprocess.run(_command(raw, out), check=True)
        assert _tree(out) == reference, f"run {run}"
    assert interrupted >= 2, "the kills should land mid-conversion"
