"""`shardstream synth`: a deterministic stand-in in the exact IDX layout (issue 2 item 3)."""

import io
import json

import numpy as np
from PIL import Image

from shardstream.cli import main
from shardstream.converters.datasets import DATASETS
from shardstream.converters.idx import read_idx
from shardstream.converters.synth import MARKER, synth_split, synthesize


def test_files_layout_and_marker(fmnist_raw):
    spec = DATASETS["fashion-mnist"]
    names = sorted(p.name for p in fmnist_raw.iterdir())
    assert names == sorted(list(spec.all_files()) + [MARKER])
    images = read_idx(fmnist_raw / "train-images-idx3-ubyte.gz")
    labels = read_idx(fmnist_raw / "train-labels-idx1-ubyte.gz")
    assert images.shape == (1000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (1000,) and np.array_equal(np.bincount(labels), [100] * 10)
    assert read_idx(fmnist_raw / "t10k-images-idx3-ubyte.gz").shape == (250, 28, 28)
    marker = json.loads((fmnist_raw / MARKER).read_text())
    assert marker["dataset"] == "fashion-mnist" and marker["num_train"] == 1000
    assert marker["seed"] == 0


def test_deterministic_bytes_and_seed_matters(tmp_path):
    for d in ("a", "b"):
        synthesize("mnist", tmp_path / d, num_train=60, num_test=20, seed=3, progress=False)
    for p in (tmp_path / "a").iterdir():
        assert p.read_bytes() == (tmp_path / "b" / p.name).read_bytes(), p.name
    synthesize("mnist", tmp_path / "c", num_train=60, num_test=20, seed=4, progress=False)
    assert ((tmp_path / "c" / "train-images-idx3-ubyte.gz").read_bytes()
            != (tmp_path / "a" / "train-images-idx3-ubyte.gz").read_bytes())


def test_structure_resembles_fashion_mnist():
    """Mostly black background, grey shapes, PNG size in the real data's range, classes
    distinguishable (class means differ)."""
    images, labels = synth_split(2000, 0, "train")
    zero = (images == 0).mean()
    assert 0.35 < zero < 0.65, zero                    # real: about 0.5
    assert 50 < images.mean() < 95, images.mean()      # real: about 73
    sizes = []
    for im in images[:200]:
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="PNG")
        sizes.append(len(buf.getvalue()))
    assert 300 < np.mean(sizes) < 800, np.mean(sizes)  # real: about 400-700 bytes
    means = np.stack([images[labels == c].mean(axis=0) for c in range(10)]).reshape(10, -1)
    dist = np.linalg.norm(means[:, None] - means[None], axis=-1)
    assert dist[~np.eye(10, dtype=bool)].min() > 100   # every class has its own silhouette
    # every image has content and a black border region
    assert (images.reshape(len(images), -1).max(axis=1) > 100).all()
    assert (images[:, 0, 0] == 0).mean() > 0.9


def test_cli(tmp_path, capsys):
    assert main(["synth", "kmnist", str(tmp_path), "--train", "30", "--test", "10",
                 "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "synthesized kmnist: 30 train + 10 test" in out
    assert read_idx(tmp_path / "t10k-labels-idx1-ubyte.gz").shape == (10,)
    assert main(["synth", "cifar", str(tmp_path)]) == 1
    assert "unknown dataset 'cifar'" in capsys.readouterr().err


def test_datasets_command(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "fashion-mnist" in out and "ankle boot" in out and "train 60,000" in out
    assert "kmnist" in out and "tsu" in out and "imagefolder" in out
    assert main(["datasets", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by = {r["name"]: r for r in rows}
    assert by["mnist"]["classes"] == [str(d) for d in range(10)]
    assert by["fashion-mnist"]["splits"] == {"train": 60000, "test": 10000}
    assert by["fashion-mnist"]["image_shape"] == [28, 28, 1]
    assert "imagefolder" in by
