"""Real-size image sets decoded and transformed per item, so CIFAR-100 at 224×224, ImageNet-R or Tiny-ImageNet never
sit in memory as float tensors (CIFAR-100 resized to 224 was ≈ 36 GB; Tiny-ImageNet as float32 ≈ 4.9 GB).

:class:`LazyImages` is a :class:`torch.utils.data.Dataset` of images that also indexes like the ``[N, C, H, W]``
tensor the learners take: ``images[idx]`` (int, slice, index tensor) decodes and transforms just those items and
stacks them; ``len(images)``, ``images.shape`` and ``images.ndim`` work; :meth:`LazyImages.subset` selects items
without decoding; :meth:`LazyImages.batches` is a sequential pass through a ``DataLoader`` with worker processes
(used by the feature and evaluation passes). Sources: a uint8 array (CIFAR's ``data``, 150 MB for CIFAR-100
train) or a list of files (image folders, Tiny-ImageNet).

Transforms (official code): L2P / DualPrompt / CODA-Prompt / PrePrompt train with
``RandomResizedCrop(size, scale=(0.05, 1.0), bicubic) + RandomHorizontalFlip`` (PrePrompt's CIFAR scripts add
``ColorJitter(brightness=63/255)``) and test with ``Resize(256/224·size) + CenterCrop(size)``, both normalised with
mean = std = 0.5 (:func:`prompt_transforms`). The rehearsal loaders use ToTensor + mammoth normalisation per item
and keep mammoth's RandomCrop + flip on the device (:mod:`clfreq.rehearsal.augment`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

__all__ = ["LazyImages", "prompt_transforms", "tensor_transform"]


class LazyImages(Dataset):
    """Images of a source decoded per item (see the module docstring).

    Args:
        source: a uint8 array ``[N, H, W, 3]`` or a sequence of image file paths.
        transform: PIL image → float tensor ``[C, H, W]`` (e.g. :func:`prompt_transforms`).
        indices: the items of ``source`` this view holds (default: all).
        num_workers: ``DataLoader`` workers for :meth:`batches`.
    """

    def __init__(self, source: np.ndarray | Sequence[str | Path], transform: Callable, indices=None,
                 num_workers: int = 0):
        self.source, self.transform, self.num_workers = source, transform, int(num_workers)
        self.indices = np.arange(len(source)) if indices is None else np.asarray(indices, dtype=np.int64)
        self._shape: tuple[int, ...] | None = None

    def _image(self, i: int):
        from PIL import Image

        item = self.source[int(self.indices[i])]
        if isinstance(item, np.ndarray):
            return Image.fromarray(item)
        with Image.open(item) as img:
            return img.convert("RGB")

    def __len__(self) -> int:
        return len(self.indices)

    def item(self, i: int) -> torch.Tensor:
        """Item ``i`` decoded and transformed (the Dataset protocol, for ``DataLoader``)."""
        return self.transform(self._image(i))

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self.item(int(key))
        if isinstance(key, slice):
            key = range(*key.indices(len(self)))
        elif isinstance(key, torch.Tensor):
            key = key.flatten().tolist()
        return torch.stack([self.item(int(i)) for i in key])

    def subset(self, positions) -> LazyImages:
        """The items at ``positions`` (ints, an index tensor or a boolean mask) as a new view; nothing is decoded."""
        positions = torch.as_tensor(positions)
        if positions.dtype == torch.bool:
            positions = positions.nonzero().flatten()
        return LazyImages(self.source, self.transform, self.indices[positions.numpy()], self.num_workers)

    @property
    def shape(self) -> tuple[int, ...]:
        if self._shape is None:
            self._shape = tuple(self.item(0).shape) if len(self) else (0, 0, 0)
        return (len(self), *self._shape)

    ndim = 4

    def batches(self, batch_size: int = 256) -> Iterator[torch.Tensor]:
        """Sequential pass in order, ``num_workers`` decoding processes."""
        view = _ItemView(self)
        loader = DataLoader(Subset(view, range(len(self))), batch_size=batch_size, shuffle=False,
                            num_workers=self.num_workers)
        yield from loader


class _ItemView(Dataset):
    """``LazyImages`` through the plain Dataset protocol (int index → tensor)."""

    def __init__(self, images: LazyImages):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images.item(i)


def iter_batches(images, batch_size: int = 256) -> Iterator[torch.Tensor]:
    """Sequential batches of a tensor or a :class:`LazyImages` (through its ``DataLoader``)."""
    if isinstance(images, LazyImages):
        yield from images.batches(batch_size)
    else:
        for i in range(0, len(images), batch_size):
            yield images[i:i + batch_size]


def prompt_transforms(size: int, train: bool, color_jitter: bool = False) -> Callable:
    """The official prompt-method transforms at ``size`` (see the module docstring)."""
    from torchvision import transforms as T

    norm = [T.ToTensor(), T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]
    if train:
        aug = [T.RandomResizedCrop(size, scale=(0.05, 1.0), interpolation=T.InterpolationMode.BICUBIC),
               T.RandomHorizontalFlip()]
        if color_jitter:
            aug.append(T.ColorJitter(brightness=63 / 255))
        return T.Compose(aug + norm)
    return T.Compose([T.Resize(int(round(size * 256 / 224)), interpolation=T.InterpolationMode.BICUBIC),
                      T.CenterCrop(size), *norm])


def tensor_transform(mean: Sequence[float], std: Sequence[float]) -> Callable:
    """ToTensor + Normalize (the rehearsal loaders' per-item part; augmentation runs batched on the device)."""
    from torchvision import transforms as T

    return T.Compose([T.ToTensor(), T.Normalize(tuple(mean), tuple(std))])
