"""Fractal classes: a 100-class image-classification set drawn procedurally, for class-incremental benchmarks.

Split Digits (10 classes, 1,797 images) is too small for forgetting and buffer size to matter much. This set has
many classes (100 by default, e.g. 10 tasks of 10 classes, like Split CIFAR-100) and needs no download: each class is
one random iterated function system (IFS), each image one chaos-game rendering of a slightly perturbed copy of it,
placed, scaled and coloured at random on a noisy background. Only the shape tells the class; colour, position,
scale, flip and background are nuisances.

How it is drawn (FractalDB, Kataoka et al. ACCV 2020, as in :mod:`commons.data.fractals`):

* class ``k``: 2–4 affine maps with entries uniform in [−1, 1], kept if the σ-factor (sum of the maps' singular
  values) lies in ``[3.5, 4.5]`` and a 32×32 preview lights at least 4 % of its pixels;
* instance: one map parameter multiplied by U[0.8, 1.2] (FractalDB's per-instance perturbation), ``num_points``
  chaos-game points with map probabilities ∝ |det|, rasterised into a box of side U[0.6, 1.0]·``size`` at a random
  position, flipped left-right with probability 1/2, drawn in a random colour (each channel U[0.35, 1]) over a
  background of Gaussian noise (σ = 0.06) around a random grey level U[0, 0.25].

The IFS come from ``numpy.random.SeedSequence([seed, 0x46434C53])``, a stream that ``sample_ifs_classes(n, seed)``
(used to pre-train ``clfreq``'s small ViT) never draws from, so the classes are disjoint from that pre-training data;
they are of the same *family*, which a prompt learner on that backbone benefits from (say so next to its numbers).
Train and test images of the same classes come from two further independent streams (``train=True/False``).

Public API::

    from commons.data import fractal_classes, split_by_classes
    train = fractal_classes(num_classes=100, per_class=100, size=32, seed=0)              # FractalClasses
    test = fractal_classes(num_classes=100, per_class=20, size=32, seed=0, train=False)
    tasks = split_by_classes(train.targets, classes_per_task=10, seed=0)               # 10 tasks of 10 classes
    x, y = train[0]  # float32 [3, 32, 32] in [-1, 1] (normalize=True), int label

Images are stored as uint8 (100 × 100 × 3 × 32 × 32 = 3 MB) and converted per item; ``images_float()`` returns
the whole set as one float tensor. Rendering 10,000 images at 32×32 takes a few seconds on one CPU core.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .fractals import draw_ifs_classes

__all__ = ["FractalClasses", "fractal_classes", "sample_class_ifs", "render_instances"]

_CLASS_STREAM = 0x46434C53  # "FCLS": keeps the class stream apart from sample_ifs_classes(n, seed=int)
_SPLIT_STREAM = {True: 1, False: 2}


def sample_class_ifs(num_classes: int, seed: int = 0, sigma_range: tuple[float, float] = (3.5, 4.5),
                     min_fill: float = 0.04, max_tries: int = 200_000) -> list[np.ndarray]:
    """The IFS of the ``num_classes`` classes: a list of ``[n_maps, 2, 3]`` arrays (2 <= n_maps <= 4).

    Class ``k`` of ``num_classes=n`` is the same IFS for every ``n > k`` (the classes are drawn in order), so a
    smaller set is a prefix of a larger one with the same seed.
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, _CLASS_STREAM]))
    return draw_ifs_classes(rng, num_classes, sigma_range, min_fill, max_tries)


def render_instances(maps: np.ndarray, size: int, num_points: int, rng: np.random.Generator) -> np.ndarray:
    """Chaos-game renderings of ``N`` IFS at once: ``maps`` is ``[N, 4, 2, 3]`` (unused maps all zero).

    Returns float32 ``[N, size, size]`` point-density images in [0, 1], each fitted into a random box of side
    U[0.6, 1.0]·``size`` at a random position (so position and scale are nuisances), flipped left-right with
    probability 1/2.
    """
    n = len(maps)
    a, b = maps[..., :2], maps[..., 2]  # [N, 4, 2, 2], [N, 4, 2]
    dets = np.abs(a[..., 0, 0] * a[..., 1, 1] - a[..., 0, 1] * a[..., 1, 0])
    used = np.any(maps != 0, axis=(2, 3))
    probs = np.where(used, dets + 1e-6, 0.0)
    cum = np.cumsum(probs / probs.sum(1, keepdims=True), axis=1)
    cum[:, -1] = 1.0 + 1e-9
    burn = 20
    pts = np.zeros((n, 2))
    xs = np.empty((num_points, n, 2))
    rows = np.arange(n)
    for i in range(num_points + burn):
        k = (rng.random(n)[:, None] >= cum).sum(1)
        pts = np.einsum("nij,nj->ni", a[rows, k], pts) + b[rows, k]
        if i >= burn:
            xs[i - burn] = pts
    lo = xs.min(axis=0)
    span = np.maximum(xs.max(axis=0) - lo, 1e-9)  # [N, 2]
    side = rng.uniform(0.6, 1.0, size=n) * (size - 1)
    offset = rng.uniform(0.0, 1.0, size=(n, 2)) * (size - 1 - side)[:, None]
    flip = rng.random(n) < 0.5
    unit = (xs - lo) / span  # [P, N, 2] in [0, 1]
    unit[..., 0] = np.where(flip, 1.0 - unit[..., 0], unit[..., 0])
    ij = np.clip((unit * side[:, None] + offset).round().astype(np.int64), 0, size - 1)
    flat = (rows[None, :] * size + ij[..., 1]) * size + ij[..., 0]
    images = np.bincount(flat.ravel(), minlength=n * size * size).reshape(n, size, size).astype(np.float32)
    peak = np.maximum(np.percentile(images, 99, axis=(1, 2), keepdims=True), 1.0)
    return np.minimum(images / peak, 1.0)


class FractalClasses(Dataset):
    """``num_classes`` fractal classes × ``per_class`` images (see the module docstring for how they are drawn).

    Attributes:
        images: uint8 ``[N, channels, size, size]``, class-major order (all of class 0, then class 1, ...).
        targets: int64 ``[N]`` labels in ``0..num_classes-1``.
        ifs: the classes' IFS (list of ``[n_maps, 2, 3]`` arrays).
    """

    def __init__(self, num_classes: int = 100, per_class: int = 100, size: int = 32, seed: int = 0,
                 train: bool = True, channels: int = 3, num_points: int = 1500, normalize: bool = True):
        for name, value, low in (("per_class", per_class, 1), ("size", size, 8), ("num_points", num_points, 100)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        if not isinstance(train, bool):
            raise ValueError(f"train must be a bool, got {train!r}")
        self.ifs = sample_class_ifs(num_classes, seed=seed)
        self.num_classes, self.normalize = num_classes, normalize
        rng = np.random.default_rng(np.random.SeedSequence([seed, _CLASS_STREAM, _SPLIT_STREAM[train]]))
        padded = np.zeros((num_classes * per_class, 4, 2, 3))
        for c, maps in enumerate(self.ifs):
            block = padded[c * per_class:(c + 1) * per_class]
            block[:, :len(maps)] = maps
            # FractalDB's instance perturbation: one parameter of one map scaled by U[0.8, 1.2]
            k = rng.integers(0, len(maps), size=per_class)
            i, j = rng.integers(0, 2, size=per_class), rng.integers(0, 3, size=per_class)
            block[np.arange(per_class), k, i, j] *= rng.uniform(0.8, 1.2, size=per_class)
        chunks = []
        for start in range(0, len(padded), 2048):  # bounds the [points, chunk, 2] trajectory buffer
            chunks.append(render_instances(padded[start:start + 2048], size, num_points, rng))
        shape = np.concatenate(chunks)[:, None]  # [N, 1, H, W]
        n = len(shape)
        colour = rng.uniform(0.35, 1.0, size=(n, channels, 1, 1)) if channels == 3 else np.ones((n, 1, 1, 1))
        grey = rng.uniform(0.0, 0.25, size=(n, 1, 1, 1))
        noise = rng.normal(0.0, 0.06, size=(n, channels, size, size))
        img = np.clip(grey + noise + shape * (colour - grey), 0.0, 1.0)
        self.images = torch.from_numpy(np.round(img * 255).astype(np.uint8))
        self.targets = torch.arange(num_classes).repeat_interleave(per_class)

    def __len__(self) -> int:
        return len(self.targets)

    def _to_float(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0
        return x * 2 - 1 if self.normalize else x

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self._to_float(self.images[index]), int(self.targets[index])

    def images_float(self) -> torch.Tensor:
        """All images as one float32 tensor (in [−1, 1] with ``normalize``, else [0, 1])."""
        return self._to_float(self.images)


def fractal_classes(num_classes: int = 100, per_class: int = 100, size: int = 32, seed: int = 0, train: bool = True,
                    channels: int = 3, num_points: int = 1500, normalize: bool = True) -> FractalClasses:
    """The fractal-classes dataset (a :class:`FractalClasses`); deterministic given its arguments.

    Args:
        num_classes: number of classes (each one IFS); class ``k`` is the same for every ``num_classes > k``.
        per_class: images per class in this split.
        size: image side in pixels.
        seed: selects the classes *and* the images; train and test of one seed share their classes.
        train: ``True`` for the training stream, ``False`` for an independent test stream of the same classes.
        channels: 3 (random colour per image) or 1 (white shape).
        num_points: chaos-game points per image (more: denser, smoother shapes).
        normalize: items in [−1, 1] (the ViT mean = std = 0.5 convention) instead of [0, 1].
    """
    return FractalClasses(num_classes=num_classes, per_class=per_class, size=size, seed=seed, train=train,
                          channels=channels, num_points=num_points, normalize=normalize)
