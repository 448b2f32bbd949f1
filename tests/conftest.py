"""Shared test fixtures.

Small synthetic datasets, made once per test session.  The stand-in Fashion-MNIST here has
1,000 training and 250 test images; converted with 128 samples per shard that is 8 training
shards, the last one short (1000 = 7 * 128 + 104), which exercises every edge of the plan.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import pytest  # noqa: E402

SMALL_TRAIN = 1000
SMALL_TEST = 250
SMALL_SHARD = 128


@pytest.fixture(scope="session")
def fmnist_raw(tmp_path_factory):
    """Folder holding the four raw IDX .gz files of a small stand-in Fashion-MNIST."""
    from shardstream.converters.synth import synthesize

    out = tmp_path_factory.mktemp("raw")
    synthesize("fashion-mnist", str(out), num_train=SMALL_TRAIN, num_test=SMALL_TEST, seed=0,
               progress=False)
    return out


@pytest.fixture(scope="session")
def fmnist_shards(fmnist_raw, tmp_path_factory):
    """Root of a conversion (npy encoding, tar + parquet): ``root / "fashion-mnist" / "train"``."""
    from shardstream.converters.convert import convert

    root = tmp_path_factory.mktemp("shards")
    convert("fashion-mnist", str(root), raw=str(fmnist_raw), shard_size=SMALL_SHARD,
            encoding="npy", progress=False)
    return root


@pytest.fixture(scope="session")
def fmnist_png_shards(fmnist_raw, tmp_path_factory):
    """Like ``fmnist_shards`` but with PNG-encoded images."""
    from shardstream.converters.convert import convert

    root = tmp_path_factory.mktemp("shards_png")
    convert("fashion-mnist", str(root), raw=str(fmnist_raw), shard_size=SMALL_SHARD,
            encoding="png", progress=False)
    return root


@pytest.fixture(scope="session")
def train_split(fmnist_shards):
    """Location string of the small npy training split."""
    return str(fmnist_shards / "fashion-mnist" / "train")
