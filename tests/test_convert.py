"""`shardstream convert` for the IDX datasets (issue 2 items 4-7, 9; issue 7 item 5).

Budget: a few seconds; everything works on small synthetic sets (conftest fixtures).
"""

import glob
import gzip
import hashlib
import io
import os
import shutil

import numpy as np
import pytest

from shardstream import storage
from shardstream.cli import main
from shardstream.converters.convert import convert
from shardstream.converters.idx import read_idx
from shardstream.converters.synth import synthesize
from shardstream.errors import InputError
from shardstream.shards import read_shard
from shardstream.shards.manifest import load_manifest

CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
           "bag", "ankle boot"]


def raw_split(raw, split):
    prefix = "train" if split == "train" else "t10k"
    return (read_idx(raw / f"{prefix}-images-idx3-ubyte.gz"),
            read_idx(raw / f"{prefix}-labels-idx1-ubyte.gz"))


def tree_digest(root):
    """{relative path: sha256} of every file under root."""
    out = {}
    for p in sorted(glob.glob(os.path.join(root, "**", "*"), recursive=True)):
        if os.path.isfile(p):
            out[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def tiny_raw(tmp_path_factory):
    """A 60 + 20 sample stand-in (for tests that copy and damage it)."""
    out = tmp_path_factory.mktemp("tiny_raw")
    synthesize("fashion-mnist", out, num_train=60, num_test=20, seed=0, progress=False)
    return out


# ---------------------------------------------------------------------------------------------
# layout, manifest, content


@pytest.mark.parametrize("fixture", ["fmnist_shards", "fmnist_png_shards"])
def test_layout_manifest_and_pixels(fixture, fmnist_raw, request):
    root = request.getfixturevalue(fixture)
    encoding = "npy" if fixture == "fmnist_shards" else "png"
    for split, n, nshards in (("train", 1000, 8), ("test", 250, 2)):
        folder = root / "fashion-mnist" / split
        m = load_manifest(str(folder))
        assert (m.dataset, m.split, m.num_samples, m.encoding) == ("fashion-mnist", split, n,
                                                                   encoding)
        assert m.image_shape == (28, 28, 1) and list(m.classes) == CLASSES
        assert m.formats == ("tar", "parquet") and m.synthetic
        assert list(m.shard_sizes) == [128] * (nshards - 1) + [n - 128 * (nshards - 1)]
        names = sorted(p.name for p in folder.iterdir())
        listed = sorted([s.name for f in m.formats for s in m.shards[f]] + ["index.npy",
                                                                         "manifest.json"])
        assert names == listed                                  # nothing else, no temp files
        assert m.shards["tar"][0].name == f"{split}-000000.tar"
        for fmt in m.formats:
            for s in m.shards[fmt]:
                data = (folder / s.name).read_bytes()
                assert len(data) == s.bytes and hashlib.sha256(data).hexdigest() == s.sha256
        # source: the raw files' names, sizes and checksums
        files = {f["name"]: f for f in m.source["files"]}
        for name, f in files.items():
            data = (fmnist_raw / name).read_bytes()
            assert f["bytes"] == len(data) and f["sha256"] == hashlib.sha256(data).hexdigest()
        assert m.source["generator"]["generator"] == "shardstream.synth"
        # pixels and labels equal the raw IDX, in both formats
        images, labels = raw_split(fmnist_raw, split)
        assert list(m.label_counts) == np.bincount(labels, minlength=10).tolist()
        for fmt in m.formats:
            got = [read_shard(fmt, (folder / s.name).read_bytes(), m, i)
                   for i, s in enumerate(m.shards[fmt])]
            assert np.array_equal(np.concatenate([g[0] for g in got])[..., 0], images)
            assert np.array_equal(np.concatenate([g[1] for g in got]), labels)


def test_stock_webdataset_reads_tar_shards(fmnist_raw, fmnist_shards, fmnist_png_shards):
    import webdataset as wds
    from PIL import Image

    images, labels = raw_split(fmnist_raw, "train")
    for root, ext in ((fmnist_shards, "npy"), (fmnist_png_shards, "png")):
        urls = sorted(glob.glob(str(root / "fashion-mnist" / "train" / "*.tar")))
        samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
        assert [s["__key__"] for s in samples] == [f"{i:09d}" for i in range(1000)]
        for i, s in enumerate(samples):
            assert set(k for k in s if not k.startswith("__")) == {ext, "cls"}
            assert int(s["cls"]) == labels[i]
            if ext == "npy":
                img = np.load(io.BytesIO(s["npy"]))
            else:
                img = np.asarray(Image.open(io.BytesIO(s["png"])))[..., None]
            assert img.shape == (28, 28, 1) and np.array_equal(img[..., 0], images[i])
    # webdataset's own decoders agree
    urls = sorted(glob.glob(str(fmnist_png_shards / "fashion-mnist" / "test" / "*.tar")))
    first = next(iter(wds.WebDataset(urls, shardshuffle=False, empty_check=False)
                      .decode("l8").to_tuple("png", "cls")))
    assert np.array_equal(first[0], raw_split(fmnist_raw, "test")[0][0])


def test_pyarrow_reads_parquet_shards(fmnist_raw, fmnist_shards, fmnist_png_shards):
    import pyarrow.parquet as pq
    from PIL import Image

    images, labels = raw_split(fmnist_raw, "test")
    for root in (fmnist_shards, fmnist_png_shards):
        files = sorted(glob.glob(str(root / "fashion-mnist" / "test" / "*.parquet")))
        table = pq.ParquetDataset(files).read()
        assert table.num_rows == 250
        assert table.column("label").to_pylist() == labels.tolist()
        assert table.column("key").to_pylist() == [f"{i:09d}" for i in range(250)]
        col = table.column("image").to_pylist()
        if root == fmnist_shards:
            got = np.stack([np.frombuffer(b, np.uint8).reshape(28, 28) for b in col])
        else:
            got = np.stack([np.asarray(Image.open(io.BytesIO(c["bytes"]))) for c in col])
        assert np.array_equal(got, images)


def test_hf_datasets_sees_image_and_classlabel(fmnist_raw, fmnist_png_shards, tmp_path,
                                               monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import datasets

    files = sorted(glob.glob(str(fmnist_png_shards / "fashion-mnist" / "test" / "*.parquet")))
    ds = datasets.load_dataset("parquet", data_files={"test": files}, split="test",
                               cache_dir=str(tmp_path / "hf_cache"))
    assert isinstance(ds.features["image"], datasets.Image)
    assert isinstance(ds.features["label"], datasets.ClassLabel)
    assert ds.features["label"].names == CLASSES
    images, labels = raw_split(fmnist_raw, "test")
    assert len(ds) == 250 and ds["label"] == labels.tolist()
    assert np.array_equal(np.asarray(ds[7]["image"]), images[7])


# ---------------------------------------------------------------------------------------------
# determinism, idempotence, overwrite


@pytest.mark.parametrize("encoding", ["npy", "png"])
def test_deterministic(tiny_raw, tmp_path, encoding):
    for d in ("a", "b"):
        convert("fashion-mnist", str(tmp_path / d), raw=str(tiny_raw), shard_size=16,
                encoding=encoding, progress=False)
    a, b = tree_digest(tmp_path / "a"), tree_digest(tmp_path / "b")
    assert len(a) == 2 * (4 + 2) + 2 * 2 and a == b  # shards, manifest + index


def test_same_conversion_again_is_fine_different_refuses(tiny_raw, tmp_path, capsys):
    out = tmp_path / "out"
    convert("fashion-mnist", str(out), raw=str(tiny_raw), shard_size=16, progress=False)
    before = tree_digest(out)
    convert("fashion-mnist", str(out), raw=str(tiny_raw), shard_size=16, progress=False)
    assert tree_digest(out) == before
    # a different dataset (another seed) into the same folder: refused, nothing touched
    other = tmp_path / "other"
    synthesize("fashion-mnist", other, num_train=60, num_test=20, seed=1, progress=False)
    rc = main(["convert", "fashion-mnist", str(out), "--raw", str(other), "--shard-size", "16",
               "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and "--overwrite" in err and str(out / "fashion-mnist") in err
    assert "different conversion" in err and len(err.strip().splitlines()) == 1
    assert tree_digest(out) == before
    # different arguments (shard size) count as different too
    with pytest.raises(InputError, match="shard sizes"):
        convert("fashion-mnist", str(out), raw=str(tiny_raw), shard_size=32, progress=False)
    # --overwrite replaces it; the old conversion's extra shards are removed
    assert main(["convert", "fashion-mnist", str(out), "--raw", str(other), "--shard-size", "50",
                 "--overwrite", "-q"]) == 0
    names = sorted(p.name for p in (out / "fashion-mnist" / "train").iterdir())
    assert names == ["index.npy", "manifest.json", "train-000000.parquet", "train-000000.tar",
                     "train-000001.parquet", "train-000001.tar"]
    expect = tmp_path / "expect"
    convert("fashion-mnist", str(expect), raw=str(other), shard_size=50, progress=False)
    assert tree_digest(out) == tree_digest(expect)


def test_formats_and_arguments(tiny_raw, tmp_path, capsys):
    ms = convert("fashion-mnist", str(tmp_path / "t"), raw=str(tiny_raw), formats=("parquet",),
                 shard_size=100, progress=False)
    assert [m.formats for m in ms] == [("parquet",), ("parquet",)]
    assert not glob.glob(str(tmp_path / "t" / "**" / "*.tar"), recursive=True)
    assert main(["convert", "fashion-mnist", str(tmp_path / "u"), "--raw", str(tiny_raw),
                 "--format", "tar,zip", "-q"]) == 1
    assert "unknown shard format 'zip'" in capsys.readouterr().err
    assert main(["convert", "fashion-mnist", str(tmp_path / "u"), "--raw", str(tiny_raw),
                 "--shard-size", "0", "-q"]) == 1
    assert "--shard-size" in capsys.readouterr().err
    assert not (tmp_path / "u").exists()
    ms = convert("mnist", str(tmp_path / "m"), raw=str(tiny_raw), name="digits", progress=False)
    assert ms[0].dataset == "digits" and ms[0].classes == tuple("0123456789")
    assert (tmp_path / "m" / "digits" / "test" / "manifest.json").exists()


def test_cli_progress_and_summary(tiny_raw, tmp_path, capsys):
    assert main(["convert", "fashion-mnist", str(tmp_path / "o"), "--raw", str(tiny_raw),
                 "--encoding", "png", "--shard-size", "25"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "converted fashion-mnist (png, synthetic): 80 samples, 8 shards" in out
    assert "train         60 samples" in out and "(3 tar + 3 parquet)" in out
    assert " MB in " in out and " s" in out
    assert "fashion-mnist/train" in captured.err                 # the tqdm bar


def test_convert_to_s3(tiny_raw, s3_server, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    bucket = s3_server.bucket("convert-test")
    ms = convert("fashion-mnist", bucket + "/data", raw=str(tiny_raw), shard_size=32,
                 progress=False)
    m = load_manifest(bucket + "/data/fashion-mnist/train")
    assert m == ms[0] and m.num_samples == 60
    data = storage.read_bytes(bucket + "/data/fashion-mnist/train/train-000001.parquet")
    assert hashlib.sha256(data).hexdigest() == m.shards["parquet"][1].sha256


# ---------------------------------------------------------------------------------------------
# bad input (issue 2 item 9): one line naming the file and the problem, exit 1, no manifest


def _gz(data):
    return gzip.compress(data, mtime=0)


def _bad_cases():
    def header(magic, *dims):
        return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)

    return {
        "wrong magic": ("train-images-idx3-ubyte.gz",
                        lambda d: _gz(header(2050, 60, 28, 28) + bytes(60 * 784)),
                        "wrong magic number 2050"),
        "wrong dims": ("train-images-idx3-ubyte.gz",
                       lambda d: _gz(header(2051, 60, 28, 27) + bytes(60 * 28 * 27)),
                       "wrong dims"),
        "truncated": ("t10k-images-idx3-ubyte.gz",
                      lambda d: _gz(gzip.decompress(d)[:-100]), "truncated"),
        "count mismatch": ("train-labels-idx1-ubyte.gz",
                           lambda d: _gz(header(2049, 59) + bytes(59)),
                           "60 images but"),
        "label out of range": ("t10k-labels-idx1-ubyte.gz",
                               lambda d: _gz(header(2049, 20) + bytes([3] * 19 + [10])),
                               "label 10 of sample 19 is out of range"),
        "gzip garbage": ("train-labels-idx1-ubyte.gz",
                         lambda d: d[:20] + b"\xff" * 40 + d[60:], "not a valid gzip file"),
        "empty": ("train-images-idx3-ubyte.gz", lambda d: b"", "empty"),
        "missing": ("t10k-labels-idx1-ubyte.gz", None, "t10k-labels-idx1-ubyte.gz"),
    }


@pytest.mark.parametrize("case", list(_bad_cases()))
def test_bad_input(case, tiny_raw, tmp_path, capsys):
    name, damage, problem = _bad_cases()[case]
    raw = tmp_path / "raw"
    shutil.copytree(tiny_raw, raw)
    if damage is None:
        (raw / name).unlink()
    else:
        (raw / name).write_bytes(damage((raw / name).read_bytes()))
    out = tmp_path / "out"
    rc = main(["convert", "fashion-mnist", str(out), "--raw", str(raw), "-q"])
    err = capsys.readouterr().err
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert name in lines[0] and problem in lines[0], lines[0]
    assert not glob.glob(str(out / "**" / "manifest.json"), recursive=True)


# ---------------------------------------------------------------------------------------------
# disk full / permission denied while writing (issue 7 item 5)


@pytest.mark.parametrize("fault", ["disk full", "permission denied"])
def test_write_failure_leaves_no_half_written_shard(fault, tiny_raw, tmp_path, monkeypatch,
                                                    capsys):
    import errno

    expect = tmp_path / "expect"
    convert("fashion-mnist", str(expect), raw=str(tiny_raw), shard_size=16, progress=False)
    calls = {"n": 0}
    real_fsync, real_replace = os.fsync, os.replace

    def failing_fsync(fd):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    def failing_replace(src, dst):
        calls["n"] += 1
        if calls["n"] == 5:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_replace(src, dst)

    if fault == "disk full":
        monkeypatch.setattr(os, "fsync", failing_fsync)
    else:
        monkeypatch.setattr(os, "replace", failing_replace)
    out = tmp_path / "out"
    rc = main(["convert", "fashion-mnist", str(out), "--raw", str(tiny_raw), "--shard-size",
               "16", "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and ("no space left" in err if fault == "disk full" else
                        "permission denied" in err)
    assert str(out / "fashion-mnist" / "train") in err
    # whatever is there under a final name is complete and right; no manifest, no temp files
    written = tree_digest(out)
    reference = tree_digest(expect)
    assert written and not any(k.endswith("manifest.json") for k in written)
    assert all(reference[k] == v for k, v in written.items())
    assert not [p for p in glob.glob(str(out / "**" / ".*"), recursive=True)]
    monkeypatch.undo()
    # the same command again finishes the job with the same bytes
    assert main(["convert", "fashion-mnist", str(out), "--raw", str(tiny_raw), "--shard-size",
                 "16", "-q"]) == 0
    assert tree_digest(out) == reference
