"""*Dive into Deep Learning* §4.2 on shardstream: the book's data module (:mod:`.datamodule`:
``FashionMNIST``, ``MNIST``, ``KMNIST``, ``DataModule``), its pictures (:mod:`.show`), and its
the book's helpers (:mod:`.d2l`: ``load_data_fashion_mnist`` ...), its
own input pipelines rebuilt as baselines for bench and demo (:mod:`.torch_baseline`,
:mod:`.tf_baseline`, which import their framework)."""

from .d2l import get_dataloader_workers, get_fashion_mnist_labels, load_data_fashion_mnist
from .datamodule import KMNIST, MNIST, DataModule, FashionMNIST
from .show import show_images

__all__ = ["DataModule", "FashionMNIST", "MNIST", "KMNIST", "show_images",
           "load_data_fashion_mnist", "get_fashion_mnist_labels", "get_dataloader_workers"]
