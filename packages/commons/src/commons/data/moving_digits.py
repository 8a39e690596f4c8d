"""Moving digits: short greyscale videos of 1–2 handwritten digits bouncing on a black canvas.

Provenance: the digit glyphs are scikit-learn's 8×8 handwritten digits (:func:`commons.data.load_digits_arrays`, the
UCI "Optical Recognition of Handwritten Digits" test set); nothing is downloaded. The videos follow the idea of
Moving MNIST (Srivastava et al., 2015) on a smaller canvas: every digit starts at a random position with a random
velocity and bounces off the canvas borders (the velocity component flips when the digit would leave the canvas).
Several digits are composited with a per-pixel maximum.

Everything is a function of ``seed`` (and the arguments): video ``i`` is drawn from ``numpy.random.default_rng([seed,
i])``, so a dataset can be regenerated piecewise and two datasets with different seeds are independent.

The default geometry (8 frames × 16×16, digits at their native 8×8) is what the vqcore model zoo is trained on; it was
chosen small so that diffusion sampling over a dozen quantization settings fits a CPU benchmark. Larger canvases
(e.g. ``num_frames=16, size=32, digit_size=12``) work too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .digits import load_digits_arrays

__all__ = ["MovingDigitsDataset", "make_moving_digits", "bouncing_trajectory"]


def bouncing_trajectory(start: Sequence[float], velocity: Sequence[float], num_frames: int, limit: float) -> np.ndarray:
    """Positions ``[num_frames, 2]`` (float, top-left corner) of a point moving in ``[0, limit]²`` with reflection."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    pos = np.asarray(start, dtype=np.float64).copy()
    vel = np.asarray(velocity, dtype=np.float64).copy()
    out = np.empty((num_frames, 2), dtype=np.float64)
    for f in range(num_frames):
        out[f] = pos
        nxt = pos + vel
        for d in range(2):
            if nxt[d] < 0:
                nxt[d], vel[d] = -nxt[d], -vel[d]
            elif nxt[d] > limit:
                nxt[d], vel[d] = 2 * limit - nxt[d], -vel[d]
        pos = np.clip(nxt, 0, limit)
    return out


def _resize_glyphs(glyphs: np.ndarray, digit_size: int) -> np.ndarray:
    if digit_size == glyphs.shape[-1]:
        return glyphs
    x = torch.from_numpy(glyphs).unsqueeze(1)
    x = torch.nn.functional.interpolate(x, size=(digit_size, digit_size), mode="bilinear", align_corners=False)
    return x.squeeze(1).clamp_(0, 1).numpy()


def make_moving_digits(num_videos: int, num_frames: int = 8, size: int = 16, digit_size: int = 8,
                       num_digits: int = 1, speed: tuple[float, float] = (1.0, 2.0), seed: int = 0,
                       digit_indices: Sequence[int] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``(videos, labels)``.

    Args:
        num_videos: how many videos.
        num_frames, size: video length and square canvas side in pixels.
        digit_size: side of each pasted digit (8 keeps the originals; other sizes are bilinearly resized once).
        num_digits: 1 or 2 digits per video.
        speed: ``(min, max)`` pixels per frame; the direction is uniform on the circle.
        seed: everything is deterministic given the seed.
        digit_indices: which of the 1,797 glyphs may be used (e.g. a train split); ``None`` = all.

    Returns:
        ``videos`` float32 ``[num_videos, num_frames, size, size]`` in [0, 1] and ``labels`` int64
        ``[num_videos, num_digits]`` (the class of each digit, in pasting order).
    """
    for name, value, low in (("num_videos", num_videos, 1), ("num_frames", num_frames, 1), ("size", size, 4),
                             ("digit_size", digit_size, 2)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if digit_size > size:
        raise ValueError(f"digit_size ({digit_size}) must not exceed size ({size})")
    if num_digits not in (1, 2):
        raise ValueError(f"num_digits must be 1 or 2, got {num_digits!r}")
    if len(speed) != 2 or not 0 <= speed[0] <= speed[1]:
        raise ValueError(f"speed must be (min, max) with 0 <= min <= max, got {speed!r}")
    images, labels = load_digits_arrays()
    if digit_indices is None:
        pool = np.arange(len(labels))
    else:
        pool = np.asarray(digit_indices, dtype=np.int64)
        if pool.ndim != 1 or pool.size == 0 or pool.min() < 0 or pool.max() >= len(labels):
            raise ValueError(f"digit_indices must be a non-empty 1-D array of ints in [0, {len(labels)})")
    glyphs = _resize_glyphs(images, digit_size)
    limit = float(size - digit_size)
    videos = np.zeros((num_videos, num_frames, size, size), dtype=np.float32)
    out_labels = np.zeros((num_videos, num_digits), dtype=np.int64)
    for i in range(num_videos):
        rng = np.random.default_rng([seed, i])
        for d in range(num_digits):
            idx = pool[rng.integers(len(pool))]
            out_labels[i, d] = labels[idx]
            start = rng.uniform(0, limit, size=2)
            angle = rng.uniform(0, 2 * np.pi)
            vel = rng.uniform(speed[0], speed[1]) * np.array([np.cos(angle), np.sin(angle)])
            traj = np.rint(bouncing_trajectory(start, vel, num_frames, limit)).astype(np.int64)
            glyph = glyphs[idx]
            for f, (y, x) in enumerate(traj):
                patch = videos[i, f, y:y + digit_size, x:x + digit_size]
                np.maximum(patch, glyph, out=patch)
    return videos, out_labels


class MovingDigitsDataset(Dataset):
    """Moving-digit videos as ``(video, label)`` pairs, generated once up front.

    ``video`` is float32 ``[channels=1, num_frames, size, size]`` (the layout of diffusers video transformers:
    ``[C, F, H, W]``), in [0, 1] or in [-1, 1] with ``normalize=True``. ``label`` is an int64 scalar for one digit,
    or a ``[2]`` tensor for two. ``.targets`` holds all labels. Arguments are those of :func:`make_moving_digits`.
    """

    def __init__(self, num_videos: int = 1000, num_frames: int = 8, size: int = 16, digit_size: int = 8,
                 num_digits: int = 1, speed: tuple[float, float] = (1.0, 2.0), seed: int = 0,
                 digit_indices: Sequence[int] | np.ndarray | None = None, normalize: bool = False):
        videos, labels = make_moving_digits(num_videos, num_frames, size, digit_size, num_digits, speed, seed,
                                            digit_indices)
        x = torch.from_numpy(videos).unsqueeze(1)
        self.videos = x * 2 - 1 if normalize else x
        t = torch.from_numpy(labels)
        self.targets = t[:, 0] if num_digits == 1 else t
        self.num_digits = num_digits
        self.classes = list(range(10))

    def __len__(self) -> int:
        return self.videos.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.videos[index], self.targets[index]
