"""Network-free temporal video metrics with explicit definitions.

Videos are tensors ``[F, H, W]``, ``[F, C, H, W]`` or batches ``[N, F, C, H, W]`` (frames on the axis after the batch
axis), values on a known scale (e.g. [0, 1]).

* :func:`temporal_flicker` — mean absolute difference between consecutive frames, ``mean |x_{f+1} − x_f|``.
  Lower = steadier. (VBench's "temporal flickering" dimension is a score derived from the same quantity,
  ``(255 − MAD)/255`` on 8-bit frames; we report the raw MAD on the video's own scale.)
* :func:`motion_smoothness` — how well each frame is predicted by linear interpolation of its neighbours:
  ``1 − mean |x_f − (x_{f−1} + x_{f+1})/2| / data_range``, in [0, 1], higher = smoother. This is a network-free
  stand-in for VBench's motion-smoothness dimension (which interpolates the middle frame with a learned video
  frame-interpolation model, AMT, and scores the reconstruction); with a plain average the number also drops for
  fast motion, so compare it between models on the same data, not as an absolute quality.
"""

from __future__ import annotations

import torch

__all__ = ["temporal_flicker", "motion_smoothness", "per_frame_psnr", "per_frame_ssim"]


def _frames_first(video: torch.Tensor, name: str = "video", min_frames: int = 2) -> torch.Tensor:
    """Return ``[N, F, rest...]`` in float64."""
    if not isinstance(video, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor")
    if video.ndim == 3 or video.ndim == 4:
        video = video.unsqueeze(0)
    elif video.ndim != 5:
        raise ValueError(f"{name} must be [F,H,W], [F,C,H,W] or [N,F,C,H,W], got {video.ndim} dims")
    if video.shape[1] < min_frames:
        raise ValueError(f"{name} needs at least {min_frames} frames, got {video.shape[1]}")
    return video.double()


def temporal_flicker(video: torch.Tensor) -> float:
    """Mean absolute difference between consecutive frames (over all frames, pixels, channels and videos)."""
    v = _frames_first(video)
    return float((v[:, 1:] - v[:, :-1]).abs().mean())


def motion_smoothness(video: torch.Tensor, data_range: float = 1.0) -> float:
    """``1 − mean |x_f − (x_{f−1} + x_{f+1})/2| / data_range`` over interior frames (needs ≥ 3 frames)."""
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    v = _frames_first(video, min_frames=3)
    err = (v[:, 1:-1] - 0.5 * (v[:, :-2] + v[:, 2:])).abs().mean()
    return float(1.0 - err / data_range)


def _pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError("x and y must be torch tensors")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    a, b = _frames_first(x, "x", 1), _frames_first(y, "y", 1)
    if a.ndim == 4:  # [F, H, W] input became [1, F, H, W]: add the channel axis
        a, b = a.unsqueeze(2), b.unsqueeze(2)
    return a, b


def per_frame_psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> list[float]:
    """PSNR (dB) of frame ``f`` over all videos of the batch, for each ``f`` (``inf`` where identical)."""
    from .image import psnr

    a, b = _pair(x, y)
    return [psnr(a[:, f], b[:, f], data_range) for f in range(a.shape[1])]


def per_frame_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, win_size: int = 7,
                   sigma: float = 1.5) -> list[float]:
    """SSIM of frame ``f`` averaged over the batch, for each ``f`` (Gaussian window, see :func:`commons.metrics.ssim`;
    the default 7×7 window suits small frames such as 16×16)."""
    from .image import ssim

    a, b = _pair(x, y)
    return [ssim(a[:, f], b[:, f], data_range, win_size=win_size, sigma=sigma) for f in range(a.shape[1])]
