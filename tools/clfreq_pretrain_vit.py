#!/usr/bin/env python3
"""Pre-train the small ViT that clfreq's prompt-based learners (PrePrompt, L2P) use offline.

Hub weights (ImageNet-21k ViT-B/16) cannot be downloaded where our tests and demos run, so we pre-train a small timm
VisionTransformer on FractalDB-style formula-driven images (``commons.data.fractals``): no natural image, no digit —
disjoint from every continual-learning benchmark by construction. The weights ship with clfreq as
``clfreq/prompt/weights/vit-fractal-tiny32.safetensors`` (fp16) with ``vit-fractal-tiny32.json``.

    python tools/clfreq_pretrain_vit.py --out runs/vit-fractal --device cuda      # ~2 minutes on one H100

The script also reports a linear probe on scikit-learn digits of the frozen features (pre-trained vs random init), a
quick check that the features transfer.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "packages" / "commons" / "src"), str(REPO / "packages" / "clfreq" / "src")]

from commons.data import DigitsDataset, stratified_split  # noqa: E402
from commons.data.fractals import render_ifs, sample_ifs_classes  # noqa: E402

ARCH = {"img_size": 32, "patch_size": 4, "embed_dim": 128, "depth": 6, "num_heads": 4, "mlp_ratio": 4.0}


def _render_class(args: tuple[np.ndarray, int, int, int]) -> np.ndarray:
    maps, per_class, num_points, seed = args
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(per_class):
        m = maps.copy()
        k, i, j = rng.integers(len(m)), rng.integers(2), rng.integers(3)
        m[k, i, j] *= rng.uniform(0.8, 1.2)
        out.append(render_ifs(m, 32, num_points, rng)[0])
    return np.stack(out)


def make_data(num_classes: int, per_class: int, seed: int, workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    classes = sample_ifs_classes(num_classes, seed=seed)
    jobs = [(maps, per_class, 3000, seed * 100_003 + c) for c, maps in enumerate(classes)]
    with mp.Pool(workers) as pool:
        images = pool.map(_render_class, jobs)
    x = torch.from_numpy(np.concatenate(images)).unsqueeze(1)
    y = torch.arange(num_classes).repeat_interleave(per_class)
    return x, y


def augment(x: torch.Tensor) -> torch.Tensor:
    """Random 90° rotations, flips, and translations by up to 4 pixels (zero fill)."""
    b = x.shape[0]
    k = int(torch.randint(0, 4, (1,)))
    x = torch.rot90(x, k, dims=(2, 3))
    flip = torch.rand(b, device=x.device) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    pad = F.pad(x, (4, 4, 4, 4))
    dx, dy = torch.randint(0, 9, (2,))
    return pad[:, :, dy:dy + 32, dx:dx + 32]


def linear_probe(backbone: torch.nn.Module, device: torch.device) -> float:
    ds = DigitsDataset(image_size=32, channels=3, normalize=True)
    train_idx, test_idx = stratified_split(ds.targets.numpy(), 0.3, seed=0)
    backbone.eval()
    with torch.no_grad():
        feats = torch.cat([backbone(ds.images[i:i + 512].to(device)).float().cpu()
                           for i in range(0, len(ds), 512)])
    mean, std = feats[train_idx].mean(0), feats[train_idx].std(0) + 1e-6
    f = (feats - mean) / std
    head = torch.nn.Linear(f.shape[1], 10)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    y = ds.targets
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(head(f[train_idx]), y[train_idx]).backward()
        opt.step()
    return (head(f[test_idx]).argmax(1) == y[test_idx]).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "vit-fractal")
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=max(1, (mp.cpu_count() or 2) - 1))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import timm

    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    t0 = time.time()
    x, y = make_data(args.classes, args.per_class, args.seed, args.workers)
    x = (x * 2 - 1).expand(-1, 3, -1, -1).contiguous()
    print(f"rendered {len(x)} fractal images of {args.classes} classes in {time.time() - t0:.1f} s", flush=True)

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=args.classes, **ARCH).to(device)
    random_init = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **ARCH).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    steps = args.epochs * (len(x) // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.1)
    x, y = x.to(device), y.to(device)
    step = 0
    t1 = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(x), device=device)
        correct = total = 0
        for i in range(0, len(x) - args.batch_size + 1, args.batch_size):
            idx = perm[i:i + args.batch_size]
            xb = augment(x[idx])
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = model(xb)
                loss = F.cross_entropy(logits, y[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            correct += (logits.argmax(1) == y[idx]).sum().item()
            total += len(idx)
        if epoch % 10 == 0 or epoch == args.epochs - 1:
            print(f"epoch {epoch:3d} loss {loss.item():.3f} train acc {correct / total:.3f} "
                  f"({time.time() - t1:.0f} s)", flush=True)

    model.reset_classifier(0)
    probe_pre = linear_probe(model, device)
    probe_rand = linear_probe(random_init, device)
    print(f"digits linear probe on frozen CLS features: pre-trained {probe_pre:.3f}, random init {probe_rand:.3f}")

    from safetensors.torch import save_file

    args.out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(args.out / "vit-fractal-tiny32.safetensors"), metadata={"format_version": "1"})
    meta = {
        "timm_name": "vit_tiny_patch16_224",
        "kwargs": ARCH,
        "pretraining": {
            "data": f"FractalDB-style IFS images (commons.data.fractals), {args.classes} classes x {args.per_class}, "
                    f"32x32, seed {args.seed}; no natural images, no digits",
            "epochs": args.epochs, "batch_size": args.batch_size, "optimizer": f"AdamW lr {args.lr} wd 0.05 one-cycle",
            "final_train_accuracy": correct / total,
            "digits_linear_probe": {"pretrained": probe_pre, "random_init": probe_rand},
            "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "train_seconds": time.time() - t1,
        },
        "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
    }
    (args.out / "vit-fractal-tiny32.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta["pretraining"], indent=2))


if __name__ == "__main__":
    main()
