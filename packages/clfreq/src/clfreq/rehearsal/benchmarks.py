"""Split benchmarks for the rehearsal methods: tensors per task, labels remapped so that task t holds classes
``t*cpt .. (t+1)*cpt-1``, normalised inputs and the mammoth train augmentation spec.

* Split Digits (embedded, scikit-learn digits through commons; the default of the CPU tests and quick benchmark);
* Split Fractals: the many-class embedded benchmark (no download). ``commons.data.fractal_classes`` draws 100
  procedural shape classes (one random IFS each) at 32×32; here they become 10 tasks × 10 classes in label order
  (the mammoth convention), normalised with the training mean/std per channel, no train augmentation by default (a
  flip keeps an IFS's class, but the instances are already flipped, placed and scaled at random). With 100 classes a
  buffer of 50 holds half an image per class, so — unlike Split Digits (10 classes) — forgetting and buffer size
  decide the result;
* Split CIFAR-10/100 and Split Tiny-ImageNet from local files (mammoth statistics and crop + flip augmentation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Benchmark", "split_cifar", "split_digits", "split_fractals", "split_tinyimagenet"]


@dataclass
class Benchmark:
    """Tensors per task (already normalised): ``train[t] = (x, y)``, ``test[t] = (x, y)``; labels remapped so task t
    holds classes ``t*cpt .. (t+1)*cpt-1``."""

    name: str
    train: list
    test: list
    classes_per_task: int
    in_channels: int = 3
    class_order: list = field(default_factory=list)
    #: normalisation statistics per channel (the padding value of the crop is the normalised black, -mean/std)
    mean: tuple = (0.0, 0.0, 0.0)
    std: tuple = (1.0, 1.0, 1.0)
    #: default train augmentation: ``{"padding": 4, "flip": True}`` (mammoth CIFAR/Tiny) or ``None`` (off)
    augment: dict | None = None

    @property
    def black(self) -> torch.Tensor:
        """Normalised value of a black pixel per channel."""
        return -torch.tensor(self.mean, dtype=torch.float32) / torch.tensor(self.std, dtype=torch.float32)

    @property
    def num_tasks(self) -> int:
        return len(self.train)

    @property
    def num_classes(self) -> int:
        return self.num_tasks * self.classes_per_task


def _split(name, xtr, ytr, xte, yte, cpt, seed, order=None, stats=None, augment=None) -> Benchmark:
    classes = sorted(set(ytr.tolist()))
    if len(classes) % cpt:
        raise ValueError(f"classes_per_task={cpt} does not divide {len(classes)} classes")
    if order is None:
        order = list(np.random.default_rng(seed).permutation(classes)) if seed is not None else classes
    remap = torch.full((max(classes) + 1,), -1, dtype=torch.long)
    remap[torch.tensor(order)] = torch.arange(len(order))
    ytr, yte = remap[ytr], remap[yte]
    tr, te = [], []

    def take(x, m):  # LazyImages: a view, nothing decoded
        return x.subset(m) if hasattr(x, "subset") else x[m]

    for t in range(len(order) // cpt):
        lo, hi = t * cpt, (t + 1) * cpt
        m, n = (ytr >= lo) & (ytr < hi), (yte >= lo) & (yte < hi)
        tr.append((take(xtr, m), ytr[m]))
        te.append((take(xte, n), yte[n]))
    c = xtr.shape[1]
    mean, std = stats if stats is not None else ((0.0,) * c, (1.0,) * c)
    return Benchmark(name, tr, te, cpt, c, [int(o) for o in order], tuple(mean), tuple(std), augment)


def split_digits(image_size: int = 16, classes_per_task: int = 2, seed: int | None = None,
                 test_fraction: float = 0.2) -> Benchmark:
    """Embedded default: scikit-learn digits (commons), 8×8 bilinearly resized to ``image_size`` (16: the DWT gives
    8×8 maps), grey replicated to 3 channels, normalised with the training mean/std; 5 tasks × 2 classes in label
    order (``seed=None``, the mammoth convention) or a seeded class order.

    No train augmentation by default (``augment=None``), as mammoth's Split MNIST: a horizontal flip does not preserve
    digit identity (2↔5-like mirror shapes, 3, 7, 9), and a 4-pixel crop shift on a 16-pixel upsampled 8×8 digit
    moves a quarter of the image. ``train_continual(..., augment={"padding": 2, "flip": False})`` turns a small crop
    on."""
    from commons.data import load_digits_arrays, stratified_split

    if image_size % 2 or image_size < 8:
        raise ValueError(f"image_size must be even and ≥ 8, got {image_size}")
    imgs, labels = load_digits_arrays()
    x = torch.from_numpy(imgs)[:, None]
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    y = torch.from_numpy(labels)
    tr, te = stratified_split(labels, test_fraction, seed=0)
    tr, te = torch.as_tensor(np.asarray(tr)), torch.as_tensor(np.asarray(te))
    mean, std = x[tr].mean(), x[tr].std()
    x = (x - mean) / std
    stats = ((float(mean),) * 3, (float(std),) * 3)
    return _split("split-digits", x[tr], y[tr], x[te], y[te], classes_per_task, seed, stats=stats)


_STATS = {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2615)),
          "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
          "tinyimagenet": ((0.4802, 0.4480, 0.3975), (0.2770, 0.2691, 0.2821))}


_MAMMOTH_AUG = {"padding": 4, "flip": True}


def _to_tensor(ds, stats):
    """``(images, labels)``: a torchvision dataset with a uint8 ``data`` array stays uint8 and is decoded per item
    (:class:`clfreq.lazy.LazyImages`, ToTensor + normalisation); other datasets are stacked as float tensors."""
    if hasattr(ds, "data") and hasattr(ds, "targets"):
        from ..lazy import LazyImages, tensor_transform

        return LazyImages(np.asarray(ds.data), tensor_transform(*stats)), torch.as_tensor(ds.targets)
    xs = torch.stack([torch.as_tensor(np.array(img), dtype=torch.float32).permute(2, 0, 1) / 255 for img, _ in ds])
    ys = torch.tensor([int(t) for _, t in ds])
    m, s = torch.tensor(stats[0])[:, None, None], torch.tensor(stats[1])[:, None, None]
    return (xs - m) / s, ys


def split_cifar(root: str | Path, name: str = "cifar10", classes_per_task: int | None = None,
                seed: int | None = None) -> Benchmark:
    """Split CIFAR-10 (5×2) / CIFAR-100 (10×10) from torchvision files under ``root`` (no download), normalised with
    the mammoth statistics; train augmentation RandomCrop(32, padding=4) + horizontal flip (mammoth), applied on
    the fly by :func:`train_continual`."""
    from commons.data import cifar

    if name not in ("cifar10", "cifar100"):
        raise ValueError(f"name must be 'cifar10' or 'cifar100', got {name!r}")
    xtr, ytr = _to_tensor(cifar(name, root, train=True), _STATS[name])
    xte, yte = _to_tensor(cifar(name, root, train=False), _STATS[name])
    cpt = classes_per_task or (2 if name == "cifar10" else 10)
    return _split(f"split-{name}", xtr, ytr, xte, yte, cpt, seed, stats=_STATS[name], augment=dict(_MAMMOTH_AUG))


def split_tinyimagenet(root: str | Path, classes_per_task: int = 20, seed: int | None = None) -> Benchmark:
    """Split Tiny-ImageNet (10×20) from the standard layout: ``root/train/<wnid>/images/*.JPEG`` and
    ``root/val/images`` + ``root/val/val_annotations.txt``, decoded per item (:class:`clfreq.lazy.LazyImages`).
    Train augmentation RandomCrop(64, padding=4) + flip."""
    from ..lazy import LazyImages, tensor_transform

    root = Path(root)
    if not (root / "train").is_dir() or not (root / "val" / "val_annotations.txt").is_file():
        raise ValueError(f"{root} is not a Tiny-ImageNet folder "
                         "(needs train/<wnid>/images and val/val_annotations.txt)")
    wnids = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    index = {w: i for i, w in enumerate(wnids)}
    tr = [(f, index[w]) for w in wnids for f in sorted((root / "train" / w / "images").glob("*.JPEG"))]
    te = []
    for line in (root / "val" / "val_annotations.txt").read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[1] in index:
            te.append((root / "val" / "images" / parts[0], index[parts[1]]))
    tf = tensor_transform(*_STATS["tinyimagenet"])  # files decoded per item (the float set would be 4.9 GB)
    xtr, ytr = LazyImages([f for f, _ in tr], tf), torch.tensor([c for _, c in tr])
    xte, yte = LazyImages([f for f, _ in te], tf), torch.tensor([c for _, c in te])
    return _split("split-tinyimagenet", xtr, ytr, xte, yte, classes_per_task, seed, stats=_STATS["tinyimagenet"],
                  augment=dict(_MAMMOTH_AUG))



@lru_cache(maxsize=2)
def _fractal_tensors(num_classes: int, train_per_class: int, test_per_class: int, size: int, data_seed: int):
    from commons.data import fractal_classes

    kw = dict(num_classes=num_classes, size=size, seed=data_seed, normalize=False)
    train = fractal_classes(per_class=train_per_class, train=True, **kw)
    test = fractal_classes(per_class=test_per_class, train=False, **kw)
    return train.images_float(), train.targets, test.images_float(), test.targets


def split_fractals(num_classes: int = 100, classes_per_task: int = 10, train_per_class: int = 100,
                   test_per_class: int = 20, size: int = 32, seed: int | None = None, data_seed: int = 0
                   ) -> Benchmark:
    """Split Fractals: ``num_classes`` fractal classes in tasks of ``classes_per_task`` (default 10 × 10).

    ``seed`` permutes the class order (``None``: label order); ``data_seed`` selects the classes and images (fixed
    by default so every run sees the same data). Rendering 12 000 images takes about 15 s on one core (cached).
    """
    if size % 2:
        raise ValueError(f"size must be even (the DWT halves it), got {size}")
    xtr, ytr, xte, yte = _fractal_tensors(num_classes, train_per_class, test_per_class, size, data_seed)
    mean, std = xtr.mean((0, 2, 3)), xtr.std((0, 2, 3))
    m, s = mean[:, None, None], std[:, None, None]
    stats = (tuple(float(v) for v in mean), tuple(float(v) for v in std))
    return _split("split-fractals", (xtr - m) / s, ytr, (xte - m) / s, yte, classes_per_task, seed, stats=stats)
