"""Data loaders: the embedded scikit-learn digits default and CIFAR-100 for users who have it.

Digits (via :mod:`commons.data`): 1,797 greyscale 8×8 images, stratified 80/20 split (deterministic given ``seed``),
normalised to [-1, 1], no augmentation. CIFAR-100 (via :func:`commons.data.cifar`): the MTKD-RL/CRD augmentation
(RandomCrop 32 with padding 4, horizontal flip) and normalisation (mean 0.5071/0.4867/0.4408, std
0.2675/0.2565/0.2761).
"""

from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader

__all__ = ["digits_loaders", "cifar100_loaders", "CIFAR100_MEAN", "CIFAR100_STD"]

CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)


def digits_loaders(batch_size: int = 64, seed: int = 0, test_fraction: float = 0.2,
                   train_fraction: float = 1.0) -> tuple[DataLoader, DataLoader]:
    """``(train_loader, test_loader)`` on scikit-learn digits. ``train_fraction`` < 1 keeps a stratified subset of
    the training split (a low-data setting)."""
    from commons.data import DigitsDataset, load_digits_arrays, stratified_split

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not 0.0 < train_fraction <= 1.0:
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
    _, labels = load_digits_arrays()
    train_idx, test_idx = stratified_split(labels, test_fraction=test_fraction, seed=seed)
    if train_fraction < 1.0:
        keep, _ = stratified_split(labels[train_idx], test_fraction=1.0 - train_fraction, seed=seed + 1)
        train_idx = train_idx[keep]
    train = DigitsDataset(train_idx, image_size=8, channels=1, normalize=True)
    test = DigitsDataset(test_idx, image_size=8, channels=1, normalize=True)
    return (DataLoader(train, batch_size=batch_size, shuffle=True, drop_last=False),
            DataLoader(test, batch_size=256, shuffle=False))


def cifar100_loaders(root: str | os.PathLike, batch_size: int = 64, num_workers: int = 4,
                     download: bool = False) -> tuple[DataLoader, DataLoader]:
    """``(train_loader, test_loader)`` for CIFAR-100 in ``root`` (python layout); clear error if it is missing."""
    try:
        from torchvision import transforms
    except ImportError:
        raise ImportError("CIFAR-100 loading needs torchvision: pip install torchvision") from None
    from commons.data import cifar

    norm = transforms.Normalize(CIFAR100_MEAN, CIFAR100_STD)
    train_tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), norm])
    test_tf = transforms.Compose([transforms.ToTensor(), norm])
    try:
        train = cifar("cifar100", root, train=True, download=download, transform=train_tf)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"CIFAR-100 not found: expected {os.path.join(os.fspath(root), 'cifar-100-python')}; pass download=True "
            "(CLI: --download; needs internet) or point root (--data-root) at the folder that contains it") from None
    test = cifar("cifar100", root, train=False, download=download, transform=test_tf)
    pin = torch.cuda.is_available()
    return (DataLoader(train, batch_size=batch_size, shuffle=True, num_workers=num_workers, pin_memory=pin,
                       drop_last=False),
            DataLoader(test, batch_size=256, shuffle=False, num_workers=num_workers, pin_memory=pin))
