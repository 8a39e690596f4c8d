"""Train the shipped StreamDSGN detector on the synthetic stereo driving default, within a wall-clock budget.

One command, one GPU (also runs on a CPU with a tiny budget, for testing)::

    python tools/streamdsgn_train.py --out DIR --budget-s 450 [--seed 0] [--preset tiny] [--batch-size 8]

What it does, all inside ``--budget-s`` seconds (rendering, training, evaluation and writing):

1. renders ``--train-sequences`` synthetic stereo sequences (``commons.data.synthetic_stereo``, KITTI tracking layout,
   seed ``--seed``) and ``--val-sequences`` held-out sequences (seed ``--seed + 1000``: other scenes, objects,
   textures) in parallel processes, at the preset's image size;
2. trains StreamDSGN (next-frame supervision, feature-flow fusion with the previous frame, motion-consistency loss,
   depth loss on the token frame; ``--baseline`` trains the non-streaming ablation instead) with samples decoded and
   collated by ``DataLoader`` workers, AdamW and the released one-cycle schedule (``engine.one_cycle``) laid over the
   *time* budget (the learning rate follows the elapsed fraction of the training time, so the schedule completes
   whatever the speed of the machine);
3. evaluates offline / forecast / streaming KITTI AP (R40, moderate, devkit rules) on every clip of the held-out
   sequences, with the measured per-frame latency;
4. writes into ``--out``: ``streamdsgn.safetensors`` (weights), ``streamdsgn.json`` (model card: preset and config,
   data, steps, seed, command, AP, training curve), ``streamdsgn/streamdsgn_train.json`` (per mode / class AP rows
   in the ``commons.results`` format, for ``results/streamdsgn/``),
   ``train_curve.png``, ``val_bev.png`` and ``train_log.txt``.

The package loads the weights from ``packages/streamdsgn/src/streamdsgn/weights/`` (copy ``streamdsgn.safetensors``
and ``streamdsgn.json`` there).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

log = logging.getLogger("streamdsgn_train")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--budget-s", type=float, default=450.0, help="total wall-clock budget in seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", choices=["tiny", "kitti"], default="tiny")
    p.add_argument("--config-kw", default="{}", help="JSON overrides of StreamDSGNConfig")
    p.add_argument("--baseline", action="store_true", help="train the non-streaming ablation instead")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--train-sequences", type=int, default=96)
    p.add_argument("--val-sequences", type=int, default=4)
    p.add_argument("--frames", type=int, default=80, help="frames per sequence (10 Hz; 40-frame clips)")
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader / render processes (default: cores - 2; 0: load in the training process)")
    p.add_argument("--device", default="auto")
    p.add_argument("--mixed-precision", choices=["no", "bf16"], default="no")
    p.add_argument("--eval-reserve-s", type=float, default=None,
                   help="seconds kept for evaluation and writing (default: estimated from the held-out frames)")
    p.add_argument("--augment", choices=["none", "flip-scale", "all"], default="none",
                   help="streamdsgn.augment.StereoAugment in the loader workers: flip with stereo swap + scaling/crop, "
                        "'all' adds the stereo copy-paste database")
    p.add_argument("--data", default=None, help="folder for the rendered data (default: a temporary folder)")
    p.add_argument("--log-every", type=int, default=10)
    args = p.parse_args(argv)
    if args.budget_s <= 0:
        p.error(f"--budget-s must be positive, got {args.budget_s}")
    for name in ("batch_size", "train_sequences", "val_sequences", "frames", "log_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.frames < 8:
        p.error("--frames must be >= 8 (two clips of at least 4 frames: token, prev, prev2, next)")
    if not args.lr > 0:
        p.error(f"--lr must be positive, got {args.lr}")
    try:
        args.config_kw = json.loads(args.config_kw)
        if not isinstance(args.config_kw, dict):
            raise ValueError
    except ValueError:
        p.error(f"--config-kw must be a JSON object, got {args.config_kw!r}")
    return args


def render(root: Path, sequences: int, frames: int, image_size: tuple, seed: int, workers: int) -> Path:
    from commons.data.synthetic_stereo import render_kitti_tracking

    return render_kitti_tracking(root, num_sequences=sequences, frames_per_sequence=frames,
                                 image_size=tuple(image_size), seed=seed, workers=max(1, workers))


def train_for(det, train_ds, seconds: float, args, curve: list, logf) -> dict:
    """Train ``det`` for ``seconds`` of wall time; returns ``{"steps", "samples", "seconds"}``."""
    from commons.device import TrainingBackend
    from streamdsgn.data import SupervisedSamples, make_loader
    from streamdsgn.training import TrainConfig, one_cycle, train_step

    tc = TrainConfig(batch_size=args.batch_size, lr=args.lr, mixed_precision=args.mixed_precision, seed=args.seed)
    backend = TrainingBackend(mixed_precision=args.mixed_precision, cpu=det.device.type == "cpu", device=det.device,
                              use_accelerate=False)
    params = [p for p in det.model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=tc.lr / tc.div_factor, betas=(tc.moms[0], 0.99),
                              weight_decay=tc.weight_decay)
    model, optim = backend.prepare(det.model, optim)
    sup = "token" if det.config.baseline else "next"
    transform = None
    if args.augment != "none":
        from streamdsgn.augment import CopyPasteDatabase, StereoAugment

        db = CopyPasteDatabase(train_ds) if args.augment == "all" else None
        transform = StereoAugment(db, p_paste=0.5 if db is not None else 0.0)
    view = SupervisedSamples(train_ds, sup, transform=transform, seed=args.seed)
    workers = _workers_for_shm(args.workers, args.batch_size, view, logf)
    loader = make_loader(view, batch_size=args.batch_size, num_workers=workers, seed=args.seed, num_samples=10 ** 9,
                         pin_memory=det.device.type == "cuda")
    model.train()
    t0 = time.perf_counter()
    step, res = 0, 1000000
    wait_s = 0.0
    while True:
        try:
            t_fetch = time.perf_counter()
            for batch in loader:
                wait_s += time.perf_counter() - t_fetch
                el = time.perf_counter() - t0
                frac = el / seconds
                if frac >= 1.0:
                    break
                lr, beta1 = one_cycle(int(frac * res), res, tc.lr, tc.div_factor, tc.pct_start, tc.moms)
                for g in optim.param_groups:
                    g["lr"], g["betas"] = lr, (beta1, g["betas"][1])
                parts = train_step(det, model, optim, backend, batch, tc)
                step += 1
                if not math.isfinite(parts["total"]):
                    raise FloatingPointError(f"non-finite loss at step {step}: {parts}")
                if step % args.log_every == 0 or step == 1:
                    row = {"step": step, "seconds": round(time.perf_counter() - t0, 2), "lr": lr,
                           "data_wait_s": round(wait_s, 2), **{k: round(v, 5) for k, v in parts.items()}}
                    curve.append(row)
                    print(json.dumps(row), file=logf, flush=True)
                t_fetch = time.perf_counter()
            break
        except RuntimeError as err:  # a DataLoader worker died (e.g. shared memory): go on loading in-process
            if workers == 0 or "DataLoader worker" not in str(err):
                raise
            print(f"DataLoader workers failed ({err}); continuing with num_workers=0", file=logf, flush=True)
            workers = 0
            loader = make_loader(view, batch_size=args.batch_size, num_workers=0, seed=args.seed + step,
                                 num_samples=10 ** 9)
    det.model = backend.unwrap(model)
    det.model.eval()
    del loader
    return {"steps": step, "samples": step * args.batch_size, "seconds": time.perf_counter() - t0,
            "data_wait_s": wait_s}


def _workers_for_shm(workers: int, batch_size: int, view, logf) -> int:
    """Cap the loader workers so that the batches in flight (2 per worker) fit in half of the free ``/dev/shm``,
    where worker processes hand their tensors over (a container's default 64 MB would not hold 28 batches)."""
    if workers == 0:
        return 0
    try:
        free = shutil.disk_usage("/dev/shm").free
    except OSError:
        return workers
    s = view[0]
    per_sample = sum(t.numel() * t.element_size() for f in s["frames"].values() if f is not None
                     for t in f.values() if isinstance(t, torch.Tensor))
    fit = int(0.5 * free / max(1, 2 * batch_size * per_sample))
    if fit < workers:
        print(f"/dev/shm has {free / 2**20:.0f} MiB free: {fit} loader workers instead of {workers}", file=logf,
              flush=True)
    return max(0, min(workers, fit))


def ap_rows(res: dict) -> list[dict]:
    rows = []
    for mode in ("offline", "forecast", "streaming"):
        for cls in ("Car", "Pedestrian", "Cyclist"):
            r = res[mode].get(cls)
            if not isinstance(r, dict) or not r["num_gt"]["moderate"]:
                continue  # only classes present in the held-out frames
            rows.append({"table": "ap", "mode": mode, "class": cls, "num_gt_moderate": r["num_gt"]["moderate"],
                         "ap3d_r40_mod": round(r["3d_R40"]["moderate"], 3),
                         "apbev_r40_mod": round(r["bev_R40"]["moderate"], 3),
                         "ap3d_r40_mod_loose": round(r["3d_R40_loose"]["moderate"], 3),
                         "apbev_r40_mod_loose": round(r["bev_R40_loose"]["moderate"], 3)})
    return rows


def plot_curve(path: Path, curve: list) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 3.6))
    steps = [r["step"] for r in curve]
    for key in ("total", "cls", "loc", "iou", "depth", "mcl", "dir"):
        if curve and key in curve[0]:
            ax[0].plot(steps, [r[key] for r in curve], label=key, lw=1)
    ax[0].set_yscale("log")
    ax[0].set_xlabel("step")
    ax[0].legend(fontsize=7, ncol=2)
    ax[0].set_title("training losses")
    ax[1].plot(steps, [r["lr"] for r in curve])
    ax[1].set_xlabel("step")
    ax[1].set_title("learning rate (one-cycle over the time budget)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_val(path: Path, det, val_ds) -> None:
    from streamdsgn.viz import plot_bev

    scene = list(val_ds.scenes)[0]
    idx = list(val_ds.clip_frames(scene))
    det.reset()
    panels = []
    n = min(30, len(idx))
    picks = {max(0, n * j // 3 - 1) for j in (1, 2, 3)}  # frames 9, 19, 29 of a 40-frame clip; fewer on short clips
    for k, i in enumerate(idx[:n]):
        s = val_ds[int(i)]
        d = det.detect_sample(s)
        if k in picks and s["frames"].get("next") is not None:
            nxt = s["frames"]["next"]
            panels.append({"title": f"{scene} frame {s['frame']}: boxes for t+1",
                           "det": d, "gt": {"boxes": nxt["boxes"].numpy(), "labels": nxt["labels"].numpy()}})
    plot_bev(path, panels, det.config.point_cloud_range, min_score=0.3,
             title="held-out clip: detections (score >= 0.3; colour = class, width = score) vs next-frame GT (grey)")


def main(argv=None) -> int:
    t_start = time.perf_counter()
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logf = open(out / "train_log.txt", "w")  # noqa: SIM115 (closed at the end; lines are flushed as written)
    cores = os.cpu_count() or 2
    args.workers = max(1, cores - 2) if args.workers is None else max(0, args.workers)

    def say(msg: str) -> None:
        line = f"[{time.perf_counter() - t_start:7.1f} s] {msg}"
        print(line, flush=True)
        print(line, file=logf, flush=True)

    from commons.data.kitti_tracking import KittiTrackingStream
    from commons.device import seed_everything
    from streamdsgn import StreamDSGN, StreamDSGNConfig

    cfg = getattr(StreamDSGNConfig, args.preset)(**{**args.config_kw, "baseline": args.baseline})
    data_root = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="streamdsgn_synth_"))
    say(f"rendering {args.train_sequences} + {args.val_sequences} sequences x {args.frames} frames at "
        f"{cfg.image_size} with {args.workers} processes into {data_root}")
    train_root = render(data_root / "train", args.train_sequences, args.frames, cfg.image_size, args.seed,
                        args.workers)
    val_root = render(data_root / "val", args.val_sequences, args.frames, cfg.image_size, args.seed + 1000,
                      args.workers)
    t_render = time.perf_counter() - t_start
    say(f"rendered in {t_render:.1f} s")
    train_ds = KittiTrackingStream(train_root, split="all")
    val_ds = KittiTrackingStream(val_root, split="all", with_depth=False)

    seed_everything(args.seed)
    det = StreamDSGN(cfg, device=args.device, seed=args.seed)
    on_gpu = det.device.type == "cuda"
    if on_gpu:
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    n_val = len(val_ds)
    reserve = args.eval_reserve_s
    if reserve is None:  # detection ~40 ms/frame on a GPU (0.15-0.5 s on a CPU), twice for streaming reruns, + scoring
        reserve = 15.0 + n_val * (0.12 if on_gpu else 0.6)
    train_s = args.budget_s - (time.perf_counter() - t_start) - reserve
    if train_s <= 0:
        raise SystemExit(f"--budget-s {args.budget_s} leaves no training time after rendering "
                         f"({t_render:.0f} s) and the evaluation reserve ({reserve:.0f} s)")
    say(f"training {'baseline' if cfg.baseline else 'StreamDSGN'} ({args.preset}, "
        f"{sum(p.numel() for p in det.model.parameters()):,} parameters) on {det.device} for {train_s:.0f} s, "
        f"batch {args.batch_size}, peak lr {args.lr}, {len(train_ds)} training samples")
    curve: list = []
    info = train_for(det, train_ds, train_s, args, curve, logf)
    say(f"trained {info['steps']} steps ({info['samples']} samples) in {info['seconds']:.0f} s "
        f"(waited {info['data_wait_s']:.0f} s for data); final loss {curve[-1]['total'] if curve else float('nan')}")

    res = det.evaluate(val_ds, latency="measured", seed=args.seed)
    say(f"evaluated {res['frames']} held-out frames; latency median {res['latency_s']['median'] * 1000:.1f} ms; "
        f"summary {json.dumps(res['summary'])}")
    rows = ap_rows(res)
    for r in rows:
        say(json.dumps(r))

    from streamdsgn import __version__

    gpu = torch.cuda.get_device_name(det.device) if on_gpu else None
    card = {
        "model": "streamdsgn",
        "version": __version__,
        "preset": args.preset,
        "variant": "baseline (no fusion, current-frame supervision, no MCL)" if cfg.baseline else "StreamDSGN",
        "model_config": cfg.to_dict(),
        "parameters": sum(p.numel() for p in det.model.parameters()),
        "data": {"source": "commons.data.synthetic_stereo.render_kitti_tracking", "image_size": list(cfg.image_size),
                 "train": {"sequences": args.train_sequences, "frames_per_sequence": args.frames, "seed": args.seed,
                           "samples": len(train_ds)},
                 "held_out": {"sequences": args.val_sequences, "frames_per_sequence": args.frames,
                              "seed": args.seed + 1000, "frames": res["frames"],
                              "split": "all 40-frame clips of the held-out sequences"}},
        "training": {"steps": info["steps"], "samples": info["samples"], "batch_size": args.batch_size,
                     "seconds": round(info["seconds"], 1), "data_wait_s": round(info["data_wait_s"], 1),
                     "optimizer": "AdamW (wd 0.01, betas (0.95..0.85, 0.99)), one-cycle over the time budget, "
                                  "grad clip 10", "peak_lr": args.lr, "mixed_precision": args.mixed_precision,
                     "seed": args.seed, "device": str(det.device), "gpu": gpu, "torch": torch.__version__,
                     "augmentation": args.augment},
        "command": "python tools/streamdsgn_train.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "evaluation": {"metric": "KITTI AP R40 at moderate difficulty, percent (devkit rules, commons kitti_eval); "
                                 "3D IoU 0.7 Car / 0.5 Ped, Cyc; loose: 0.5 / 0.25",
                       "latency_s": res["latency_s"], "processed_fraction": res["processed_fraction"],
                       "summary_3d_r40_moderate": res["summary"], "rows": rows,
                       "streaming_ap_all_gt_bev": res.get("streaming_ap_all_gt")},
        "training_curve": curve,
        "budget_s": args.budget_s,
    }
    det.save_weights(out / "streamdsgn.safetensors", card)  # + streamdsgn.json, the model card
    from commons.results import write_results

    # results/streamdsgn/streamdsgn_train.json format (commons.results): the lead copies it into the repository
    write_results("streamdsgn", "streamdsgn_train", rows,
                  {k: v for k, v in card.items() if k not in ("training_curve", "evaluation", "model_config")},
                  root=out, extra={"summary": res["summary"], "latency_s": res["latency_s"]})
    try:
        plot_curve(out / "train_curve.png", curve)
        plot_val(out / "val_bev.png", det, val_ds)
    except Exception as err:  # plots are a convenience; never lose the weights for them
        say(f"plotting failed: {err!r}")
    if not args.data:
        shutil.rmtree(data_root, ignore_errors=True)
    say(f"done in {time.perf_counter() - t_start:.0f} s of a {args.budget_s:.0f} s budget; "
        f"wrote {sorted(os.listdir(out))}")
    logf.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
