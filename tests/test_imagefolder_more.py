"""Issue 18 item 4: image folders -- every problem in one run, --skip-bad, --size, an output
folder inside the input, empty classes, RGBA warned; the data module over any converted image
folder (train + valid, or one split with val_fraction).

Budget: ~10 s (tiny folders).
"""

import json

import numpy as np
import pytest
from PIL import Image

from shardstream import DataModule
from shardstream.cli import main
from shardstream.converters.images import resize_bilinear
from shardstream.errors import InputError, NotFoundError
from shardstream.shards.formats import read_shard
from shardstream.shards.manifest import load_manifest


def _write(folder, images_by_class, ext="png"):
    for cls, images in images_by_class.items():
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for i, im in enumerate(images):
            Image.fromarray(im).save(folder / cls / f"{i:03d}.{ext}")


def _read_all(loc, fmt="tar"):
    m = load_manifest(loc)
    parts = [read_shard(fmt, open(f"{loc}/{s.name}", "rb").read(), m, i)
             for i, s in enumerate(m.shards[fmt])]
    return m, np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _grey(seed, n, shape=(5, 5)):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]


@pytest.fixture
def bad_folder(tmp_path):
    """Four problems: not an image, a text file, another size, another kind."""
    src = tmp_path / "src"
    _write(src, {"a": _grey(0, 3), "b": _grey(1, 2)})
    (src / "a" / "broken.png").write_bytes(b"not a png")
    (src / "b" / "notes.txt").write_text("hello")
    Image.fromarray(np.zeros((6, 5), np.uint8)).save(src / "b" / "big.png")
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(src / "a" / "colour.png")
    return src


def test_every_problem_in_one_run(bad_folder, tmp_path, capsys):
    assert main(["convert", "imagefolder", str(bad_folder), str(tmp_path / "out"), "-q"]) == 1
    err = capsys.readouterr().err
    assert "4 problems" in err and "--skip-bad" in err
    for name, what in [("a/broken.png", "not a readable PNG/JPEG"), ("b/notes.txt", "extension"),
                       ("b/big.png", "5x6"), ("a/colour.png", "RGB image among grayscale")]:
        assert str(bad_folder / name) in err and what in err, (name, err)
    assert not (tmp_path / "out").exists()


def test_skip_bad_leaves_them_out_and_lists_them(bad_folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["convert", "imagefolder", str(bad_folder), str(out), "-q", "--skip-bad",
                 "--shard-size", "2"]) == 0
    assert "skipped 4 bad file(s)" in capsys.readouterr().err
    m, images, labels = _read_all(str(out / "src" / "train"))
    assert m.num_samples == 5 and labels.tolist() == [0, 0, 0, 1, 1]
    assert np.array_equal(images[:3, ..., 0], np.stack(_grey(0, 3)))
    skipped = {s["file"]: s["problem"] for s in m.source["skipped"]}
    assert sorted(skipped) == ["a/broken.png", "a/colour.png", "b/big.png", "b/notes.txt"]
    assert "5x6" in skipped["b/big.png"]


def test_size_resizes_at_conversion_with_pil_bilinear(tmp_path):
    src = tmp_path / "src"
    small, big = _grey(2, 2, (5, 5)), _grey(3, 2, (9, 12))
    _write(src, {"a": small, "b": big})
    assert main(["convert", "imagefolder", str(src), str(tmp_path / "out"), "-q",
                 "--size", "8x6"]) == 0
    m, images, _ = _read_all(str(tmp_path / "out" / "src" / "train"))
    assert m.image_shape == (8, 6, 1) and m.source["resized_to"] == [8, 6]
    for got, orig in zip(images, small + big):
        want = np.asarray(Image.fromarray(orig).resize((6, 8), Image.Resampling.BILINEAR))
        assert np.array_equal(got[..., 0], want)
        assert np.array_equal(got, resize_bilinear(orig[..., None], (8, 6)))   # the one resize


def test_output_inside_the_input_is_not_a_class(tmp_path, capsys):
    src = tmp_path / "src"
    _write(src, {"a": _grey(4, 2), "b": _grey(5, 2)})
    out = src / "shards"
    for _ in range(2):          # the second run sees src/shards/ full of PNG-free folders
        assert main(["convert", "imagefolder", str(src), str(out), "-q", "--encoding",
                     "png"]) == 0
    m = load_manifest(str(out / "src" / "train"))
    assert m.classes == ("a", "b") and m.num_samples == 4


def test_empty_class_folder_is_refused_even_with_skip_bad(tmp_path, capsys):
    src = tmp_path / "src"
    _write(src, {"a": _grey(6, 2)})
    (src / "empty").mkdir()
    for extra in ([], ["--skip-bad"]):
        assert main(["convert", "imagefolder", str(src), str(tmp_path / "out"), "-q",
                     *extra]) == 1
        err = capsys.readouterr().err
        assert str(src / "empty") in err and "empty class folder" in err
    assert not (tmp_path / "out").exists()


def test_rgba_is_converted_with_a_warning(tmp_path, capsys):
    src = tmp_path / "src"
    rng = np.random.default_rng(7)
    rgba = [rng.integers(0, 256, (4, 4, 4), dtype=np.uint8) for _ in range(2)]
    _write(src, {"a": rgba, "b": [rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)]})
    assert main(["convert", "imagefolder", str(src), str(tmp_path / "out"), "-q"]) == 0
    err = capsys.readouterr().err
    assert "2 image(s) with an alpha channel" in err and str(src / "a" / "000.png") in err
    _, images, _ = _read_all(str(tmp_path / "out" / "src" / "train"))
    assert np.array_equal(images[0], rgba[0][..., :3])


def test_data_module_train_and_valid(tmp_path):
    src = tmp_path / "src"
    _write(src / "train", {"a": _grey(8, 5), "b": _grey(9, 4)})
    _write(src / "valid", {"a": _grey(10, 2), "b": _grey(11, 1)})
    root = tmp_path / "shards"
    assert main(["convert", "imagefolder", str(src), str(root), "--name", "toy", "-q"]) == 0
    d = DataModule("toy", batch_size=4, root=str(root), resize=None)
    assert (len(d.train), len(d.val)) == (9, 3)
    assert d.locations[1].endswith("toy/valid") and d.classes == ("a", "b")
    assert np.array_equal(d.val[0][0].numpy()[0], _grey(10, 1)[0] / np.float32(255))
    with pytest.raises(InputError, match="already has a validation split"):
        DataModule("toy", root=str(root), val_fraction=0.2)


def test_data_module_val_fraction_carves_deterministically(tmp_path, capsys):
    src = tmp_path / "src"
    a, b = _grey(12, 12), _grey(13, 8)
    _write(src, {"a": a, "b": b})
    root = tmp_path / "shards"
    assert main(["convert", "imagefolder", str(src), str(root), "--name", "toy", "-q",
                 "--shard-size", "6"]) == 0
    with pytest.raises(NotFoundError, match="val_fraction=0.1"):
        DataModule("toy", root=str(root))
    d = DataModule("toy", batch_size=4, root=str(root), val_fraction=0.25, seed=3)
    assert "carving 5 of 20" in capsys.readouterr().out
    assert (len(d.train), len(d.val)) == (15, 5)
    originals = np.stack(a + b)
    train = np.stack([d.train[i][0].numpy()[0] for i in range(15)])
    val = np.stack([d.val[i][0].numpy()[0] for i in range(5)])
    rows = [int(np.flatnonzero((originals / np.float32(255) == x).all(axis=(1, 2)))[0])
            for x in np.concatenate([train, val])]
    assert sorted(rows) == list(range(20))                   # disjoint, together everything
    from shardstream.book.carve import carve_ids
    assert rows[15:] == carve_ids(20, 0.25, 3)[1].tolist()
    again = DataModule("toy", batch_size=4, root=str(root), val_fraction=0.25, seed=3,
                       framework="tf")
    assert "carving" not in capsys.readouterr().out           # reused
    assert np.array_equal(np.asarray(again.val[0])[..., None] / np.float32(255),
                          val[..., None])
    Xt, yt = next(iter(d.train_dataloader()))
    Xf, yf = next(iter(again.train_dataloader()))
    assert np.array_equal(Xt.numpy().transpose(0, 2, 3, 1), Xf.numpy())
    assert np.array_equal(yt.numpy(), yf.numpy())
    other = DataModule("toy", root=str(root), val_fraction=0.25, seed=4)
    assert [other.val[i][1] for i in range(5)] != [d.val[i][1] for i in range(5)] or \
        not np.array_equal(np.asarray([other.val[i][0].numpy() for i in range(5)]), val[:, None])
    manifest = json.loads((root / "toy-val0.25-seed3" / "val" / "manifest.json").read_text())
    assert manifest["source"]["carved_from"]["seed"] == 3
