"""vqcore's part of ``make demo``: the trained zoo image model at FP, W8A8 and W4A8 (RTN vs Q-Diffusion-style),
with sample accuracy and fidelity to the FP samples (PSNR: accuracy saturates at W4A8 on this model, fidelity does
not), and a labelled grid of FP vs quantized samples."""

from __future__ import annotations

from pathlib import Path

import torch

from commons.metrics import psnr
from commons.reporting import DemoSection, markdown_table, save_image_grid

from . import zoo
from .api import quantize
from .calib import Capture


def run(out_dir: Path) -> DemoSection:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = zoo.load("digits-unet")
    classifier = zoo.load("digits-classifier")
    labels = torch.arange(20) % 10
    with torch.no_grad(), Capture(model, targets="blocks", every_n_steps=2) as cap:
        fp = zoo.sample(model, labels[:8], num_steps=10, seed=1)
    with torch.no_grad():
        fp = zoo.sample(model, labels, num_steps=10, seed=0)
    rows, grids = [], [fp[:10]]

    def accuracy(x):
        with torch.no_grad():
            return (classifier(x).argmax(1) == labels).float().mean().item()

    rows.append({"model": "FP32", "sample accuracy %": 100 * accuracy(fp), "PSNR vs FP (dB)": float("inf")})
    for name, method, w, a, kw in [("RTN W8A8", "rtn", 8, 8, {}), ("RTN W4A8", "rtn", 4, 8, {}),
                                   ("Q-Diffusion-style W4A8", "q-diffusion", 4, 8, {"iters": 30, "progress": False})]:
        q = quantize(model, method, w_bits=w, a_bits=a, calib=cap.result, **kw)
        with torch.no_grad():
            out = zoo.sample(q, labels, num_steps=10, seed=0)
        rows.append({"model": name, "sample accuracy %": 100 * accuracy(out),
                     "PSNR vs FP (dB)": psnr(out.clamp(0, 1), fp.clamp(0, 1)),
                     "quantized layers": ", ".join(f"{v}×{k}" for k, v in sorted(q.vqcore_report.bits.items()))})
        grids.append(out[:10])
    grid = save_image_grid(torch.cat(grids), out_dir / "vqcore_digits_unet.png", nrow=10, scale=4,
                           row_labels=["FP32", "RTN W8A8", "RTN W4A8", "Q-Diff. W4A8"])
    body = ("Zoo image diffusion model (`digits-unet`, diffusers `UNet2DModel`, 16×16 digits, 10 DDIM steps) sampled "
            "from the same seeds at full precision and quantized; accuracy by the zoo digit classifier. Grid rows: "
            "FP, RTN W8A8, RTN W4A8, Q-Diffusion-style W4A8.\n\n" + markdown_table(rows))
    return DemoSection("vqcore: quantized zoo diffusion model", body, [grid],
                       summary=f"W4A8 fidelity to FP samples: Q-Diffusion-style {rows[3]['PSNR vs FP (dB)']:.1f} dB "
                               f"vs RTN {rows[2]['PSNR vs FP (dB)']:.1f} dB (sample accuracy "
                               f"{rows[3]['sample accuracy %']:.0f}% / {rows[2]['sample accuracy %']:.0f}%, "
                               f"FP {rows[0]['sample accuracy %']:.0f}%)")
