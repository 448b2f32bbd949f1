"""CIFAR-10 / CIFAR-100 in (issue 15 items 1, 5, 6): the python version archives, found in the
usual places or downloaded with the md5 checked, read by a restricted unpickler; the stand-in
written by ``shardstream synth`` in the exact archive format; bad archives refused by name.

Budget: ~10 s (small stand-ins: 500 + 100 images).
"""

import hashlib
import json
import os
import pickle
import shutil
import tarfile

import numpy as np
import pytest
from conftest import CIFAR_TEST, CIFAR_TRAIN, SMALL_SHARD, cifar_archive_arrays

from shardstream.cli import main
from shardstream.converters.cifar import _batch, safe_loads
from shardstream.converters.cifar_synth import archive_bytes, py2_pickle
from shardstream.converters.convert import convert
from shardstream.converters.datasets import DATASETS
from shardstream.converters.fetch import candidate_dirs, find_raw
from shardstream.converters.synth import MARKER, synthesize
from shardstream.errors import InputError
from shardstream.shards import read_shard
from shardstream.shards.manifest import load_manifest

C10 = DATASETS["cifar-10"]
C100 = DATASETS["cifar-100"]
BATCHES = [f"data_batch_{i}" for i in range(1, 6)]


def read_split(loc, fmt="tar"):
    """(manifest, images (N, H, W, C), labels (N,)) of a converted split, all shards."""
    m = load_manifest(loc)
    parts = [read_shard(fmt, open(os.path.join(loc, s.name), "rb").read(), m, i)
             for i, s in enumerate(m.shards[fmt])]
    return m, np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


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


# ---------------------------------------------------------------------------------------------
# the stand-in archive


def test_stand_in_is_the_archive_format(cifar10_raw):
    archive = cifar10_raw / "cifar-10-python.tar.gz"
    assert sorted(p.name for p in cifar10_raw.iterdir()) == sorted([archive.name, MARKER])
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert names == ["cifar-10-batches-py"] + [f"cifar-10-batches-py/{m}" for m in
                                               BATCHES + ["test_batch", "batches.meta"]]
    arrays = cifar_archive_arrays(archive)        # stock pickle, as keras' loader reads it
    assert arrays["batches.meta"][b"label_names"] == [c.encode() for c in C10.classes]
    labels = np.concatenate([arrays[b][1] for b in BATCHES])
    assert len(labels) == CIFAR_TRAIN and np.array_equal(np.bincount(labels), [50] * 10)
    assert arrays["test_batch"][0].shape == (CIFAR_TEST, 32, 32, 3)
    # the opcodes Python 2's cPickle wrote the real batches with (protocol 2, py2 strings)
    with tarfile.open(archive) as tar:
        raw = tar.extractfile("cifar-10-batches-py/data_batch_1").read()
    assert raw.startswith(b"\x80\x02}q\x01(U\x04dataq\x02cnumpy.core.multiarray\n_reconstruct\n"
                          b"q\x03cnumpy\nndarray\nq\x04K\x00\x85U\x01b\x87Rq\x05(K\x01K\x64M\x00"
                          b"\x0c\x86cnumpy\ndtype\nq\x06U\x02u1K\x00K\x01\x87Rq\x07(K\x03U\x01|")
    # torchvision's way (latin1 strings) reads it too
    d = pickle.loads(raw, encoding="latin1")
    assert sorted(d) == ["batch_label", "data", "filenames", "labels"]


def test_keras_reads_the_stand_in(cifar10_raw, tmp_path):
    from keras.src.datasets.cifar import load_batch

    with tarfile.open(cifar10_raw / "cifar-10-python.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    data, labels = load_batch(str(tmp_path / "cifar-10-batches-py" / "test_batch"))
    images, want = cifar_archive_arrays(cifar10_raw / "cifar-10-python.tar.gz")["test_batch"]
    assert np.array_equal(data.transpose(0, 2, 3, 1), images)
    assert np.array_equal(labels, want)


def test_stand_in_is_deterministic_and_colourful(tmp_path):
    for d in ("a", "b"):
        synthesize("cifar-10", tmp_path / d, num_train=50, num_test=10, seed=1, progress=False)
    a = (tmp_path / "a" / "cifar-10-python.tar.gz").read_bytes()
    assert a == (tmp_path / "b" / "cifar-10-python.tar.gz").read_bytes()
    synthesize("cifar-10", tmp_path / "c", num_train=50, num_test=10, seed=2, progress=False)
    assert a != (tmp_path / "c" / "cifar-10-python.tar.gz").read_bytes()
    images = np.concatenate([v[0] for k, v in cifar_archive_arrays(
        tmp_path / "a" / "cifar-10-python.tar.gz").items() if k != "batches.meta"]).astype(int)
    spread = images.max(axis=3) - images.min(axis=3)  # 0 for a grey pixel
    assert (spread > 40).mean() > 0.5, (spread > 40).mean()


def test_safe_unpickler_reads_what_py2_pickle_writes():
    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    obj = {b"data": data, b"labels": [3, 300, 70000], b"names": [b"x", b"longer name"],
           b"one": [7], b"n": None}
    back = safe_loads(py2_pickle(obj), "test")
    assert np.array_equal(back[b"data"].value, data)
    assert back[b"labels"] == [3, 300, 70000] and back[b"names"] == [b"x", b"longer name"]
    assert back[b"one"] == [7] and back[b"n"] is None


# ---------------------------------------------------------------------------------------------
# converting


def test_convert_cifar10_pixels_and_manifest(cifar10_raw, cifar10_shards):
    archive = cifar10_raw / "cifar-10-python.tar.gz"
    arrays = cifar_archive_arrays(archive)
    want = {"train": (np.concatenate([arrays[b][0] for b in BATCHES]),
                      np.concatenate([arrays[b][1] for b in BATCHES])),
            "test": arrays["test_batch"]}
    for split, (images, labels) in want.items():
        for fmt in ("tar", "parquet"):
            m, got, got_labels = read_split(str(cifar10_shards / "cifar-10" / split), fmt)
            assert np.array_equal(got, images) and np.array_equal(got_labels, labels)
        assert m.image_shape == (32, 32, 3) and m.classes == C10.classes
        assert m.synthetic and m.source["label"] == "fine"
        assert m.source["files"] == [{"name": archive.name, "bytes": archive.stat().st_size,
                                      "sha256": hashlib.sha256(archive.read_bytes()).hexdigest()}]
    assert list(load_manifest(str(cifar10_shards / "cifar-10" / "train")).shard_sizes) == \
        [128, 128, 128, 116]


def test_cifar100_fine_and_coarse(tmp_path, capsys):
    raw = tmp_path / "raw"
    assert main(["synth", "cifar-100", str(raw), "--train", "200", "--test", "100", "-q"]) == 0
    assert main(["convert", "cifar-100", str(tmp_path / "out"), "--raw", str(raw), "-q"]) == 0
    assert main(["convert", "cifar-100", str(tmp_path / "out"), "--raw", str(raw), "-q",
                 "--label", "coarse"]) == 0
    arrays = cifar_archive_arrays(raw / "cifar-100-python.tar.gz", "cifar-100-python",
                                  b"fine_labels")
    coarse = cifar_archive_arrays(raw / "cifar-100-python.tar.gz", "cifar-100-python",
                                  b"coarse_labels")
    fine_m, images, fine = read_split(str(tmp_path / "out" / "cifar-100" / "train"))
    coarse_m, images2, coarse_labels = read_split(str(tmp_path / "out" / "cifar-100-coarse" /
                                                      "train"), "parquet")
    assert fine_m.classes == C100.classes and len(fine_m.classes) == 100
    assert coarse_m.classes == C100.coarse_classes and len(coarse_m.classes) == 20
    assert np.array_equal(images, arrays["train"][0]) and np.array_equal(images2, images)
    assert np.array_equal(fine, arrays["train"][1])
    assert np.array_equal(coarse_labels, coarse["train"][1]) and coarse_labels.max() >= 10
    assert coarse_m.source["label"] == "coarse"
    with pytest.raises(InputError, match="--label middle: cifar-100 has fine and coarse"):
        convert("cifar-100", str(tmp_path / "x"), raw=str(raw), label="middle", progress=False)
    with pytest.raises(InputError, match="cifar-10 has fine labels"):
        convert("cifar-10", str(tmp_path / "x"), raw=str(raw), label="coarse", progress=False)
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------------------------
# finding the archive, downloading it


def test_found_where_torchvision_and_keras_keep_it(cifar10_raw, isolated):
    archive = cifar10_raw / "cifar-10-python.tar.gz"
    # torchvision: CIFAR10(root="./data", download=True) keeps the archive in ./data
    (isolated / "data").mkdir()
    shutil.copy(archive, isolated / "data")
    assert find_raw(C10, download=False, progress=False)["train"] == (
        str(isolated / "data" / "cifar-10-python.tar.gz"),)
    shutil.rmtree(isolated / "data")
    # keras 2: ~/.keras/datasets/cifar-10-batches-py.tar.gz and the extracted folder
    keras = isolated / "home" / ".keras" / "datasets"
    keras.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(keras, filter="data")
    assert find_raw(C10, download=False, progress=False)["test"] == (
        str(keras / "cifar-10-batches-py"),)
    shutil.copy(archive, keras / "cifar-10-batches-py.tar.gz")
    assert find_raw(C10, download=False, progress=False)["test"] == (
        str(keras / "cifar-10-batches-py.tar.gz"),)
    assert str(keras) in candidate_dirs(C10)


def test_extracted_folder_converts_to_the_same_pixels(cifar10_raw, cifar10_shards, tmp_path):
    with tarfile.open(cifar10_raw / "cifar-10-python.tar.gz") as tar:
        tar.extractall(tmp_path / "raw", filter="data")
    convert("cifar-10", str(tmp_path / "out"), raw=str(tmp_path / "raw"),
            shard_size=SMALL_SHARD, progress=False)
    for split in ("train", "test"):
        m, images, labels = read_split(str(tmp_path / "out" / "cifar-10" / split))
        _, want, want_labels = read_split(str(cifar10_shards / "cifar-10" / split))
        assert np.array_equal(images, want) and np.array_equal(labels, want_labels)
        assert m.source["files"][0]["name"] == "cifar-10-batches-py/data_batch_1"
        assert not m.synthetic  # the marker sits next to the archive, not in tmp_path/raw


def test_download_checks_md5(cifar10_raw, isolated, http_serve):
    server = http_serve(cifar10_raw)
    archive = cifar10_raw / "cifar-10-python.tar.gz"
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    name = archive.name
    with pytest.raises(InputError, match=f"{name}: checksum mismatch"):
        find_raw(C10, mirror=server.url, checksums={name: "0" * 32}, progress=False)
    cache = isolated / "cache" / "raw" / "cifar-10"
    assert not (cache / name).exists()
    found = find_raw(C10, mirror=server.url, checksums={name: md5}, progress=False)
    assert found == {"train": (str(cache / name),), "test": (str(cache / name),)}
    assert (cache / name).read_bytes() == archive.read_bytes()
    assert server.requests[name] == 2
    # the published checksums are torchvision's
    assert C10.md5 == {name: "c58f30108f718f92721af3b95e74349a"}
    assert C100.md5 == {"cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85"}
    assert C10.mirrors == ("https://www.cs.toronto.edu/~kriz/",)


# ---------------------------------------------------------------------------------------------
# malicious and bad archives


class _RunsCode:
    """Pickles into a call of os.mkdir: what a malicious batch could do instead."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def _archive_with(tmp_path, replace: dict, drop=()):
    """A copy of a small stand-in archive with members replaced (name -> bytes) or dropped."""
    synthesize("cifar-10", tmp_path / "good", num_train=10, num_test=5, progress=False)
    members = {}
    with tarfile.open(tmp_path / "good" / "cifar-10-python.tar.gz") as tar:
        for m in tar.getmembers():
            if m.isfile():
                members[m.name.split("/")[-1]] = tar.extractfile(m).read()
    members.update(replace)
    for name in drop:
        del members[name]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "cifar-10-python.tar.gz").write_bytes(archive_bytes(members, "cifar-10-batches-py"))
    return bad


def test_malicious_pickle_cannot_run_code(tmp_path, capsys):
    sentinel = tmp_path / "pwned"
    payload = pickle.dumps({b"data": _RunsCode(str(sentinel)), b"labels": []}, protocol=4)
    pickle.loads(payload)                      # a stock unpickler runs it ...
    assert sentinel.is_dir()
    sentinel.rmdir()
    with pytest.raises(InputError, match=r"refused to load the global (posix|nt)\.mkdir"):
        safe_loads(payload, "x")               # ... the restricted one refuses
    assert not sentinel.exists()
    # in an archive: `convert` names the file, the member and the refused global
    bad = _archive_with(tmp_path, {"data_batch_2": payload})
    rc = main(["convert", "cifar-10", str(tmp_path / "out"), "--raw", str(bad), "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and not sentinel.exists() and not (tmp_path / "out").exists()
    assert "cifar-10-python.tar.gz: member cifar-10-batches-py/data_batch_2" in err
    assert "mkdir" in err and len(err.strip().splitlines()) == 1
    # numpy's reconstructor cannot be turned against anything but an ndarray either
    sneaky = (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncbuiltins\neval\nK\x00\x85U\x01b"
              b"\x87R.")
    with pytest.raises(InputError, match="refused to load the global builtins.eval"):
        safe_loads(sneaky, "x")
    # nor can BUILD alter the stand-ins it hands out (setattr through a slot state)
    tamper = (b"\x80\x02cnumpy\nndarray\nN}X\x08\x00\x00\x00__call__cnumpy\ndtype\ns\x86b.")
    with pytest.raises(InputError, match="refused to set the attribute '__call__'"):
        safe_loads(tamper, "x")
    # an array the pickle never fills in is a layout error, not a crash
    empty = (b"\x80\x02}(U\x04datacnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
             b"K\x00\x85U\x01b\x87RU\x06labels]u.")
    with pytest.raises(InputError, match="x: 'data' is PickledArray, expected a uint8 array"):
        _batch(empty, "x", C10, b"labels", 10)


def _truncated(tmp_path):
    synthesize("cifar-10", tmp_path / "t", num_train=100, num_test=20, progress=False)
    p = tmp_path / "t" / "cifar-10-python.tar.gz"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return tmp_path / "t", ["cifar-10-python.tar.gz: truncated or damaged archive (member "
                            "cifar-10-batches-py/data_batch_"]


BAD = {
    "truncated": _truncated,
    "not gzip": lambda t: (_archive_with(t, {}), None),
    "not a dict": lambda t: (_archive_with(t, {"test_batch": py2_pickle([1, 2])}),
                             ["member cifar-10-batches-py/test_batch", "holds a list"]),
    "no labels": lambda t: (_archive_with(t, {"data_batch_3": py2_pickle(
        {b"data": np.zeros((2, 3072), np.uint8)})}),
        ["member cifar-10-batches-py/data_batch_3", "no 'labels' entry"]),
    "wrong shape": lambda t: (_archive_with(t, {"data_batch_1": py2_pickle(
        {b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]})}),
        ["data_batch_1", "'data' is (2, 1024)"]),
    "label range": lambda t: (_archive_with(t, {"data_batch_5": py2_pickle(
        {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]})}),
        ["data_batch_5", "label 10 of image 1 is outside the 10 classes"]),
    "missing member": lambda t: (_archive_with(t, {}, drop=["test_batch"]),
                                 ["the archive lacks cifar-10-batches-py/test_batch"]),
}


@pytest.mark.parametrize("problem", sorted(BAD))
def test_bad_archives_name_file_and_member(tmp_path, capsys, problem):
    raw, expect = BAD[problem](tmp_path)
    if problem == "not gzip":
        p = raw / "cifar-10-python.tar.gz"
        p.write_bytes(b"\x1f\x8b" + p.read_bytes()[2:40] + b"junk" * 10)
        expect = ["cifar-10-python.tar.gz: truncated or damaged archive"]
    out = tmp_path / "out"
    rc = main(["convert", "cifar-10", str(out), "--raw", str(raw), "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1, err
    for text in expect + [str(raw)]:
        assert text in err, err
    assert not out.exists()  # nothing half-written


def test_datasets_lists_cifar(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    line10 = next(x for x in out.splitlines() if x.startswith("cifar-10 "))
    assert "train 50,000, test 10,000; 32x32x3 uint8; 10 classes: airplane, automobile" in line10
    line100 = next(x for x in out.splitlines() if x.startswith("cifar-100 "))
    assert "100 classes: apple, aquarium_fish" in line100 and "20 superclasses" in line100
    for kind in ("webdataset", "parquet"):
        assert any(x.startswith(kind) for x in out.splitlines())
    assert main(["datasets", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert len(rows["cifar-100"]["classes"]) == 100
    assert rows["cifar-100"]["coarse_classes"][-1] == "vehicles_2"
    assert rows["cifar-10"]["raw_files"] == ["cifar-10-python.tar.gz"]


def test_gzip_stream_is_read_member_by_member(cifar10_raw, monkeypatch):
    """The archive is streamed: never read whole into memory by the converter."""
    from shardstream.converters import cifar

    reads = []
    real = cifar._HashingReader.readinto

    def spy(self, b):
        reads.append(len(b))
        return real(self, b)

    monkeypatch.setattr(cifar._HashingReader, "readinto", spy)
    data, classes, _ = cifar.load_cifar(C10, cifar10_raw / "cifar-10-python.tar.gz")
    assert max(reads) <= 1 << 20 and len(reads) >= 1
    assert classes == C10.classes and len(data["train"][0]) == CIFAR_TRAIN
