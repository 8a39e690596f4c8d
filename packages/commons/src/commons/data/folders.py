"""Images users already have on disk: a torchvision-style class-per-folder tree."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["ImageFolderDataset", "IMAGE_EXTENSIONS", "read_image"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file as a float32 ``[3, H, W]`` tensor in [0, 1] (greyscale is replicated)."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("reading images needs pillow: pip install 'paperlab-commons[data]'") from None
    with Image.open(path) as img:
        arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


class ImageFolderDataset(Dataset):
    """``root/<class_name>/<image>`` → ``(image [3,H,W] in [0,1], class index)``; classes sorted by name."""

    def __init__(self, root: str | os.PathLike, transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 extensions: tuple[str, ...] = IMAGE_EXTENSIONS):
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"root must be an existing directory of class folders, got {str(root)!r}")
        if transform is not None and not callable(transform):
            raise TypeError("transform must be callable or None")
        self.classes = sorted(d.name for d in root.iterdir() if d.is_dir())
        if not self.classes:
            raise ValueError(f"root {str(root)!r} has no class sub-folders (expected root/<class>/<image>)")
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples = [
            (p, self.class_to_idx[c])
            for c in self.classes
            for p in sorted((root / c).rglob("*"))
            if p.suffix.lower() in extensions
        ]
        if not self.samples:
            raise ValueError(f"no images with extensions {extensions} found under {str(root)!r}")
        self.targets = torch.tensor([t for _, t in self.samples])
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, target = self.samples[index]
        image = read_image(path)
        if self.transform is not None:
            image = self.transform(image)
        return image, target
