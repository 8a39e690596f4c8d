"""Data-parallel check of the training loops of walmafa, streamdsgn, clfreq and kdrl (issue 28).

For every package, the same training job (same global batch, same number of optimiser steps, same data order) is
launched with ``torch.distributed.run --nproc_per_node N`` and with ``--nproc_per_node 1``; every process trains
through :class:`commons.device.TrainingBackend` (accelerate), exactly as the package code does under
``accelerate launch``. The N-process launch also trains once more, interrupted half-way and resumed from the run
folder. Written under ``--out``:

* ``<out>/multi_gpu/multi_gpu.json`` (through :func:`commons.results.write_results`): one row per package and world
  size, ``table=runs`` — final training loss, final metric (walmafa: held-out PSNR; clfreq: Class-IL test accuracy;
  kdrl: train top-1; streamdsgn: last epoch's loss), samples/s, scaling against 1 device, peak memory per
  device (max over ranks), the spread between replicas, the distance between the N- and 1-device parameters, and the
  resumed run's distance to the uninterrupted one; ``table=checks`` — each check with its tolerance and verdict.
* ``<out>/multi_gpu/log_<pkg>_w<N>.txt``: the launcher's output of a launch that failed or ran out of its share of
  ``--budget-s`` (the budget is split over the launches still to run; a launch past its share is stopped).

Usage (GPU host with N cards; CPU test mode with gloo)::

    PYTHONPATH=packages/commons/src:packages/walmafa/src:packages/streamdsgn/src:packages/clfreq/src:packages/kdrl/src \
      python tools/multi_gpu_check.py --out $OUT --gpus 2 --device cuda
    python tools/multi_gpu_check.py --out /tmp/mg --gpus 2 --device cpu --packages kdrl --size tiny

Equality (what is compared and why the tolerances are what they are):

* **Replicas**: after training, the parameters of every rank must agree (all-reduced gradients, same optimiser
  state): max over ranks of the relative difference of three parameter checksums ≤ ``1e-6`` (they are bit-equal
  when the all-reduce result is the same on every rank, as NCCL's ring and gloo give).
* **N vs 1 device**: all four nets contain BatchNorm (WalMaFa's conv+BN stems, the StreamDSGN backbone, clfreq's
  ResNet, kdrl's MLP students) and the packages do not use SyncBatchNorm, so under data parallelism each process
  normalises with the statistics of its own ``G/N`` samples and the running statistics follow rank 0's shard: the
  N-device run is the standard-DDP algorithm, not the 1-device one, even with identical batches, gradients
  averaged over the global batch and TF32 off. The parameters therefore cannot be compared for equality;
  ``rel_param_dist = ||θ_N − θ_1|| / ||θ_1 − θ_0||`` (the part of the training displacement on which the two runs
  disagree) is reported, not gated. What is gated is the final held-out metric, within a band that is a sanity
  bound, not an equality: at ``--size gpu`` PSNR within 0.5 dB (walmafa), accuracy within 0.05 (clfreq Class-IL,
  kdrl train top-1), final epoch loss within 10 % relative (streamdsgn); looser at ``--size tiny`` (``TOL_METRIC``).
  clfreq's reservoir is also sharded per process by design
  (``clfreq.rehearsal.distributed``). Exact N-vs-1 equality needs SyncBatchNorm (CUDA only), not offered yet.
* **Resume**: the run interrupted after half of its steps (epochs) and resumed from ``state.pt`` must end with the
  uninterrupted run's parameters: ``rel_param_dist ≤ 1e-6`` (same kernels, same order; only fp32 re-association in
  a different process could change a bit).

Throughput: samples/s of the timed run (after a warm-up run of the same job), global samples over the wall time of
``fit`` between two barriers (CUDA synchronised); ``scaling = (samples/s with N) / (samples/s with 1)``, target ≥ 1.8
on 2 GPUs at the global batch stated per package (``--size gpu``). Peak memory: ``torch.cuda.max_memory_allocated``
per rank (CPU mode: peak RSS per process).

Every child process gets ``NCCL_NVLS_ENABLE=0``, ``TORCH_SYMM_MEM_DISABLE_MULTICAST=1`` and ``NVSHMEM_DISABLE_NVLS=1``
(NVLink multicast off).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("walmafa", "streamdsgn", "clfreq", "kdrl")
TOL_REPLICA = 1e-6
# N vs 1 device: BatchNorm without SyncBatchNorm makes them different algorithms, so a band on the final metric:
# (kind, tolerance) with kind "abs" (absolute difference) or "rel" (relative to the 1-device value)
# per job size: the tiny CPU jobs make a handful of steps on a few dozen test samples (one sample of clfreq's tiny
# test set is 0.007 of Class-IL accuracy), so their bands only catch a broken run
TOL_METRIC = {
    "gpu": {"walmafa": ("abs", 0.5), "streamdsgn": ("rel", 0.1), "clfreq": ("abs", 0.05), "kdrl": ("abs", 0.05)},
    "tiny": {"walmafa": ("abs", 0.5), "streamdsgn": ("rel", 0.2), "clfreq": ("abs", 0.25), "kdrl": ("abs", 0.1)},
}
TOL_RESUME = 1e-6
DIGITS_NPZ = ROOT / ".cache" / "multi_gpu_digits.npz"
NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}

# global batch, optimiser steps (walmafa) or epochs (others) per size; the per-process batch is global // world
SIZES = {
    "tiny": {"walmafa": {"batch": 2, "steps": 4}, "streamdsgn": {"batch": 2, "epochs": 2, "samples": 4},
             "clfreq": {"batch": 16, "epochs": 1}, "kdrl": {"batch": 32, "epochs": 2, "n": 128}},
    "gpu": {"walmafa": {"batch": 8, "steps": 40}, "streamdsgn": {"batch": 4, "epochs": 2, "samples": 64},
            "clfreq": {"batch": 64, "epochs": 2}, "kdrl": {"batch": 512, "epochs": 4, "n": 32768}},
}


# ------------------------------------------------------------------------------------------------ worker side
def _flat(module):
    import torch

    return torch.cat([p.detach().double().flatten().cpu() for p in module.parameters()])


def _dev(backend) -> str:
    """The backend's device as the package APIs take it (accelerate reports ``cpu:0`` on CPU processes)."""
    return "cpu" if backend.device.type == "cpu" else str(backend.device)


class _Pairs:
    """Smooth random images and their darkened, noisy versions (no photo files, no scikit-image on the GPU host)."""

    def __init__(self, n: int, size: int, seed: int):
        import torch

        g = torch.Generator().manual_seed(seed)
        base = torch.rand(n, 3, size // 8, size // 8, generator=g)
        self.high = torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)
        self.low = (0.12 * self.high + 0.02 * torch.randn(self.high.shape, generator=g)).clamp(0, 1)

    def __len__(self) -> int:
        return len(self.high)

    def __getitem__(self, i):
        return self.low[i], self.high[i]


def _walmafa(backend, size, world, run_dir, phase):
    from walmafa import Enhancer, TrainConfig, evaluate_pairs

    s = SIZES[size]["walmafa"]
    dev = _dev(backend)
    kw = {"dim": 8, "num_blocks": (1, 1, 1), "d_state": 4} if size == "tiny" else {}
    patch = 32 if size == "tiny" else 128
    train, test = _Pairs(16, patch, 0), _Pairs(2, patch, 1)
    # `steps` counts global batches of batch_size = G / world; constant lr so that the schedule, counted in global
    # batches, is the same function of the optimiser step for every world size
    steps = s["steps"] * world if phase != "warmup" else world
    cfg = TrainConfig(steps=steps, batch_size=s["batch"] // world, patch_size=patch, warmup_steps=1, lr=4e-4,
                      lr_min=4e-4, log_every=world, checkpoint_every=10**6, seed=0)
    enh = Enhancer("walmafa", device=dev, seed=0, **kw)
    theta0 = _flat(enh.model)
    if phase == "resume":
        enh.fit(train, cfg, run_dir=run_dir, progress=False, backend=backend, stop_after=(s["steps"] // 2) * world)
        backend.wait()
        enh = Enhancer("walmafa", device=dev, seed=7, **kw)  # everything must come from state.pt
        hist = enh.fit(train, cfg, run_dir=run_dir, resume=True, progress=False, backend=backend)
    else:
        hist = enh.fit(train, cfg, run_dir=run_dir, progress=False, backend=backend)
    metric = evaluate_pairs(enh.model, test)["psnr"]
    return enh.model, theta0, hist["loss"][-1], metric, "psnr", s["steps"] * s["batch"]


def _streamdsgn(backend, size, world, run_dir, phase, data_root):
    from commons.data.kitti_tracking import KittiTrackingStream
    from streamdsgn import StreamDSGN, TrainConfig

    s = SIZES[size]["streamdsgn"]
    ds = KittiTrackingStream(data_root, split="all", clip_len=6)
    kw = ({"base_width": 8, "up_dims": (8, 4), "slice_channels": 4, "volume_channels": 4, "num_planes": 12,
           "van_stem": 12, "van_dim": 16, "bev_out": 16, "head_channels": 16} if size == "tiny" else {})
    det = StreamDSGN("tiny", device=_dev(backend), seed=0, **kw)
    theta0 = _flat(det.model)
    epochs = 1 if phase == "warmup" else s["epochs"]
    cfg = TrainConfig(epochs=epochs, batch_size=s["batch"] // world, samples_per_epoch=s["samples"], log_every=1,
                      seed=0)
    if phase == "resume":
        det.fit(ds, cfg, run_dir=run_dir, progress=False, backend=backend, stop_after=epochs // 2)
        backend.wait()
        det = StreamDSGN("tiny", device=_dev(backend), seed=7, **kw)
        hist = det.fit(ds, cfg, run_dir=run_dir, resume=True, progress=False, backend=backend)
    else:
        hist = det.fit(ds, cfg, run_dir=run_dir, progress=False, backend=backend)
    samples = epochs * math.ceil(min(len(ds), s["samples"]) / s["batch"]) * s["batch"]
    return det.model, theta0, hist["epoch_loss"][-1], hist["epoch_loss"][-1], "epoch_loss", samples


def _digits_from_cache() -> None:
    """Without scikit-learn (GPU host), read the digits arrays from ``DIGITS_NPZ`` (``--save-digits`` writes it)."""
    import numpy as np

    import commons.data

    try:
        import sklearn  # noqa: F401
        return
    except ImportError:
        pass
    if not DIGITS_NPZ.exists():
        raise SystemExit(f"clfreq needs scikit-learn's digits or {DIGITS_NPZ}: run `python {Path(__file__).name} "
                         "--save-digits` where scikit-learn is installed and carry the file")
    with np.load(DIGITS_NPZ) as f:
        arrays = (f["images"], f["labels"])
    commons.data.load_digits_arrays = lambda: arrays


def _clfreq(backend, size, world, run_dir, phase):
    from clfreq import create_method, split_digits, train_continual

    _digits_from_cache()
    s = SIZES[size]["clfreq"]
    bench = split_digits(image_size=8 if size == "tiny" else 16)
    if size == "tiny":
        bench.train = [(x[:64], y[:64]) for x, y in bench.train[:2]]
        bench.test = bench.test[:2]
    epochs = 1 if phase == "warmup" else s["epochs"]
    kw = {"nf": 4 if size == "tiny" else 20, "buffer_size": 10 if size == "tiny" else 200, "lr": 0.05}

    def run(resume=False, on_task_end=None):
        m = create_method("er", **kw)
        r = train_continual(m, bench, epochs=epochs, batch_size=s["batch"] // world, seed=0, backend=backend,
                            augment=False, out_dir=run_dir, resume=resume, on_task_end=on_task_end)
        return m, r

    class _Stop(Exception):
        pass

    def stop_at_second_task(t, *_):
        if t == 1:
            raise _Stop

    if phase == "resume":  # interrupted at the end of task 2, before its state is saved; resumed from task 1's state
        with contextlib.suppress(_Stop):
            run(on_task_end=stop_at_second_task)
        backend.wait()
        m, r = run(resume=True)
    else:
        m, r = run()
    samples = epochs * sum(-(-len(x) // s["batch"]) * s["batch"] for x, _ in bench.train)
    return m.net, None, float("nan"), r["class_il"], "class_il", samples


def _kdrl(backend, size, world, run_dir, phase):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from kdrl import MTKDRL, DistillConfig, MultiTeacherDistiller, create_model

    s = SIZES[size]["kdrl"]
    feat, hidden = (6, [16]) if size == "tiny" else (64, [512, 512])
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (s["n"],), generator=g)
    x = torch.randn(s["n"], feat, generator=g) + 2.0 * torch.nn.functional.one_hot(y, feat).float()
    epochs = 1 if phase == "warmup" else s["epochs"]

    def run(ep, resume=False):
        torch.manual_seed(0)
        teachers = [create_model("digits_mlp", in_features=feat, num_classes=3, hidden=hidden).eval()
                    for _ in range(2)]
        strategy = MTKDRL(hidden=16)
        d = MultiTeacherDistiller(create_model("digits_mlp", in_features=feat, num_classes=3, hidden=hidden[-1:]),
                                  teachers, strategy, DistillConfig(epochs=ep, milestones=[]), backend=backend)
        loader = DataLoader(TensorDataset(x, y), batch_size=s["batch"] // world, shuffle=True)
        d.setup(x[:2])
        theta0 = _flat(d.student)
        hist = d.fit(loader, run_dir=run_dir, resume=resume, progress=False, force=resume)
        return d, theta0, hist

    if phase == "resume":  # constant lr (no milestones): 1 epoch, then the same run resumed to the full length
        run(epochs // 2)
        backend.wait()  # state.pt is written by the main process alone: the others must not read it before
        d, theta0, hist = run(epochs, resume=True)
    else:
        d, theta0, hist = run(epochs)
    last = hist["epochs"][-1]
    # per-process means over equal shards: their mean over ranks (taken by the caller) is the global one
    return d.student, theta0, float(last["train_loss"]), float(last["train_top1"]) / 100.0, "train_acc", \
        epochs * s["n"]


def _worker(args) -> None:
    import torch

    from commons.device import TrainingBackend

    torch.backends.cuda.matmul.allow_tf32 = False  # N-vs-1 comparisons need fp32 matmuls and convolutions
    torch.backends.cudnn.allow_tf32 = False
    backend = TrainingBackend(cpu=args.device == "cpu", use_accelerate=True)
    world = backend.num_processes
    work = Path(args.work)
    fn = {"walmafa": _walmafa, "streamdsgn": _streamdsgn, "clfreq": _clfreq, "kdrl": _kdrl}[args.worker]
    extra = (str(work / "stereo"),) if args.worker == "streamdsgn" else ()
    out: dict = {"world": world, "device": str(backend.device)}
    phases = ["warmup", "full"] + (["resume"] if args.resume else [])
    for phase in phases:
        run_dir = work / f"run_{args.worker}_w{world}_{phase}"
        if backend.is_main_process and run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        backend.wait()
        if backend.device.type == "cuda":
            torch.cuda.synchronize(backend.device)
            torch.cuda.reset_peak_memory_stats(backend.device)
        t0 = time.perf_counter()
        model, theta0, loss, metric, metric_name, samples = fn(backend, args.size, world, run_dir, phase, *extra)
        if backend.device.type == "cuda":
            torch.cuda.synchronize(backend.device)
        backend.wait()
        seconds = time.perf_counter() - t0
        flat = _flat(model)
        rows = backend.gather(torch.stack([flat.sum(), flat.abs().sum(), flat.square().sum()])[None].to(
            backend.device)).double().cpu()
        if backend.device.type == "cuda":
            mem = float(torch.cuda.max_memory_allocated(backend.device))
        else:
            import resource

            mem = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024.0
        mems = backend.gather(torch.tensor([[mem]], dtype=torch.float64, device=backend.device)).cpu()
        lossg = backend.gather(torch.tensor([[float(loss), float(metric)]], dtype=torch.float64,
                                            device=backend.device)).cpu()
        spread = float(((rows - rows[0]).abs() / rows[0].abs().clamp_min(1e-30)).max())
        if backend.is_main_process:
            torch.save({"theta": flat, "theta0": theta0}, work / f"theta_{args.worker}_w{world}_{phase}.pt")
            out[phase] = {"seconds": seconds, "samples": samples, "samples_per_s": samples / seconds,
                          "loss": float(lossg[:, 0].mean()), "metric": float(lossg[:, 1].mean()),
                          "metric_name": metric_name,
                          "replica_spread": spread, "peak_mem_bytes_max": float(mems.max()),
                          "peak_mem_bytes_per_rank": mems.flatten().tolist()}
    if backend.is_main_process:
        (work / f"worker_{args.worker}_w{world}.json").write_text(json.dumps(out))
    backend.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip interpreter teardown (gloo's exit-time destructors have aborted finished workers)


# ------------------------------------------------------------------------------------------------ launcher side
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _child_env(device: str, world: int) -> dict:
    env = {**os.environ, **NO_MULTICAST, "PYTHONFAULTHANDLER": "1"}
    src = [str(ROOT / "packages" / p / "src") for p in ("commons", *PACKAGES)]
    env["PYTHONPATH"] = os.pathsep.join(src + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    if device == "cpu":
        env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "1")
        env["CUDA_VISIBLE_DEVICES"] = ""
    else:
        visible = [v for v in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if v] or [str(i) for i in range(world)]
        env["CUDA_VISIBLE_DEVICES"] = ",".join(visible[:world])
        env.setdefault("OMP_NUM_THREADS", "4")
    return env


def _launch(pkg: str, world: int, args, work: Path, timeout: float) -> dict | None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(world), "--master_port",
           str(_free_port()), str(Path(__file__).resolve()), "--worker", pkg, "--work", str(work), "--size",
           args.size, "--device", args.device] + (["--resume"] if world > 1 else [])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_child_env(args.device, world))
        log, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        log, rc = f"timed out after {timeout:.0f} s\n" + str(e.stdout or "") + str(e.stderr or ""), 124
    res = work / f"worker_{pkg}_w{world}.json"
    if rc != 0 or not res.exists():
        (args.out / "multi_gpu" / f"log_{pkg}_w{world}.txt").write_text(log[-20000:] if isinstance(log, str) else "")
        print(f"{pkg} world {world}: failed (rc {rc}); log in multi_gpu/log_{pkg}_w{world}.txt", flush=True)
        return None
    return json.loads(res.read_text())


def _rel_dist(work: Path, pkg: str, a: str, b: str) -> float:
    import torch

    ta = torch.load(work / f"theta_{pkg}_{a}.pt", weights_only=True)
    tb = torch.load(work / f"theta_{pkg}_{b}.pt", weights_only=True)
    ref = tb["theta"] - tb["theta0"] if tb["theta0"] is not None else tb["theta"]
    return float((ta["theta"] - tb["theta"]).norm() / ref.norm().clamp_min(1e-30))


def _render_stereo(work: Path, size: str) -> None:
    from commons.data.synthetic_stereo import render_kitti_tracking

    if not (work / "stereo").exists():
        seqs, frames = (1, 12) if size == "tiny" else (2, 40)
        render_kitti_tracking(work / "stereo", num_sequences=seqs, frames_per_sequence=frames, image_size=(96, 320),
                              seed=0)


def check(args) -> dict:
    """Launch every package on ``args.gpus`` and on 1 device; write the results JSON; return it."""
    from commons.results import write_results

    outdir = args.out / "multi_gpu"
    outdir.mkdir(parents=True, exist_ok=True)
    if args.work is None:  # run folders, parameter snapshots and the stereo set stay out of --out (kept small)
        import tempfile

        work = Path(tempfile.mkdtemp(prefix="multi_gpu_check_"))
    else:
        work = args.work
    work.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget_s
    runs, checks = [], []
    for i, pkg in enumerate(args.packages):
        if pkg == "streamdsgn":
            _render_stereo(work, args.size)
        res = {}
        for world in (1, args.gpus):
            left = deadline - time.monotonic()
            share = left / (2 * (len(args.packages) - i) - (world > 1))
            if share < 5:
                print(f"{pkg} world {world}: skipped, budget spent", flush=True)
                continue
            res[world] = _launch(pkg, world, args, work, share)
        one, many = res.get(1), res.get(args.gpus)
        for world, r in ((1, one), (args.gpus, many)):
            if r is None:
                continue
            f = r["full"]
            row = {"table": "runs", "package": pkg, "world": world, "device": r["device"].split(":")[0],
                   "global_batch": SIZES[args.size][pkg]["batch"], "loss": f["loss"], "metric": f["metric_name"],
                   "value": f["metric"], "samples_per_s": f["samples_per_s"], "seconds": f["seconds"],
                   "peak_mem_mib": f["peak_mem_bytes_max"] / 2**20, "replica_spread": f["replica_spread"]}
            if world > 1 and one is not None:
                row["scaling"] = f["samples_per_s"] / one["full"]["samples_per_s"]
                row["rel_param_dist_vs_1"] = _rel_dist(work, pkg, f"w{world}_full", "w1_full")
                row["value_diff_vs_1"] = f["metric"] - one["full"]["metric"]
            if world > 1 and "resume" in r:
                row["resume_rel_param_dist"] = _rel_dist(work, pkg, f"w{world}_resume", f"w{world}_full")
            if not math.isfinite(row["loss"]):  # clfreq's train_continual reports no training loss
                del row["loss"]
            runs.append(row)
        if many is not None:
            checks.append({"table": "checks", "package": pkg, "check": "replicas identical", "value":
                           many["full"]["replica_spread"], "tolerance": TOL_REPLICA,
                           "ok": str(many["full"]["replica_spread"] <= TOL_REPLICA)})
            if "resume" in many:
                v = _rel_dist(work, pkg, f"w{args.gpus}_resume", f"w{args.gpus}_full")
                checks.append({"table": "checks", "package": pkg, "check": "resumed == uninterrupted", "value": v,
                               "tolerance": TOL_RESUME, "ok": str(v <= TOL_RESUME)})
        if one is not None and many is not None:
            kind, tol = TOL_METRIC[args.size][pkg]
            m1, mn = one["full"]["metric"], many["full"]["metric"]
            dv = abs(mn - m1) / (abs(m1) if kind == "rel" else 1.0)
            checks.append({"table": "checks", "package": pkg,
                           "check": f"N vs 1: {one['full']['metric_name']} ({kind} diff)", "value": dv,
                           "tolerance": tol, "ok": str(dv <= tol)})
        else:
            checks.append({"table": "checks", "package": pkg, "check": "launched", "value": float("nan"),
                           "tolerance": float("nan"), "ok": "False"})
    for c in checks:  # JSON has no inf/nan: write them as strings
        for k in ("value", "tolerance"):
            if not math.isfinite(c[k]):
                c[k] = str(c[k])
    settings = {"gpus": args.gpus, "device": args.device, "size": args.size, "sizes": SIZES[args.size],
                "packages": list(args.packages), "budget_s": args.budget_s, "env": NO_MULTICAST,
                "tf32": False, "launcher": "torch.distributed.run + commons.device.TrainingBackend (accelerate)",
                "tolerances": {"replica": TOL_REPLICA, "n_vs_1_metric": TOL_METRIC[args.size], "resume": TOL_RESUME}}
    write_results("multi_gpu", "multi_gpu", rows=runs + checks, settings=settings, root=args.out)
    if args.work is None:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return {"runs": runs, "checks": checks}


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="output folder (results under <out>/multi_gpu/)")
    p.add_argument("--gpus", type=int, default=2, help="processes of the data-parallel launch (default 2)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--packages", default=",".join(PACKAGES), help="comma-separated subset of " + ",".join(PACKAGES))
    p.add_argument("--size", choices=tuple(SIZES), default=None, help="job sizes (default: gpu on cuda, tiny on cpu)")
    p.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget for all launches (s)")
    p.add_argument("--save-digits", action="store_true",
                   help=f"write scikit-learn's digits to {DIGITS_NPZ.relative_to(ROOT)} (for a host without it)")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temporary folder)")
    p.add_argument("--worker", choices=PACKAGES, default=None, help=argparse.SUPPRESS)
    p.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is None and not args.save_digits:
        if args.out is None:
            p.error("--out is required")
        if args.gpus < 2:
            p.error(f"--gpus must be >= 2 (the 1-device run is always made), got {args.gpus}")
        if not args.budget_s > 0:
            p.error(f"--budget-s must be positive, got {args.budget_s}")
        pk = [s.strip() for s in args.packages.split(",") if s.strip()]
        bad = [s for s in pk if s not in PACKAGES]
        if bad or not pk:
            p.error(f"--packages must be a comma-separated subset of {','.join(PACKAGES)}, got {args.packages!r}")
        args.packages = pk
        if args.device == "cuda":
            import torch

            if torch.cuda.device_count() < args.gpus:
                p.error(f"--gpus {args.gpus} needs {args.gpus} CUDA devices, {torch.cuda.device_count()} visible")
    args.size = args.size or ("gpu" if args.device == "cuda" else "tiny")
    return args


def main(argv=None) -> int:
    args = _parse(argv)
    if args.save_digits:
        import numpy as np

        sys.path[:0] = [str(ROOT / "packages" / "commons" / "src")]
        from commons.data import load_digits_arrays

        images, labels = load_digits_arrays()
        DIGITS_NPZ.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(DIGITS_NPZ, images=images, labels=labels)
        print(f"wrote {DIGITS_NPZ}")
        return 0
    if args.worker is not None:
        _worker(args)
        return 0
    sys.path[:0] = [str(ROOT / "packages" / "commons" / "src")]
    res = check(args)
    for r in res["checks"]:
        print(f"{r['package']:>10}  {r['check']:<40} {r['value']!s:>12}  tol {r['tolerance']!s:<8} ok={r['ok']}")
    for r in res["runs"]:
        print(f"{r['package']:>10}  world {r['world']}  {r['samples_per_s']:.1f} samples/s  scaling "
              f"{r.get('scaling', 1.0):.2f}  peak {r['peak_mem_mib']:.0f} MiB")
    return 0 if all(c["ok"] == "True" for c in res["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
