"""The raw datasets shardstream knows how to convert: the IDX family (Fashion-MNIST, MNIST,
KMNIST) and, as a generic source, a folder of class subfolders of images (``imagefolder``).

Each :class:`DatasetSpec` says everything the converter, the synthesiser and the raw-file finder
need: class names, raw file names per split, official mirrors, the published md5 checksums (the
ones torchvision checks), and the folder names torchvision and keras keep the files under.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..errors import InputError

SPLITS = ("train", "test")
# raw IDX file names per split: (images, labels); the same for the three datasets
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


@dataclass(frozen=True)
class DatasetSpec:
    """One IDX dataset.  ``files[split] = (images file, labels file)``; ``md5[file name]`` the
    published checksum of each ``.gz`` file; ``mirrors`` base URLs (ending in ``/``) tried in
    order; ``sizes[split]`` samples per split; images are ``image_shape`` uint8."""

    name: str
    title: str
    classes: tuple
    files: dict
    mirrors: tuple
    md5: dict
    torchvision_folder: str
    keras_folder: str | None
    sizes: dict
    image_shape: tuple = (28, 28, 1)
    homepage: str = ""

    def all_files(self) -> tuple:
        """Every raw file name, train first: images, labels, images, labels."""
        return tuple(f for split in SPLITS for f in self.files[split])


DATASETS: dict[str, DatasetSpec] = {
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        title="Fashion-MNIST (Zalando)",
        classes=("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                 "sneaker", "bag", "ankle boot"),
        files=IDX_FILES,
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        md5={"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
             "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
             "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
             "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
        torchvision_folder="FashionMNIST",
        keras_folder="fashion-mnist",
        sizes={"train": 60000, "test": 10000},
        homepage="https://github.com/zalandoresearch/fashion-mnist",
    ),
    "mnist": DatasetSpec(
        name="mnist",
        title="MNIST handwritten digits",
        classes=tuple(str(d) for d in range(10)),
        files=IDX_FILES,
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",),
        md5={"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
             "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
             "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
             "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
        torchvision_folder="MNIST",
        keras_folder="mnist",
        sizes={"train": 60000, "test": 10000},
        homepage="http://yann.lecun.com/exdb/mnist/",
    ),
    "kmnist": DatasetSpec(
        name="kmnist",
        title="Kuzushiji-MNIST (cursive hiragana)",
        classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        files=IDX_FILES,
        mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        md5={"train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
             "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
             "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
             "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134"},
        torchvision_folder="KMNIST",
        keras_folder=None,
        sizes={"train": 60000, "test": 10000},
        homepage="https://github.com/rois-codh/kmnist",
    ),
}

IMAGEFOLDER_HELP = ("a folder of class subfolders of PNG/JPEG images (or of split folders "
                    "train/, test/ or val/ each holding class subfolders); grayscale or RGB, all "
                    "one size; classes sorted by folder name: "
                    "`shardstream convert imagefolder DIR OUT [--name NAME]`")


def get_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` called ``name``; :class:`InputError` listing the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise InputError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)} (and "
                         f"'imagefolder' for `convert`); run `shardstream datasets`") from None


def describe() -> list[dict]:
    """One JSON-able dict per dataset (name, title, splits with sample counts, image shape,
    classes), then one for ``imagefolder``."""
    rows = [{"name": s.name, "title": s.title, "splits": dict(s.sizes),
             "image_shape": list(s.image_shape), "classes": list(s.classes),
             "raw_files": list(s.all_files()), "mirrors": list(s.mirrors),
             "torchvision_folder": s.torchvision_folder, "keras_folder": s.keras_folder}
            for s in DATASETS.values()]
    rows.append({"name": "imagefolder", "title": "your own images",
                 "description": IMAGEFOLDER_HELP})
    return rows


def print_datasets(as_json: bool = False) -> None:
    """Print the datasets ``shardstream convert`` accepts (behind ``shardstream datasets``)."""
    rows = describe()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        if row["name"] == "imagefolder":
            print(f"imagefolder     {IMAGEFOLDER_HELP}")
            continue
        h, w, c = row["image_shape"]
        splits = ", ".join(f"{k} {v:,}" for k, v in row["splits"].items())
        print(f"{row['name']:<15} {row['title']}: {splits}; {h}x{w}x{c} uint8; "
              f"{len(row['classes'])} classes: {', '.join(row['classes'])}")
