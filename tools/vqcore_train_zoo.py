"""Train vqcore's model zoo: two evaluator CNNs, the moving-digits video DiT (Latte) and the digits UNet.

Usage (what produced the shipped weights — see packages/vqcore/README.md for the machine and the numbers):

    PYTHONPATH=packages/commons/src:packages/vqcore/src python tools/vqcore_train_zoo.py --out OUT --device cuda

Each model trains for ``--*-steps`` optimizer steps, or until its ``--*-seconds`` wall-clock budget runs out, whichever
comes first (the step count reached is written into the weights' metadata, so ``--*-steps N --*-seconds 1e9``
reproduces a run's length). Diffusion models: DDPM ε-loss with 10 % label dropout (for classifier-free guidance),
AdamW, linear warm-up, EMA of the weights (the EMA copy is shipped), bf16 autocast on CUDA. Data: the digits are split
80/20 per class (``stratified_split(seed=0)``); models train on the 80 % glyphs only, evaluators are tested on the
held-out 20 %. At the end, samples of the FP models are classified by the evaluators (the ≥ 80 % sanity bar) for
several step counts and guidance scales; ``train_log.json`` holds all numbers and ``samples.png`` shows samples.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from commons.data import load_digits_arrays, stratified_split
from commons.data.moving_digits import make_moving_digits
from vqcore import zoo

log = logging.getLogger("train_zoo")


def digits_tensor(indices, size=16):
    images, labels = load_digits_arrays()
    x = torch.from_numpy(images[indices]).unsqueeze(1)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return x, torch.from_numpy(labels[indices])


def videos_tensor(n, seed, indices, geometry=None):
    geometry = geometry or zoo.VIDEO_DATA["moving-digits-dit"]
    v, lab = make_moving_digits(n, num_digits=1, seed=seed, digit_indices=indices, **geometry)
    return torch.from_numpy(v).unsqueeze(1), torch.from_numpy(lab[:, 0])


def train_classifier(model, x, y, xt, yt, device, steps, seconds, seed, lr=2e-3, batch=256):
    g = torch.Generator(device="cpu").manual_seed(seed)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    x, y = x.to(device), y.to(device)
    t0, step = time.time(), 0
    while step < steps and time.time() - t0 < seconds:
        idx = torch.randint(0, x.shape[0], (batch,), generator=g).to(device)
        xb = x[idx]
        # robustness augmentation: small noise and contrast jitter (generated samples are never perfectly clean)
        xb = (xb * (0.8 + 0.4 * torch.rand(batch, *[1] * (xb.ndim - 1), device=device))
              + 0.05 * torch.randn_like(xb)).clamp(0, 1)
        loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
    model.eval()
    with torch.no_grad():
        acc = (torch.cat([model(xt[i:i + 512].to(device)).argmax(1).cpu() for i in range(0, len(xt), 512)])
               == yt).float().mean().item()
    log.info("%s: %d steps, %.1fs, held-out accuracy %.4f", type(model).__name__, step, time.time() - t0, acc)
    return {"steps": step, "seconds": time.time() - t0, "test_accuracy": acc, "final_loss": loss.item()}


def train_diffusion(model, x, y, device, steps, seconds, seed, lr, batch, warmup=300, ema_decay=0.999):
    torch.manual_seed(seed)
    g = torch.Generator(device="cpu").manual_seed(seed)
    model.to(device).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    sched = zoo.make_train_scheduler(model)
    sched.alphas_cumprod = sched.alphas_cumprod.to(device)
    x, y = (x * 2 - 1).to(device), y.to(device)
    use_amp = device.type == "cuda"
    t0, step, losses = time.time(), 0, []
    while step < steps and time.time() - t0 < seconds:
        idx = torch.randint(0, x.shape[0], (batch,), generator=g).to(device)
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = zoo.ddpm_loss(model, x[idx], y[idx], sched, p_uncond=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            d = min(ema_decay, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - d)
        losses.append(loss.item() if step % 50 == 0 else losses[-1] if losses else loss.item())
        step += 1
        if step % 500 == 0:
            log.info("%s step %d loss %.4f (%.0fs)", type(model).__name__, step, np.mean(losses[-500:]),
                     time.time() - t0)
    log.info("%s: %d steps in %.1fs, final loss %.4f", type(model).__name__, step, time.time() - t0,
             np.mean(losses[-200:]))
    return ema, {"steps": step, "seconds": time.time() - t0, "final_loss": float(np.mean(losses[-200:])),
                 "lr": lr, "batch": batch, "ema_decay": ema_decay}


def sample_accuracy(gen, clf, n, device, steps_list, guidance_list, seed=1000):
    labels = torch.arange(n) % 10
    out, samples = {}, None
    for steps in steps_list:
        for gs in guidance_list:
            t0 = time.time()
            s = zoo.sample(gen, labels, num_steps=steps, guidance_scale=gs, seed=seed, batch_size=512)
            with torch.no_grad():
                pred = clf(s.to(device)).argmax(1).cpu()
            acc = (pred == labels).float().mean().item()
            out[f"steps{steps}_cfg{gs}"] = {"accuracy": acc, "seconds": time.time() - t0}
            log.info("%s samples, %d DDIM steps, guidance %.1f: accuracy %.4f", type(gen).__name__, steps, gs, acc)
            if samples is None:
                samples = s
    return out, samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clf-steps", type=int, default=3000)
    ap.add_argument("--clf-seconds", type=float, default=20)
    ap.add_argument("--video-steps", type=int, default=100000)
    ap.add_argument("--video-seconds", type=float, default=440)
    ap.add_argument("--image-steps", type=int, default=100000)
    ap.add_argument("--image-seconds", type=float, default=100)
    ap.add_argument("--num-videos", type=int, default=30000)
    ap.add_argument("--eval-samples", type=int, default=500)
    ap.add_argument("--video-batch", type=int, default=256)
    ap.add_argument("--video-lr", type=float, default=4e-4)
    ap.add_argument("--dit-config", default="{}", help="JSON overrides of VideoDiTConfig (e.g. '{\"patch_size\": 2}')")
    ap.add_argument("--only", choices=["all", "video", "large"], default="all",
                    help="'video': train only the video DiT; evaluate it with --classifiers' video classifier; "
                         "'large': the 16x32x32 moving-digits-dit-l and its evaluator moving-digits-classifier-l "
                         "(--video-* and --clf-* options apply)")
    ap.add_argument("--classifiers", type=Path, default=None,
                    help="folder holding moving-digits-classifier.safetensors (with --only video)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "args": {k: str(v) for k, v in vars(args).items()}}

    _, labels = load_digits_arrays()
    train_idx, test_idx = stratified_split(labels, 0.2, seed=0)
    if args.only == "large":
        train_large(args, device, report, train_idx, test_idx)
        return
    xi, yi = digits_tensor(train_idx)
    xit, yit = digits_tensor(test_idx)
    t0 = time.time()
    xv, yv = videos_tensor(args.num_videos, seed=args.seed, indices=train_idx)
    xvt, yvt = videos_tensor(2000, seed=args.seed + 1, indices=test_idx)
    log.info("data: %d videos in %.1fs", len(xv), time.time() - t0)

    def dump():
        with open(args.out / "train_log.json", "w") as fh:
            json.dump(report, fh, indent=2)

    if args.only == "video":
        vclf = zoo.load("moving-digits-classifier", path=(args.classifiers / "moving-digits-classifier.safetensors"
                                                          if args.classifiers else None), device=device)
        dit = zoo.build("moving-digits-dit", **json.loads(args.dit_config))
        dit_ema, info = train_diffusion(dit, xv, yv, device, args.video_steps, args.video_seconds, args.seed,
                                        lr=args.video_lr, batch=args.video_batch)
        report["moving-digits-dit"] = {"train": info}
        zoo.save(dit_ema, args.out / "moving-digits-dit.safetensors", name="moving-digits-dit",
                 extra_metadata={"train": info})
        dump()
        report["moving-digits-dit"]["sample_accuracy"], vs = sample_accuracy(
            dit_ema.float().eval(), vclf, args.eval_samples, device, [10, 20], [1.0, 2.0, 3.0, 4.0])
        dump()
        return

    # evaluators
    dclf = zoo.build("digits-classifier")
    report["digits-classifier"] = train_classifier(dclf, xi, yi, xit, yit, device, args.clf_steps, args.clf_seconds,
                                                   args.seed)
    zoo.save(dclf, args.out / "digits-classifier.safetensors", name="digits-classifier",
             extra_metadata={"train": report["digits-classifier"]})
    vclf = zoo.build("moving-digits-classifier")
    report["moving-digits-classifier"] = train_classifier(vclf, xv, yv, xvt, yvt, device, args.clf_steps,
                                                          args.clf_seconds, args.seed, batch=128)
    zoo.save(vclf, args.out / "moving-digits-classifier.safetensors", name="moving-digits-classifier",
             extra_metadata={"train": report["moving-digits-classifier"]})
    dump()

    # video DiT
    dit = zoo.build("moving-digits-dit", **json.loads(args.dit_config))
    dit_ema, info = train_diffusion(dit, xv, yv, device, args.video_steps, args.video_seconds, args.seed,
                                    lr=args.video_lr, batch=args.video_batch)
    report["moving-digits-dit"] = {"train": info}
    zoo.save(dit_ema, args.out / "moving-digits-dit.safetensors", name="moving-digits-dit",
             extra_metadata={"train": info})
    dump()
    # image UNet
    unet = zoo.build("digits-unet")
    unet_ema, info = train_diffusion(unet, xi, yi, device, args.image_steps, args.image_seconds, args.seed, lr=3e-4,
                                     batch=256)
    report["digits-unet"] = {"train": info}
    zoo.save(unet_ema, args.out / "digits-unet.safetensors", name="digits-unet", extra_metadata={"train": info})
    dump()

    # the sanity bar: FP samples classified by the evaluators
    dit_ema.float().eval()
    unet_ema.float().eval()
    report["moving-digits-dit"]["sample_accuracy"], vs = sample_accuracy(
        dit_ema, vclf, args.eval_samples, device, [10, 20, 50], [1.0, 2.0, 4.0])
    report["digits-unet"]["sample_accuracy"], ims = sample_accuracy(
        unet_ema, dclf, args.eval_samples, device, [10, 20, 50], [1.0, 2.0, 4.0])
    dump()
    try:
        from commons.reporting import save_image_grid

        frames = vs[:10, 0]  # [10, F, H, W] -> one row per video
        rows = [frames[i, f][None] for i in range(10) for f in range(frames.shape[1])]
        save_image_grid(torch.stack(rows), args.out / "samples_video.png", nrow=frames.shape[1])
        save_image_grid(ims[:40], args.out / "samples_image.png", nrow=10)
    except Exception as exc:  # plotting must not lose the trained weights
        log.warning("could not write sample grids: %s", exc)
    log.info("done: %s", json.dumps({k: v.get("sample_accuracy", v.get("test_accuracy")) for k, v in report.items()
                                     if isinstance(v, dict) and k not in ("args",)}))
    assert math.isfinite(report["moving-digits-dit"]["train"]["final_loss"])


def train_large(args, device, report, train_idx, test_idx) -> None:
    """``--only large``: evaluator, then DiT, of the 16 x 32 x 32 entries; samples scored at several guidances."""
    geometry = zoo.VIDEO_DATA["moving-digits-dit-l"]
    t0 = time.time()
    xv, yv = videos_tensor(args.num_videos, args.seed, train_idx, geometry)
    xvt, yvt = videos_tensor(2000, args.seed + 1, test_idx, geometry)
    log.info("large data: %d videos %s in %.1fs", len(xv), tuple(xv.shape[1:]), time.time() - t0)
    report["data"] = {"train_videos": len(xv), "test_videos": len(xvt), **geometry,
                      "glyphs": "scikit-learn digits, 80/20 per-class split (stratified_split seed 0)"}

    def dump():
        with open(args.out / "train_log_large.json", "w") as fh:
            json.dump(report, fh, indent=2)

    vclf = zoo.build("moving-digits-classifier-l")
    report["moving-digits-classifier-l"] = train_classifier(vclf, xv, yv, xvt, yvt, device, args.clf_steps,
                                                            args.clf_seconds, args.seed, batch=64)
    zoo.save(vclf, args.out / "moving-digits-classifier-l.safetensors", name="moving-digits-classifier-l",
             extra_metadata={"train": report["moving-digits-classifier-l"], "data": report["data"]})
    dump()
    dit = zoo.build("moving-digits-dit-l", **json.loads(args.dit_config))
    n_params = sum(p.numel() for p in dit.parameters())
    dit_ema, info = train_diffusion(dit, xv, yv, device, args.video_steps, args.video_seconds, args.seed,
                                    lr=args.video_lr, batch=args.video_batch)
    info["parameters"] = n_params
    report["moving-digits-dit-l"] = {"train": info}
    del xv
    dit_ema.float().eval()
    report["moving-digits-dit-l"]["sample_accuracy"], vs = sample_accuracy(
        dit_ema, vclf, args.eval_samples, device, [20], [1.0, 2.0, 4.0])
    # FP reference metrics of the model card: Frechet distance of FP samples to held-out real videos on the
    # evaluator's features (the floor every quantized model is compared with)
    try:
        from commons.metrics import frechet_distance

        with torch.no_grad():
            real = torch.cat([vclf.features(xvt[i:i + 256].to(device)).cpu() for i in range(0, len(xvt), 256)])
            fake = torch.cat([vclf.features(vs[i:i + 256].to(device)).cpu() for i in range(0, len(vs), 256)])
        report["moving-digits-dit-l"]["fvd_like_fp_vs_heldout"] = float(frechet_distance(fake, real))
    except Exception as exc:  # noqa: BLE001 - the weights matter more than this number
        log.warning("FP reference Frechet distance failed: %s", exc)
    zoo.save(dit_ema, args.out / "moving-digits-dit-l.safetensors", name="moving-digits-dit-l",
             extra_metadata={"train": info, "data": report["data"], "evaluator": "moving-digits-classifier-l",
                             "fp_reference": {"sample_accuracy": report["moving-digits-dit-l"]["sample_accuracy"],
                                              "fvd_like_fp_vs_heldout":
                                                  report["moving-digits-dit-l"].get("fvd_like_fp_vs_heldout")}})
    dump()
    try:
        from commons.reporting import save_image_grid

        frames = vs[:8, 0]
        rows = [frames[i, f][None] for i in range(8) for f in range(0, frames.shape[1], 2)]
        save_image_grid(torch.stack(rows), args.out / "samples_video_large.png", nrow=frames.shape[1] // 2,
                        row_labels=[f"class {int(c)}" for c in (torch.arange(8) % 10)])
    except Exception as exc:  # noqa: BLE001
        log.warning("could not write the sample grid: %s", exc)


if __name__ == "__main__":
    main()
