"""The book's own PyTorch input pipeline (D2L §4.2), rebuilt as a baseline for bench and demo.

torchvision is not a dependency; the steps per image are torchvision's (a PIL image, a PIL
BILINEAR ``Resize``, ``ToTensor``).  Nothing in the loaders uses this module.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.utils.data
from PIL import Image


def pil_to_tensor(pil):
    """torchvision's ``ToTensor`` for a uint8 PIL image (h, w) or (h, w, C): float32 tensor
    (C, h, w) / 255."""
    img = torch.from_numpy(np.array(pil, np.uint8, copy=True))
    img = img.view(pil.size[1], pil.size[0], len(pil.getbands())).permute((2, 0, 1)).contiguous()
    return img.to(dtype=torch.get_default_dtype()).div(255)


class BookTorchDataset(torch.utils.data.Dataset):
    """The book's torch dataset (D2L §4.2): ``torchvision.datasets.FashionMNIST`` with
    ``transforms.Compose([Resize(resize), ToTensor()])`` -- per image: a PIL image, a PIL
    BILINEAR resize, a float tensor (1, h, w) / 255, and an int label. ``images`` uint8
    (N, H, W) or (N, H, W, 1), ``labels`` (N,). Rebuilt here (torchvision is not a dependency)
    with the same per-image steps, down to holding the data as torch tensors as torchvision
    does (``self.data[index].numpy()``, ``int(self.targets[index])``). A baseline for the demo
    and the benchmarks, not used by the loaders."""

    def __init__(self, images, labels, resize):
        self.data = torch.from_numpy(np.array(images.reshape(images.shape[:3]), copy=True))
        self.targets = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.size = (resize[1], resize[0])  # PIL wants (width, height)

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        img, target = self.data[index], int(self.targets[index])
        img = Image.fromarray(img.numpy(), mode="L")
        img = img.resize(self.size, Image.Resampling.BILINEAR)
        return pil_to_tensor(img), target


def book_torch_pipeline(images, labels, batch_size, resize, num_workers=0):
    """The book's PyTorch loader: ``DataLoader(BookTorchDataset(images (N, H, W[, 1]) uint8,
    labels (N,), resize), batch_size, shuffle=True, num_workers)``; batches X float32
    (b, 1, h, w), y int64 (b,)."""
    return torch.utils.data.DataLoader(BookTorchDataset(images, labels, resize), batch_size,
                                       shuffle=True, num_workers=num_workers)
