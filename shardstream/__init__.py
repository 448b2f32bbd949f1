"""shardstream: convert image datasets once into tar + Parquet shards, host them anywhere, and
stream identical minibatches into PyTorch and tf.data.

``import shardstream`` imports neither torch nor tensorflow; the framework adapters are loaded
on first use of :func:`torch_loader` / :func:`tf_dataset`.
"""

import importlib

__version__ = "0.1.0"

# name -> (module, attribute); resolved lazily so that importing the package stays cheap and
# framework-free.
_LAZY = {
    "torch_loader": ("shardstream.loaders.torch_loader", "torch_loader"),
    "tf_dataset": ("shardstream.loaders.tf_loader", "tf_dataset"),
    "tf_dataset_fn": ("shardstream.loaders.tf_loader", "tf_dataset_fn"),
    "plan_epoch": ("shardstream.loaders.plan", "plan_epoch"),
    "to_float": ("shardstream.loaders.resize", "to_float"),
    "to_uint8": ("shardstream.loaders.pixels", "to_uint8"),
    "load_manifest": ("shardstream.shards.manifest", "load_manifest"),
    "Manifest": ("shardstream.shards.manifest", "Manifest"),
    "convert": ("shardstream.converters.convert", "convert"),
    "synthesize": ("shardstream.converters.synth", "synthesize"),
    "verify": ("shardstream.shards.verify", "verify"),
    "upload": ("shardstream.storage.upload", "upload"),
    "DataModule": ("shardstream.book.datamodule", "DataModule"),
    "FashionMNIST": ("shardstream.book.datamodule", "FashionMNIST"),
    "MNIST": ("shardstream.book.datamodule", "MNIST"),
    "KMNIST": ("shardstream.book.datamodule", "KMNIST"),
    "CIFAR10": ("shardstream.book.datamodule", "CIFAR10"),
    "CIFAR100": ("shardstream.book.datamodule", "CIFAR100"),
    "show_images": ("shardstream.book.show", "show_images"),
    "load_data_fashion_mnist": ("shardstream.book.d2l", "load_data_fashion_mnist"),
    "get_fashion_mnist_labels": ("shardstream.book.d2l", "get_fashion_mnist_labels"),
    "get_dataloader_workers": ("shardstream.book.d2l", "get_dataloader_workers"),
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name):
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'shardstream' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__():
    return __all__
