"""shardstream: convert image datasets once into tar + Parquet shards, host them anywhere, and
stream identical minibatches into PyTorch and tf.data.

``import shardstream`` imports neither torch nor tensorflow; the framework adapters are loaded
on first use of :func:`torch_loader` / :func:`tf_dataset`.
"""

__version__ = "0.1.0"

# name -> (module, attribute); resolved lazily so that importing the package stays cheap and
# framework-free.
_LAZY = {
    "torch_loader": ("shardstream.loaders.torch_loader", "torch_loader"),
    "tf_dataset": ("shardstream.loaders.tf_loader", "tf_dataset"),
    "tf_dataset_fn": ("shardstream.loaders.tf_loader", "tf_dataset_fn"),
    "plan_epoch": ("shardstream.loaders.plan", "plan_epoch"),
    "to_float": ("shardstream.loaders.resize", "to_float"),
    "load_manifest": ("shardstream.shards.manifest", "load_manifest"),
    "Manifest": ("shardstream.shards.manifest", "Manifest"),
    "convert": ("shardstream.converters.convert", "convert"),
    "synthesize": ("shardstream.converters.synth", "synthesize"),
    "verify": ("shardstream.shards.verify", "verify"),
    "upload": ("shardstream.shards.upload", "upload"),
    "DataModule": ("shardstream.loaders.book", "DataModule"),
    "FashionMNIST": ("shardstream.loaders.book", "FashionMNIST"),
    "MNIST": ("shardstream.loaders.book", "MNIST"),
    "KMNIST": ("shardstream.loaders.book", "KMNIST"),
    "CIFAR10": ("shardstream.loaders.book", "CIFAR10"),
    "CIFAR100": ("shardstream.loaders.book", "CIFAR100"),
    "show_images": ("shardstream.loaders.show", "show_images"),
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name):
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'shardstream' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__():
    return __all__
