"""Heterogeneous teacher pools that give per-sample weighting something to find (used by ``tools/bench/kdrl.py``).

Every pool has three teachers of different architectures and a clear role:

- **strong**: a well-trained network;
- **weak**: a different architecture trained on a small stratified fraction of the training split (lower accuracy,
  less confident);
- **partly wrong**: a well-trained third architecture whose outputs are *permuted on half of the classes*
  (:class:`PermutedTeacher`): on those classes it is confidently wrong, on the others right — the case where a
  per-sample rule (confidence, reward) should pay off and a fixed average cannot.

Datasets: ``"digits"`` (scikit-learn digits, 10 classes, 8×8 greyscale; needs nothing) and ``"fractal"``
(:func:`commons.data.fractal_classes`, 100 procedurally drawn classes; needs nothing). Teachers are trained once
per pool with seed 0 and cached; the student's seeds vary only its initialisation and data order.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from .features import ClassifierOutput

__all__ = ["PermutedTeacher", "PoolSpec", "TeacherSpec", "POOLS", "pool_loaders", "build_pool", "paired_ci",
           "weight_shares"]

logger = logging.getLogger(__name__)


class PermutedTeacher(nn.Module):
    """Wrap a classifier so that it reports class ``classes[i+1]`` where it would say ``classes[i]`` (a cyclic shift
    among ``classes``; the other classes are untouched). Feature map and embedding are the wrapped model's; the
    logits (and :meth:`forward_head`, for CA-MKD) are permuted."""

    def __init__(self, module: nn.Module, classes: Sequence[int], num_classes: int):
        super().__init__()
        classes = [int(c) for c in classes]
        if len(set(classes)) != len(classes) or len(classes) < 2 or not all(0 <= c < num_classes for c in classes):
            raise ValueError(f"classes must be >= 2 distinct labels in [0, {num_classes}), got {classes}")
        self.module = module
        inv = torch.arange(num_classes)
        inv[torch.tensor(classes[1:] + classes[:1])] = torch.tensor(classes)
        self.register_buffer("inv", inv, persistent=False)

    def forward_with_features(self, x: torch.Tensor) -> ClassifierOutput:
        out = self.module.forward_with_features(x)
        return ClassifierOutput(out.logits[:, self.inv], out.feature_map, out.embedding)

    def forward_head(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.module.forward_head(fmap)[:, self.inv]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x).logits


@dataclass
class TeacherSpec:
    role: str  # "strong" | "weak" | "partly_wrong"
    model: str  # kdrl.models preset
    train_fraction: float = 1.0
    wrong_fraction: float = 0.0  # fraction of the classes (the first ones) cyclically permuted
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class PoolSpec:
    name: str
    data: str  # "digits" | "fractal"
    teachers: list[TeacherSpec]
    student: str
    student_kwargs: dict[str, Any] = field(default_factory=dict)
    data_kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fractal_kw(channels: int, classes: int) -> dict[str, Any]:
    return {"in_channels": channels, "num_classes": classes}


POOLS: dict[str, PoolSpec] = {
    # CPU settings
    "digits": PoolSpec("digits", "digits", [
        TeacherSpec("strong", "digits_resnet14"),
        TeacherSpec("weak", "digits_mlp", train_fraction=0.05),
        TeacherSpec("partly_wrong", "digits_convnet_wide", wrong_fraction=0.5),
    ], student="digits_convnet_tiny"),
    "fractal_small": PoolSpec("fractal_small", "fractal", [
        TeacherSpec("strong", "resnet8", kwargs=_fractal_kw(3, 100)),
        TeacherSpec("weak", "digits_mlp", train_fraction=0.25,
                    kwargs={"in_features": 3 * 16 * 16, "num_classes": 100, "hidden": [256]}),
        TeacherSpec("partly_wrong", "digits_convnet_wide", wrong_fraction=0.5, kwargs=_fractal_kw(3, 100)),
    ], student="digits_convnet_tiny", student_kwargs={"in_channels": 3, "num_classes": 100, "width": 8},
        data_kwargs={"size": 16, "per_class": 20, "test_per_class": 10}),
    # GPU setting (--full): the paper's CIFAR architectures on the 100-class set at 32x32
    "fractal": PoolSpec("fractal", "fractal", [
        TeacherSpec("strong", "resnet32x4", kwargs={"num_classes": 100}),
        TeacherSpec("weak", "wrn_16_2", train_fraction=0.2, kwargs={"num_classes": 100}),
        TeacherSpec("partly_wrong", "vgg13", wrong_fraction=0.5, kwargs={"num_classes": 100}),
    ], student="resnet8x4", student_kwargs={"num_classes": 100},
        data_kwargs={"size": 32, "per_class": 100, "test_per_class": 20}),
}


def pool_loaders(spec: PoolSpec, batch_size: int, num_workers: int = 0) -> tuple[DataLoader, DataLoader]:
    """``(train, test)`` loaders of the pool's dataset (fixed split, seed 0)."""
    if spec.data == "digits":
        from .data import digits_loaders

        return digits_loaders(batch_size, seed=0)
    if spec.data == "fractal":
        from commons.data import fractal_classes

        kw = dict(spec.data_kwargs)
        test_per_class = kw.pop("test_per_class", 20)
        train = fractal_classes(num_classes=100, seed=0, train=True, **kw)
        test = fractal_classes(num_classes=100, seed=0, train=False, **{**kw, "per_class": test_per_class})
        pin = torch.cuda.is_available()
        return (DataLoader(train, batch_size=batch_size, shuffle=True, num_workers=num_workers, pin_memory=pin),
                DataLoader(test, batch_size=256, shuffle=False, num_workers=num_workers, pin_memory=pin))
    raise ValueError(f"unknown pool data {spec.data!r}; expected 'digits' or 'fractal'")


def _subset_loader(loader: DataLoader, fraction: float) -> DataLoader:
    if fraction >= 1.0:
        return loader
    from commons.data import stratified_split

    ds = loader.dataset
    labels = getattr(ds, "targets", None)
    if labels is None:
        labels = torch.tensor([int(ds[i][1]) for i in range(len(ds))])
    keep, _ = stratified_split(torch.as_tensor(labels).numpy(), test_fraction=1.0 - fraction, seed=1)
    if len(keep) == 0:
        raise ValueError(f"train_fraction={fraction} keeps no image of {len(ds)}; use more images per class")
    return DataLoader(Subset(ds, keep.tolist()), batch_size=loader.batch_size, shuffle=True,
                      num_workers=loader.num_workers)


def build_pool(spec: PoolSpec, train: DataLoader, epochs: int, cache_dir: str | os.PathLike | None,
               backend=None, progress: bool = False, train_missing: bool = True) -> tuple[list[nn.Module], list[str]]:
    """Train (or load from ``cache_dir``) the pool's teachers with seed 0; returns ``(teachers, names)`` where the
    partly wrong teacher is wrapped in :class:`PermutedTeacher`. ``train_missing=False``: load only (a worker
    process of the benchmark); a teacher missing from ``cache_dir`` raises ``FileNotFoundError``."""
    from .config import TeacherTrainConfig, scaled_milestones
    from .training import load_or_train_teachers

    if not train_missing:
        if cache_dir is None:
            raise ValueError("build_pool(train_missing=False) needs a cache_dir")
        files = [_teacher_file(cache_dir, spec, t, epochs, seed=0) for t in spec.teachers]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"build_pool(train_missing=False): no cached teacher at {missing}")

    cfg = TeacherTrainConfig(epochs=epochs, milestones=scaled_milestones(epochs), seed=0,
                             batch_size=train.batch_size or 64)
    teachers, names = [], []
    num_classes = 10 if spec.data == "digits" else 100
    for t in spec.teachers:
        folder = None if cache_dir is None else Path(cache_dir) / f"{spec.name}_{t.role}_e{epochs}"
        model = load_or_train_teachers([t.model], _subset_loader(train, t.train_fraction), folder, cfg,
                                       backend=backend, progress=progress, model_kwargs=t.kwargs)[0]
        if t.wrong_fraction > 0:
            k = max(2, int(round(t.wrong_fraction * num_classes)))
            model = PermutedTeacher(model, list(range(k)), num_classes).eval()
        teachers.append(model)
        names.append(f"{t.role}:{t.model}")
    return teachers, names


def _teacher_file(cache_dir: str | os.PathLike, spec: PoolSpec, t: TeacherSpec, epochs: int, seed: int) -> Path:
    """Where :func:`build_pool` (through :func:`kdrl.training.load_or_train_teachers`) keeps a teacher's weights."""
    return (Path(cache_dir) / f"{spec.name}_{t.role}_e{epochs}" / f"{t.model.replace(':', '_')}_seed{seed}"
            / "model.safetensors")


#: Student-t 97.5 % quantiles for 1..30 degrees of freedom (two-sided 95 % intervals; no scipy needed)
_T975 = (12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157, 2.228139,
         2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905, 2.109816, 2.100922, 2.093024, 2.085963,
         2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272)


def paired_ci(diffs: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Mean of paired per-seed differences with a Student-t confidence interval (``half`` = half-width)."""
    n = len(diffs)
    if n == 0:
        raise ValueError("diffs must not be empty")
    mean = sum(diffs) / n
    if n == 1:
        return {"mean": mean, "sd": float("nan"), "half": float("nan"), "low": float("nan"), "high": float("nan")}
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    if level != 0.95:
        raise ValueError(f"level must be 0.95 (the tabulated Student-t quantiles), got {level}")
    df = n - 1
    # beyond 30 df: the Cornish-Fisher expansion of t around z = 1.959964 (relative error < 1e-4)
    q = _T975[df - 1] if df <= len(_T975) else 1.959964 + 2.3723 / df + 2.8224 / df ** 2
    half = q * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "half": half, "low": mean - half, "high": mean + half}


def weight_shares(weights: list[list[float]], skip: int = 1) -> list[float]:
    """Per-teacher share of the total weight (``w_m / sum_j w_j``) from per-epoch mean weights ``[epochs][M]``,
    averaged over epochs ``>= skip`` (MTKD-RL's warm-up epoch has all ones). Shares make rules with different scales
    comparable (CA-MKD and EBKD carry the official ``1/M``)."""
    rows = weights[skip:] or weights
    shares = []
    for w in rows:
        total = sum(w)
        shares.append([v / total if total > 0 else 0.0 for v in w])
    m = len(shares[0])
    return [sum(s[i] for s in shares) / len(shares) for i in range(m)]
