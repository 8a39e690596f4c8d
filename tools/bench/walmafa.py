"""Benchmark: WalMaFa vs a small Retinex-style U-Net at an equal training budget.

On the embedded default (synthetic low-light pairs from scikit-image/scikit-learn photos, split by photo) and on any
LOL-style folder passed with ``--lol``: both models are trained with the same recipe, steps, batch and crops (the
released WalMaFa loss and optimiser), then evaluated on full held-out images. Reported: PSNR/SSIM (RGB, [0,1], no
GT-mean, padded to 16), parameters, MACs (conv/matmul MACs from ``torch.utils.flop_counter`` plus an analytic count
of the selective scan), CPU latency and training wall time; a before/after image grid and loss curves.

``--gpu-profile`` instead measures GPU latency at 600×400 (padded to 608×400) of the released configuration for each
selective scan (chunked PyTorch eager, the same replayed from a CUDA graph, the fused Triton kernel), fp32 and bf16,
with the scans' share of device time, after checking each against the chunked fp32 output. ``--full`` trains WalMaFa
and the U-Net at an equal budget for 3 seeds with ``tools/walmafa_train.py`` (GPU) and reports mean ± spread.

    python tools/bench/walmafa.py --quick                       # a few CPU minutes
    python tools/bench/walmafa.py --lol datasets/LOLv1 --steps 2000 --device cuda
    python tools/bench/walmafa.py --gpu-profile --out $OUT
    python tools/bench/walmafa.py --full --budget-s 150 --out $OUT           # 3 seeds × 150 s, one GPU
    python tools/bench/walmafa.py --full --budget-s 260 --max-seconds 580 --out $OUT                  # seeds 0, 1
    python tools/bench/walmafa.py --full --budget-s 260 --max-seconds 580 --out $OUT \\
        --resume-from .cache/walmafa_full_seeds.jsonl                                              # seed 2 + JSON
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import sys
import tempfile
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


class _Graphed:
    """Inference forward replayed from a CUDA graph (static input shape): removes the per-kernel launch cost of the
    pure-PyTorch scans. Same outputs as the eager model (same kernels)."""

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype):
        self.static_x = x.clone()
        self.ctx = ((lambda: torch.autocast("cuda", dtype=dtype, cache_enabled=False)) if dtype != torch.float32
                    else torch.no_grad)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.no_grad(), self.ctx():
            for _ in range(2):
                model(self.static_x)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), self.ctx(), torch.cuda.graph(self.graph):
            self.static_y = model(self.static_x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.static_x.copy_(x)
        self.graph.replay()
        return self.static_y


def _time_cuda(fn, x: torch.Tensor, repeats: int = 10, warmup: int = 3) -> float:
    with torch.no_grad():
        for _ in range(warmup):
            fn(x)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn(x)
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats * 1000


def _ms(text: str) -> float:
    """``'7.331ms'`` / ``'930.814us'`` / ``'1.2s'`` → milliseconds."""
    m = re.fullmatch(r"([0-9.]+)(us|ms|s)", text.strip())
    if not m:
        raise ValueError(f"not a profiler time: {text!r}")
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]


def profile_times(table: str) -> tuple[float | None, float | None]:
    """(device ms inside the ``walmafa.selective_scan`` ranges, total device ms) read from a profiler table
    (``key_averages().table()``): the range's "CUDA total" column and the "Self CUDA time total" footer, which counts
    every kernel once."""
    total = re.search(r"Self (?:CUDA|XPU|device) time total:\s*([0-9.]+(?:us|ms|s))", table)
    scan = None
    for line in table.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells and cells[0] == "walmafa.selective_scan" and len(cells) >= 11:
            scan = _ms(cells[8])
    return scan, (_ms(total.group(1)) if total else None)


def _scan_share(model: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype) -> tuple[float | None, float | None, str]:
    """(device ms of the scans, device ms of all kernels, profile table) for one forward."""
    from torch.profiler import ProfilerActivity, profile

    ctx = torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32)
    with torch.no_grad(), ctx:
        model(x)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            model(x)
            torch.cuda.synchronize()
    events = prof.key_averages()
    table = ""
    for key in ("device_time_total", "cuda_time_total", "cpu_time_total"):
        try:
            table = events.table(sort_by=key, row_limit=25)
            break
        except (AttributeError, KeyError, ValueError, RuntimeError):
            continue
    scan_ms, total_ms = profile_times(table)
    return scan_ms, total_ms, table


def fix_gpu_json(folder: Path) -> Path:
    """Re-derive the scan / total device times of ``folder/walmafa/walmafa_gpu.json`` from the profile tables the
    same run saved beside it (``gpu_profile_<scan>_<precision>.txt``). Runs before this fix summed every profiler
    row's self device time, which counts a kernel both under its operator and as its own row, and missed the Triton
    kernel's range."""
    path = folder / "walmafa" / "walmafa_gpu.json"
    data = json.loads(path.read_text())
    for row in data["rows"]:
        table = folder / f"gpu_profile_{row.get('scan')}_{row.get('precision')}.txt"
        if table.exists():
            scan_ms, total_ms = profile_times(table.read_text())
            row["scan_device_ms"], row["device_ms"] = scan_ms, total_ms
            row["scan_share"] = scan_ms / total_ms if scan_ms is not None and total_ms else None
    data["settings"]["device_times"] = ("scan and total device ms re-derived from the run's saved profile tables "
                                        "(range 'CUDA total' and 'Self CUDA time total')")
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def gpu_profile(args) -> None:
    """GPU latency of the released configuration at 608×400 for each scan (chunked eager, chunked replayed from a
    CUDA graph, the fused Triton kernel), fp32 and bf16 autocast, with the scans' share of device time, after checking
    that every variant's output equals the chunked fp32 output. Writes ``walmafa/walmafa_gpu.json`` under --out
    (``commons.results``) plus the profile tables."""
    from commons.results import write_results
    from walmafa import create_model, set_scan

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False  # compare scans, not matmul precision
    torch.backends.cudnn.allow_tf32 = False
    shape = (1, 3, 400, 608)  # LOL 600×400 padded to a multiple of 16
    torch.manual_seed(0)
    model = create_model("walmafa").to(dev).eval()  # released configuration: dim 16, blocks [2, 3, 4]
    x = torch.rand(shape, device=dev, generator=torch.Generator(device=dev).manual_seed(0))
    with torch.no_grad():
        ref = model(x).float()
    rows, tables = [], {}
    for scan in ("chunked", "triton"):
        set_scan(model, scan)
        for prec, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            ctx = torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32)
            try:
                with torch.no_grad(), ctx:
                    y = model(x).float()
                err = (y - ref).abs().max().item()

                def eager(inp, _ctx=ctx):
                    with _ctx:
                        return model(inp)

                ms = _time_cuda(eager, x)
                graphed = _Graphed(model, x, dtype)
                ms_graph = _time_cuda(graphed, x)
                err_graph = (graphed(x).float() - ref).abs().max().item()
                del graphed
                scan_ms, total_ms, table = _scan_share(model, x, dtype)
                tables[f"{scan}_{prec}"] = table
                rows.append({"table": "gpu", "scan": scan, "precision": prec, "eager_ms": ms, "graph_ms": ms_graph,
                             "scan_device_ms": scan_ms, "device_ms": total_ms,
                             "scan_share": scan_ms / total_ms if total_ms and scan_ms is not None else None,
                             "max_abs_diff_vs_chunked_fp32": max(err, err_graph)})
            except Exception as exc:  # noqa: BLE001 - record the failure of one variant, measure the others
                rows.append({"table": "gpu", "scan": scan, "precision": prec, "error": f"{type(exc).__name__}: {exc}"})
            print(rows[-1], flush=True)
    set_scan(model, "chunked")
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        model(x)
    peak = torch.cuda.max_memory_allocated() / 2**30
    base = create_model("retinex_unet").to(dev).eval()
    rows.append({"table": "gpu", "scan": "retinex_unet (baseline)", "precision": "fp32",
                 "eager_ms": _time_cuda(base, x)})
    for name, table in tables.items():
        (out / f"gpu_profile_{name}.txt").write_text(table)
    settings = {"shape": list(shape), "model": "walmafa released configuration (dim 16, blocks [2,3,4], random "
                "weights)", "peak_mem_GiB_chunked_fp32": peak, "device": torch.cuda.get_device_name(0),
                "command": "python tools/bench/walmafa.py --gpu-profile --out $OUT", "tf32": False}
    print(json.dumps({"settings": settings, "rows": rows}, indent=1))
    write_results("walmafa", "walmafa_gpu", rows, settings, root=out)


SEEDS_FILE = "walmafa_full_seeds.jsonl"


def _full_config(args) -> dict:
    """What makes the seeds of one ``--full`` comparison comparable; a resumed comparison must match it."""
    return {"budget_s": float(args.budget_s), "lol": args.lol, "lol_subset": args.lol_subset,
            "train_args": args.train_args}


def _done_seeds(path: str | None, config: dict) -> dict[int, dict]:
    """Seeds finished by an earlier call (``--resume-from``, a ``walmafa_full_seeds.jsonl``), refused if they were
    run with another budget, data or training arguments."""
    if not path:
        return {}
    src = Path(path)
    if not src.is_file():
        raise SystemExit(f"--resume-from must be an existing {SEEDS_FILE} file, got {path!r}")
    done = {}
    for n, line in enumerate(src.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            seed, cfg = int(rec["seed"]), rec["config"]
            rec["heldout"], rec["recipe"]  # noqa: B018 - both needed for the table
        except (ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"--resume-from {path}: line {n} is not a finished seed ({exc})") from None
        if cfg != config:
            raise SystemExit(f"--resume-from {path}: seed {seed} was run with {cfg}, this call has {config}; "
                             f"use the same --budget-s/--lol/--lol-subset/--train-args or a new comparison")
        done[seed] = rec
    return done


def full(args) -> None:
    """``--full``: WalMaFa vs the Retinex U-Net at an equal budget (same steps, batches, loss and schedule) for
    each seed, through ``tools/walmafa_train.py``; mean and spread over the seeds. Writes
    ``walmafa/walmafa_full.json`` under --out once every seed is done.

    Incremental (a device call is killed at 10 minutes): each finished seed is appended to ``--out``/
    ``walmafa_full_seeds.jsonl``; ``--resume-from FILE`` (that file from an earlier call) skips its seeds, which must
    have been run with the same budget, data and training arguments; ``--max-seconds`` starts a seed only if it can
    finish (``--budget-s`` + a margin) within that many seconds of the call, so a call ends cleanly between seeds."""
    import importlib.util
    import statistics

    from commons.results import write_results

    t_call = time.perf_counter()
    seeds = [int(v) for v in args.seeds.split(",")]
    config = _full_config(args)
    per_seed = {s: rec for s, rec in _done_seeds(args.resume_from, config).items() if s in seeds}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / SEEDS_FILE
    if log.exists() and (not args.resume_from or log.resolve() != Path(args.resume_from).resolve()):
        raise SystemExit(f"{log} exists: pass it as --resume-from or use a new --out")
    with open(log, "w", encoding="utf-8") as f:  # the finished seeds so far (the resumed ones first)
        for s in seeds:
            if s in per_seed:
                f.write(json.dumps(per_seed[s]) + "\n")
    todo = [s for s in seeds if s not in per_seed]
    print(f"--full: seeds done {sorted(per_seed)}, to run {todo}", flush=True)

    spec = importlib.util.spec_from_file_location("walmafa_train", Path(__file__).resolve().parents[1]
                                                  / "walmafa_train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    for seed in todo:  # per-seed files go to a temporary folder (the device returns few files); seed 0's pictures kept
        elapsed = time.perf_counter() - t_call
        if args.max_seconds and elapsed + args.budget_s * 1.05 + 15 > args.max_seconds:
            print(f"--full: {elapsed:.0f} s used; seed {seed} would not finish within --max-seconds "
                  f"{args.max_seconds:g}: stopping. Continue with --resume-from {log}", flush=True)
            break
        tmp = Path(tempfile.mkdtemp(prefix=f"walmafa_full_seed{seed}_"))
        argv = ["--out", str(tmp), "--budget-s", str(args.budget_s), "--seed", str(seed),
                "--device", args.device, "--curve-points", "4"]
        if args.lol:
            argv += ["--lol", args.lol] + (["--lol-subset", args.lol_subset] if args.lol_subset else [])
        card = train.run(argv + shlex.split(args.train_args))
        per_seed[seed] = {"seed": seed, "config": config, "heldout": card["heldout"], "recipe": card["recipe"],
                          "machine": card.get("machine"), "calibration": card.get("calibration")}
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps(per_seed[seed], default=str) + "\n")
        if seed == seeds[0]:
            for name in ("before_after.png", "curves.png"):
                if (tmp / name).exists():
                    shutil.copy(tmp / name, out / f"full_{name}")
        shutil.rmtree(tmp, ignore_errors=True)
    missing = [s for s in seeds if s not in per_seed]
    if missing:
        print(f"--full: seeds {missing} not run yet; no results JSON written", flush=True)
        return
    rows = []
    for method, key in (("input (no enhancement)", "input"), ("WalMaFa", "walmafa"), ("Retinex U-Net", "retinex_unet")):
        ps = [per_seed[s]["heldout"][key]["psnr"] for s in seeds]
        ss = [per_seed[s]["heldout"][key]["ssim"] for s in seeds]
        rows.append({"table": "full", "data": "LOL folder" if args.lol else "synthetic (embedded)", "method": method,
                     "psnr_mean": statistics.fmean(ps), "psnr_std": statistics.pstdev(ps),
                     "ssim_mean": statistics.fmean(ss), "ssim_std": statistics.pstdev(ss), "seeds": len(seeds),
                     "steps": statistics.fmean(per_seed[s]["recipe"]["steps"] for s in seeds)})
    settings = {"seeds": seeds, "budget_s_per_seed": args.budget_s, "lol": args.lol, "lol_subset": args.lol_subset,
                "train_args": args.train_args, "recipe": per_seed[seeds[0]]["recipe"],
                "command": " ".join(["python", *sys.argv])}
    write_results("walmafa", "walmafa_full", rows, settings, root=out,
                  extra={"per_seed": {s: per_seed[s]["heldout"] for s in seeds}})
    print(json.dumps(rows, indent=1))


_TILING_CHILD = """
import json, resource, sys, time, torch
from commons.data.lol import SyntheticLowLightDataset
from commons.metrics import psnr, ssim
from walmafa import Enhancer, enhance_image
torch.set_num_threads(1)
tile, size, dump = (None if sys.argv[1] == "none" else int(sys.argv[1])), int(sys.argv[2]), sys.argv[3]
model = Enhancer.pretrained(device="cpu").model.eval()
test = SyntheticLowLightDataset("test", size=size, variants=1, seed=0)
pairs = [test[i] for i in range(len(test))]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
outs = [enhance_image(model, lo, tile=tile, overlap=32) for lo, _ in pairs]
sec = (time.perf_counter() - t) / len(pairs)
grow = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
torch.save(torch.stack(outs), dump)
print(json.dumps({"psnr": sum(psnr(o, hi) for o, (_, hi) in zip(outs, pairs)) / len(pairs),
                  "ssim": sum(ssim(o, hi) for o, (_, hi) in zip(outs, pairs)) / len(pairs),
                  "rss_growth_MiB": grow, "s_per_image": sec, "hw": list(pairs[0][0].shape[-2:]),
                  "images": test.names}))
"""


def tiling(args) -> None:
    """``--tiling`` (CPU, ~4 minutes): the shipped weights on the held-out photos (short side ``--size``, one
    degradation each), whole vs in 256² tiles (overlap 32): PSNR/SSIM against the originals, the largest difference
    between the two outputs, seconds per image and the growth of the process's peak resident memory (one process per
    setting, one thread). Writes ``results/walmafa/walmafa_tiling.json`` (or under --out with ``--out``)."""
    import subprocess

    from commons.results import write_results

    rows, outs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for tile in ("none", "256"):
            dump = str(Path(tmp) / f"{tile}.pt")
            res = subprocess.run([sys.executable, "-c", _TILING_CHILD, tile, str(args.size), dump],
                                 capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            if res.returncode:
                raise SystemExit(f"--tiling child failed: {res.stderr.strip().splitlines()[-1:]}")
            info = json.loads(res.stdout.strip().splitlines()[-1])
            outs[tile] = torch.load(dump, weights_only=True)
            rows.append({"table": "tiling", "mode": "whole image" if tile == "none" else "256² tiles, overlap 32",
                         "size": "×".join(map(str, info["hw"])), "psnr": info["psnr"], "ssim": info["ssim"],
                         "rss_growth_MiB": info["rss_growth_MiB"], "s_per_image": info["s_per_image"]})
            print(rows[-1], flush=True)
    rows[1]["max_abs_diff_vs_whole"] = float((outs["256"] - outs["none"]).abs().max())
    rows[1]["mean_abs_diff_vs_whole"] = float((outs["256"] - outs["none"]).abs().mean())
    settings = {"weights": "walmafa/weights/walmafa.safetensors (shipped)", "images": info["images"],
                "data": f"SyntheticLowLightDataset('test', size={args.size}, variants=1, seed=0)",
                "threads": 1, "device": "cpu", "command": " ".join(["python", *sys.argv])}
    root = Path(args.out) if args.out != "runs/bench/walmafa" else None
    print(write_results("walmafa", "walmafa_tiling", rows, settings, root=root))


def border_sweep(args) -> None:
    """``--border-sweep`` (CPU, ~6 minutes): the shipped weights on the held-out photos with test-time border padding
    (``enhance_image(..., border=N)``: reflect-pad N pixels on all four sides, crop back). Per photo, size and N:
    PSNR/SSIM against the originals and the mean absolute error on the outermost pixel ring vs the interior (pixels
    at least 8 from the edge). Sizes: the training crop scale (short side 128, the 4 seeded degradations of each photo
    of the model card's held-out set) for N in {0, 8, 16, 32}, and the model card's 400×592 (first degradation of
    each photo only, to stay within a few CPU minutes) for the same N. Writes ``results/walmafa/walmafa_border.json``
    (or under --out with ``--out``)."""
    from commons.data.lol import SyntheticLowLightDataset
    from commons.metrics import psnr, ssim
    from commons.results import write_results
    from walmafa.engine import Enhancer, enhance_image
    from walmafa.pretrained import default_weights

    torch.set_num_threads(1)  # two threads on the shared 2-core machine ran 6× slower
    model = Enhancer.load(default_weights(), device="cpu").model.eval()
    plan = [(128, 4, (0, 8, 16, 32)), (400, 1, (0, 8, 16, 32))]
    rows = []
    for size, variants, borders in plan:
        test = SyntheticLowLightDataset("test", size=size, variants=variants, seed=0)
        pairs = [test[i] for i in range(len(test))]
        photos = [n.rsplit("_", 1)[0] for n in test.names]
        for n in borders:
            t = time.perf_counter()
            outs = [enhance_image(model, lo, border=n) for lo, _ in pairs]
            sec = (time.perf_counter() - t) / len(pairs)
            for photo in sorted(set(photos)) + ["all"]:
                idx = [i for i, ph in enumerate(photos) if photo in (ph, "all")]
                ring, inner = [], []
                for i in idx:
                    err = (outs[i] - pairs[i][1]).abs()
                    ring.append(torch.cat([err[:, 0].flatten(), err[:, -1].flatten(), err[:, 1:-1, 0].flatten(),
                                           err[:, 1:-1, -1].flatten()]).mean().item())
                    inner.append(err[:, 8:-8, 8:-8].mean().item())
                rows.append({"table": "border", "photos": photo, "images": len(idx),
                             "size": "×".join(map(str, pairs[0][0].shape[-2:])), "border": n,
                             "psnr": sum(psnr(outs[i], pairs[i][1]) for i in idx) / len(idx),
                             "ssim": sum(ssim(outs[i], pairs[i][1]) for i in idx) / len(idx),
                             "ring_abs_err": sum(ring) / len(idx), "interior_abs_err": sum(inner) / len(idx),
                             "s_per_image": sec})
                print(rows[-1], flush=True)
    settings = {"weights": "walmafa/weights/walmafa.safetensors (shipped)",
                "data": [f"SyntheticLowLightDataset('test', size={s}, variants={v}, seed=0)" for s, v, _ in plan],
                "borders": {str(s): list(b) for s, _, b in plan}, "threads": 1, "device": "cpu",
                "metrics": "PSNR/SSIM on RGB in [0,1] (commons.metrics), no GT-mean; ring = outermost pixel ring, "
                           "interior = pixels at least 8 from the edge",
                "command": " ".join(["python", *sys.argv])}
    root = Path(args.out) if args.out != "runs/bench/walmafa" else None
    print(write_results("walmafa", "walmafa_border", rows, settings, root=root))


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
    p.add_argument("--gpu-profile", action="store_true", help="GPU latency per scan (one GPU, ~2 min)")
    p.add_argument("--fix-gpu-json", default=None, metavar="DIR",
                   help="re-derive the device times of DIR/walmafa/walmafa_gpu.json from DIR's saved profile tables")
    p.add_argument("--full", action="store_true", help="GPU: WalMaFa vs U-Net at an equal budget, several seeds")
    p.add_argument("--border-sweep", action="store_true",
                   help="CPU, ~6 min: the shipped weights with test-time border padding N (walmafa_border.json)")
    p.add_argument("--tiling", action="store_true",
                   help="CPU: shipped weights whole vs tiled (quality, memory, time) at --size (use 400)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--budget-s", type=float, default=150, help="--full: seconds per seed (both models)")
    p.add_argument("--train-args", default="", help="--full: extra tools/walmafa_train.py arguments")
    p.add_argument("--resume-from", default=None, metavar="FILE",
                   help=f"--full: skip the seeds finished in FILE (the {SEEDS_FILE} of an earlier call)")
    p.add_argument("--max-seconds", type=float, default=0,
                   help="--full: start a seed only if it ends within this many seconds of the call (0: no limit)")
    args = p.parse_args()
    if args.gpu_profile:
        if not torch.cuda.is_available():
            raise SystemExit("--gpu-profile needs a CUDA GPU (torch.cuda.is_available() is False)")
        gpu_profile(args)
        return
    if args.fix_gpu_json:
        print(fix_gpu_json(Path(args.fix_gpu_json)))
        return
    if args.tiling:
        tiling(args)
        return
    if args.border_sweep:
        border_sweep(args)
        return
    if args.full:
        if args.device == "cpu" and torch.cuda.is_available():
            args.device = "cuda"
        full(args)
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
