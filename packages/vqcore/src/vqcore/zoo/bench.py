"""The quality benchmark: every registered quantization method on the zoo's video DiT and image UNet.

For the video DiT (``moving-digits-dit``) at W8A8, W4A8, W4A6, W3A6 and the image UNet (``digits-unet``) at W8A8,
W4A8, W4A4, W3A4, W2A4, each method quantizes the full-precision model (calibration data: inputs captured along FP
DDIM trajectories of calibration labels/seeds disjoint from the evaluation seeds), then samples the same labels from
the same initial noise as the FP model. Metrics (:mod:`vqcore.zoo.evaluate`): class accuracy of the samples, a
Fréchet distance on the zoo evaluators' features to held-out real data (FID-like / FVD-like — *not* Inception/I3D),
temporal flicker and motion smoothness (videos), and PSNR/SSIM to the FP samples (per frame for videos).

Rows: ``fp``, ``rtn``, the baseline (``vidit-q`` for video, ``q-diffusion`` for images) and every other method in
``vqcore.methods`` that applies to the model kind (a method may declare ``kinds = ("dit",)`` / ``("unet",)``; known
names are mapped, unknown ones run on both). Each row states its layer bit mix from the method's report.

Run ``python tools/bench/vqcore_quality.py --quick`` (CPU, minutes) or without ``--quick`` on a GPU.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import platform
import time
from pathlib import Path

import torch

from commons.reporting import markdown_table, save_image_grid

from . import load, sample
from .evaluate import evaluate_images, evaluate_videos, features, real_reference

__all__ = ["main", "run_benchmark", "VIDEO_SETTINGS", "IMAGE_SETTINGS", "methods_for", "clearly_worse"]

logger = logging.getLogger(__name__)

VIDEO_SETTINGS = [(8, 8), (4, 8), (4, 6), (3, 6)]
IMAGE_SETTINGS = [(8, 8), (4, 8), (4, 4), (3, 4), (2, 4)]
BASELINE = {"video": "vidit-q", "image": "q-diffusion"}
_KNOWN_KINDS = {"vidit-q": ("dit",), "q-diffusion": ("unet",), "qvdit": ("dit",), "q-vdit": ("dit",),
                "s2q": ("dit",), "s2q-vdit": ("dit",), "mpqdm": ("unet",), "mpq-dm": ("unet",)}

PRESETS = {
    # name: (video samples, image samples, DDIM steps, calibration trajectories, method iters)
    "quick": dict(n_video=16, n_image=40, steps=8, calib_video=2, calib_image=4, iters=10, n_real=300),
    "full": dict(n_video=200, n_image=500, steps=20, calib_video=8, calib_image=32, iters=300, n_real=1000),
}
VIDEO_GUIDANCE = 2.0  # FP accuracy 0.84 at guidance 1 vs 0.99 at 2 (train log); both branches go through the model
IMAGE_GUIDANCE = 1.0


def methods_for(kind: str, requested: list[str] | None = None) -> list[str]:
    """``rtn``, the baseline, then the other registered methods that apply to ``kind`` ("video"/"image")."""
    from ..methods import METHODS, list_methods

    model_kind = "dit" if kind == "video" else "unet"
    names = list_methods()
    ordered = ["rtn", BASELINE[kind]] + [n for n in names if n not in ("rtn", *BASELINE.values())]
    out = []
    for n in ordered:
        if n not in names or (requested and n not in requested):
            continue
        kinds = getattr(METHODS[n], "kinds", None) or _KNOWN_KINDS.get(n, ("dit", "unet"))
        if model_kind in kinds:
            out.append(n)
    return out


def _options(method: str, iters: int) -> dict:
    from ..methods import get_method

    params = inspect.signature(get_method(method).run).parameters
    opts = {}
    if "iters" in params:
        opts["iters"] = iters
    if "progress" in params:
        opts["progress"] = False
    return opts


def _calibration(model, labels, steps, guidance, seed, max_bytes):
    from ..calib import Capture

    with torch.no_grad(), Capture(model, targets="blocks", max_bytes=max_bytes) as cap:
        sample(model, labels, num_steps=steps, guidance_scale=guidance, seed=seed, batch_size=1)
    return cap.result


def clearly_worse(acc_fp: float, acc_q: float, n: int, fd_fp: float, fd_q: float) -> bool:
    """The benchmark's "clearly worse than FP" bar: the Fréchet distance at least doubles, or the accuracy drops by
    at least 0.10, or by more than two standard errors of the difference of two proportions over ``n`` samples each
    (and at least 0.03)."""
    import math

    pooled = (acc_fp + acc_q) / 2
    se = math.sqrt(max(pooled * (1 - pooled), 1e-12) * 2 / n)
    drop = acc_fp - acc_q
    return bool(fd_q >= 2 * fd_fp or drop >= 0.10 or (drop >= 0.03 and drop > 2 * se))


def _video_rows(v: torch.Tensor, n: int = 2) -> list[torch.Tensor]:
    return [v[i, :, f] for i in range(min(n, v.shape[0])) for f in range(v.shape[2])]


def run_benchmark(preset: str = "quick", device: str = "cpu", seed: int = 0, kinds=("video", "image"),
                  methods: list[str] | None = None, out: Path | None = None, settings: dict | None = None) -> dict:
    """Run the benchmark and return ``{"rows": [...], "sanity": {...}, "meta": {...}}`` (see module docstring)."""
    import vqcore

    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    p = PRESETS[preset]
    dev = torch.device(device)
    rows, sanity, grids = [], {}, {}
    meta = {"preset": preset, **p, "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else
            f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch": torch.__version__,
            "video_guidance": VIDEO_GUIDANCE, "image_guidance": IMAGE_GUIDANCE, "seed": seed}
    for kind in kinds:
        video = kind == "video"
        gen = load("moving-digits-dit" if video else "digits-unet", device=dev)
        clf = load("moving-digits-classifier" if video else "digits-classifier", device="cpu")
        n = p["n_video" if video else "n_image"]
        guidance = VIDEO_GUIDANCE if video else IMAGE_GUIDANCE
        evaluate = evaluate_videos if video else evaluate_images
        fd_key = "fvd_like" if video else "fid_like"
        real, _ = real_reference(kind, n=p["n_real"], seed=123)
        real_feats, _ = features(clf, real)
        labels = torch.arange(n) % 10
        sample_kw = dict(num_steps=p["steps"], guidance_scale=guidance, seed=seed + 10_000, batch_size=50)
        t0 = time.perf_counter()
        fp = sample(gen, labels, **sample_kw)
        fp_seconds = time.perf_counter() - t0
        fp_metrics = evaluate(fp, labels, clf, real_feats)
        rows.append({"model": kind, "W/A": "FP", "method": "fp", "bits": "all FP", **fp_metrics,
                     "quant_s": 0.0, "sample_s": fp_seconds})
        logger.info("%s FP: %s", kind, fp_metrics)
        grid = _video_rows(fp) if video else list(fp[:10])
        grid_labels = ["fp"]
        calib_labels = (torch.arange(p["calib_video" if video else "calib_image"]) * 3 + 1) % 10
        calib = _calibration(gen, calib_labels, p["steps"], guidance, seed + 50_000,
                             max_bytes=(768 if video else 512) * 2**20)
        lowest = (VIDEO_SETTINGS if video else IMAGE_SETTINGS)[-1]
        for w_bits, a_bits in (settings or {}).get(kind, VIDEO_SETTINGS if video else IMAGE_SETTINGS):
            for method in methods_for(kind, methods):
                torch.manual_seed(seed)
                t0 = time.perf_counter()
                try:
                    q = vqcore.quantize(gen, method=method, w_bits=w_bits, a_bits=a_bits, calib=calib,
                                        **_options(method, p["iters"]))
                except Exception as err:  # noqa: BLE001 - one failing method must not hide the others
                    logger.exception("%s %s W%dA%d failed", kind, method, w_bits, a_bits)
                    rows.append({"model": kind, "W/A": f"W{w_bits}A{a_bits}", "method": method,
                                 "bits": f"FAILED: {type(err).__name__}: {err}"[:200]})
                    continue
                qs = time.perf_counter() - t0
                t0 = time.perf_counter()
                qsamp = sample(q, labels, **sample_kw)
                ss = time.perf_counter() - t0
                m = evaluate(qsamp, labels, clf, real_feats, fp_samples=fp)
                bits = ", ".join(f"{k}×{v}" for k, v in sorted(q.vqcore_report.bits.items()))
                rows.append({"model": kind, "W/A": f"W{w_bits}A{a_bits}", "method": method,
                             "bits": f"{bits} (+FP rest)", **m, "quant_s": qs, "sample_s": ss})
                logger.info("%s %s W%dA%d: %s", kind, method, w_bits, a_bits, m)
                if (w_bits, a_bits) == lowest:
                    grid += _video_rows(qsamp) if video else list(qsamp[:10])
                    grid_labels.append(method)
                del q
        fp_ok = fp_metrics["accuracy"] >= 0.8
        rtn = next((r for r in rows if r["model"] == kind and r["method"] == "rtn"
                    and r["W/A"] == f"W{lowest[0]}A{lowest[1]}" and "accuracy" in r), None)
        worse = None
        if rtn is not None:
            worse = clearly_worse(fp_metrics["accuracy"], rtn["accuracy"], n, fp_metrics[fd_key], rtn[fd_key])
        sanity[kind] = {"fp_accuracy": fp_metrics["accuracy"], "fp_accuracy_ok": fp_ok,
                        "lowest_setting": f"W{lowest[0]}A{lowest[1]}",
                        "rtn_lowest_accuracy": None if rtn is None else rtn["accuracy"],
                        f"rtn_lowest_{fd_key}": None if rtn is None else rtn[fd_key],
                        f"fp_{fd_key}": fp_metrics[fd_key], "rtn_lowest_clearly_worse": worse}
        grids[kind] = (grid, grid_labels, 16 if video else 10)
    result = {"meta": meta, "rows": rows, "sanity": sanity}
    if out is not None:
        write_outputs(result, grids, Path(out))
    return result


COLUMNS = ["model", "W/A", "method", "bits", "accuracy", "fvd_like", "fid_like", "flicker", "smoothness", "psnr",
           "ssim", "quant_s", "sample_s"]


def write_outputs(result: dict, grids: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.json", "w") as fh:
        json.dump(result, fh, indent=2, default=str)
    meta = result["meta"]
    lines = [f"# vqcore quality benchmark ({meta['preset']})", "",
             f"Machine: {meta['device']}; torch {meta['torch']}; {meta['date']}. Samples: {meta['n_video']} videos, "
             f"{meta['n_image']} images, {meta['steps']} DDIM steps (guidance {meta['video_guidance']} video, "
             f"{meta['image_guidance']} image); real reference: {meta['n_real']} held-out samples.", "",
             "`fvd_like`/`fid_like`: Fréchet distance on the zoo's own small CNN evaluators' features — NOT "
             "Inception/I3D FID/FVD. `psnr`/`ssim`: fidelity to the FP samples from the same seeds (per frame for "
             "video). `bits`: quantized layers per W/A setting (the rest of the model stays FP).", ""]
    for kind in ("video", "image"):
        kind_rows = [{c: r.get(c, "") for c in COLUMNS if c in r or c in ("bits",)} for r in result["rows"]
                     if r["model"] == kind]
        if kind_rows:
            lines += [f"## {kind}", "", markdown_table(kind_rows), ""]
    lines += ["## sanity bars", ""]
    for kind, s in result["sanity"].items():
        verdict = "PASS" if s["fp_accuracy_ok"] else "FAIL"
        lines.append(f"- {kind}: FP accuracy {s['fp_accuracy']:.3f} (≥ 0.8: {verdict})"
                     f"; RTN at {s['lowest_setting']} clearly worse than FP (Fréchet ×2, or accuracy −0.10, or a "
                     f"drop > 2 s.e. and ≥ 0.03): "
                     f"{'PASS' if s['rtn_lowest_clearly_worse'] else 'FAIL'}")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    for kind, (grid, labels, nrow) in grids.items():
        save_image_grid(torch.stack(grid), out / f"grid_{kind}.png", nrow=nrow, scale=3)
        (out / f"grid_{kind}.txt").write_text("rows, top to bottom: " + ", ".join(labels) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="vqcore quality benchmark on the model zoo")
    ap.add_argument("--quick", action="store_true", help="small CPU setting (minutes)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/bench/vqcore_quality"))
    ap.add_argument("--kinds", default="video,image")
    ap.add_argument("--methods", default=None, help="comma-separated subset of methods (default: all registered)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    result = run_benchmark("quick" if args.quick else "full", args.device, args.seed,
                           tuple(k for k in args.kinds.split(",") if k),
                           args.methods.split(",") if args.methods else None, args.out)
    print((args.out / "results.md").read_text())
    ok = all(s["fp_accuracy_ok"] and s["rtn_lowest_clearly_worse"] for s in result["sanity"].values())
    print("sanity bars:", "PASS" if ok else "FAIL")
    return 0 if ok else 1
