"""The D2L §4.2 data module on shards: FashionMNIST / DataModule, torch and tf.

Budget: ~15 s (small stand-in: 1,000 train / 250 test images in 128-sample shards).
"""

import numpy as np
import pytest

from shardstream import KMNIST, FashionMNIST
from shardstream.errors import InputError, ShardstreamError
from shardstream.loaders.resize import to_float


@pytest.fixture(scope="module")
def raw(fmnist_raw):
    from shardstream.converters.idx import read_idx

    def load(split):
        prefix = "train" if split == "train" else "t10k"
        return (read_idx(str(fmnist_raw / f"{prefix}-images-idx3-ubyte.gz"))[..., None],
                read_idx(str(fmnist_raw / f"{prefix}-labels-idx1-ubyte.gz")).astype(np.int64))

    return load


@pytest.fixture(scope="module")
def data(fmnist_shards):
    return FashionMNIST(batch_size=64, resize=(32, 32), root=str(fmnist_shards))


def test_members_like_the_chapter(data, raw):
    import torch
    assert (len(data.train), len(data.val)) == (1000, 250)
    image, label = data.train[0]
    assert isinstance(image, torch.Tensor) and image.shape == torch.Size([1, 32, 32])
    assert image.dtype == torch.float32 and isinstance(label, int)
    images, labels = raw("train")
    # random access by global index, across shards (128 per shard), and from the end
    for i in (0, 127, 128, 500, 999, -1):
        image, label = data.train[i]
        assert np.array_equal(image.numpy().transpose(1, 2, 0), to_float(images[[i]], (32, 32))[0])
        assert label == labels[i]
    test_images, test_labels = raw("test")
    image, label = data.val[249]
    assert np.array_equal(image.numpy()[0], to_float(test_images[[249]], (32, 32))[0, ..., 0])
    assert label == test_labels[249]
    with pytest.raises(IndexError, match="1000 samples"):
        data.train[1000]


def test_dataloaders_are_the_streaming_loaders(data, fmnist_shards, raw):
    import torch

    from shardstream import torch_loader

    train = data.train_dataloader()
    assert len(train) == 16                                  # ceil(1000 / 64)
    loc = str(fmnist_shards / "fashion-mnist" / "train")
    for epoch in (0, 1):                                     # each pass is the next epoch
        X, y = next(iter(train))
        ref = torch_loader(loc, batch_size=64, resize=(32, 32), seed=0, epoch=epoch)
        Xr, yr = next(iter(ref))
        assert X.shape == (64, 1, 32, 32) and X.dtype == torch.float32 and y.dtype == torch.int64
        assert np.array_equal(X.numpy(), Xr.numpy()) and np.array_equal(y.numpy(), yr.numpy())
    train.set_epoch(0)
    X0, _ = next(iter(train))
    assert np.array_equal(X0.numpy(), next(iter(torch_loader(loc, batch_size=64, resize=(32, 32),
                                                             seed=0)))[0].numpy())
    # val: in order, every sample once
    test_images, test_labels = raw("test")
    ys = [y.numpy() for _, y in data.val_dataloader()]
    assert np.array_equal(np.concatenate(ys), test_labels)


def test_text_labels_and_visualize(data):
    import torch
    names = list(data.classes)
    assert len(names) == 10
    assert data.text_labels([0, 9]) == [names[0], names[9]]
    assert (data.text_labels(torch.tensor([1, 2])) == data.text_labels(np.array([1, 2]))
            == names[1:3])
    assert data.text_labels(3) == [names[3]]
    with pytest.raises(InputError, match="class index 10"):
        data.text_labels([10])
    X, y = next(iter(data.val_dataloader()))
    pic = data.visualize((X, y))
    assert pic.size[0] == 8 * 150
    a = np.asarray(pic.convert("L"), dtype=float)
    assert a.std() > 20
    assert data.visualize((X, y), nrows=2, ncols=4, labels=["x"] * 8).size[0] == 4 * 150


def test_tf_framework_gives_the_same_data(data, fmnist_shards):
    import tensorflow as tf
    tfdata = FashionMNIST(batch_size=64, resize=(32, 32), root=str(fmnist_shards), framework="tf")
    image, label = tfdata.train.dataset[5]
    assert isinstance(image, tf.Tensor) and tuple(image.shape) == (32, 32, 1)
    assert np.array_equal(image.numpy(), data.train[5][0].numpy().transpose(1, 2, 0))
    assert label == data.train[5][1]
    loader = tfdata.train_dataloader()
    assert len(loader) == 16
    Xf, yf = next(iter(loader))
    Xt, yt = next(iter(data.get_dataloader(train=True).loader(0)))
    assert tuple(Xf.shape) == (64, 32, 32, 1) and Xf.dtype == tf.float32
    assert np.array_equal(Xf.numpy(), Xt.numpy().transpose(0, 2, 3, 1))
    assert np.array_equal(yf.numpy(), yt.numpy())
    assert tfdata.text_labels(yf[:2]) == data.text_labels(yt[:2])
    assert tfdata.visualize((Xf, yf)).size[0] == 8 * 150


def test_original_size_means_no_resize(fmnist_shards, raw):
    d = FashionMNIST(root=str(fmnist_shards))                 # the book's resize=(28, 28)
    images, _ = raw("train")
    assert np.array_equal(d.train[3][0].numpy()[0], images[3, ..., 0] / np.float32(255))
    assert FashionMNIST(root=str(fmnist_shards), resize=None).train[3][0].shape == (1, 28, 28)


def test_converts_once_when_root_is_empty(fmnist_raw, tmp_path, capsys):
    root = tmp_path / "shards"
    d = FashionMNIST(batch_size=32, root=str(root), raw=str(fmnist_raw))
    assert "converting it once" in capsys.readouterr().out
    assert (root / "fashion-mnist" / "train" / "manifest.json").exists()
    assert len(d.train) == 1000
    stamp = (root / "fashion-mnist" / "train" / "manifest.json").stat().st_mtime_ns
    FashionMNIST(batch_size=32, root=str(root))
    assert "converting" not in capsys.readouterr().out
    assert (root / "fashion-mnist" / "train" / "manifest.json").stat().st_mtime_ns == stamp


def test_no_raw_data_says_what_to_do(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ShardstreamError, match="shardstream synth kmnist"):
        KMNIST(root=str(tmp_path / "shards"), raw=str(empty))
    assert not (tmp_path / "shards" / "kmnist" / "train" / "manifest.json").exists()


def test_bad_arguments(fmnist_shards):
    with pytest.raises(InputError, match="framework='jax'"):
        FashionMNIST(root=str(fmnist_shards), framework="jax")
    with pytest.raises(InputError, match="batch_size=0"):
        FashionMNIST(root=str(fmnist_shards), batch_size=0)
    with pytest.raises(InputError, match="resize"):
        FashionMNIST(root=str(fmnist_shards), resize=(0, 5))
