"""Locating the raw IDX files, and downloading them (issue 2 item 2).

The download path runs against a real local HTTP server (the aiohttp file server fixture,
127.0.0.1 only) serving synthesized files; checksums come from the ``checksums`` option.
"""

import hashlib
import os
import shutil

import pytest

from shardstream.converters.datasets import DATASETS
from shardstream.converters.fetch import candidate_dirs, find_raw
from shardstream.errors import InputError

SPEC = DATASETS["fashion-mnist"]


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No raw files anywhere the finder looks: cwd, HOME and the cache are empty folders."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SHARDSTREAM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SHARDSTREAM_RAW_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _md5s(folder):
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()
            if p.name.endswith(".gz")}


def test_raw_dir_direct_and_torchvision_layout(fmnist_raw, isolated):
    found = find_raw(SPEC, str(fmnist_raw), progress=False)
    assert found["train"] == (str(fmnist_raw / "train-images-idx3-ubyte.gz"),
                              str(fmnist_raw / "train-labels-idx1-ubyte.gz"))
    tv = isolated / "mine" / "FashionMNIST" / "raw"
    shutil.copytree(fmnist_raw, tv)
    assert find_raw(SPEC, str(isolated / "mine"), progress=False)["test"][0] == str(
        tv / "t10k-images-idx3-ubyte.gz")


def test_usual_places(fmnist_raw, isolated, monkeypatch):
    # ./data/FashionMNIST/raw with uncompressed files, as torchvision leaves them
    tv = isolated / "data" / "FashionMNIST" / "raw"
    tv.mkdir(parents=True)
    import gzip

    for p in fmnist_raw.glob("*.gz"):
        (tv / p.name[:-3]).write_bytes(gzip.decompress(p.read_bytes()))
    assert find_raw(SPEC, download=False, progress=False)["train"][1] == str(
        tv / "train-labels-idx1-ubyte")
    shutil.rmtree(isolated / "data")
    # keras
    keras = isolated / "home" / ".keras" / "datasets" / "fashion-mnist"
    shutil.copytree(fmnist_raw, keras)
    assert find_raw(SPEC, download=False, progress=False)["train"][0].startswith(str(keras))
    # the environment variable comes first
    monkeypatch.setenv("SHARDSTREAM_RAW_DIR", str(fmnist_raw))
    assert find_raw(SPEC, download=False, progress=False)["train"][0].startswith(
        str(fmnist_raw))
    assert candidate_dirs(SPEC)[0] == str(fmnist_raw)


def test_missing_raw_dir_names_files_and_fix(fmnist_raw, isolated):
    partial = isolated / "partial"
    partial.mkdir()
    shutil.copy(fmnist_raw / "train-images-idx3-ubyte.gz", partial)
    with pytest.raises(InputError) as info:
        find_raw(SPEC, str(partial), progress=False)
    msg = str(info.value)
    assert str(partial) in msg and "t10k-labels-idx1-ubyte.gz" in msg
    assert "--raw DIR" in msg and "shardstream synth fashion-mnist" in msg


def test_download_from_mirror_with_checksums(fmnist_raw, isolated, http_serve):
    server = http_serve(fmnist_raw)
    found = find_raw(SPEC, mirror=server.url + "/", checksums=_md5s(fmnist_raw),
                     progress=False)
    cache = isolated / "cache" / "raw" / "fashion-mnist"
    assert found["train"][0] == str(cache / "train-images-idx3-ubyte.gz")
    for name in SPEC.all_files():
        assert (cache / name).read_bytes() == (fmnist_raw / name).read_bytes()
    assert sorted(server.requests) == sorted(SPEC.all_files())
    # found in the cache next time: no more requests
    find_raw(SPEC, mirror=server.url, checksums=_md5s(fmnist_raw), progress=False)
    assert sum(server.requests.values()) == 4


def test_checksum_mismatch_leaves_nothing(fmnist_raw, isolated, http_serve):
    server = http_serve(fmnist_raw)
    sums = _md5s(fmnist_raw)
    sums["t10k-images-idx3-ubyte.gz"] = "0" * 32
    with pytest.raises(InputError) as info:
        find_raw(SPEC, mirror=server.url, checksums=sums, progress=False)
    msg = str(info.value)
    assert "t10k-images-idx3-ubyte.gz" in msg and "checksum mismatch" in msg and "0" * 32 in msg
    cache = isolated / "cache" / "raw" / "fashion-mnist"
    assert not (cache / "t10k-images-idx3-ubyte.gz").exists()
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temp files


def test_offline_error_says_where_it_looked(isolated):
    import socket

    with socket.socket() as s:          # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(InputError) as info:
        find_raw(SPEC, mirror=f"http://127.0.0.1:{port}/", progress=False)
    msg = str(info.value)
    for folder in candidate_dirs(SPEC):
        assert folder in msg
    assert f"127.0.0.1:{port}/train-images-idx3-ubyte.gz" in msg
    assert "--raw DIR" in msg and "shardstream synth" in msg
    assert not os.path.exists(isolated / "cache" / "raw" / "fashion-mnist" /
                              "train-images-idx3-ubyte.gz")


def test_official_checksums_are_torchvisions():
    assert DATASETS["fashion-mnist"].md5["train-images-idx3-ubyte.gz"] == \
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d"
    assert DATASETS["mnist"].md5["t10k-labels-idx1-ubyte.gz"] == "ec29112dd5afa0611ce80d1b7f02629c"
    assert DATASETS["kmnist"].classes == ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re",
                                          "wo")
