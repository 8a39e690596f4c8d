"""Standard vision benchmarks through torchvision, with an offline-friendly error."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from torch.utils.data import Dataset

__all__ = ["cifar"]

_CIFAR = {"cifar10": ("CIFAR10", "cifar-10-batches-py"), "cifar100": ("CIFAR100", "cifar-100-python")}


def cifar(name: str, root: str | os.PathLike, train: bool = True, download: bool = False,
          transform: Callable | None = None) -> Dataset:
    """CIFAR-10/100 from ``root`` (the python-pickle layout torchvision uses).

    Without ``download=True`` the data must already be in ``root``; otherwise the error says exactly what to do
    instead of a network stack trace.
    """
    key = str(name).lower().replace("-", "")
    if key not in _CIFAR:
        raise ValueError(f"name must be 'cifar10' or 'cifar100', got {name!r}")
    try:
        import torchvision
    except ImportError:
        raise ImportError("CIFAR loaders need torchvision: pip install 'paperlab-commons[data]'") from None
    cls_name, folder = _CIFAR[key]
    root = Path(root)
    if not download and not (root / folder).is_dir():
        raise FileNotFoundError(
            f"{cls_name} not found: expected {root / folder}. Pass download=True (needs internet) or point root at a "
            f"folder that contains '{folder}' (the extracted python version of the dataset)."
        )
    return getattr(torchvision.datasets, cls_name)(root=str(root), train=train, download=download,
                                                   transform=transform)
