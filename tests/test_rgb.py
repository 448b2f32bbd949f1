"""RGB end to end (issue 15 item 3), on the converted CIFAR-10 stand-in: torch and tf.data give
bitwise identical batches (NCHW vs NHWC), the resize stays within 1/255 of PIL per channel,
``show`` draws colour, the book's data module works, and stock webdataset and Hugging Face
``datasets`` read the converted shards back exactly.

Budget: ~20 s (500 + 100 images of 32x32x3).
"""

import glob
import os

import numpy as np
import pytest
from conftest import CIFAR_TEST, CIFAR_TRAIN, SMALL_SHARD, cifar_archive_arrays
from PIL import Image

import shardstream as ss
from shardstream.cli import main
from shardstream.converters.convert import convert
from shardstream.converters.datasets import DATASETS
from shardstream.loaders.plan import plan_epoch
from shardstream.loaders.resize import to_float

CLASSES = DATASETS["cifar-10"].classes
BATCHES = [f"data_batch_{i}" for i in range(1, 6)]


@pytest.fixture(scope="module")
def source(cifar10_raw):
    """{split: (images uint8 (N, 32, 32, 3), labels)} as the archive holds them."""
    a = cifar_archive_arrays(cifar10_raw / "cifar-10-python.tar.gz")
    return {"train": (np.concatenate([a[b][0] for b in BATCHES]),
                      np.concatenate([a[b][1] for b in BATCHES])),
            "test": a["test_batch"]}


def _colour_fraction(rgb):
    """Fraction of pixels whose channels differ by more than 40 (0 for a grey picture)."""
    rgb = np.asarray(rgb, dtype=np.int16)
    return float(((rgb.max(axis=-1) - rgb.min(axis=-1)) > 40).mean())


@pytest.mark.parametrize("fmt,resize,kw", [
    ("tar", None, dict(batch_size=64, seed=0, epoch=0, shuffle_buffer=200)),
    ("parquet", (24, 40), dict(batch_size=50, seed=3, epoch=2, shuffle_buffer=100)),
    ("tar", (64, 64), dict(batch_size=100, shuffle=False)),
])
def test_torch_and_tf_batches_identical(cifar10_shards, source, fmt, resize, kw):
    loc = str(cifar10_shards / "cifar-10" / "train")
    images, labels = source["train"]
    plan = plan_epoch(ss.load_manifest(loc).shard_sizes, **kw)
    torch_batches = list(ss.torch_loader(loc, format=fmt, resize=resize, **kw))
    tf_batches = list(ss.tf_dataset(loc, format=fmt, resize=resize, **kw))
    assert len(torch_batches) == len(tf_batches) == plan.num_batches
    h, w = resize or (32, 32)
    for k, ((tX, ty), (fX, fy)) in enumerate(zip(torch_batches, tf_batches)):
        tX, fX = tX.numpy(), fX.numpy()
        n = len(plan.batch(k))
        assert tX.shape == (n, 3, h, w) and fX.shape == (n, h, w, 3)       # NCHW vs NHWC
        assert np.array_equal(tX.transpose(0, 2, 3, 1), fX), k
        assert np.array_equal(fX, to_float(images[plan.batch(k)], resize)), k
        assert np.array_equal(ty.numpy(), labels[plan.batch(k)])
        assert np.array_equal(fy.numpy(), labels[plan.batch(k)])
    # the channels are not copies of one another: this is colour data
    assert not np.array_equal(tX[:, 0], tX[:, 1]) and not np.array_equal(tX[:, 1], tX[:, 2])


@pytest.mark.parametrize("size", [(24, 40), (64, 64), (17, 17)])
def test_resize_matches_pil_per_channel(source, size):
    images = source["test"][0][:40]
    h, w = size
    got = to_float(images, size)
    rgb = np.stack([np.asarray(Image.fromarray(im).resize((w, h), Image.BILINEAR))
                    for im in images]) / 255
    planes = np.stack([np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(im[..., c]))
                                            .resize((w, h), Image.BILINEAR))
                                 for c in range(3)], axis=-1) for im in images]) / 255
    for ref in (rgb, planes):  # PIL resizes RGB as three independent channels
        err = np.abs(got - ref)
        assert err.max() <= 1 / 255 + 1e-6 and err.mean() < 0.5 / 255


def test_show_draws_colour(cifar10_shards, fmnist_shards, tmp_path, capsys):
    out = tmp_path / "cifar.png"
    assert main(["show", str(cifar10_shards / "cifar-10" / "train"), "-o", str(out)]) == 0
    with Image.open(out) as im:
        assert im.mode == "RGB"
        pic = np.asarray(im)
    assert _colour_fraction(pic) > 0.3, _colour_fraction(pic)  # white cells aside: colour
    grey = tmp_path / "fmnist.png"
    assert main(["show", str(fmnist_shards / "fashion-mnist" / "train"), "-o", str(grey)]) == 0
    with Image.open(grey) as im:
        assert _colour_fraction(np.asarray(im.convert("RGB"))) == 0.0     # the grey control
    capsys.readouterr()


def test_book_data_module(cifar10_shards, source):
    import torch

    data = ss.CIFAR10(batch_size=32, root=str(cifar10_shards))
    assert (len(data.train), len(data.val)) == (CIFAR_TRAIN, CIFAR_TEST)
    assert data.classes == CLASSES and data.text_labels([0, 9]) == ["airplane", "truck"]
    image, label = data.train[300]
    assert isinstance(image, torch.Tensor) and image.shape == (3, 32, 32)
    want = source["train"][0][300] / np.float32(255)
    assert np.array_equal(image.numpy().transpose(1, 2, 0), want)
    assert label == source["train"][1][300]
    X, y = next(iter(data.train_dataloader()))
    assert X.shape == (32, 3, 32, 32) and len(data.train_dataloader()) == 16
    pic = data.visualize((X, y), nrows=1, ncols=8)
    assert _colour_fraction(np.asarray(pic)) > 0.3
    tf_data = ss.DataModule("cifar-10", batch_size=32, resize=(40, 40),
                            root=str(cifar10_shards), framework="tf")
    X, y = next(iter(tf_data.val_dataloader()))
    assert X.shape == (32, 40, 40, 3)
    assert np.array_equal(X.numpy(), to_float(source["test"][0][:32], (40, 40)))


def test_book_module_converts_cifar_once(cifar10_raw, source, tmp_path, capsys):
    data = ss.CIFAR10(batch_size=10, root=str(tmp_path), raw=str(cifar10_raw))
    assert "converting it once" in capsys.readouterr().out
    image, label = data.val[7]
    assert np.array_equal(image.numpy().transpose(1, 2, 0), source["test"][0][7] / np.float32(255))
    assert os.path.exists(tmp_path / "cifar-10" / "train" / "manifest.json")


@pytest.fixture(scope="module")
def cifar_png_shards(cifar10_raw, tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar_png")
    convert("cifar-10", str(root), raw=str(cifar10_raw), shard_size=SMALL_SHARD,
            encoding="png", progress=False)
    return root


@pytest.mark.parametrize("encoding", ["npy", "png"])
def test_stock_webdataset_reads_the_shards(cifar10_shards, cifar_png_shards, source, encoding):
    import webdataset as wds

    root = cifar10_shards if encoding == "npy" else cifar_png_shards
    urls = sorted(glob.glob(str(root / "cifar-10" / "train" / "*.tar")))
    ds = wds.WebDataset(urls, shardshuffle=False, empty_check=False)
    ds = ds.decode("rgb8") if encoding == "png" else ds.decode()
    samples = list(ds)
    images, labels = source["train"]
    assert len(samples) == CIFAR_TRAIN
    assert [s["__key__"] for s in samples[:2]] == ["000000000", "000000001"]
    got = np.stack([s[encoding] for s in samples])
    assert got.dtype == np.uint8 and np.array_equal(got, images)
    assert np.array_equal([s["cls"] for s in samples], labels)


def test_hugging_face_datasets_reads_the_shards(cifar_png_shards, source, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    files = sorted(glob.glob(str(cifar_png_shards / "cifar-10" / "test" / "*.parquet")))
    ds = datasets.load_dataset("parquet", data_files=files, split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert isinstance(ds.features["image"], datasets.Image)
    assert ds.features["label"].names == list(CLASSES)
    images, labels = source["test"]
    assert ds["label"] == labels.tolist()
    got = np.stack([np.asarray(im) for im in ds["image"]])
    assert got.shape == (CIFAR_TEST, 32, 32, 3) and np.array_equal(got, images)
    assert ds[5]["image"].mode == "RGB"
