"""Issue 3 item 11: bad arguments and broken splits are a clear error when the loader is built
(naming the argument or file and what to do), never a hang or a short epoch, in both
frameworks.

Budget: a few seconds (no data is read).
"""

import json
import os
import shutil

import pytest

import shardstream as ss
from shardstream.errors import InputError, ManifestError, NotFoundError, ShardError

BUILDERS = {"torch": lambda loc, **kw: ss.torch_loader(loc, **kw),
            "tf": lambda loc, **kw: ss.tf_dataset(loc, **kw)}


@pytest.fixture(params=sorted(BUILDERS))
def build(request):
    return BUILDERS[request.param]


BAD = [
    (dict(batch_size=0), "batch_size=0"),
    (dict(batch_size=-3), "batch_size=-3"),
    (dict(batch_size=2.5), "batch_size=2.5"),
    (dict(batch_size=True), "batch_size=True"),
    (dict(batch_size=8, resize=(0, 32)), "resize=\\(0, 32\\)"),
    (dict(batch_size=8, resize=(32, 0)), "resize"),
    (dict(batch_size=8, resize=0), "resize"),
    (dict(batch_size=8, resize=(32, 32, 3)), "resize"),
    (dict(batch_size=8, resize="32"), "resize"),
    (dict(batch_size=8, rank=2, world_size=2), "rank=2 is not below world_size=2"),
    (dict(batch_size=8, rank=-1, world_size=2), "rank=-1"),
    (dict(batch_size=8, rank=0, world_size=0), "world_size=0"),
    (dict(batch_size=8, seed=-1), "seed=-1"),
    (dict(batch_size=8, epoch=-2), "epoch=-2"),
    (dict(batch_size=8, shuffle_buffer=-1), "shuffle_buffer=-1"),
    (dict(batch_size=8, shuffle="yes"), "shuffle="),
    (dict(batch_size=8, start_batch=-1), "start_batch=-1"),
    (dict(batch_size=100, start_batch=11), "start_batch=11.*10 batches"),
    (dict(batch_size=8, format="zip"), "format='zip'"),
    (dict(batch_size=600, world_size=2, drop_last=True), "no batch"),
]


@pytest.mark.parametrize("kw,message", BAD, ids=[m for _, m in BAD])
def test_bad_arguments(loader_splits, build, kw, message):
    with pytest.raises(InputError, match=message):
        build(loader_splits["npy"][0], **kw)


def test_bad_worker_arguments(loader_splits):
    location = loader_splits["npy"][0]
    with pytest.raises(InputError, match="num_workers=-1"):
        ss.torch_loader(location, batch_size=8, num_workers=-1)
    with pytest.raises(InputError, match="prefetch_factor needs num_workers"):
        ss.torch_loader(location, batch_size=8, prefetch_factor=2)
    with pytest.raises(InputError, match="num_parallel=0"):
        ss.tf_dataset(location, batch_size=8, num_parallel=0)
    with pytest.raises(InputError, match="batch_size comes from the input context"):
        ss.tf_dataset_fn(location, global_batch_size=8, batch_size=8)


def test_format_not_converted(tmp_path, build):
    from conftest import write_test_split

    write_test_split(tmp_path / "s", n=20, shard_size=8, formats=("parquet",))
    with pytest.raises(InputError, match="no tar shards.*parquet"):
        build(str(tmp_path / "s"), batch_size=4, format="tar")
    assert len(build(str(tmp_path / "s"), batch_size=4)) == 5  # auto picks what is there


def test_location_without_manifest(tmp_path, build):
    (tmp_path / "empty").mkdir()
    with pytest.raises((ManifestError, NotFoundError), match="manifest.json"):
        build(str(tmp_path / "empty"), batch_size=8)
    with pytest.raises((ManifestError, NotFoundError), match="nowhere"):
        build(str(tmp_path / "nowhere"), batch_size=8)


def test_missing_or_truncated_shard(loader_splits, tmp_path, build):
    src = loader_splits["npy"][0]
    for fmt, ext in (("tar", "tar"), ("parquet", "parquet")):
        broken = tmp_path / f"missing-{fmt}"
        shutil.copytree(src, broken)
        name = json.loads((broken / "manifest.json").read_text())["shards"][fmt][5]["name"]
        os.remove(broken / name)
        assert name.endswith(ext)
        with pytest.raises(ManifestError, match=f"{name}.*missing"):
            build(str(broken), batch_size=8, format=fmt)
    truncated = tmp_path / "truncated"
    shutil.copytree(src, truncated)
    name = json.loads((truncated / "manifest.json").read_text())["shards"]["tar"][7]["name"]
    data = (truncated / name).read_bytes()
    (truncated / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(ShardError, match=f"{name} has {len(data) // 2} bytes"):
        build(str(truncated), batch_size=8, format="tar")


def test_missing_remote_shard(loader_splits, tmp_path, shard_server, build):
    """A served split whose last shard is gone: an error at construction (one HEAD), not later."""
    src = loader_splits["npy"][0]
    broken = tmp_path / "served" / "split"
    shutil.copytree(src, broken)
    name = json.loads((broken / "manifest.json").read_text())["shards"]["tar"][-1]["name"]
    os.remove(broken / name)
    url = shard_server(str(tmp_path / "served")) + "/split"
    with pytest.raises(ManifestError, match=f"{name}.*does not exist"):
        build(url, batch_size=8, format="tar")


def test_corrupt_png_sample_names_the_sample(loader_splits, tmp_path):
    """A damaged PNG inside a shard: ShardError naming the shard and sample when it is read
    (also when the worker decodes only the samples it needs)."""
    src = loader_splits["png"][0]
    broken = tmp_path / "corrupt"
    shutil.copytree(src, broken)
    name = json.loads((broken / "manifest.json").read_text())["shards"]["tar"][2]["name"]
    data = bytearray((broken / name).read_bytes())
    at = [i for i in range(len(data)) if data.startswith(b"\x89PNG", i)][10]
    data[at + 8: at + 24] = bytes(16)           # wipe the IHDR chunk of the 11th sample
    (broken / name).write_bytes(bytes(data))
    loader = ss.torch_loader(str(broken), batch_size=50, format="tar", num_workers=0,
                             check_shards=False)     # the PNG decoder's own message
    with pytest.raises(ShardError, match=f"{name[:-4]}.*{2 * 128 + 10:09d}"):
        for _ in loader:
            pass
