"""Quality metrics for the zoo's generators, computed with the zoo's own evaluators.

* ``accuracy`` — fraction of generated samples that the evaluator classifies as the class they were conditioned on.
* ``fid_like`` / ``fvd_like`` — Fréchet distance (``commons.metrics.frechet_distance``) between the evaluator's
  penultimate features of the generated samples and of real held-out data (digits of the 20 % test split, never seen
  by the generators). **These are not FID/FVD**: the features come from small CNNs trained on these digits, not from
  Inception-v3 / I3D, so the values are only comparable within this benchmark (same evaluator, same sample count).
* ``flicker`` / ``smoothness`` — ``commons.metrics.video.temporal_flicker`` and ``motion_smoothness`` (network-free).
* ``psnr`` / ``ssim`` — fidelity to the full-precision model's samples from the same seeds and labels (per frame for
  videos, then averaged over frames).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from commons.data import load_digits_arrays, stratified_split
from commons.metrics import frechet_distance, psnr, ssim
from commons.metrics.video import motion_smoothness, per_frame_psnr, per_frame_ssim, temporal_flicker

__all__ = ["real_reference", "features", "evaluate_images", "evaluate_videos"]


def real_reference(kind: str, n: int = 500, seed: int = 123) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out real data in [0, 1]: ``kind="image"`` → ``[n,1,16,16]`` digits, ``"video"`` → ``[n,1,8,16,16]``,
    ``"video-l"`` (the geometry of ``moving-digits-dit-l``) → ``[n,1,16,32,32]``."""
    from commons.data.moving_digits import make_moving_digits

    _, labels = load_digits_arrays()
    _, test_idx = stratified_split(labels, 0.2, seed=0)
    if kind == "image":
        images, labs = load_digits_arrays()
        rng = np.random.default_rng(seed)
        idx = rng.choice(test_idx, size=n, replace=n > len(test_idx))
        x = torch.from_numpy(images[idx]).unsqueeze(1)
        x = torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False).clamp(0, 1)
        return x, torch.from_numpy(labs[idx])
    if kind in ("video", "video-l"):
        from . import VIDEO_DATA

        geometry = VIDEO_DATA["moving-digits-dit" if kind == "video" else "moving-digits-dit-l"]
        v, lab = make_moving_digits(n, seed=seed, digit_indices=test_idx, **geometry)
        return torch.from_numpy(v).unsqueeze(1), torch.from_numpy(lab[:, 0])
    raise ValueError(f"kind must be 'image', 'video' or 'video-l', got {kind!r}")


@torch.no_grad()
def features(classifier, x: torch.Tensor, batch_size: int = 256) -> tuple[np.ndarray, torch.Tensor]:
    """``(penultimate features [N, D] as float64 numpy, logits [N, classes])``."""
    feats, logits = [], []
    for i in range(0, x.shape[0], batch_size):
        f = classifier.features(x[i:i + batch_size].float())
        feats.append(f)
        logits.append(classifier.head(f))
    return torch.cat(feats).double().numpy(), torch.cat(logits)


def _fidelity(samples, reference, video: bool) -> dict:
    if reference is None:
        return {}
    if reference.shape != samples.shape:
        raise ValueError(f"reference must match samples' shape {tuple(samples.shape)}, got {tuple(reference.shape)}")
    if video:  # [N,1,F,H,W] -> [N,F,1,H,W]
        a, b = samples.transpose(1, 2), reference.transpose(1, 2)
        p = [v if math.isfinite(v) else 100.0 for v in per_frame_psnr(a, b)]
        return {"psnr": float(np.mean(p)), "ssim": float(np.mean(per_frame_ssim(a, b)))}
    p = psnr(samples, reference)
    return {"psnr": p if math.isfinite(p) else 100.0, "ssim": ssim(samples, reference, win_size=7)}


def evaluate_images(samples: torch.Tensor, labels: torch.Tensor, classifier, real_feats: np.ndarray,
                    fp_samples: torch.Tensor | None = None) -> dict:
    """Metrics of image samples ``[N,1,H,W]`` in [0, 1] (PSNR capped at 100 dB for identical outputs)."""
    feats, logits = features(classifier, samples)
    out = {"accuracy": float((logits.argmax(1) == labels).float().mean()),
           "fid_like": frechet_distance(feats, real_feats)}
    out.update(_fidelity(samples, fp_samples, video=False))
    return out


def evaluate_videos(samples: torch.Tensor, labels: torch.Tensor, classifier, real_feats: np.ndarray,
                    fp_samples: torch.Tensor | None = None) -> dict:
    """Metrics of video samples ``[N,1,F,H,W]`` in [0, 1] (PSNR/SSIM per frame, averaged over frames)."""
    feats, logits = features(classifier, samples)
    frames_first = samples.transpose(1, 2)
    out = {"accuracy": float((logits.argmax(1) == labels).float().mean()),
           "fvd_like": frechet_distance(feats, real_feats),
           "flicker": temporal_flicker(frames_first), "smoothness": motion_smoothness(frames_first)}
    out.update(_fidelity(samples, fp_samples, video=True))
    return out
