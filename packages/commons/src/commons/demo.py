"""commons' part of ``make demo``: a gallery of the embedded datasets and a metric sanity table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .data import DigitsDataset, sample_photos, split_by_classes, stereo_pair
from .metrics import AccuracyMatrix, frechet_distance, psnr, ssim
from .reporting import DemoSection, markdown_table, save_image_grid


def run(out_dir: Path) -> DemoSection:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    digits = DigitsDataset(image_size=32)
    order = [int(np.flatnonzero(digits.targets.numpy() == c)[k]) for k in range(3) for c in range(10)]
    digits_png = save_image_grid([digits[i][0] for i in order], out_dir / "commons_digits.png", nrow=10, scale=2,
                                 col_labels=[str(c) for c in range(10)])

    photos = sample_photos()
    thumbs = []
    for img in photos.values():
        t = torch.from_numpy(img).permute(2, 0, 1).float().div(255).unsqueeze(0)
        thumbs.append(torch.nn.functional.interpolate(t, size=(96, 128), mode="area")[0])
    rows_of_photos = -(-len(thumbs) // 4)
    names = list(photos) + [""] * (4 * rows_of_photos - len(thumbs))
    photos_png = save_image_grid(thumbs, out_dir / "commons_photos.png", nrow=4, row_labels=[
        ", ".join(n for n in names[4 * r:4 * r + 4] if n) for r in range(rows_of_photos)])

    left, right, disp = stereo_pair()
    d = np.where(np.isfinite(disp), disp, 0.0)
    d = (d / max(d.max(), 1e-6))[..., None].repeat(3, axis=2)
    stereo_png = save_image_grid([left, right, (d * 255).astype(np.uint8)], out_dir / "commons_stereo.png", nrow=3,
                                 col_labels=["left", "right", "ground-truth disparity"])

    # Metric sanity: fidelity must fall as noise grows; Fréchet distance must grow with a mean shift.
    photo = torch.from_numpy(photos["astronaut"]).permute(2, 0, 1).float().div(255)
    rows = []
    for sigma in (0.0, 0.02, 0.05, 0.1):
        noisy = (photo + sigma * torch.from_numpy(rng.standard_normal(photo.shape)).float()).clamp(0, 1)
        rows.append({"check": f"astronaut + N(0,{sigma}²)", "PSNR dB": psnr(noisy, photo), "SSIM": ssim(noisy, photo)})
    feats = rng.standard_normal((500, 16))
    for shift in (0.0, 0.5, 1.0):
        rows.append({"check": f"Fréchet distance, mean shift {shift}",
                     "value": frechet_distance(feats, rng.standard_normal((500, 16)) + shift)})
    acc = AccuracyMatrix(3)
    for i, row in enumerate([[0.95], [0.70, 0.93], [0.55, 0.75, 0.94]]):
        for j, a in enumerate(row):
            acc.set(i, j, a)
    rows.append({"check": "CL matrix example: avg acc / forgetting / BWT",
                 "value": f"{acc.average_accuracy():.3f} / {acc.forgetting():.3f} / {acc.backward_transfer():.3f}"})
    tasks = split_by_classes(digits.targets, 2, seed=0)
    body = "\n\n".join([
        f"Embedded data: {len(digits)} scikit-learn digits (shown at 32×32), {len(photos)} sample photos "
        f"({', '.join(photos)}), the Middlebury motorcycle stereo pair {left.shape[1]}×{left.shape[0]} with disparity. "
        f"Split Digits class order (seed 0): {[t.classes for t in tasks]}.",
        markdown_table(rows),
    ])
    return DemoSection(
        title="commons: embedded data and metric sanity",
        markdown=body,
        images=[digits_png, photos_png, stereo_png],
        summary=f"{len(digits)} digits, {len(photos)} photos, 1 stereo pair; metrics move the right way",
    )
