"""Shards that other tools wrote (issue 15 items 2, 4, 5): ``convert webdataset`` of tar shards
written by stock ``webdataset.TarWriter`` and ``convert parquet`` of ``datasets.Dataset
.to_parquet`` files, from a local folder, an HTTP server and S3, give shardstream shards whose
pixels and labels equal the source's; odd sizes, missing labels, mixed modes and damaged files
are refused by name with nothing written.

Budget: ~15 s (a few dozen tiny images; one moto S3 server, one local HTTP server).
"""

import os

import numpy as np
import pytest
from PIL import Image

from shardstream import storage
from shardstream.cli import main
from shardstream.converters.convert import convert
from shardstream.converters.images import resize_bilinear
from shardstream.errors import InputError
from shardstream.shards import read_shard
from shardstream.shards.manifest import load_manifest

H, W = 8, 6


def read_split(loc, fmt):
    m = load_manifest(loc)
    parts = [read_shard(fmt, storage.read_bytes(storage.join(loc, s.name)), m, i)
             for i, s in enumerate(m.shards[fmt])]
    return m, np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def rgb_images(n, seed=0, shape=(H, W, 3)):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n,) + shape, dtype=np.uint8)
    images[:, 0] = 0  # some structure, as photos have
    return images


def write_wds(folder, images, labels, *, ext="png", keys=None, shards=(("train", 2),),
              drop_label=None):
    """Write the samples with stock ``webdataset.TarWriter`` into ``<split>-<i>.tar`` files
    (``shards``: (split, number of files), the samples dealt out in order); ``ext`` may be a
    list (one per sample); each sample also gets a ``json`` member.  Returns the file names."""
    import webdataset as wds

    os.makedirs(folder, exist_ok=True)
    keys = keys or [f"img/{i:05d}" for i in range(len(images))]
    exts = ext if isinstance(ext, list) else [ext] * len(images)
    parts = np.array_split(np.arange(len(images)), sum(c for _, c in shards))
    names = [f"{split}-{s:06d}.tar" for split, count in shards for s in range(count)]
    for name, part in zip(names, parts):
        with wds.TarWriter(os.path.join(folder, name)) as w:
            for i in part:
                payload = "a caption, no image" if exts[i] == "txt" else images[i]
                sample = {"__key__": keys[i], exts[i]: payload, "json": {"index": int(i)}}
                if i != drop_label:
                    sample["cls"] = int(labels[i])
                w.write(sample)
    return names


def write_parquet(path, images, labels, names=("cat", "dog", "owl"), image_col="image",
                  label_col="label", extra=None):
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as HFImage

    columns = {image_col: [Image.fromarray(im.squeeze()) for im in images],
               label_col: [int(v) for v in labels]}
    features = {image_col: HFImage(), label_col: ClassLabel(names=list(names))}
    if extra:
        columns.update(extra[0])
        features.update(extra[1])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Dataset.from_dict(columns, features=Features(features)).to_parquet(path)


@pytest.fixture(autouse=True)
def hf_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))


# ---------------------------------------------------------------------------------------------
# round trips


def test_webdataset_round_trip_local(tmp_path):
    images, labels = rgb_images(30), np.arange(30) % 3
    exts = ["png"] * 10 + ["npy"] * 10 + ["jpg"] * 10
    keys = [f"photos/cam{i % 2}/shot_{i:03d}" for i in range(30)]  # any key scheme
    write_wds(tmp_path / "wds", images[:24], labels[:24], ext=exts[:24], keys=keys[:24],
              shards=(("train", 3),))
    write_wds(tmp_path / "wds", images[24:], labels[24:], ext=exts[24:], keys=keys[24:],
              shards=(("test", 1),))
    # JPEG is lossy: the source's pixels are what a JPEG decoder gives back
    import webdataset as wds

    want = images.copy()
    decoded = {s["__key__"]: s["jpg"] for f in sorted(os.listdir(tmp_path / "wds"))
               for s in wds.WebDataset(str(tmp_path / "wds" / f), shardshuffle=False,
                                       empty_check=False).decode("rgb8")
               if "jpg" in s}
    for i in range(20, 30):
        want[i] = decoded[keys[i]]
    ms = convert("webdataset", str(tmp_path / "out"), source=str(tmp_path / "wds"),
                 classes=["cat", "dog", "owl"], shard_size=7, progress=False)
    assert [m.split for m in ms] == ["train", "test"] and ms[0].dataset == "wds"
    for m, sl in zip(ms, (slice(0, 24), slice(24, 30))):
        for fmt in ("tar", "parquet"):
            got_m, got, got_labels = read_split(str(tmp_path / "out" / "wds" / m.split), fmt)
            assert np.array_equal(got, want[sl]) and np.array_equal(got_labels, labels[sl])
        assert got_m.classes == ("cat", "dog", "owl") and got_m.image_shape == (H, W, 3)
    assert [f["name"] for f in ms[0].source["files"]] == [f"train-00000{i}.tar" for i in range(3)]
    assert not ms[0].synthetic


def test_webdataset_from_http_and_s3(tmp_path, http_serve, s3_server, monkeypatch):
    images, labels = rgb_images(12, seed=1), np.arange(12) % 4
    write_wds(tmp_path / "src" / "wds", images, labels, shards=(("train", 2),))
    server = http_serve(tmp_path / "src")
    ms = convert("webdataset", str(tmp_path / "out"), source=server.url + "/wds/",
                 name="web", progress=False)
    _, got, got_labels = read_split(str(tmp_path / "out" / "web" / "train"), "tar")
    assert np.array_equal(got, images) and np.array_equal(got_labels, labels)
    assert ms[0].classes == ("0", "1", "2", "3")  # no names anywhere: the numbers
    bucket = s3_server.bucket("foreign")
    for name in os.listdir(tmp_path / "src" / "wds"):
        storage.write_bytes(f"{bucket}/wds/{name}", (tmp_path / "src" / "wds" / name).read_bytes(),
                            storage_options=s3_server.storage_options)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    assert main(["convert", "webdataset", f"{bucket}/wds", f"{bucket}/out", "-q",
                 "--name", "web"]) == 0
    _, got, got_labels = read_split(f"{bucket}/out/web/train", "parquet")
    assert np.array_equal(got, images) and np.array_equal(got_labels, labels)


def test_parquet_round_trip(tmp_path, http_serve):
    images, labels = rgb_images(20, seed=2), np.arange(20) % 3
    write_parquet(str(tmp_path / "hf" / "data" / "train-00000-of-00001.parquet"),
                  images[:15], labels[:15], image_col="img")
    write_parquet(str(tmp_path / "hf" / "data" / "test-00000-of-00001.parquet"),
                  images[15:], labels[15:], image_col="img")
    server = http_serve(tmp_path)
    for src in (str(tmp_path / "hf"), server.url + "/hf"):
        ms = convert("parquet", str(tmp_path / "out"), source=src, name="hf", shard_size=4,
                     progress=False)
        for m, sl in zip(ms, (slice(0, 15), slice(15, 20))):
            assert m.classes == ("cat", "dog", "owl")             # from the metadata
            for fmt in ("tar", "parquet"):
                _, got, got_labels = read_split(str(tmp_path / "out" / "hf" / m.split), fmt)
                assert np.array_equal(got, images[sl]) and np.array_equal(got_labels, labels[sl])
        assert ms[0].source["label_column"] == "label"


def test_parquet_grey_and_label_column_choice(tmp_path, capsys):
    from datasets import ClassLabel

    images = rgb_images(9, seed=3, shape=(5, 7, 1))
    fine, coarse = np.arange(9) % 3, np.arange(9) % 2
    write_parquet(str(tmp_path / "src" / "train.parquet"), images, fine,
                  extra=({"coarse": coarse.tolist()}, {"coarse": ClassLabel(names=["x", "y"])}))
    rc = main(["convert", "parquet", str(tmp_path / "src"), str(tmp_path / "out"), "-q"])
    assert rc == 1 and "2 label columns (label, coarse); choose one with --label COLUMN" in \
        capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main(["convert", "parquet", str(tmp_path / "src"), str(tmp_path / "out"), "-q",
                 "--label", "coarse", "--classes", "even,odd"]) == 0
    m, got, got_labels = read_split(str(tmp_path / "out" / "src" / "train"), "tar")
    assert m.image_shape == (5, 7, 1) and np.array_equal(got, images)
    assert np.array_equal(got_labels, coarse) and m.classes == ("even", "odd")  # --classes wins


# ---------------------------------------------------------------------------------------------
# sizes: refused, or resized with PIL bilinear


def test_odd_size_refused_unless_size(tmp_path, capsys):
    images = rgb_images(6, seed=4)
    odd = rgb_images(1, seed=5, shape=(10, 9, 3))[0]
    samples = list(images[:3]) + [odd] + list(images[3:])
    labels = np.arange(7) % 2
    write_wds(tmp_path / "wds", samples, labels, shards=(("train", 1),))
    out = tmp_path / "out"
    rc = main(["convert", "webdataset", str(tmp_path / "wds"), str(out), "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and not out.exists()
    assert "train-000000.tar: member img/00003.png: image of 9x10 (WxH), expected 6x8" in err
    assert "--size HxW" in err
    assert main(["convert", "webdataset", str(tmp_path / "wds"), str(out), "-q",
                 "--size", f"{H}x{W}"]) == 0
    m, got, _ = read_split(str(out / "wds" / "train"), "tar")
    assert np.array_equal(got[[0, 1, 2, 4, 5, 6]], images)       # the right size: untouched
    ref = np.asarray(Image.fromarray(odd).resize((W, H), Image.BILINEAR))
    assert np.array_equal(got[3], ref) and np.array_equal(resize_bilinear(odd, (H, W)), ref)
    assert m.source["resized_to"] == [H, W] and m.source["resized"] == 1


# ---------------------------------------------------------------------------------------------
# bad input: a clear error naming the file and member, nothing written


def _damaged(tmp_path):
    names = write_wds(tmp_path / "wds", rgb_images(10), np.zeros(10), shards=(("train", 2),))
    p = tmp_path / "wds" / names[1]
    p.write_bytes(p.read_bytes()[:3000])
    return [f"{names[1]}: truncated or damaged tar shard"]


def _no_label(tmp_path):
    write_wds(tmp_path / "wds", rgb_images(5), np.zeros(5), shards=(("train", 1),), drop_label=2)
    return ["train-000000.tar: sample 'img/00002' (member img/00002.png) has no .cls label"]


def _mixed(tmp_path):
    grey = rgb_images(1, shape=(H, W, 1))[0][..., 0]
    write_wds(tmp_path / "wds", list(rgb_images(3)) + [grey], np.zeros(4),
              shards=(("train", 1),))
    return ["member img/00003.png: grayscale image among RGB ones (like",
            "img/00000.png); all images must be one kind"]


def _bad_class(tmp_path):
    write_wds(tmp_path / "wds", rgb_images(4), [0, 1, 2, 1], shards=(("train", 1),))
    return ["member img/00002.png: label 2 is outside the 2 classes from --classes"]


def _no_image(tmp_path):
    write_wds(tmp_path / "wds", rgb_images(3), np.zeros(3), ext=["png", "txt", "png"],
              shards=(("train", 1),))
    return ["sample 'img/00001' has no image member (.png, .jpg, .npy)"]


BAD = {"damaged tar": _damaged, "missing label": _no_label, "mixed modes": _mixed,
       "label outside --classes": _bad_class, "no image": _no_image}


@pytest.mark.parametrize("problem", sorted(BAD))
def test_bad_webdataset_names_file_and_member(tmp_path, capsys, problem):
    expect = BAD[problem](tmp_path)
    argv = ["convert", "webdataset", str(tmp_path / "wds"), str(tmp_path / "out"), "-q"]
    if problem == "label outside --classes":
        argv += ["--classes", "a,b"]
    if problem == "no image":
        import tarfile
        with tarfile.open(tmp_path / "wds" / "train-000000.tar") as tar:
            assert "img/00001.txt" in tar.getnames()
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1, err
    for text in expect + [str(tmp_path / "wds")]:
        assert text in err, err
    assert not (tmp_path / "out").exists()


def test_bad_parquet(tmp_path):
    images = rgb_images(4)
    write_parquet(str(tmp_path / "a" / "train.parquet"), images, [0, 1, -1, 0])
    with pytest.raises(InputError, match=r"train.parquet: row 2: label -1 \(label\); -1 marks an "
                                         r"unlabelled sample"):
        convert("parquet", str(tmp_path / "out"), source=str(tmp_path / "a"), progress=False)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "train.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(InputError, match="train.parquet: not a readable Parquet file"):
        convert("parquet", str(tmp_path / "out"), source=str(tmp_path / "b"), progress=False)
    write_parquet(str(tmp_path / "c" / "train.parquet"), images, [0, 1, 2, 0])
    write_parquet(str(tmp_path / "c" / "test.parquet"), images, [0, 1, 2, 0],
                  names=("x", "y", "z"))
    with pytest.raises(InputError, match=r"test.parquet: its class names \(x, y, z\) differ from "
                                         r"those of .*train.parquet \(cat, dog, owl\)"):
        convert("parquet", str(tmp_path / "out"), source=str(tmp_path / "c"), progress=False)
    with pytest.raises(InputError, match="nothing: cannot list the parquet files .*no such"):
        convert("parquet", str(tmp_path / "out"), source=str(tmp_path / "a" / "nothing"),
                progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty: holds no .parquet files"):
        convert("parquet", str(tmp_path / "out"), source=str(tmp_path / "empty"), progress=False)
    assert not (tmp_path / "out").exists()


def test_options_that_do_not_fit(tmp_path, capsys):
    for argv, text in [
        (["convert", "webdataset", str(tmp_path / "out")], "needs its source location"),
        (["convert", "mnist", str(tmp_path / "out"), "--size", "4x4"], "--classes and --size "
                                                                      "are for image folders"),
        (["convert", "webdataset", "x", str(tmp_path / "out"), "--label", "y"],
         "a webdataset sample's label is its .cls member"),
        (["convert", "imagefolder", "x", str(tmp_path / "out"), "--classes", "a"],
         "--label and --classes are for webdataset and parquet"),
        (["convert", "mnist", str(tmp_path / "out"), "--skip-bad"],
         "--skip-bad is for image folders"),
        (["convert", "mnist", str(tmp_path / "out"), "--token", "t"],
         "--token (and --timeout, --retries) are for a remote webdataset"),
    ]:
        assert main(argv) == 1
        assert text in capsys.readouterr().err
