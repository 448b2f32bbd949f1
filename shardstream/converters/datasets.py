"""The raw datasets shardstream knows how to convert: the IDX family (Fashion-MNIST, MNIST,
KMNIST), CIFAR-10 and CIFAR-100 (the official "python version" archives) and, as generic
sources, a folder of class subfolders of images (``imagefolder``) and shards other tools wrote
(``webdataset`` tar shards, Hugging Face ``parquet``).

Each :class:`DatasetSpec` says everything the converter, the synthesiser and the raw-file finder
need: class names, raw file names per split, official mirrors, the published md5 checksums (the
ones torchvision checks), and the folder names torchvision and keras keep the files under.
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field

from ..errors import InputError

SPLITS = ("train", "test")
# raw IDX file names per split: (images, labels); the same for the three datasets
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR100_ARCHIVE = "cifar-100-python.tar.gz"
# CIFAR-100's class names, as its archive's `meta` lists them (label order)
CIFAR100_FINE = tuple("""
    apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
    butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch
    crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo
    keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse
    mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy
    porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper
    snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television
    tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split())
CIFAR100_COARSE = tuple("""
    aquatic_mammals fish flowers food_containers fruit_and_vegetables
    household_electrical_devices household_furniture insects large_carnivores
    large_man-made_outdoor_things large_natural_outdoor_scenes large_omnivores_and_herbivores
    medium_mammals non-insect_invertebrates people reptiles small_mammals trees vehicles_1
    vehicles_2""".split())


@dataclass(frozen=True)
class DatasetSpec:
    """One downloadable dataset.  ``files[split]``: the raw files holding that split (IDX:
    ``(images file, labels file)``; CIFAR: the one archive holding both splits); ``md5[file
    name]`` the published checksum of each raw file; ``mirrors`` base URLs (ending in ``/``)
    tried in order; ``sizes[split]`` samples per split; images are ``image_shape`` uint8.

    ``raw_format``: ``"idx"`` or ``"cifar"`` (:mod:`.cifar`); torchvision keeps the raw files in
    ``<root>/<torchvision_folder>/<raw_subdir>``, keras in ``~/.keras/datasets/<keras_folder>``
    (None: keras does not have it); ``aliases[file name]``: other names the same raw file (or
    the folder extracted from it) is found under; ``coarse_classes``: CIFAR-100's 20
    superclasses (``--label coarse``)."""

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
    raw_format: str = "idx"
    raw_subdir: str = "raw"
    aliases: dict = field(default_factory=dict)
    coarse_classes: tuple = ()

    def all_files(self) -> tuple:
        """Every raw file name, train first (IDX: images, labels, images, labels), each once."""
        return tuple(dict.fromkeys(f for split in SPLITS for f in self.files[split]))

    def torchvision_dir(self, root: str) -> str:
        """The folder torchvision keeps the raw files in under ``root``."""
        return os.path.normpath(os.path.join(root, self.torchvision_folder, self.raw_subdir))


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
    "cifar-10": DatasetSpec(
        name="cifar-10",
        title="CIFAR-10 (Krizhevsky, 2009) colour photos",
        classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"),
        files={split: (CIFAR10_ARCHIVE,) for split in SPLITS},
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        md5={CIFAR10_ARCHIVE: "c58f30108f718f92721af3b95e74349a"},
        torchvision_folder="",
        keras_folder="",
        sizes={"train": 50000, "test": 10000},
        image_shape=(32, 32, 3),
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        raw_format="cifar",
        raw_subdir="",
        # keras 2 saves the archive as cifar-10-batches-py.tar.gz, keras 3 as
        # cifar-10-batches-py; both (and torchvision) extract it to cifar-10-batches-py/
        aliases={CIFAR10_ARCHIVE: ("cifar-10-batches-py.tar.gz", "cifar-10-batches-py",
                                   "cifar-10-batches-py_extracted/cifar-10-batches-py")},
    ),
    "cifar-100": DatasetSpec(
        name="cifar-100",
        title="CIFAR-100 (Krizhevsky, 2009) colour photos",
        classes=CIFAR100_FINE,
        files={split: (CIFAR100_ARCHIVE,) for split in SPLITS},
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        md5={CIFAR100_ARCHIVE: "eb9058c3a382ffc7106e4002c42a8d85"},
        torchvision_folder="",
        keras_folder="",
        sizes={"train": 50000, "test": 10000},
        image_shape=(32, 32, 3),
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        raw_format="cifar",
        raw_subdir="",
        aliases={CIFAR100_ARCHIVE: ("cifar-100-python",
                                    "cifar-100-python_extracted/cifar-100-python")},
        coarse_classes=CIFAR100_COARSE,
    ),
}

IMAGEFOLDER_HELP = ("a folder of class subfolders of PNG/JPEG images (or of split folders "
                    "train/, test/ or val/ each holding class subfolders); grayscale or RGB, all "
                    "one size; classes sorted by folder name: "
                    "`shardstream convert imagefolder DIR OUT [--name NAME]`")
#: the sources given as a location rather than a name (``convert KIND SRC OUT``) and their help
SOURCES = {
    "imagefolder": IMAGEFOLDER_HELP,
    "webdataset": ("tar shards another tool wrote (a folder, http(s):// or s3:// prefix of "
                   "*.tar): per sample an image member (.png, .jpg, .npy) and a .cls label; "
                   "`shardstream convert webdataset SRC OUT [--classes a,b,..] [--size HxW]`"),
    "parquet": ("Hugging Face Parquet files (a folder, http(s):// or s3:// prefix of "
                "*.parquet): an Image column and an int/ClassLabel column, class names from "
                "the file's metadata; `shardstream convert parquet SRC OUT [--label COLUMN] "
                "[--size HxW]`"),
}


def _squash(name: str) -> str:
    """``name`` lower-cased without ``-``, ``_``, spaces and dots: the key aliases match on."""
    return "".join(ch for ch in name.lower() if ch not in "-_ .")


def canonical_name(name: str) -> str | None:
    """The dataset name ``name`` stands for, or None.  Aliases: any spelling equal to a known
    name once case, ``-``, ``_``, spaces and dots are ignored -- ``FashionMNIST`` (torchvision's
    class), ``fashion_mnist`` (tfds and keras), ``CIFAR10``, ``cifar_100`` -- name the dataset
    ``fashion-mnist``, ``cifar-10``, ``cifar-100``."""
    if name in DATASETS:
        return name
    matches = [known for known in DATASETS if _squash(known) == _squash(name)]
    return matches[0] if len(matches) == 1 else None


def get_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` called ``name`` or an alias of it (:func:`canonical_name`);
    else :class:`InputError` suggesting the nearest name ("did you mean") and listing the
    known ones."""
    known = canonical_name(name) if isinstance(name, str) else None
    if known is not None:
        return DATASETS[known]
    squashed = {_squash(k): k for k in DATASETS}
    near = difflib.get_close_matches(_squash(str(name)), list(squashed), n=1, cutoff=0.75)
    hint = f"did you mean {squashed[near[0]]!r}? " if near else ""
    raise InputError(f"unknown dataset {name!r}; {hint}known: {', '.join(DATASETS)} (and "
                     f"{', '.join(repr(k) for k in SOURCES)} for `convert`); run "
                     f"`shardstream datasets`")


def describe() -> list[dict]:
    """One JSON-able dict per dataset (name, title, splits with sample counts, image shape,
    classes; CIFAR-100 also its coarse classes), then one per generic source."""
    rows = []
    for s in DATASETS.values():
        row = {"name": s.name, "title": s.title, "splits": dict(s.sizes),
               "image_shape": list(s.image_shape), "classes": list(s.classes),
               "raw_files": list(s.all_files()), "mirrors": list(s.mirrors),
               "torchvision_folder": s.torchvision_folder, "keras_folder": s.keras_folder}
        if s.coarse_classes:
            row["coarse_classes"] = list(s.coarse_classes)
        rows.append(row)
    rows += [{"name": name, "title": "your own images" if name == "imagefolder" else
              f"{name} shards of another tool", "description": text}
             for name, text in SOURCES.items()]
    return rows


def _names(classes, limit=12) -> str:
    """Class names for one line: all of them, or the first ``limit`` and how many more."""
    if len(classes) <= limit:
        return ", ".join(classes)
    return f"{', '.join(classes[:limit])}, ... ({len(classes) - limit} more; --json lists all)"


def print_datasets(as_json: bool = False) -> None:
    """Print the datasets ``shardstream convert`` accepts (behind ``shardstream datasets``)."""
    rows = describe()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        if row["name"] in SOURCES:
            print(f"{row['name']:<15} {row['description']}")
            continue
        h, w, c = row["image_shape"]
        splits = ", ".join(f"{k} {v:,}" for k, v in row["splits"].items())
        line = (f"{row['name']:<15} {row['title']}: {splits}; {h}x{w}x{c} uint8; "
                f"{len(row['classes'])} classes: {_names(row['classes'])}")
        if "coarse_classes" in row:
            line += (f"; --label coarse: {len(row['coarse_classes'])} superclasses: "
                     f"{_names(row['coarse_classes'], 5)}")
        print(line)
