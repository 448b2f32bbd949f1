"""tf.distribute for real (issue 14): a ``MultiWorkerMirroredStrategy`` job of 2 workers on
127.0.0.1 (``TF_CONFIG``, CPU, one subprocess each, free ports) trains a Keras model for one
epoch on ``distribute_datasets_from_function(ss.tf_dataset_fn(...))``
(``tests/tf_multiworker.py``).  Worker r's input pipeline must hand ``fit`` exactly rank r's
batches of ``torch_loader(batch_size=global_batch_size / replicas, rank=r, world_size=2)``,
bitwise: ``global_batch_size`` is the batch of one step over all replicas.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

import shardstream as ss  # noqa: E402
from shardstream.errors import InputError  # noqa: E402

WORKER = pathlib.Path(__file__).with_name("tf_multiworker.py")
GLOBAL_BATCH = 64
ARGS = dict(seed=5, epoch=1, shuffle_buffer=300)   # as in tf_multiworker.py
TIMEOUT = 240

pytestmark = pytest.mark.timeout(TIMEOUT + 60)


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def run_workers(location, out, n=2):
    """Start the ``n`` workers of one job, wait for them (TIMEOUT s at most), kill leftovers."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(n)]}
    procs = []
    try:
        for r in range(n):
            env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2",
                       TF_CONFIG=json.dumps({"cluster": cluster,
                                             "task": {"type": "worker", "index": r}}))
            procs.append(subprocess.Popen(
                [sys.executable, str(WORKER), location, str(GLOBAL_BATCH),
                 str(out / f"worker{r}.npz")], env=env, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True))
        for r, p in enumerate(procs):
            log, _ = p.communicate(timeout=TIMEOUT)
            assert p.returncode == 0, f"worker {r} failed:\n{log[-3000:]}"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_multi_worker_mirrored_strategy(loader_splits, tmp_path):
    location, images, labels = loader_splits["npy"]
    run_workers(location, tmp_path)
    per_replica = GLOBAL_BATCH // 2
    seen = []
    for r in range(2):
        with np.load(tmp_path / f"worker{r}.npz") as f:
            got = {k: f[k] for k in f.files}
        assert int(got["replicas"]) == 2
        assert np.isfinite(got["loss"]).all()
        want = list(ss.torch_loader(location, batch_size=per_replica, rank=r, world_size=2,
                                    **ARGS))
        assert got["sizes"].tolist() == [len(y) for _, y in want]
        assert set(got["sizes"][:-1].tolist()) == {per_replica}   # per-replica batches
        cuts = np.cumsum(got["sizes"])[:-1]
        for X, y, (tX, ty) in zip(np.split(got["X"], cuts), np.split(got["y"], cuts), want):
            assert np.array_equal(X, tX.numpy().transpose(0, 2, 3, 1))
            assert np.array_equal(y, ty.numpy())
        seen.append(got)
    # together the two workers saw the epoch once (1000 samples split evenly, no padding)
    flat = np.concatenate([g["X"] for g in seen]).reshape(len(labels), -1)
    assert len(np.unique(flat, axis=0)) == len(labels)
    # the strategy kept the replicas in sync
    assert np.array_equal(seen[0]["weights"], seen[1]["weights"])


def test_tf_dataset_fn_contexts(loader_splits):
    import tensorflow as tf

    location, _, _ = loader_splits["npy"]
    fn = ss.tf_dataset_fn(location, global_batch_size=GLOBAL_BATCH, **ARGS)
    # 2 workers with 2 replicas each: pipeline 1 is rank 1 of 2, batches of 64 / 4
    ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
                                     num_replicas_in_sync=4)
    got = [(X.numpy(), y.numpy()) for X, y in fn(ctx)]
    want = list(ss.torch_loader(location, batch_size=16, rank=1, world_size=2, **ARGS))
    assert len(got) == len(want)
    for (X, y), (tX, ty) in zip(got, want):
        assert np.array_equal(X, tX.numpy().transpose(0, 2, 3, 1))
        assert np.array_equal(y, ty.numpy())
    with pytest.raises(InputError, match="batch_size comes from the input context"):
        ss.tf_dataset_fn(location, global_batch_size=GLOBAL_BATCH, batch_size=8)
