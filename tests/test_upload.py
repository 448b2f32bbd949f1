"""``shardstream upload``: a local conversion copied shard by shard, verified, manifest last,
restartable (issue 4 item 6)."""

import os
import pathlib
import shutil

import pytest

from shardstream import storage
from shardstream.cli import main
from shardstream.errors import InputError, ShardError
from shardstream.shards import find_splits
from shardstream.storage import upload as upload_mod
from shardstream.storage.upload import upload


def _files(root):
    root = pathlib.Path(root)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def expected_files(fmnist_shards):
    return _files(fmnist_shards)


def test_find_splits_at_each_level(fmnist_shards):
    root = fmnist_shards
    both = [str(root / "fashion-mnist" / "test"), str(root / "fashion-mnist" / "train")]
    assert find_splits(str(root)) == both
    assert find_splits(str(root / "fashion-mnist")) == both
    assert find_splits(str(root / "fashion-mnist" / "train")) == both[1:]


def test_source_without_manifest_is_refused(tmp_path):
    (tmp_path / "half" / "fashion-mnist" / "train").mkdir(parents=True)
    (tmp_path / "half" / "fashion-mnist" / "train" / "train-000000.tar").write_bytes(b"x")
    with pytest.raises(InputError, match="no manifest.json.*convert"):
        upload(str(tmp_path / "half"), str(tmp_path / "dest"), progress=False)
    assert not (tmp_path / "dest").exists()
    with pytest.raises(InputError, match="remote"):
        upload("s3://b/x", str(tmp_path / "dest"), progress=False)


def test_upload_to_local_folder_is_identical_and_restartable(fmnist_shards, expected_files,
                                                           tmp_path):
    dest = tmp_path / "dest"
    report = upload(str(fmnist_shards), f"file://{dest}", progress=False, jobs=3)
    assert _files(dest) == expected_files
    shard_count = sum(1 for name in expected_files
                      if not name.endswith(("manifest.json", "index.npy")))
    assert (report.uploaded, report.skipped) == (shard_count, 0)
    again = upload(str(fmnist_shards), str(dest), progress=False)
    assert (again.uploaded, again.skipped) == (0, shard_count)
    assert _files(dest) == expected_files


def test_interrupted_upload_has_no_manifest_and_resumes(fmnist_shards, expected_files, tmp_path,
                                                       monkeypatch):
    dest = tmp_path / "dest"
    split = fmnist_shards / "fashion-mnist" / "train"
    real_write = storage.write_bytes
    written = []

    def failing_write(location, data, storage_options=None):
        if len(written) == 5:
            raise OSError("simulated crash")
        written.append(location)
        real_write(location, data, storage_options)

    monkeypatch.setattr(upload_mod, "write_bytes", failing_write)
    with pytest.raises(OSError, match="simulated crash"):
        upload(str(split), str(dest), progress=False, jobs=1)
    monkeypatch.setattr(upload_mod, "write_bytes", real_write)
    target = dest / "fashion-mnist" / "train"
    assert not (target / "manifest.json").exists()          # never looks finished
    assert len(list(target.iterdir())) == 5

    # a shard damaged at the destination is uploaded again, not trusted
    damaged = sorted(target.iterdir())[0]
    damaged.write_bytes(b"garbage")
    order = []

    def recording_write(location, data, storage_options=None):
        order.append(os.path.basename(location))
        real_write(location, data, storage_options)

    monkeypatch.setattr(upload_mod, "write_bytes", recording_write)
    report = upload(str(split), str(dest), progress=False, jobs=2)
    n_train = sum(1 for n in expected_files if n.startswith("fashion-mnist/train/")) - 2
    assert (report.uploaded, report.skipped) == (n_train - 4, 4)
    assert order[-1] == "manifest.json" and order.count("manifest.json") == 1
    assert damaged.name in order
    assert _files(target) == {k.split("/", 2)[2]: v for k, v in expected_files.items()
                              if k.startswith("fashion-mnist/train/")}


def test_damaged_local_shard_is_not_published(fmnist_shards, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(fmnist_shards / "fashion-mnist" / "test", src / "fashion-mnist" / "test")
    victim = sorted((src / "fashion-mnist" / "test").glob("*.tar"))[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=rf"{victim.name}.*does not match its manifest"):
        upload(str(src), str(tmp_path / "dest"), progress=False)
    assert not (tmp_path / "dest" / "fashion-mnist" / "test" / "manifest.json").exists()


def test_cli_upload_to_s3_then_again(fmnist_shards, s3_server, monkeypatch, capsys):
    bucket = s3_server.bucket("upload-cli")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    assert main(["upload", str(fmnist_shards), bucket + "/datasets", "-q"]) == 0
    first = capsys.readouterr().out
    assert "skipped 0" in first
    assert main(["upload", str(fmnist_shards), bucket + "/datasets", "-q"]) == 0
    second = capsys.readouterr().out
    assert "uploaded 0 shard(s)" in second
    for rel, data in _files(fmnist_shards).items():
        assert storage.read_bytes(f"{bucket}/datasets/{rel}") == data
    assert main(["upload", str(fmnist_shards), "http://127.0.0.1:1/x", "-q"]) == 1
    assert "read-only" in capsys.readouterr().err
