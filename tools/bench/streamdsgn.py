"""Benchmark: StreamDSGN vs its non-streaming baseline on the embedded synthetic stereo default, plus latency.

In one run with the same seeds and training budget: the tiny StreamDSGN (feature-flow fusion, next-frame supervision,
motion-consistency loss) and the baseline (none of the three) are trained on the even 40-frame clips and evaluated on
the odd clips: offline AP (each output vs its own frame), forecast AP (vs the next frame) and streaming AP (each
ground-truth timestamp scored with the latest finished output) at the measured latency of this machine and at a given
latency (default 60 ms, a real-time GPU deployment at 10 Hz). Then the per-frame latency of the kitti() preset
(320×1248, 64 planes, 256×288×12 voxels) on the CPU (a few frames) and, with ``--device cuda``, on the GPU in fp32 and
bf16 autocast (CUDA-synchronised, median over ``--latency-frames`` frames after warm-up).

    python tools/bench/streamdsgn.py --quick                   # CPU minutes
    python tools/bench/streamdsgn.py --device cuda --epochs 6  # on a GPU

Writes results.json, results.md, ap.png and bev.png into --out (default runs/bench/streamdsgn).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import platform
import sys
import time
from pathlib import Path

# this file is named like the package: drop its own folder from sys.path so `import streamdsgn` finds the library
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _kitti_latency(device: str, frames: int, warmup: int, dtypes: list[str], seed: int) -> dict:
    import tempfile

    from commons.data.kitti_tracking import KittiTrackingStream
    from commons.data.synthetic_stereo import render_kitti_tracking
    from streamdsgn import StreamDSGN

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = render_kitti_tracking(
            Path(tmp) / "k", num_sequences=1, frames_per_sequence=4, image_size=(320, 1248), seed=seed
        )
        ds = KittiTrackingStream(root, split="all")
        sample = ds[1]
        det = StreamDSGN("kitti", device=device, seed=seed)
        out["parameters"] = sum(p.numel() for p in det.model.parameters())
        for dt in dtypes:
            det.inference_dtype = dt
            r = det.measure_latency(sample, frames=frames, warmup=warmup)
            out[dt] = {k: (v * 1000 if k.endswith("_s") else v) for k, v in r.items()}
            out[dt] = {k.replace("_s", "_ms"): v for k, v in out[dt].items()}
        if torch.cuda.is_available() and str(device).startswith("cuda"):
            out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CPU-minutes budget (1 seed, small sample budget)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seeds", default="0")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--samples-per-epoch", type=int, default=None)
    p.add_argument("--num-sequences", type=int, default=4)
    p.add_argument("--frames", type=int, default=80)
    p.add_argument("--given-latency", type=float, default=0.06, help="seconds, for the second streaming AP")
    p.add_argument("--latency-frames", type=int, default=30)
    p.add_argument("--cpu-kitti-frames", type=int, default=3, help="kitti()-preset frames timed on the CPU (0: skip)")
    p.add_argument("--skip-ablation", action="store_true", help="only the latency part")
    p.add_argument("--out", default="runs/bench/streamdsgn")
    p.add_argument("--data-dir", default=None, help="where to render the synthetic default (default: OUT/data)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from commons.data.kitti_tracking import KittiTrackingStream
    from commons.data.synthetic_stereo import render_kitti_tracking
    from commons.io import save_json
    from commons.reporting import markdown_table
    from streamdsgn import StreamDSGN, TrainConfig
    from streamdsgn.viz import plot_bev

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    epochs = args.epochs or (2 if args.quick else 8)
    spe = args.samples_per_epoch or (60 if args.quick else None)
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "device": args.device,
        "epochs": epochs,
        "samples_per_epoch": spe,
        "seeds": seeds,
        "given_latency_s": args.given_latency,
        "variants": {},
    }
    if args.device.startswith("cuda") and torch.cuda.is_available():
        results["gpu"] = torch.cuda.get_device_name()
    # latency of the paper-sized model
    lat = {}
    dev = args.device
    if dev.startswith("cuda") and torch.cuda.is_available():
        lat["cuda"] = _kitti_latency(dev, args.latency_frames, 10, ["fp32", "bf16"], 0)
    if args.cpu_kitti_frames > 0:
        lat["cpu"] = _kitti_latency("cpu", args.cpu_kitti_frames, 1, ["fp32"], 0)
    results["kitti_latency"] = lat
    save_json(out / "results.json", results)  # partial: the latency part
    rows = []
    if not args.skip_ablation:
        root = render_kitti_tracking(
            Path(args.data_dir) if args.data_dir else out / "data",
            num_sequences=args.num_sequences,
            frames_per_sequence=args.frames,
            image_size=(96, 320),
            seed=0,
        )
        train = KittiTrackingStream(root, split="train", cache_frames=True)
        val = KittiTrackingStream(root, split="val", cache_frames=True)
        results["data"] = {"root": str(root), "train_samples": len(train), "val_samples": len(val)}
        first_dets = {}
        for variant in ("streamdsgn", "baseline"):
            per_seed = []
            for seed in seeds:
                det = StreamDSGN("tiny", device=args.device, seed=seed, baseline=variant == "baseline")
                t0 = time.perf_counter()
                hist = det.fit(
                    train, TrainConfig(epochs=epochs, samples_per_epoch=spe, seed=seed), progress=not args.no_progress
                )
                train_s = time.perf_counter() - t0
                measured = det.evaluate(val, latency="measured", seed=seed)
                given = det.evaluate(val, latency=args.given_latency, seed=seed)
                per_seed.append(
                    {
                        "seed": seed,
                        "train_s": train_s,
                        "epoch_loss": hist["epoch_loss"],
                        "measured": {k: measured[k] for k in ("summary", "latency_s", "processed_fraction")},
                        "given": {k: given[k] for k in ("summary", "processed_fraction")},
                        "full_given": {k: given[k] for k in ("offline", "forecast", "streaming")},
                    }
                )
                if seed == seeds[0]:
                    scene = list(val.scenes)[0]
                    idx = list(val.clip_frames(scene))[:12]
                    det.reset()
                    first_dets[variant] = (scene, [(val[int(i)], det.detect_sample(val[int(i)])) for i in idx])
            results["variants"][variant] = per_seed
            save_json(out / "results.json", results)  # partial: after each variant

            def mean(key, mode, src="given", per_seed=per_seed):
                return float(np.mean([r[src]["summary"][mode][key] for r in per_seed]))

            def loose(cls, mode, per_seed=per_seed):
                vals = [r["full_given"][mode][cls]["bev_R40_loose"]["moderate"] for r in per_seed]
                return float(np.mean(vals))

            for cls in ("mean", "Car", "Pedestrian", "Cyclist"):
                try:
                    row = {"variant": variant, "class": cls,
                           "offline 3D AP": mean(cls, "offline"), "forecast 3D AP": mean(cls, "forecast"),
                           f"sAP @ {args.given_latency * 1000:.0f} ms": mean(cls, "streaming"),
                           "sAP @ measured": mean(cls, "streaming", "measured")}
                except KeyError:
                    continue
                if cls != "mean":  # BEV AP at the loose IoU (Car 0.5, Ped/Cyc 0.25), given latency
                    row.update({"offline BEV AP loose": loose(cls, "offline"),
                                f"sAP BEV loose @ {args.given_latency * 1000:.0f} ms": loose(cls, "streaming")})
                rows.append(row)
        results["table"] = rows
        # plots
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.2))
        keys = ["offline 3D AP", "forecast 3D AP", f"sAP @ {args.given_latency * 1000:.0f} ms", "sAP @ measured"]
        mrows = {r["variant"]: r for r in rows if r["class"] == "mean"}
        xs = np.arange(len(keys))
        for k, (v, r) in enumerate(mrows.items()):
            ax.bar(xs + 0.38 * k, [r[key] for key in keys], 0.38, label=v)
        ax.set_xticks(xs + 0.19, keys, fontsize=7)
        ax.set_ylabel("mean 3D AP R40 (moderate)")
        ax.legend(fontsize=7)
        ax.set_title("tiny StreamDSGN vs baseline on the synthetic default", fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "ap.png", dpi=110)
        plt.close(fig)
        panels = []
        for variant, (scene, pairs) in first_dets.items():
            for k in (5, 10):
                if k < len(pairs):
                    s, d = pairs[k]
                    tgt = s["frames"]["next"] if variant == "streamdsgn" else s["frames"]["token"]
                    if tgt is None:
                        continue
                    panels.append(
                        {
                            "title": f"{variant} {scene} f{s['frame']} vs "
                            f"{'next' if variant == 'streamdsgn' else 'same'} frame GT",
                            "det": d,
                            "gt": {"boxes": tgt["boxes"].numpy(), "labels": tgt["labels"].numpy()},
                        }
                    )
        if panels:
            plot_bev(out / "bev.png", panels, StreamDSGN("tiny", device="cpu").config.point_cloud_range,
                     title="boxes scoring >= 0.3 (colour) vs ground truth (grey)", min_score=0.3)

    save_json(out / "results.json", results)

    md = [
        f"# StreamDSGN benchmark ({results['date']})",
        "",
        f"Machine: {results['machine']}; device {dev}" + (f" ({results.get('gpu')})" if results.get("gpu") else ""),
        "",
    ]
    if rows:
        md += [
            f"Tiny preset, synthetic default ({results['data']['train_samples']} train / "
            f"{results['data']['val_samples']} val samples), {epochs} epochs × "
            f"{spe or results['data']['train_samples']} samples, seeds {seeds}. 3D AP R40, moderate, mean over "
            f"seeds; `mean` = mean over the classes.",
            "",
            markdown_table(rows),
            "",
        ]
    for where, r in lat.items():
        for dt in ("fp32", "bf16"):
            if dt in r:
                md.append(
                    f"- kitti() preset latency on {where} ({dt}): median {r[dt]['median_ms']:.1f} ms, "
                    f"p90 {r[dt]['p90_ms']:.1f} ms over {r[dt]['frames']} frames"
                )
        if "peak_memory_gib" in r:
            md.append(f"- peak GPU memory {r['peak_memory_gib']:.2f} GiB; {r['parameters']:,} parameters")
    (out / "results.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print("\n".join(md))
    print(json.dumps({"out": str(out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
