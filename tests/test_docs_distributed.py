"""docs/distributed.md's recipes run as written (issue 14), on 127.0.0.1.

- DDP: ``train_ddp.py`` through the page's ``torchrun`` line, with 1 node of 2 processes
  instead of 2 nodes of 4 and a free port;
- MultiWorkerMirroredStrategy: ``train_mwms.py`` through the page's ``TF_CONFIG`` line, as 2
  workers on free ports;
- conversion on a cluster: the page's ``convert ... --cluster`` lines (the ``tcp://`` one
  against a local Dask cluster started here, S3 being a moto server) and its Python block;
- shards on S3: ``shardstream upload`` and the Python block, against moto.

Hosts, ports and the bucket are the only things replaced.
"""

import json
import os
import pathlib
import re
import shlex
import socket
import subprocess
import sys

import distributed
import pytest

from shardstream import cli, storage
from shardstream.converters import convert

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "distributed.md"
TIMEOUT = 240

pytestmark = pytest.mark.timeout(TIMEOUT + 60)


def blocks():
    """[(language, file name or None, code)] of the page's fenced blocks, in order."""
    return [(lang, name or None, code) for lang, name, code in re.findall(
        r"^```(\w+)(?: file=(\S+))?\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)]


def code_of(name):
    (code,) = [c for _, n, c in blocks() if n == name]
    return code


def sh_lines(word):
    return [line for lang, _, code in blocks() if lang == "sh" for line in code.splitlines()
            if word in line]


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def run_all(procs):
    """Wait for every process (TIMEOUT s at most), kill what is left; their outputs."""
    try:
        outs = []
        for p in procs:
            out, _ = p.communicate(timeout=TIMEOUT)
            assert p.returncode == 0, out[-4000:]
            outs.append(out)
        return outs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_ddp_recipe(fmnist_shards, tmp_path):
    (tmp_path / "train_ddp.py").write_text(code_of("train_ddp.py"))
    (line,) = sh_lines("torchrun ")
    argv = shlex.split(line)
    assert argv[0] == "torchrun" and argv[-2] == "train_ddp.py"
    port = free_ports(1)[0]
    swap = {"--nnodes": "1", "--node_rank": "0", "--nproc_per_node": "2",
            "--master_addr": "127.0.0.1", "--master_port": str(port)}
    args = [f"{a.split('=')[0]}={swap[a.split('=')[0]]}" if a.split("=")[0] in swap else a
            for a in argv[1:-1]]
    split = str(fmnist_shards / "fashion-mnist" / "train")
    cmd = [sys.executable, "-m", "torch.distributed.run", *args, split]
    (out,) = run_all([subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True)])
    # 1,000 samples over 2 ranks, batches of 64: 8 batches per rank
    assert "epoch 0: 8 batches per rank, world size 2" in out
    assert "epoch 1: 8 batches per rank, world size 2" in out
    import torch

    state = torch.load(tmp_path / "ckpt.pt")["loader"]
    assert (state["epoch"], state["batch"], state["world_size"]) == (1, 8, 2)


def test_mwms_recipe(fmnist_shards, tmp_path):
    (tmp_path / "train_mwms.py").write_text(code_of("train_mwms.py"))
    (line,) = sh_lines("TF_CONFIG=")
    argv = shlex.split(line)
    config = json.loads(argv[0].split("=", 1)[1])
    assert argv[1:3] == ["python", "train_mwms.py"]
    config["cluster"]["worker"] = [f"127.0.0.1:{p}" for p in free_ports(2)]
    split = str(fmnist_shards / "fashion-mnist" / "train")
    procs = []
    for index in range(2):
        config["task"]["index"] = index
        env = dict(os.environ, TF_CONFIG=json.dumps(config), CUDA_VISIBLE_DEVICES="",
                   TF_CPP_MIN_LOG_LEVEL="2")
        procs.append(subprocess.Popen([sys.executable, "train_mwms.py", split], cwd=tmp_path,
                                      env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    for out in run_all(procs):
        assert re.search(r"epoch 0: loss \d+\.\d+, 2 replicas", out), out[-2000:]
        assert re.search(r"epoch 1: loss \d+\.\d+, 2 replicas", out), out[-2000:]


def tree(root):
    root = pathlib.Path(root)
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_cluster_recipe(s3_server, tmp_path, monkeypatch):
    from test_cluster import make_folder

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.chdir(tmp_path)
    make_folder(tmp_path / "pets", n_per_class=(30, 20, 25))
    convert("imagefolder", str(tmp_path / "one"), source="pets", encoding="png",
            progress=False)
    # the local:N line, then the Python block (the same conversion again: allowed)
    (local,) = [line for line in sh_lines("--cluster local:")]
    assert cli.main(shlex.split(local)[1:]) == 0
    assert tree(tmp_path / "shards") == tree(tmp_path / "one")
    python = [c for lang, n, c in blocks() if lang == "python" and n is None]
    namespace = {}
    exec(compile(python[0], "distributed.md cluster block", "exec"), namespace)
    assert {m.split: m.num_samples for m in namespace["manifests"]} == {"train": 75, "test": 6}
    assert tree(tmp_path / "shards") == tree(tmp_path / "one")
    # the S3 -> S3 line, against a cluster started here (its workers inherit the endpoint)
    bucket = s3_server.bucket("my-bucket")
    for path in sorted((tmp_path / "pets").rglob("*")):
        if path.is_file():
            storage.write_bytes(f"{bucket}/raw/pets/{path.relative_to(tmp_path / 'pets')}",
                                path.read_bytes())
    (remote,) = [line for line in sh_lines("--cluster tcp://")]
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        argv = [cluster.scheduler_address if a.startswith("tcp://") else a
                for a in shlex.split(remote)[1:]]
        assert cli.main(argv + ["-q"]) == 0
    for name, data in tree(tmp_path / "one").items():
        assert storage.read_bytes(f"{bucket}/shards/{name}") == data, name


def test_s3_recipe(fmnist_shards, s3_server, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shards").symlink_to(fmnist_shards, target_is_directory=True)
    s3_server.bucket("my-bucket")
    (upload,) = sh_lines("shardstream upload")
    assert cli.main(shlex.split(upload)[1:]) == 0
    python = [c for lang, n, c in blocks() if lang == "python" and n is None]
    namespace = {}
    exec(compile(python[1], "distributed.md S3 block", "exec"), namespace)
    import shardstream as ss

    local = next(iter(ss.torch_loader(str(fmnist_shards / "fashion-mnist" / "train"),
                                      batch_size=64)))
    assert (namespace["X"].numpy() == local[0].numpy()).all()
    assert (tmp_path / "shard-cache").is_dir()
