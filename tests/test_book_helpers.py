"""Issue 18 items 2 and 3: the book's own helpers (D2L §4.2 and its earlier edition) and
book-style roots (the torchvision raw layout, token=, access errors, no conversion into a
remote root).

Budget: ~15 s (the small stand-in Fashion-MNIST of conftest: 1,000 train / 250 test).
"""

import shutil

import numpy as np
import pytest

from shardstream import (
    FashionMNIST,
    get_dataloader_workers,
    get_fashion_mnist_labels,
    load_data_fashion_mnist,
    show_images,
)
from shardstream.errors import AccessError, NotFoundError
from shardstream.loaders.resize import to_float

BOOK_LABELS = ['t-shirt', 'trouser', 'pullover', 'dress', 'coat', 'sandal', 'shirt',
               'sneaker', 'bag', 'ankle boot']


@pytest.fixture(scope="module")
def raw(fmnist_raw):
    from shardstream.converters.idx import read_idx

    def load(prefix):
        return (read_idx(str(fmnist_raw / f"{prefix}-images-idx3-ubyte.gz")),
                read_idx(str(fmnist_raw / f"{prefix}-labels-idx1-ubyte.gz")).astype(np.int64))

    return load


def test_book_labels_and_workers():
    assert get_dataloader_workers() == 4
    assert get_fashion_mnist_labels(range(10)) == BOOK_LABELS
    assert get_fashion_mnist_labels(np.array([9, 0, 9])) == ['ankle boot', 't-shirt',
                                                             'ankle boot']
    import torch
    assert get_fashion_mnist_labels(torch.tensor([1, 2])) == ['trouser', 'pullover']


def test_load_data_fashion_mnist_torch(fmnist_shards, raw):
    train_iter, test_iter = load_data_fashion_mnist(32, resize=64, root=str(fmnist_shards),
                                                    num_workers=0)
    assert (len(train_iter), len(test_iter)) == (32, 8)      # ceil(1000/32), ceil(250/32)
    X, y = next(iter(test_iter))                            # in order, as the book's test_iter
    images, labels = raw("t10k")
    assert tuple(X.shape) == (32, 1, 64, 64) and str(X.dtype) == "torch.float32"
    assert str(y.dtype) == "torch.int64"
    assert np.array_equal(X.numpy().transpose(0, 2, 3, 1), to_float(images[:32, ..., None],
                                                                    (64, 64)))
    assert np.array_equal(y.numpy(), labels[:32])
    seen = np.concatenate([yb.numpy() for _, yb in train_iter])  # one shuffled epoch, all of it
    assert np.array_equal(np.sort(seen), np.sort(raw("train")[1]))
    assert not np.array_equal(seen, raw("train")[1])
    # default workers: the book's 4 (len only, no processes started)
    assert load_data_fashion_mnist(256, root=str(fmnist_shards))[0].loader(0).num_workers == 4


def test_load_data_fashion_mnist_tf_matches_torch(fmnist_shards):
    import tensorflow as tf

    kw = dict(root=str(fmnist_shards), num_workers=0)
    tf_train, tf_test = load_data_fashion_mnist(50, resize=(32, 40), framework="tf", **kw)
    pt_train, pt_test = load_data_fashion_mnist(50, resize=(32, 40), **kw)
    assert isinstance(tf_train, tf.data.Dataset) and isinstance(tf_test, tf.data.Dataset)
    assert (len(tf_train), len(tf_test)) == (20, 5)
    firsts = []
    for _epoch in range(2):                 # pass k is epoch k, in both frameworks
        Xf, yf = next(iter(tf_train))
        Xt, yt = next(iter(pt_train))
        assert tuple(Xf.shape) == (50, 32, 40, 1) and Xf.dtype.name == "float32"
        assert yf.dtype.name == "int32"                       # the book's tf.cast(y, 'int32')
        assert np.array_equal(Xf.numpy(), Xt.numpy().transpose(0, 2, 3, 1))
        assert np.array_equal(yf.numpy(), yt.numpy())
        firsts.append(yf.numpy())
    assert not np.array_equal(firsts[0], firsts[1])           # a new shuffle each pass
    Xf, yf = next(iter(tf_test))
    Xt, yt = next(iter(pt_test))
    assert np.array_equal(Xf.numpy(), Xt.numpy().transpose(0, 2, 3, 1))


def test_tf_data_module_stores_the_books_tuples(fmnist_shards, raw):
    data = FashionMNIST(root=str(fmnist_shards), framework="tf")
    assert (len(data.train), len(data.val)) == (2, 2)        # (images, labels), as the book
    assert (len(data.train[0]), len(data.val[0])) == (1000, 250)  # (60000, 10000) for real
    images, labels = raw("train")
    assert data.train[0].shape == (1000, 28, 28) and data.train[0].dtype == np.uint8
    assert np.array_equal(np.asarray(data.train[0]), images)
    assert np.array_equal(np.asarray(data.train[1]), labels)
    assert np.array_equal(data.train[0][[999, 0, 130]], images[[999, 0, 130]])
    assert np.array_equal(data.train[0][-1], images[-1])
    assert np.array_equal(data.val[1][10:20], raw("t10k")[1][10:20])
    with pytest.raises(IndexError):
        data.train[0][1000]


def test_show_images_as_the_book_calls_it(fmnist_shards):
    _, test_iter = load_data_fashion_mnist(18, root=str(fmnist_shards), num_workers=0)
    X, y = next(iter(test_iter))
    pic = show_images(X.reshape(18, 28, 28), 2, 9, titles=get_fashion_mnist_labels(y))
    assert pic.size == (9 * 150, pic.size[1]) and pic.size[1] > 2 * 150
    # a cell is the image enlarged by a whole factor: its darkest pixel is the batch's
    first = np.asarray(pic)[:150, :150]
    assert first.min() == round(float(X[0].min()) * 255)


def test_root_with_the_books_raw_layout_is_searched(fmnist_raw, tmp_path, capsys):
    data_dir = tmp_path / "data"
    shutil.copytree(fmnist_raw, data_dir / "FashionMNIST" / "raw")
    d = FashionMNIST(root=str(data_dir), batch_size=10)
    assert "converting it once" in capsys.readouterr().out
    assert len(d.train) == 1000 and len(d.val) == 250
    src = d.train.manifest.source["files"]
    want = __import__("hashlib").sha256(
        (fmnist_raw / "train-images-idx3-ubyte.gz").read_bytes()).hexdigest()
    assert src[0]["sha256"] == want                           # from ../data/FashionMNIST/raw
    assert (data_dir / "fashion-mnist" / "test" / "manifest.json").exists()


def test_http_root_with_token(fmnist_shards, http_serve, capsys):
    srv = http_serve(fmnist_shards, token="s3cret")
    url = srv.url
    local = FashionMNIST(root=str(fmnist_shards), batch_size=16)
    remote = FashionMNIST(root=url, token="s3cret", batch_size=16)
    assert np.array_equal(remote.train[7][0].numpy(), local.train[7][0].numpy())
    X, y = next(iter(remote.val_dataloader()))
    Xl, yl = next(iter(local.val_dataloader()))
    assert np.array_equal(X.numpy(), Xl.numpy()) and np.array_equal(y.numpy(), yl.numpy())
    capsys.readouterr()
    with pytest.raises(AccessError, match="access denied") as err:
        FashionMNIST(root=url)
    assert url in str(err.value) and "token" in str(err.value)
    assert "converting" not in capsys.readouterr().out


def test_remote_root_is_never_converted_into(s3_server, capsys):
    bucket = s3_server.bucket("book-typo")
    with pytest.raises(NotFoundError, match="only into a local folder") as err:
        FashionMNIST(root=f"{bucket}/shardz", storage_options=s3_server.storage_options)
    assert f"{bucket}/shardz" in str(err.value)
    assert "converting" not in capsys.readouterr().out
    import boto3
    client = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1")
    assert client.list_objects_v2(Bucket="book-typo").get("KeyCount", 0) == 0


def test_show_images_in_a_notebook_shows_once_even_after_a_semicolon(monkeypatch):
    """The book calls ``d2l.show_images(...);`` -- the ``;`` hides the cell's result, yet the
    figure shows (matplotlib draws at the cell's end). A stand-in for Jupyter's IPython shell
    (IPython is not a dependency) runs the hook the way IPython does."""
    import sys
    import types

    shown, hooks = [], []

    class Shell:
        kernel = object()
        events = types.SimpleNamespace(register=lambda name, fn: hooks.append((name, fn)))

    shell = Shell()
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: shell
    display_mod = types.ModuleType("IPython.display")
    display_mod.display = shown.append
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display_mod)

    def run_cell(semicolon):
        pic = show_images(np.zeros((2, 4, 4), np.float32), 1, 2)
        for name, fn in hooks:
            assert name == "post_run_cell"
            fn(types.SimpleNamespace(result=None if semicolon else pic))
        return pic

    pic = run_cell(semicolon=True)
    assert shown == [pic] and len(hooks) == 1
    run_cell(semicolon=False)          # displayed as the cell's result already: not twice
    assert shown == [pic] and len(hooks) == 1
    monkeypatch.setitem(sys.modules, "IPython", types.ModuleType("IPython"))
    ipython_no_kernel = sys.modules["IPython"]
    ipython_no_kernel.get_ipython = lambda: None    # a plain script: nothing is queued
    run_cell(semicolon=True)
    assert shown == [pic]
