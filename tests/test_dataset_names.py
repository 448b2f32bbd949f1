"""Issue 18 item 5: dataset name aliases (torchvision's and tfds' spellings) and "did you mean"."""

import json

import pytest

import shardstream as ss
from shardstream.converters.datasets import canonical_name, get_spec


@pytest.mark.parametrize("alias, name", [
    ("FashionMNIST", "fashion-mnist"), ("fashion_mnist", "fashion-mnist"),
    ("Fashion-MNIST", "fashion-mnist"), ("fashion-mnist", "fashion-mnist"),
    ("MNIST", "mnist"), ("KMNIST", "kmnist"), ("CIFAR10", "cifar-10"), ("cifar10", "cifar-10"),
    ("CIFAR100", "cifar-100"), ("cifar_100", "cifar-100")])
def test_aliases_name_the_dataset(alias, name):
    assert canonical_name(alias) == name
    assert get_spec(alias).name == name


@pytest.mark.parametrize("typo, suggestion", [
    ("fashon-mnist", "fashion-mnist"), ("fashion-mnst", "fashion-mnist"),
    ("cifar-1000", "cifar-100"), ("mnsit", "mnist")])
def test_a_typo_gets_did_you_mean(typo, suggestion):
    with pytest.raises(ss.errors.InputError) as err:
        get_spec(typo)
    assert f"unknown dataset {typo!r}; did you mean {suggestion!r}?" in str(err.value)
    assert "known: fashion-mnist, mnist, kmnist, cifar-10, cifar-100" in str(err.value)


def test_a_name_far_from_any_gets_the_list_only():
    with pytest.raises(ss.errors.InputError, match=r"unknown dataset 'imagenet'; known: ") as err:
        get_spec("imagenet")
    assert "did you mean" not in str(err.value)
    assert canonical_name("imagenet") is None


def test_convert_and_the_data_module_take_an_alias(fmnist_raw, tmp_path):
    from shardstream.converters.convert import convert

    convert("FashionMNIST", str(tmp_path), raw=str(fmnist_raw), shard_size=500,
            encoding="npy", progress=False)
    manifest = json.loads((tmp_path / "fashion-mnist" / "train" / "manifest.json").read_text())
    assert manifest["dataset"] == "fashion-mnist" and manifest["num_samples"] == 1000
    data = ss.DataModule("fashion_mnist", batch_size=100, root=str(tmp_path))
    assert data.name == "fashion-mnist"
    X, y = next(iter(data.train_dataloader()))
    assert tuple(X.shape) == (100, 1, 28, 28)
