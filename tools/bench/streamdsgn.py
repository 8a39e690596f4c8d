"""Benchmark (issue 25, item 5): does StreamDSGN's streaming machinery pay off at the latency it runs at?

On the synthetic stereo default (whose objects move fast enough that 100–300 ms of latency matter: the ``motion``
table gives per class the relative speeds and the BEV IoU a box keeps with its own position 1, 2, 3 frames later),
three methods, each with ``--seeds`` training seeds on the same rendered data and the same wall-clock training budget:

* ``StreamDSGN`` — feature-flow fusion, next-frame supervision, motion-consistency loss (tiny preset);
* ``baseline`` — the same detector without its streaming parts (no fusion, current-frame supervision, no MCL),
  whose latest output is copied to the query time (Li et al.'s plain streaming evaluation);
* ``baseline + Kalman`` — the baseline's boxes associated over time and extrapolated to the query time by a
  constant-velocity Kalman filter (:class:`streamdsgn.forecast.KalmanBoxForecaster`, Li et al.'s streaming baseline).

Each is scored offline (output vs its own frame), forecast (vs the next frame; the Kalman forecaster extrapolates
0.1 s) and streaming (stream simulated with the **measured** per-frame latency of this machine; each ground-truth
timestamp scored with the latest finished output), KITTI AP R40 moderate (devkit rules), on all clips of held-out
sequences. The trainings run as parallel processes sharing the GPU (``--jobs``); their evaluations run one at a time
(a file lock), so that each measured latency is that of the detector alone on the GPU. Then the per-frame latency of the
kitti() preset (320×1248) on the GPU in fp32 and bf16 (CUDA-synchronised, median over ``--latency-frames``).

    python tools/bench/streamdsgn.py --device cuda --budget-s 500 --out $OUT      # one H100, about 8.5 minutes
    python tools/bench/streamdsgn.py --quick                                       # CPU smoke (minutes)

Writes ``results/streamdsgn/streamdsgn.json`` (commons.results; a copy under ``--out/streamdsgn/``),
``--out/jobs.jsonl`` (one line per finished job with its full evaluation, appended as soon as the job ends, so a call
killed at its time limit keeps what finished) and ``--out/bench_log.txt`` (the jobs' logs).

``--resume-from FILE`` (a previous call's ``jobs.jsonl``): its finished (variant, seed) jobs are reused and only the
others run, with the same per-job training time as recorded there; a file written with other settings (data, batch,
learning rate, device) is refused, naming the setting. The reused lines are copied into the new ``jobs.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import time
from pathlib import Path

# this file is named like the package: drop its own folder from sys.path so `import streamdsgn` finds the library
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _kitti_latency(device: str, frames: int, warmup: int, dtypes: list[str], seed: int, preset: str = "kitti",
                   image_size: tuple = (320, 1248)) -> dict:
    import tempfile

    from commons.data.kitti_tracking import KittiTrackingStream
    from commons.data.synthetic_stereo import render_kitti_tracking
    from streamdsgn import StreamDSGN

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = render_kitti_tracking(
            Path(tmp) / "k", num_sequences=1, frames_per_sequence=4, image_size=image_size, seed=seed
        )
        ds = KittiTrackingStream(root, split="all")
        sample = ds[1]
        det = StreamDSGN(preset, device=device, seed=seed)
        out["parameters"] = sum(p.numel() for p in det.model.parameters())
        for dt in dtypes:
            det.inference_dtype = dt
            r = det.measure_latency(sample, frames=frames, warmup=warmup)
            out[dt] = {k: (v * 1000 if k.endswith("_s") else v) for k, v in r.items()}
            out[dt] = {k.replace("_s", "_ms"): v for k, v in out[dt].items()}
        if torch.cuda.is_available() and str(device).startswith("cuda"):
            out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def _load_train_tools():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "streamdsgn_train.py"
    spec = importlib.util.spec_from_file_location("streamdsgn_train_tool", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def motion_rows(val_root: Path) -> list[dict]:
    """Per class: relative speed of the labelled objects (m/s, BEV, w.r.t. the moving ego) and the BEV IoU a box keeps
    with its own position 100 / 200 / 300 ms later (what copying a detection that late scores at best)."""
    from commons.data.kitti_tracking import KittiTrackingStream
    from commons.metrics.detection import iou_bev

    ds = KittiTrackingStream(val_root, split="all", with_depth=False, frame_tags=("token",))
    tracks: dict = {}
    for i in range(len(ds)):
        s = ds[i]
        f = s["frames"]["token"]
        for b, lab, tid in zip(f["boxes"].numpy(), f["labels"].numpy(), f["track_ids"].numpy()):
            tracks.setdefault((s["seq"], int(tid)), {})[int(s["frame"])] = (b, int(lab))
    rows = []
    for c, name in enumerate(("Car", "Pedestrian", "Cyclist")):
        speed, ious = [], {1: [], 2: [], 3: []}
        for tr in tracks.values():
            for fr, (b, lab) in tr.items():
                if lab != c or not 2.0 <= b[0] < 40.4:
                    continue
                for k in (1, 2, 3):
                    if fr + k in tr:
                        b2 = tr[fr + k][0]
                        ious[k].append(float(iou_bev(b[None], b2[None])[0, 0]))
                        if k == 1:
                            speed.append(float(np.hypot(*(b2[:2] - b[:2]))) * 10.0)
        if not speed:
            continue
        sp = np.asarray(speed)
        row = {"table": "motion", "class": name, "boxes": len(sp), "speed_median_mps": round(float(np.median(sp)), 2),
               "speed_p90_mps": round(float(np.quantile(sp, 0.9)), 2)}
        for k in (1, 2, 3):
            a = np.asarray(ious[k])
            row[f"iou_after_{100 * k}ms"] = round(float(a.mean()), 3)
            row[f"frac_iou_below_0.7_{100 * k}ms"] = round(float((a < 0.7).mean()), 3)
        rows.append(row)
    return rows


def run_job(args) -> int:
    """One (variant, seed): train for --train-s seconds, evaluate; writes OUT/job_<variant>_<seed>.json."""
    from commons.data.kitti_tracking import KittiTrackingStream
    from commons.device import seed_everything
    from streamdsgn import StreamDSGN, StreamDSGNConfig
    from streamdsgn.forecast import KalmanBoxForecaster

    variant, seed = args.job.split(",")
    seed = int(seed)
    tools = _load_train_tools()
    out = Path(args.out)
    cfg = StreamDSGNConfig.tiny(baseline=variant == "baseline")
    data = Path(args.data_dir)
    train_ds = KittiTrackingStream(data / "train", split="all")
    val_ds = KittiTrackingStream(data / "val", split="all", with_depth=False)
    seed_everything(seed)
    det = StreamDSGN(cfg, device=args.device, seed=seed)
    if det.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    targs = argparse.Namespace(batch_size=args.batch_size, lr=args.lr, mixed_precision="no", seed=seed,
                               workers=args.job_workers, log_every=25, augment="none")
    curve: list = []
    with open(out / f"job_{variant}_{seed}.log", "w") as logf:
        info = tools.train_for(det, train_ds, args.train_s, targs, curve, logf)
    import fcntl

    # one evaluation at a time: the per-frame latency that drives the streaming simulation is measured without the
    # other jobs competing for the GPU (they have finished training and wait here)
    with open(out / "eval.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        res = det.evaluate(val_ds, latency="measured", seed=seed,
                           forecaster=KalmanBoxForecaster() if variant == "baseline" else None)
    keep = {"offline": res["offline"], "forecast": res["forecast"], "streaming": res["streaming"],
            "latency_s": res["latency_s"], "processed_fraction": res["processed_fraction"], "train": info,
            "final_loss": curve[-1]["total"] if curve else None}
    if "kalman" in res:
        keep["kalman"] = {k: res["kalman"][k] for k in ("forecast", "streaming")}
    (out / f"job_{variant}_{seed}.json").write_text(json.dumps(keep, default=float))
    return 0


METRICS = (("ap3d_r40_mod", "3d_R40"), ("apbev_r40_mod", "bev_R40"), ("apbev_r40_mod_loose", "bev_R40_loose"))


def aggregate(jobs: dict, seeds: list[int]) -> list[dict]:
    """Rows ``table=ap``: method, mode, class, mean and std over seeds of AP (3D, BEV, BEV loose), moderate."""
    rows = []
    methods = [("StreamDSGN", "streamdsgn", None), ("baseline (copy)", "baseline", None),
               ("baseline + Kalman", "baseline", "kalman")]
    for mode in ("offline", "forecast", "streaming"):
        for cls in ("Car", "Pedestrian", "Cyclist"):
            for name, variant, sub in methods:
                if sub == "kalman" and mode == "offline":
                    continue  # the forecaster changes nothing at the detection time
                vals = {m: [] for m, _ in METRICS}
                n_gt = None
                for seed in seeds:
                    j = jobs.get((variant, seed))
                    if j is None:
                        continue
                    r = (j[sub] if sub else j)[mode].get(cls)
                    if not isinstance(r, dict) or not r["num_gt"]["moderate"]:
                        continue
                    n_gt = r["num_gt"]["moderate"]
                    for m, key in METRICS:
                        vals[m].append(r[key]["moderate"])
                if n_gt is None:
                    continue
                row = {"table": "ap", "mode": mode, "class": cls, "method": name, "seeds": len(vals["ap3d_r40_mod"]),
                       "num_gt": n_gt}
                for m, _ in METRICS:
                    v = np.asarray(vals[m])
                    row[m] = round(float(v.mean()), 2)
                    row[m + "_std"] = round(float(v.std(ddof=1)) if len(v) > 1 else 0.0, 2)
                rows.append(row)
    return rows


#: settings a resumed job must share with the call that resumes it (the per-job training time is taken from the file)
RESUME_KEYS = ("batch_size", "lr", "train_sequences", "val_sequences", "frames", "device")


def read_jobs(path: Path, settings: dict) -> tuple[dict, float | None]:
    """Finished jobs ``{(variant, seed): job}`` and their training seconds from a ``jobs.jsonl`` file; lines cut by
    a killed call are skipped; a line written with other ``RESUME_KEYS`` settings raises ``SystemExit`` naming the
    key."""
    jobs, train_s = {}, None
    for line in Path(path).read_text().splitlines():
        try:
            rec = json.loads(line)
            key, job, their = (rec["variant"], int(rec["seed"])), rec["job"], rec["settings"]
        except (ValueError, KeyError, TypeError):
            continue  # a partial line
        for k in RESUME_KEYS:
            if their.get(k) != settings[k]:
                raise SystemExit(f"--resume-from {path}: job {key} was run with {k}={their.get(k)!r}, this call has "
                                 f"{settings[k]!r}")
        if train_s is not None and abs(float(their["train_s"]) - train_s) > 1e-6:
            raise SystemExit(f"--resume-from {path}: its jobs have different training times")
        jobs[key], train_s = job, float(their["train_s"])
    return jobs, train_s


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CPU smoke: tiny data and budget, jobs in sequence")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budget-s", type=float, default=540.0, help="total wall-clock budget")
    p.add_argument("--jobs", type=int, default=6, help="training processes at once (they share the GPU)")
    p.add_argument("--job-workers", type=int, default=1, help="DataLoader workers per job")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--train-sequences", type=int, default=48)
    p.add_argument("--val-sequences", type=int, default=2)
    p.add_argument("--frames", type=int, default=80)
    p.add_argument("--latency-frames", type=int, default=30)
    p.add_argument("--skip-kitti-latency", action="store_true")
    p.add_argument("--out", default="runs/bench/streamdsgn")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--resume-from", default=None, help="a previous call's jobs.jsonl: reuse its finished jobs")
    p.add_argument("--job", default=None, help=argparse.SUPPRESS)
    p.add_argument("--train-s", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.job:
        return run_job(args)
    t0 = time.perf_counter()
    if args.quick:
        args.train_sequences, args.val_sequences, args.frames, args.jobs = 2, 1, 24, 2
        args.batch_size, args.latency_frames, args.skip_kitti_latency = 2, 3, True
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    job_settings = {k: getattr(args, k) for k in RESUME_KEYS}
    jobs: dict = {}
    resumed_train_s = None
    if args.resume_from:
        if not Path(args.resume_from).is_file():
            raise SystemExit(f"--resume-from: {args.resume_from} is not a file (a previous call's jobs.jsonl)")
        done, resumed_train_s = read_jobs(Path(args.resume_from), job_settings)
        jobs = {k: v for k, v in done.items() if k[1] in args.seeds}
        print(f"resuming: {len(jobs)} finished job(s) from {args.resume_from}", flush=True)
    resumed = sorted(f"{v}_{s}" for v, s in jobs)
    jobs_file = out / "jobs.jsonl"
    if not (args.resume_from and Path(args.resume_from).resolve() == jobs_file.resolve()):
        jobs_file.write_text("")
    elif jobs_file.read_bytes()[-1:] not in (b"", b"\n"):
        with open(jobs_file, "a") as f:  # end the line a killed call left cut, so the next one parses
            f.write("\n")

    def record(key: tuple, job: dict, train_seconds: float) -> None:
        line = json.dumps({"variant": key[0], "seed": key[1], "settings": {**job_settings, "train_s": train_seconds},
                           "job": job}, default=float)
        with open(jobs_file, "a") as f:
            f.write(line + "\n")

    if jobs and jobs_file.stat().st_size == 0:
        for key, job in sorted(jobs.items()):
            record(key, job, resumed_train_s)
    import shutil
    import subprocess
    import tempfile

    from commons.data.synthetic_stereo import render_kitti_tracking

    data = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="streamdsgn_bench_"))
    work = Path(tempfile.mkdtemp(prefix="streamdsgn_jobs_"))  # per-job files; --out gets 3 files (few come back)
    workers = max(1, (os.cpu_count() or 2) - 2)
    render_kitti_tracking(data / "train", num_sequences=args.train_sequences, frames_per_sequence=args.frames,
                          image_size=(96, 320), seed=0, workers=workers)
    render_kitti_tracking(data / "val", num_sequences=args.val_sequences, frames_per_sequence=args.frames,
                          image_size=(96, 320), seed=1000, workers=workers)
    t_render = time.perf_counter() - t0
    print(f"[{t_render:6.1f} s] rendered {args.train_sequences} + {args.val_sequences} sequences", flush=True)
    motion = motion_rows(data / "val")
    todo = [(v, s) for s in args.seeds for v in ("streamdsgn", "baseline") if (v, s) not in jobs]
    rounds = math.ceil(len(todo) / max(1, args.jobs))
    n_val = args.val_sequences * args.frames
    # evaluations run one at a time (a lock): ~40 ms per frame on a GPU plus scoring, per job of a round
    per_eval = 10.0 + n_val * (0.06 if args.device.startswith("cuda") else 0.4)
    eval_s = per_eval * min(len(todo), max(1, args.jobs))
    lat_s = 10.0 if args.skip_kitti_latency else 50.0
    train_s = (args.budget_s - (time.perf_counter() - t0) - lat_s - 20.0) / max(1, rounds) - eval_s - 15.0
    if resumed_train_s is not None:  # the same training time as the jobs being completed
        if todo and train_s < resumed_train_s:
            raise SystemExit(f"--budget-s {args.budget_s} leaves {train_s:.0f} s of training per job; the resumed "
                             f"jobs trained {resumed_train_s:.0f} s each")
        train_s = resumed_train_s
    if todo and train_s < 5:
        raise SystemExit(f"--budget-s {args.budget_s} leaves {train_s:.0f} s of training per job")
    print(f"[{time.perf_counter() - t0:6.1f} s] {len(todo)} jobs, {args.jobs} at once, {train_s:.0f} s of training "
          f"each", flush=True)
    threads = max(1, (os.cpu_count() or 2) // (2 * max(1, args.jobs)))  # main + 1 loader worker per job
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    for r in range(rounds):
        batch = todo[r * args.jobs:(r + 1) * args.jobs]
        procs = []
        for v, s in batch:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--job", f"{v},{s}", "--data-dir", str(data),
                   "--out", str(work), "--train-s", str(train_s), "--device", args.device, "--batch-size",
                   str(args.batch_size), "--lr", str(args.lr), "--job-workers", str(args.job_workers)]
            log = open(work / f"job_{v}_{s}.out", "w")  # noqa: SIM115 (the child writes it; closed after wait)
            procs.append(((v, s), subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log))
        deadline = t0 + args.budget_s - lat_s - 10.0
        while procs:  # each job's result is recorded as soon as it ends (a killed call keeps the finished ones)
            for item in list(procs):
                key, proc, log = item
                rc = proc.poll()
                if rc is None and time.perf_counter() < deadline:
                    continue
                if rc is None:  # never run past the budget: a job still running then is stopped, reported missing
                    proc.kill()
                    rc = proc.wait()
                log.close()
                procs.remove(item)
                path = work / f"job_{key[0]}_{key[1]}.json"
                if rc == 0 and path.is_file():
                    jobs[key] = json.loads(path.read_text())
                    record(key, jobs[key], train_s)
                else:
                    print(f"job {key} failed (rc {rc}); see bench_log.txt", flush=True)
            if procs:
                time.sleep(0.5)
        print(f"[{time.perf_counter() - t0:6.1f} s] round {r + 1}/{rounds} done", flush=True)
    rows = aggregate(jobs, args.seeds) + motion
    lat_rows, lat = [], {}
    for (v, s), j in sorted(jobs.items()):
        lat_rows.append({"table": "runs", "method": v, "seed": s, "steps": j["train"]["steps"],
                         "train_s": round(j["train"]["seconds"], 1),
                         "latency_ms_median": round(1000 * j["latency_s"]["median"], 1),
                         "processed_fraction": round(j["processed_fraction"], 3)})
    on_gpu = torch.cuda.is_available() and args.device.startswith("cuda")
    plan = [("kitti", (320, 1248), ["fp32", "bf16"]), ("tiny", (96, 320), ["fp32"])]
    if args.skip_kitti_latency:
        plan = plan[1:]
    dev_name = torch.cuda.get_device_name() if on_gpu else f"CPU ({platform.processor() or platform.machine()})"
    for preset, size, dtypes in plan:
        if preset == "kitti" and t0 + args.budget_s - time.perf_counter() < 40.0:
            print("skipping the kitti() latency: budget spent", flush=True)
            continue
        lat[preset] = _kitti_latency(args.device, args.latency_frames, 10 if on_gpu else 1, dtypes, 0, preset, size)
        for dt in dtypes:
            lat_rows.append({"table": "latency", "preset": f"{preset} ({size[0]}x{size[1]})", "precision": dt,
                             "median_ms": round(lat[preset][dt]["median_ms"], 1),
                             "p90_ms": round(lat[preset][dt]["p90_ms"], 1), "device": dev_name})
    rows += lat_rows
    settings = {"command": "python tools/bench/streamdsgn.py " + " ".join(sys.argv[1:] if argv is None else argv),
                "quick_cpu_smoke": bool(args.quick), "device": args.device, "seeds": args.seeds,
                "budget_s": args.budget_s, "train_s_per_job": round(train_s, 1), "jobs_at_once": args.jobs,
                "resumed_jobs": resumed,
                "batch_size": args.batch_size, "peak_lr": args.lr, "preset": "tiny",
                "data": {"train": f"{args.train_sequences} sequences x {args.frames} frames, seed 0, 96x320",
                         "held_out": f"{args.val_sequences} sequences x {args.frames} frames, seed 1000, all clips"},
                "metric": "KITTI AP R40 moderate (percent), devkit rules; streaming at the measured latency",
                "kitti_latency": lat}
    from commons.results import write_results

    path = write_results("streamdsgn", "streamdsgn", rows, settings)
    (out / "streamdsgn").mkdir(exist_ok=True)
    shutil.copy(path, out / "streamdsgn" / "streamdsgn.json")
    with open(out / "bench_log.txt", "w") as f:
        for name in sorted(p.name for p in work.iterdir() if p.suffix in (".out", ".log")):
            f.write(f"===== {name}\n" + (work / name).read_text(errors="replace")[-20000:] + "\n")
    shutil.rmtree(work, ignore_errors=True)
    if not args.data_dir:
        shutil.rmtree(data, ignore_errors=True)
    print(f"[{time.perf_counter() - t0:6.1f} s] wrote {path}", flush=True)
    for r in rows:
        if r["table"] == "ap" and r["mode"] == "streaming":
            print(json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
