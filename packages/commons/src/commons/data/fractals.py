"""FractalDB-style formula-driven images: pre-training data that contains no natural image at all.

Kataoka et al., "Pre-training without Natural Images" (ACCV 2020) and Nakashima et al., "Can Vision Transformers Learn
without Natural Images?" (AAAI 2022) pre-train CNNs and ViTs on images of iterated function systems (IFS): each class
is one random IFS (2–4 affine maps), each instance renders that IFS with one parameter slightly perturbed. We use it to
pre-train the small ViT that the prompt-based continual learners need offline, so the pre-training data is disjoint
from every benchmark (digits, photos) by construction.

What we follow from FractalDB: affine maps with entries uniform in [−1, 1], classes kept only if the IFS is
contractive enough to draw a fractal (the "σ-factor" filter: the sum of the maps' singular values within
``sigma_range``), map probabilities proportional to ``|det|``, the chaos game for rendering, and per-instance
perturbation of one parameter by a factor in [0.8, 1.2]. What we simplify: greyscale points rasterised at low
resolution (32×32 default) with random flips, instead of 362×362 coloured patches.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["sample_ifs_classes", "render_ifs", "FractalDataset"]


def _sigma_factor(maps: np.ndarray) -> float:
    total = 0.0
    for m in maps:
        total += np.linalg.svd(m[:, :2].reshape(2, 2), compute_uv=False).sum()
    return float(total)


def sample_ifs_classes(num_classes: int, seed: int = 0, sigma_range: tuple[float, float] = (3.5, 4.5),
                       min_fill: float = 0.04, max_tries: int = 100_000) -> list[np.ndarray]:
    """Draw ``num_classes`` IFS, each a ``[n_maps, 2, 3]`` array of affine maps ``[[a, b, e], [c, d, f]]``.

    Besides the σ-factor filter, an IFS whose 32×32 preview lights fewer than ``min_fill`` of the pixels (a point or
    a thin line: nothing for a network to learn) is rejected.
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return draw_ifs_classes(np.random.default_rng(seed), num_classes, sigma_range, min_fill, max_tries)


def draw_ifs_classes(rng: np.random.Generator, num_classes: int, sigma_range: tuple[float, float] = (3.5, 4.5),
                     min_fill: float = 0.04, max_tries: int = 100_000) -> list[np.ndarray]:
    """The rejection sampler behind :func:`sample_ifs_classes`, drawing from ``rng`` (see there for the filters)."""
    lo, hi = sigma_range
    if not 0 < lo < hi:
        raise ValueError(f"sigma_range must be (low, high) with 0 < low < high, got {sigma_range}")
    classes: list[np.ndarray] = []
    for _ in range(max_tries):
        n_maps = int(rng.integers(2, 5))
        maps = rng.uniform(-1.0, 1.0, size=(n_maps, 2, 3))
        if lo <= _sigma_factor(maps) <= hi and (render_ifs(maps, 32, 1500, rng) > 0).mean() >= min_fill:
            classes.append(maps)
            if len(classes) == num_classes:
                return classes
    raise RuntimeError(f"found only {len(classes)} IFS within sigma_range={sigma_range} in {max_tries} tries")


def render_ifs(maps: np.ndarray, size: int = 32, num_points: int = 4000, rng: np.random.Generator | None = None,
               batch: int = 1) -> np.ndarray:
    """Render ``batch`` chaos-game images of one IFS as float32 ``[batch, size, size]`` in [0, 1]."""
    rng = rng or np.random.default_rng(0)
    dets = np.abs(maps[:, 0, 0] * maps[:, 1, 1] - maps[:, 0, 1] * maps[:, 1, 0]) + 1e-6
    probs = dets / dets.sum()
    choice = rng.choice(len(maps), size=(num_points, batch), p=probs)
    pts = np.zeros((batch, 2))
    xs = np.empty((num_points, batch, 2))
    for i in range(num_points):
        m = maps[choice[i]]  # [batch, 2, 3]
        pts = np.einsum("bij,bj->bi", m[:, :, :2], pts) + m[:, :, 2]
        xs[i] = pts
    xs = xs[20:]  # burn-in
    lo = xs.min(axis=0, keepdims=True)
    span = np.maximum(xs.max(axis=0, keepdims=True) - lo, 1e-9)
    ij = np.clip(((xs - lo) / span * (size - 1)).round().astype(np.int64), 0, size - 1)
    images = np.zeros((batch, size, size), np.float32)
    b = np.broadcast_to(np.arange(batch)[None, :], ij.shape[:2])
    np.add.at(images, (b.ravel(), ij[..., 1].ravel(), ij[..., 0].ravel()), 1.0)
    images = np.minimum(images / np.maximum(np.percentile(images, 99, axis=(1, 2), keepdims=True), 1e-6), 1.0)
    return images


class FractalDataset(Dataset):
    """``num_classes`` IFS classes × ``per_class`` perturbed instances, rendered once up front.

    Images are ``[channels, size, size]`` float32; with ``normalize`` they are mapped to [−1, 1] (the mean = std = 0.5
    convention of ViT checkpoints). Deterministic given ``seed``.
    """

    def __init__(self, num_classes: int = 100, per_class: int = 100, size: int = 32, channels: int = 3,
                 num_points: int = 3000, seed: int = 0, normalize: bool = True):
        if not isinstance(per_class, int) or per_class < 1:
            raise ValueError(f"per_class must be a positive int, got {per_class!r}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        if not isinstance(size, int) or size < 8:
            raise ValueError(f"size must be an int >= 8, got {size!r}")
        rng = np.random.default_rng(seed + 1)
        classes = sample_ifs_classes(num_classes, seed=seed)
        images, labels = [], []
        for label, maps in enumerate(classes):
            for _ in range(per_class):
                perturbed = maps.copy()
                k, i, j = rng.integers(len(maps)), rng.integers(2), rng.integers(3)
                perturbed[k, i, j] *= rng.uniform(0.8, 1.2)
                img = render_ifs(perturbed, size=size, num_points=num_points, rng=rng)[0]
                if rng.random() < 0.5:
                    img = img[:, ::-1]
                images.append(np.ascontiguousarray(img))
                labels.append(label)
        x = torch.from_numpy(np.stack(images)).unsqueeze(1)
        if channels == 3:
            x = x.expand(-1, 3, -1, -1).contiguous()
        self.images = x * 2 - 1 if normalize else x
        self.targets = torch.tensor(labels)
        self.ifs = classes

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.targets[index])
