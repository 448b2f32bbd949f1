"""Conversion on a Dask cluster (issue 14): ``convert ... --cluster``.

One local cluster of 2 worker *processes* (``processes=True``, one thread each) serves the
module: processes, because that is what a real cluster is (each worker its own interpreter,
arguments and results pickled across, no shared memory with the driver) and because a test
kills one mid-task.  The output of every cluster conversion is compared, file by file and byte
by byte, with the single-process conversion of the same input.
"""

import os
import pathlib

import distributed  # noqa: E402 - the cluster extra, part of the test extra
import numpy as np
import pytest
from PIL import Image

from shardstream import cli, storage  # noqa: E402
from shardstream.converters import convert  # noqa: E402
from shardstream.converters.cluster import convert_on_cluster  # noqa: E402
from shardstream.errors import InputError  # noqa: E402

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cluster(s3_server):
    # s3_server first: the workers inherit its credentials from the environment
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as c, \
            distributed.Client(c) as client:
        client.wait_for_workers(2, timeout=60)
        yield c


def tree(root):
    """{relative path: bytes} of every file under ``root``."""
    root = pathlib.Path(root)
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def same_tree(got, want):
    g, w = tree(got), tree(want)
    assert sorted(g) == sorted(w)
    for name in w:
        assert g[name] == w[name], name


@pytest.mark.parametrize("encoding", ["npy", "png"])
def test_idx_conversion_is_byte_identical(cluster, fmnist_raw, tmp_path, encoding):
    convert("fashion-mnist", str(tmp_path / "one"), raw=str(fmnist_raw), shard_size=100,
            encoding=encoding, progress=False)
    manifests = convert_on_cluster("fashion-mnist", str(tmp_path / "many"),
                                   cluster=cluster.scheduler_address, raw=str(fmnist_raw),
                                   shard_size=100, encoding=encoding, progress=False)
    assert [len(m.shards["tar"]) for m in manifests] == [10, 3]
    same_tree(tmp_path / "many", tmp_path / "one")


def make_folder(root, n_per_class=(7, 5, 6), size=(6, 4), mode="RGB", seed=0):
    """train/ and test/ split folders of 3 classes of small PNGs (and one JPEG per class)."""
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for c, n in zip(("cat", "dog", "emu"), n_per_class):
            folder = pathlib.Path(root, split, c)
            folder.mkdir(parents=True)
            for i in range(n if split == "train" else 2):
                shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
                im = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
                im.save(folder / (f"{i:03d}.jpg" if i == 1 else f"{i:03d}.png"))
    return root


def test_imagefolder_is_byte_identical(cluster, tmp_path):
    src = make_folder(tmp_path / "pets")
    convert("imagefolder", str(tmp_path / "one"), source=str(src), shard_size=4,
            encoding="png", progress=False)
    convert_on_cluster("imagefolder", str(tmp_path / "many"), source=str(src),
                       cluster=cluster.scheduler_address, shard_size=4, encoding="png",
                       progress=False)
    same_tree(tmp_path / "many", tmp_path / "one")
    # the same conversion again is fine; a different one is refused before anything is written
    convert_on_cluster("imagefolder", str(tmp_path / "many"), source=str(src),
                       cluster=cluster.scheduler_address, shard_size=4, encoding="png",
                       progress=False)
    same_tree(tmp_path / "many", tmp_path / "one")
    Image.new("RGB", (6, 4), (1, 2, 3)).save(src / "train" / "cat" / "000.png")
    before = tree(tmp_path / "many")
    with pytest.raises(InputError, match="already holds a different conversion.*source"):
        convert_on_cluster("imagefolder", str(tmp_path / "many"), source=str(src),
                           cluster=cluster.scheduler_address, shard_size=4, encoding="png",
                           progress=False)
    assert tree(tmp_path / "many") == before


def test_a_bad_image_names_the_file(cluster, tmp_path):
    src = make_folder(tmp_path / "pets")
    Image.new("RGB", (5, 5)).save(src / "test" / "dog" / "001.png")
    with pytest.raises(InputError, match=r"test/dog/001\.png: image of 5x5 \(WxH\), expected 6x4"):
        convert_on_cluster("imagefolder", str(tmp_path / "out"), source=str(src),
                           cluster=cluster.scheduler_address, shard_size=4, progress=False)
    assert not list((tmp_path / "out").rglob("manifest.json"))


class CrashOnce(distributed.WorkerPlugin):
    """In every worker: the first time a process writes ``target``, it writes half the bytes
    into a temp file beside it and dies (``os._exit``), as a machine lost mid-task would.
    ``marker`` (created exclusively) makes it happen once across all workers."""

    name = "crash-once"

    def __init__(self, target, marker):
        self.target, self.marker = target, marker

    def setup(self, worker):
        from shardstream.storage import local

        self.original = local.write
        target, marker, original = self.target, self.marker, local.write

        def write(location, path, data, opts):
            if os.path.basename(path) == target:
                try:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    return original(location, path, data, opts)
                folder, name = os.path.split(path)
                with open(os.path.join(folder, f".{name}.crash.tmp"), "wb") as f:
                    f.write(bytes(data)[:len(data) // 2])
                os._exit(1)
            return original(location, path, data, opts)

        local.write = write

    def teardown(self, worker):
        from shardstream.storage import local

        local.write = self.original


def test_a_worker_killed_mid_task_is_retried(cluster, fmnist_raw, tmp_path):
    convert("fashion-mnist", str(tmp_path / "one"), raw=str(fmnist_raw), shard_size=100,
            encoding="png", progress=False)
    marker = tmp_path / "crashed"
    with distributed.Client(cluster.scheduler_address) as client:
        client.register_plugin(CrashOnce("train-000003.parquet", str(marker)))
        try:
            convert_on_cluster("fashion-mnist", str(tmp_path / "many"),
                               cluster=cluster.scheduler_address, raw=str(fmnist_raw),
                               shard_size=100, encoding="png", progress=False)
        finally:
            client.unregister_worker_plugin(CrashOnce.name)
        client.wait_for_workers(2, timeout=60)  # the nanny restarted the dead worker
    assert marker.exists()  # a worker did die mid-write
    same_tree(tmp_path / "many", tmp_path / "one")  # the half-written temp file is gone too


def test_s3_folder_to_s3_the_driver_never_reads_the_images(cluster, s3_server, tmp_path,
                                                             monkeypatch):
    src = make_folder(tmp_path / "pets", mode="L", size=(5, 7))
    convert("imagefolder", str(tmp_path / "one"), source=str(src), shard_size=5,
            progress=False)
    bucket = s3_server.bucket("cluster-src")
    opts = s3_server.storage_options
    for path in sorted(src.rglob("*")):
        if path.is_file():
            storage.write_bytes(f"{bucket}/raw/pets/{path.relative_to(src).as_posix()}",
                                path.read_bytes(), opts)
    from shardstream.storage import s3

    read_here, real_read = [], s3.read
    monkeypatch.setattr(s3, "read", lambda loc, path, o: read_here.append(loc)
                        or real_read(loc, path, o))
    out = s3_server.bucket("cluster-out") + "/shards"
    manifests = convert_on_cluster("imagefolder", out, source=f"{bucket}/raw/pets",
                                   cluster=cluster.scheduler_address, shard_size=5,
                                   storage_options=opts, progress=False)
    assert [m.dataset for m in manifests] == ["pets", "pets"]
    images_read_here = [loc for loc in read_here if loc.endswith((".png", ".jpg"))]
    assert len(images_read_here) == 2  # the first image of each split (its size and mode)
    want = tree(tmp_path / "one")
    for name, data in want.items():
        assert storage.read_bytes(f"{out}/{name}", opts) == data, name
    with pytest.raises(InputError, match=r"cluster-src/raw/cats: no such folder"):
        convert_on_cluster("imagefolder", out, source=f"{bucket}/raw/cats",
                           cluster=cluster.scheduler_address, storage_options=opts,
                           progress=False)
    for split in ("train", "test"):
        assert sorted(storage.listdir(f"{out}/pets/{split}", opts)) == sorted(
            n.split("/")[-1] for n in want if n.startswith(f"pets/{split}/"))


def test_cli_local_cluster(fmnist_raw, tmp_path, capsys):
    assert cli.main(["convert", "fashion-mnist", str(tmp_path / "one"), "--raw",
                     str(fmnist_raw), "--shard-size", "250", "--format", "tar", "-q"]) == 0
    assert cli.main(["convert", "fashion-mnist", str(tmp_path / "many"), "--raw",
                     str(fmnist_raw), "--shard-size", "250", "--format", "tar", "-q",
                     "--cluster", "local:2"]) == 0
    same_tree(tmp_path / "many", tmp_path / "one")
    assert cli.main(["convert", "fashion-mnist", str(tmp_path / "x"), "--raw",
                     str(fmnist_raw), "--cluster", "local:zero"]) == 1
    assert "--cluster local:zero: give local:N" in capsys.readouterr().err


def test_http_folder_is_read_by_the_workers(cluster, shard_server, tmp_path):
    src = make_folder(tmp_path / "www" / "pets")
    convert("imagefolder", str(tmp_path / "one"), source=str(src), shard_size=4,
            progress=False)
    url = shard_server(tmp_path / "www") + "/pets"
    convert_on_cluster("imagefolder", str(tmp_path / "many"), source=url,
                       cluster=cluster.scheduler_address, shard_size=4, progress=False)
    same_tree(tmp_path / "many", tmp_path / "one")
