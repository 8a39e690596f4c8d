"""Benchmark: WalMaFa vs a small Retinex-style U-Net at an equal training budget.

On the embedded default (synthetic low-light pairs from scikit-image/scikit-learn photos, split by photo) and on any
LOL-style folder passed with ``--lol``: both models are trained with the same recipe, steps, batch and crops (the
released WalMaFa loss and optimiser), then evaluated on full held-out images. Reported: PSNR/SSIM (RGB, [0,1], no
GT-mean, padded to 16), parameters, MACs (conv/matmul MACs from ``torch.utils.flop_counter`` plus an analytic count
of the selective scan), CPU latency and training wall time; a before/after image grid and loss curves.

``--gpu-profile`` instead measures GPU latency at 600×400 (padded to 608×400) for the model variants and profiles
where the time goes (share of the selective scan, top operators); meant for one run on the device machine.

    python tools/bench/walmafa.py --quick                       # a few CPU minutes
    python tools/bench/walmafa.py --lol datasets/LOLv1 --steps 2000 --device cuda
    python tools/bench/walmafa.py --gpu-profile --out $OUT
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

import torch

# this script is named like the package it benchmarks: keep its own folder off the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


# bench name -> (registry name, config overrides)
VARIANTS = {
    "walmafa": ("walmafa", {}),  # released code: Mamba on the high bands, raw-reshape tokens
    "walmafa_pixel": ("walmafa", {"token_layout": "pixel"}),  # one token per pixel
    "walmafa_paper": ("walmafa_paper", {}),  # the paper: Mamba on the LL band
    "retinex_unet": ("retinex_unet", {}),
}


def scan_macs(model: torch.nn.Module, shape: tuple[int, int, int, int]) -> int:
    """Analytic multiply-adds of the selective scans for one forward at ``shape`` (per step and state element:
    decay·h + input (2), Δ·B·x (2), C·h readout (1), exp counted as 1)."""
    from walmafa.mamba import Mamba

    seq = {}
    hooks = [m.register_forward_pre_hook(lambda mod, inp, _n=n: seq.__setitem__(_n, inp[0].shape))
             for n, m in model.named_modules() if isinstance(m, Mamba) and not n.endswith("model2")]
    with torch.no_grad():
        model(torch.zeros(shape))
    for h in hooks:
        h.remove()
    total = 0
    for n, s in seq.items():
        m = model.get_submodule(n)
        total += s[0] * s[1] * m.d_inner * m.d_state * 6
    return total


def conv_macs(model: torch.nn.Module, shape: tuple[int, int, int, int]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.zeros(shape))
    return fc.get_total_flops() // 2


def latency(model: torch.nn.Module, shape, device: torch.device, repeats: int, warmup: int = 1,
            dtype: torch.dtype = torch.float32) -> float:
    x = torch.rand(shape, device=device)
    ctx = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else torch.autocast(device.type,
                                                                                                 enabled=False)
    with torch.no_grad(), ctx:
        for _ in range(warmup):
            model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(repeats):
            model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats * 1000


def gpu_profile(args) -> None:
    from walmafa import create_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    shape = (1, 3, 400, 608)  # LOL 600×400 padded to a multiple of 16
    res = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "shape": list(shape),
           "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="minutes"), "latency_ms": {}}
    variants = {"walmafa (high, raw, chunk 64)": dict(),
                "walmafa (high, raw, chunk 128)": dict(chunk_size=128),
                "walmafa_paper (low band)": dict(mamba_on="low"),
                "walmafa (high, pixel tokens)": dict(token_layout="pixel")}
    for name, kw in variants.items():
        torch.manual_seed(0)
        m = create_model("walmafa", **kw).to(dev).eval()
        res["latency_ms"][name + " fp32"] = latency(m, shape, dev, repeats=5, warmup=2)
        if name.startswith("walmafa (high, raw, chunk 64)"):
            res["latency_ms"][name + " bf16 autocast"] = latency(m, shape, dev, repeats=5, warmup=2,
                                                                 dtype=torch.bfloat16)
            res["peak_mem_GiB"] = torch.cuda.max_memory_allocated() / 2**30
        del m
        torch.cuda.empty_cache()
    m = create_model("walmafa").to(dev).eval()
    res["latency_ms"]["walmafa (high, raw, chunk 64) fp32 @256x256"] = latency(m, (1, 3, 256, 256), dev, 5, 2)
    del m
    b = create_model("retinex_unet").to(dev).eval()
    res["latency_ms"]["retinex_unet fp32"] = latency(b, shape, dev, repeats=10, warmup=2)
    # where time goes: profile the released variant
    m = create_model("walmafa").to(dev).eval()
    x = torch.rand(shape, device=dev)
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        m(x)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            m(x)
            torch.cuda.synchronize()
    events = prof.key_averages()

    def dev_time(e):
        return getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)

    total = sum(dev_time(e) for e in events if not e.key.startswith("walmafa.") and e.key.startswith("aten::")
                and not any(k in e.key for k in ("aten::conv2d", "aten::convolution", "aten::_convolution",
                                                   "aten::linear", "aten::matmul", "aten::einsum")))
    scan = [e for e in events if e.key == "walmafa.selective_scan"]
    res["profile"] = {
        "scan_device_ms": dev_time(scan[0]) / 1000 if scan else None,
        "scan_cpu_ms": scan[0].cpu_time_total / 1000 if scan else None,
        "scan_calls": scan[0].count if scan else 0,
        "forward_wall_ms": res["latency_ms"]["walmafa (high, raw, chunk 64) fp32"],
        "sum_leaf_aten_device_ms": total / 1000,
    }
    table = ""
    for key in ("device_time_total", "cuda_time_total", "cpu_time_total"):
        try:
            table = events.table(sort_by=key, row_limit=30)
            break
        except (AttributeError, KeyError, ValueError, RuntimeError):
            continue
    (out / "gpu_profile.txt").write_text(table)
    (out / "gpu_results.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    print(table)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a few CPU minutes")
    p.add_argument("--out", default="runs/bench/walmafa")
    p.add_argument("--lol", default=None, help="a LOL-style root to benchmark as well")
    p.add_argument("--lol-subset", choices=["real", "synthetic"], default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--patch-size", type=int, default=64)
    p.add_argument("--size", type=int, default=96, help="short side of the synthetic images")
    p.add_argument("--models", default="walmafa,walmafa_pixel,retinex_unet", help=f"from {sorted(VARIANTS)}")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gpu-profile", action="store_true")
    args = p.parse_args()
    if args.gpu_profile:
        gpu_profile(args)
        return

    from commons.data.lol import PairedFolderDataset, SyntheticLowLightDataset
    from commons.io import save_json
    from commons.metrics import psnr, ssim
    from commons.profiling import count_parameters
    from commons.reporting import markdown_table, save_image_grid, save_line_plot
    from walmafa import Enhancer, TrainConfig, enhance_image

    steps = args.steps or (30 if args.quick else 300)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    datasets = {"synthetic (embedded)": (SyntheticLowLightDataset("train", size=args.size, variants=4, seed=args.seed),
                                         SyntheticLowLightDataset("test", size=args.size, variants=1, seed=args.seed))}
    if args.lol:
        datasets[f"LOL folder {args.lol}"] = (PairedFolderDataset(args.lol, "train", args.lol_subset),
                                              PairedFolderDataset(args.lol, "test", args.lol_subset))
    models = args.models.split(",")
    rows, curves, grid_imgs = [], {}, []
    info = {"machine": f"{platform.node()} ({platform.processor() or platform.machine()}, "
                       f"{torch.get_num_threads()} threads)", "torch": torch.__version__,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="minutes"), "steps": steps,
            "batch_size": args.batch_size, "patch_size": args.patch_size}
    for dname, (train, test) in datasets.items():
        outs = {}
        rows.append({"data": dname, "model": "input (no enhancement)",
                     "PSNR": sum(psnr(lo, hi) for lo, hi in (test[i] for i in range(len(test)))) / len(test),
                     "SSIM": sum(ssim(lo, hi) for lo, hi in (test[i] for i in range(len(test)))) / len(test)})
        for name in models:
            if name not in VARIANTS:
                raise SystemExit(f"unknown model {name!r}; choose from {sorted(VARIANTS)}")
            enh = Enhancer(VARIANTS[name][0], device=args.device, seed=args.seed, **VARIANTS[name][1])
            cfg = TrainConfig(steps=steps, batch_size=args.batch_size, patch_size=args.patch_size,
                              warmup_steps=max(1, steps // 20), log_every=max(1, steps // 30), seed=args.seed)
            t0 = time.perf_counter()
            hist = enh.fit(train, cfg, progress=False)
            train_s = time.perf_counter() - t0
            res = enh.evaluate(test)
            m = enh.model.cpu().eval()
            shape = (1, 3, 256, 256)
            macs = conv_macs(m, shape) + (scan_macs(m, shape) if name.startswith("walmafa") else 0)
            lat = latency(m, shape, torch.device("cpu"), repeats=2 if args.quick else 5)
            rows.append({"data": dname, "model": name, "PSNR": res["psnr"], "SSIM": res["ssim"],
                         "params (M)": count_parameters(m) / 1e6, "GMACs @256²": macs / 1e9,
                         "CPU ms @256²": lat, "train s": train_s})
            curves[f"{name} ({dname.split()[0]})"] = (hist["step"], hist["loss"])
            with torch.no_grad():
                outs[name] = [enhance_image(m, test[i][0]) for i in range(min(2, len(test)))]
            print(rows[-1], flush=True)
        for i in range(min(2, len(test))):
            grid_imgs += [test[i][0]] + [outs[n][i] for n in models] + [test[i][1]]
    ncol = len(models) + 2
    save_image_grid(grid_imgs, out / "before_after.png", nrow=ncol)
    save_line_plot(out / "loss.png", curves, "step", "training loss", "WalMaFa vs Retinex U-Net (equal budget)")
    md = (f"Machine: {info['machine']}, torch {info['torch']}, {info['date']}. Budget per model: {steps} steps × "
          f"batch {args.batch_size} × {args.patch_size}² crops (released loss/optimiser). PSNR/SSIM: RGB, [0,1], no "
          f"GT-mean, full held-out images. Grid columns: input | {' | '.join(models)} | ground truth.\n\n"
          + markdown_table(rows))
    (out / "results.md").write_text(md + "\n")
    save_json(out / "results.json", {"info": info, "rows": rows})
    print(md)


if __name__ == "__main__":
    main()
