"""`shardstream convert imagefolder DIR OUT` (issue 2 item 4)."""

import numpy as np
import pytest
from PIL import Image

from shardstream.cli import main
from shardstream.converters.convert import convert
from shardstream.shards import read_shard
from shardstream.shards.manifest import load_manifest


def _write(folder, images_by_class, ext="png"):
    """Save uint8 images into folder/<class>/<i>.<ext>; returns {class: [arrays]}."""
    for cls, images in images_by_class.items():
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for i, im in enumerate(images):
            Image.fromarray(im).save(folder / cls / f"{i:03d}.{ext}")


def _read_all(loc, fmt="tar"):
    m = load_manifest(loc)
    parts = [read_shard(fmt, open(f"{loc}/{s.name}", "rb").read(), m, i)
             for i, s in enumerate(m.shards[fmt])]
    return m, np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def test_class_folders_grayscale(tmp_path):
    rng = np.random.default_rng(0)
    data = {c: [rng.integers(0, 256, (9, 7), dtype=np.uint8) for _ in range(k)]
            for c, k in (("zebra", 3), ("ant", 4), ("cat", 2))}
    _write(tmp_path / "animals", data)
    ms = convert("imagefolder", str(tmp_path / "out"), source=str(tmp_path / "animals"),
                 shard_size=4, encoding="png", progress=False)
    assert len(ms) == 1
    m, images, labels = _read_all(str(tmp_path / "out" / "animals" / "train"))
    assert m.classes == ("ant", "cat", "zebra") and m.image_shape == (9, 7, 1)
    assert not m.synthetic and m.source["files"] == 9
    expect = [im for c in ("ant", "cat", "zebra") for im in data[c]]
    assert np.array_equal(images[..., 0], np.stack(expect))
    assert labels.tolist() == [0] * 4 + [1] * 2 + [2] * 3
    _, pimages, plabels = _read_all(str(tmp_path / "out" / "animals" / "train"), "parquet")
    assert np.array_equal(pimages, images) and np.array_equal(plabels, labels)


def test_split_folders_rgb_jpeg_and_name(tmp_path, capsys):
    rng = np.random.default_rng(1)
    for split, n in (("train", 3), ("val", 2)):
        _write(tmp_path / "src" / split,
               {c: [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(n)]
                for c in ("b", "a")}, ext="jpg")
    assert main(["convert", "imagefolder", str(tmp_path / "src"), str(tmp_path / "out"),
                 "--name", "letters", "--shard-size", "4"]) == 0
    assert "converted letters (npy)" in capsys.readouterr().out
    m, images, labels = _read_all(str(tmp_path / "out" / "letters" / "val"))
    assert m.image_shape == (8, 8, 3) and m.num_samples == 4 and m.classes == ("a", "b")
    # JPEG is lossy: the stored pixels are exactly what PIL decodes
    expect = np.asarray(Image.open(tmp_path / "src" / "val" / "a" / "000.jpg").convert("RGB"))
    assert np.array_equal(images[0], expect)
    assert load_manifest(str(tmp_path / "out" / "letters" / "train")).num_samples == 6


@pytest.mark.parametrize("problem", ["size", "mode", "not an image", "no classes"])
def test_bad_folders_name_the_odd_file(tmp_path, capsys, problem):
    src = tmp_path / "src"
    _write(src, {"a": [np.zeros((5, 5), np.uint8)] * 2, "b": [np.zeros((5, 5), np.uint8)]})
    if problem == "size":
        odd = src / "b" / "odd.png"
        Image.fromarray(np.zeros((6, 5), np.uint8)).save(odd)
        expect = [str(odd), "5x6", "expected 5x5"]
    elif problem == "mode":
        odd = src / "b" / "odd.png"
        Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(odd)
        expect = [str(odd), "RGB image among grayscale"]
    elif problem == "not an image":
        odd = src / "a" / "zz.png"
        odd.write_bytes(b"not a png")
        expect = [str(odd), "not a readable PNG/JPEG"]
    else:
        src = tmp_path / "empty"
        src.mkdir()
        expect = [str(src), "no class subfolders"]
    rc = main(["convert", "imagefolder", str(src), str(tmp_path / "out"), "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1
    for text in expect:
        assert text in err, err
    assert not (tmp_path / "out").exists()


def test_imagefolder_needs_its_folder(tmp_path, capsys):
    assert main(["convert", "imagefolder", str(tmp_path / "out")]) == 1
    assert "needs the image folder" in capsys.readouterr().err


def test_changed_folder_refuses_without_overwrite(tmp_path, capsys):
    src = tmp_path / "src"
    for split in ("train", "test"):
        _write(src / split, {"a": [np.full((4, 4), 9, np.uint8)],
                             "b": [np.zeros((4, 4), np.uint8)]})
    out = str(tmp_path / "out")
    assert main(["convert", "imagefolder", str(src), out, "--name", "ab", "-q"]) == 0
    assert main(["convert", "imagefolder", str(src), out, "--name", "ab", "-q"]) == 0  # same
    Image.fromarray(np.full((4, 4), 200, np.uint8)).save(src / "test" / "b" / "000.png")
    before = (tmp_path / "out" / "ab" / "train" / "manifest.json").read_bytes()
    assert main(["convert", "imagefolder", str(src), out, "--name", "ab", "-q"]) == 1
    err = capsys.readouterr().err
    assert "different conversion" in err and str(tmp_path / "out" / "ab" / "test") in err
    assert (tmp_path / "out" / "ab" / "train" / "manifest.json").read_bytes() == before
    assert main(["convert", "imagefolder", str(src), out, "--name", "ab", "--overwrite",
                 "-q"]) == 0
    _, images, _ = _read_all(str(tmp_path / "out" / "ab" / "test"))
    assert images[1, 0, 0, 0] == 200
