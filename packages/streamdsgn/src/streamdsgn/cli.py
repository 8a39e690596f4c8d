"""``streamdsgn`` command line: ``render``, ``train``, ``eval``, ``detect``.

Examples::

    streamdsgn render --out data/streamdsgn_synth                       # the embedded synthetic default (KITTI layout)
    streamdsgn train --data data/streamdsgn_synth --preset tiny --epochs 4 --out runs/streamdsgn/tiny
    streamdsgn train ... --baseline                                     # ablation without the streaming components
    streamdsgn train ... --resume                                       # continue after the last finished epoch
    accelerate launch -m streamdsgn.cli train --accelerate --data /data/kitti_tracking --preset kitti ...
    streamdsgn eval --checkpoint runs/streamdsgn/tiny/final --data data/streamdsgn_synth --latency measured
    streamdsgn detect --checkpoint runs/streamdsgn/tiny/final --data data/streamdsgn_synth --scene 0000_1 --out d.json
    streamdsgn detect --data data/streamdsgn_synth --kitti-out results/   # shipped weights; KITTI label files

``--checkpoint`` of ``eval`` / ``detect`` is a ``train`` run's ``final`` folder or a ``.safetensors`` file with its
``.json`` model card beside it; without it the shipped weights (``streamdsgn/weights/``) are used.

``--data`` is a folder in the KITTI tracking layout (``training/{image_02,image_03,label_02,calib,velodyne}``), read by
:class:`commons.data.kitti_tracking.KittiTrackingStream` (40-frame clips, even clips train / odd clips val).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def _dataset(root: str, split: str, image_size):
    from commons.data.kitti_tracking import KittiTrackingStream

    if not Path(root).is_dir():
        raise SystemExit(f"--data: {root} is not a folder (render one with `streamdsgn render --out {root}`)")
    return KittiTrackingStream(root, split=split, image_size=tuple(image_size) if image_size else None)


def _latency_arg(text: str) -> str | float:
    """``--latency``: ``measured`` or a positive number of seconds (checked before the model loads)."""
    if text == "measured":
        return text
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected 'measured' or a positive number of seconds, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamdsgn", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("render", help="write the synthetic stereo driving default in the KITTI tracking layout")
    r.add_argument("--out", required=True)
    r.add_argument("--num-sequences", type=int, default=4)
    r.add_argument("--frames", type=int, default=80, help="frames per sequence (10 Hz)")
    r.add_argument("--image-size", type=int, nargs=2, default=(96, 320), metavar=("H", "W"))
    r.add_argument("--seed", type=int, default=0)

    def data_args(sp):
        sp.add_argument("--data", required=True, help="KITTI-tracking-layout folder")
        sp.add_argument("--image-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="bottom crop (default: the model's image_size)")
        sp.add_argument("--device", default="auto")
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--no-progress", action="store_true")

    t = sub.add_parser("train", help="train (adam_onecycle, per-epoch resumable checkpoints)")
    data_args(t)
    t.add_argument("--preset", choices=["tiny", "kitti"], default="tiny")
    t.add_argument("--config-kw", default="{}", help='JSON overrides of StreamDSGNConfig, e.g. \'{"num_planes": 32}\'')
    t.add_argument("--baseline", action="store_true", help="no flow fusion, current-frame supervision, no MCL")
    t.add_argument("--epochs", type=int, default=20)
    t.add_argument("--batch-size", type=int, default=1)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--samples-per-epoch", type=int, default=None)
    t.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default="no")
    t.add_argument("--no-history-grad", action="store_true", help="no gradients through the previous frame")
    t.add_argument("--accelerate", action="store_true", help="use accelerate (run under `accelerate launch`)")
    t.add_argument("--split", default="train")
    t.add_argument("--out", required=True, help="run folder (state.pt for resuming, final/ weights)")
    t.add_argument("--resume", action="store_true")

    e = sub.add_parser("eval", help="offline, forecast and streaming AP (KITTI R40/R11, BEV/3D)")
    data_args(e)
    e.add_argument("--checkpoint", default=None, help="checkpoint folder or .safetensors (default: shipped weights)")
    e.add_argument("--split", default="val")
    e.add_argument("--latency", default="measured", type=_latency_arg,
                   help="'measured' or seconds per frame (e.g. 0.06)")
    e.add_argument("--json", default=None, help="also write the full results here")

    d = sub.add_parser("detect", help="per-frame boxes for clips (JSON)")
    data_args(d)
    d.add_argument("--checkpoint", default=None, help="checkpoint folder or .safetensors (default: shipped weights)")
    d.add_argument("--split", default="val")
    d.add_argument("--scene", action="append", default=None, help="clip id(s) like 0001_1 (default: all)")
    d.add_argument("--score-threshold", type=float, default=None)
    d.add_argument("--out", default=None, help="JSON file of the boxes (LiDAR-style frame)")
    d.add_argument("--kitti-out", default=None,
                   help="folder for KITTI result files (camera frame, 2D box, alpha, score): label_02/<seq>.txt "
                        "(tracking layout) and object/<seq>/<frame>.txt (object devkit layout)")
    for sp in (r, t, e, d):
        sp.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    return p


def _load(checkpoint: str | None, device: str):
    from .engine import StreamDSGN

    if checkpoint is None or str(checkpoint).endswith(".safetensors"):
        return StreamDSGN.pretrained(checkpoint, device=device)
    if not Path(checkpoint).exists():
        raise SystemExit(f"--checkpoint: {checkpoint} does not exist (a train run's final/ folder or a "
                         ".safetensors file with its .json card)")
    if Path(checkpoint).is_dir() and (Path(checkpoint) / "streamdsgn.safetensors").is_file():
        return StreamDSGN.pretrained(checkpoint, device=device)
    return StreamDSGN.load(checkpoint, device=device)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (ValueError, FileNotFoundError, KeyError, TypeError) as err:
        if getattr(args, "verbose", False):
            raise
        print(f"streamdsgn {args.command}: error: {err} (run with -v for the traceback)", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "render":
        from commons.data.synthetic_stereo import render_kitti_tracking

        root = render_kitti_tracking(args.out, num_sequences=args.num_sequences, frames_per_sequence=args.frames,
                                     image_size=tuple(args.image_size), seed=args.seed)
        print(f"wrote the synthetic KITTI-tracking default to {root}")
        return 0

    from .engine import StreamDSGN, TrainConfig

    if args.command == "train":
        from commons.device import TrainingBackend

        kw = json.loads(args.config_kw)
        if args.baseline:
            kw["baseline"] = True
        det = StreamDSGN(args.preset, device=args.device, seed=args.seed, **kw)
        ds = _dataset(args.data, args.split, args.image_size or det.config.image_size)
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                          samples_per_epoch=args.samples_per_epoch, mixed_precision=args.mixed_precision,
                          history_grad=not args.no_history_grad)
        backend = TrainingBackend(mixed_precision=args.mixed_precision, cpu=det.device.type == "cpu",
                                  device=det.device, use_accelerate=bool(args.accelerate))
        try:
            hist = det.fit(ds, cfg, run_dir=args.out, resume=args.resume, progress=not args.no_progress,
                           backend=backend)
        finally:
            backend.close()
        if backend.is_main_process:
            last = hist["epoch_loss"][-1] if hist["epoch_loss"] else float("nan")
            print(f"trained {'baseline' if det.config.baseline else 'StreamDSGN'} ({args.preset}) for {args.epochs} "
                  f"epochs on {len(ds)} samples; last epoch loss {last:.4f}; weights in {Path(args.out) / 'final'}")
    elif args.command == "eval":
        det = _load(args.checkpoint, args.device)
        ds = _dataset(args.data, args.split, args.image_size or det.config.image_size)
        res = det.evaluate(ds, latency=args.latency, progress=not args.no_progress, seed=args.seed)
        for k in ("offline", "forecast", "streaming"):
            s = res["summary"][k]
            print(f"{k:9s} 3D AP R40 moderate: " + ", ".join(f"{c} {v:.2f}" for c, v in s.items()))
        print(f"latency median {res['latency_s']['median'] * 1000:.1f} ms (measured on {det.device}); processed "
              f"{res['processed_fraction']:.0%} of {res['frames']} frames")
        if args.json:
            from commons.io import save_json

            save_json(args.json, res)
    elif args.command == "detect":
        if not args.out and not args.kitti_out:
            raise SystemExit("detect: give --out FILE.json and/or --kitti-out DIR")
        det = _load(args.checkpoint, args.device)
        ds = _dataset(args.data, args.split, args.image_size or det.config.image_size)
        scenes = args.scene or list(ds.scenes)
        unknown = [sc for sc in scenes if sc not in ds.scenes]
        if unknown:
            raise SystemExit(f"--scene: unknown clip(s) {unknown}; the {args.split} split has {list(ds.scenes)[:6]}...")
        out, kitti_frames = {}, []
        for scene in scenes:
            idx = list(ds.clip_frames(scene))
            det.reset()
            frames = []
            for i in idx:
                s = ds[int(i)]
                d = det.detect_sample(s, args.score_threshold)
                frames.append({"frame": int(s["frame"]), "timestamp": float(s["timestamp"]),
                               "boxes": d["boxes"].tolist(), "scores": d["scores"].tolist(),
                               "labels": d["labels"].tolist(), "bbox": d["bbox"].tolist(),
                               "crop_offset": list(s.get("crop_offset", (0, 0)))})
                kitti_frames.append({"seq": s["seq"], "frame": int(s["frame"]), "det": d,
                                     "calib": {k: v.numpy() for k, v in s["calib"].items()},
                                     "crop_offset": s.get("crop_offset", (0, 0))})
            out[scene] = frames
        if args.out:
            from commons.io import save_json

            save_json(args.out, {"box_format": "x, y, z (centre), dx, dy, dz, yaw in the LiDAR-style frame; bbox: "
                                               "2D box in input-image (crop) pixels, clipped to the original image "
                                               "(add crop_offset for original pixels); boxes are the model's "
                                               "prediction for the NEXT frame unless baseline",
                                 "classes": ["Car", "Pedestrian", "Cyclist"], "clips": out})
            print(f"wrote detections of {len(out)} clip(s) to {args.out}")
        if args.kitti_out:
            from .kitti_export import write_kitti_results

            files = write_kitti_results(args.kitti_out, kitti_frames)
            print(f"wrote {len(files)} KITTI result files under {args.kitti_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
