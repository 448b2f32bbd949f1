"""``shardstream show`` and ``show_images``: real pictures of real batches.

Budget: a few seconds (numpy + Pillow only, plus one small torch/tf check).
"""

import io

import numpy as np
import pytest
from PIL import Image

from shardstream import cli
from shardstream.book.show import show_images


def _png(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()
        return im.copy()


def test_show_writes_a_png_of_the_first_batch(train_split, tmp_path, capsys):
    out = tmp_path / "pics" / "batch.png"
    rc = cli.main(["show", train_split, "--rows", "2", "--cols", "8", "-o", str(out)])
    assert rc == 0
    assert str(out) in capsys.readouterr().out
    im = _png(out)
    assert im.width == 8 * 150                      # cols * round(100 * scale), scale 1.5
    assert 2 * 150 < im.height < 2 * 150 + 2 * 60   # two rows of cells, each with a title line
    a = np.asarray(im.convert("L"), dtype=np.float64)
    assert a.std() > 20                             # not blank
    assert len(np.unique(a)) > 16                   # grey images and black text, not a flat fill
    assert not list(tmp_path.joinpath("pics").glob("*.tmp"))   # written atomically


def test_show_draws_the_samples_exactly(train_split, fmnist_raw):
    # The first cell holds sample 0, pixel for pixel: 28x28 enlarged 4x (the largest whole
    # factor fitting a 150 px cell less its 6 px padding) and centred: rows/cols 19 .. 130.
    from shardstream.converters.idx import read_idx

    images = read_idx(str(fmnist_raw / "train-images-idx3-ubyte.gz"))
    pic = np.asarray(show_images([images[0]], 1, 1, scale=1.5).convert("L"))
    assert pic.shape == (150, 150)
    assert np.array_equal(pic[19:131:4, 19:131:4], images[0])
    assert np.array_equal(pic[22:134:4, 22:134:4], images[0])


def test_show_random_batch_is_seeded(train_split, tmp_path):
    first, r1, r2, r3 = (tmp_path / f"{n}.png" for n in ("first", "r1", "r2", "r3"))
    assert cli.main(["show", train_split, "-o", str(first)]) == 0
    assert cli.main(["show", train_split, "--random", "--seed", "1", "-o", str(r1)]) == 0
    assert cli.main(["show", train_split, "--random", "--seed", "1", "-o", str(r2)]) == 0
    assert cli.main(["show", train_split, "--random", "--seed", "2", "-o", str(r3)]) == 0
    assert r1.read_bytes() == r2.read_bytes()
    assert r1.read_bytes() != first.read_bytes()
    assert r1.read_bytes() != r3.read_bytes()


def test_show_random_is_the_loaders_first_batch(train_split):
    from shardstream.book.show import first_batch
    from shardstream.loaders.torch_loader import torch_loader

    images, labels, _ = first_batch(train_split, 16, random=True, seed=3, resize=(20, 20))
    X, y = next(iter(torch_loader(train_split, batch_size=16, resize=(20, 20), seed=3)))
    assert np.array_equal(images, X.numpy().transpose(0, 2, 3, 1))
    assert np.array_equal(labels, y.numpy())


def test_show_resize_and_scale(train_split, tmp_path):
    out = tmp_path / "b.png"
    assert cli.main(["show", train_split, "--rows", "1", "--cols", "4", "--resize", "14",
                     "--scale", "0.5", "-o", str(out)]) == 0
    assert _png(out).width == 4 * 50


def test_show_errors(train_split, tmp_path, capsys):
    assert cli.main(["show", train_split, "--rows", "0", "-o", str(tmp_path / "x.png")]) == 1
    assert "--rows 0" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
    assert cli.main(["show", str(tmp_path / "nowhere"), "-o", str(tmp_path / "y.png")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nowhere" in err
    assert not (tmp_path / "y.png").exists()


def test_show_images_accepts_framework_batches_and_displays_inline():
    import torch
    rng = np.random.default_rng(0)
    x = rng.random((3, 1, 28, 28), dtype=np.float32)
    a = show_images(torch.from_numpy(x), 1, 4, titles=["a", "b", "c"], scale=1.0)
    b = show_images(x.transpose(0, 2, 3, 1), 1, 4, titles=["a", "b", "c"], scale=1.0)
    c = show_images(list(x[:, 0]), 1, 4, titles=["a", "b", "c"], scale=1.0)
    assert a.size == (400, b.height)
    assert a.tobytes() == b.tobytes() == c.tobytes()
    png = a._repr_png_()                        # what Jupyter calls to show it inline
    assert Image.open(io.BytesIO(png)).size == a.size
    rgb = show_images((rng.random((2, 9, 7, 3)) * 255).astype(np.uint8), 2, 1)
    assert rgb.size == (150, 300)               # no titles: no title line


def test_show_images_bad_input():
    from shardstream.errors import InputError

    with pytest.raises(InputError, match="image 1 has shape"):
        show_images([np.zeros((4, 4)), np.zeros((4, 4, 5))], 1, 2)
    with pytest.raises(InputError, match="num_rows=0"):
        show_images([np.zeros((4, 4))], 0, 2)
