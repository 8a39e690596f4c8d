"""scikit-learn's handwritten digits (1,797 greyscale 8×8 images, UCI ML hand-written digits) as torch data.

Provenance: ``sklearn.datasets.load_digits`` ships the 8×8 test set of the UCI "Optical Recognition of Handwritten
Digits" data (values 0..16). We scale them to [0, 1]. Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["load_digits_arrays", "DigitsDataset", "stratified_split"]


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images, labels)``: float32 ``[1797, 8, 8]`` in [0, 1] and int64 ``[1797]`` in 0..9."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError("the digits dataset needs scikit-learn: pip install 'paperlab-commons[data]'") from None
    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)
    return images, bunch.target.astype(np.int64)


def stratified_split(labels: Sequence[int] | np.ndarray | torch.Tensor, test_fraction: float = 0.2,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split indices so every class keeps the same train/test proportion; deterministic given ``seed``."""
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D sequence, got shape {labels.shape}")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        n_test = max(1, int(round(len(idx) * test_fraction))) if len(idx) > 1 else 0
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


class DigitsDataset(Dataset):
    """The digits as ``(image, label)`` pairs: ``image`` is ``[channels, image_size, image_size]`` float32.

    Args:
        indices: subset of the 1,797 images (e.g. from :func:`stratified_split`); ``None`` keeps all.
        image_size: side length; 8 keeps the originals, larger sizes are bilinearly resized once, up front.
        channels: 1, or 3 to replicate the grey channel (for RGB backbones).
        normalize: map [0, 1] to [-1, 1].
    """

    def __init__(self, indices: Sequence[int] | np.ndarray | None = None, image_size: int = 8, channels: int = 1,
                 normalize: bool = False):
        if not isinstance(image_size, int) or image_size < 4:
            raise ValueError(f"image_size must be an int >= 4, got {image_size!r}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        images, labels = load_digits_arrays()
        if indices is not None:
            indices = np.asarray(indices, dtype=np.int64)
            if indices.ndim != 1 or (indices.size and (indices.min() < 0 or indices.max() >= len(labels))):
                raise ValueError(f"indices must be a 1-D array of ints in [0, {len(labels)})")
            images, labels = images[indices], labels[indices]
        x = torch.from_numpy(images).unsqueeze(1)
        if image_size != 8:
            x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear",
                                                align_corners=False).clamp_(0, 1)
        if channels == 3:
            x = x.expand(-1, 3, -1, -1).contiguous()
        if normalize:
            x = x * 2 - 1
        self.images = x
        self.targets = torch.from_numpy(labels)
        self.classes = list(range(10))

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.targets[index])
