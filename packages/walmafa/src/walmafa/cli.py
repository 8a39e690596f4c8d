"""``walmafa`` command line: ``train``, ``eval``, ``enhance``.

Examples::

    walmafa train --data synthetic --steps 200 --patch-size 64 --batch-size 4 --out runs/walmafa/demo
    walmafa train --data datasets/LOLv1 --steps 150000 --out runs/walmafa/lolv1     # (accelerate launch ... for GPUs)
    walmafa eval --checkpoint runs/walmafa/demo/final --data synthetic
    walmafa enhance in.png out.png --checkpoint runs/walmafa/demo/final
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def _dataset(spec: str, split: str, subset: str | None, seed: int, size: int, max_items: int | None):
    from commons.data.lol import PairedFolderDataset, SyntheticLowLightDataset

    if spec == "synthetic":
        return SyntheticLowLightDataset(split=split, size=size, seed=seed)
    root = Path(spec)
    try:
        return PairedFolderDataset(root, split=split, subset=subset, max_items=max_items)
    except ValueError:
        if split is not None:  # a folder that directly holds low/ and high/
            return PairedFolderDataset(root, split=None, subset=subset, max_items=max_items)
        raise


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="walmafa", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def data_args(sp):
        sp.add_argument("--data", default="synthetic",
                        help="'synthetic' (embedded default) or a LOL-style root (see commons.data.lol)")
        sp.add_argument("--subset", choices=["real", "synthetic"], default=None, help="LOL-v2 subset")
        sp.add_argument("--size", type=int, default=128, help="short side of the synthetic default's images")
        sp.add_argument("--max-items", type=int, default=None)
        sp.add_argument("--seed", type=int, default=1234)
        sp.add_argument("--device", default="auto")

    t = sub.add_parser("train", help="train with the released recipe")
    data_args(t)
    t.add_argument("--model", default="walmafa", help="walmafa | walmafa_paper | walmafa_classdefault | retinex_unet")
    t.add_argument("--model-kw", default="{}", help='JSON config overrides, e.g. \'{"dim": 8}\'')
    t.add_argument("--steps", type=int, default=1000)
    t.add_argument("--batch-size", type=int, default=12)
    t.add_argument("--patch-size", type=int, default=128)
    t.add_argument("--lr", type=float, default=8e-4)
    t.add_argument("--lr-min", type=float, default=1e-6)
    t.add_argument("--warmup-steps", type=int, default=50)
    t.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default="no")
    t.add_argument("--checkpoint-every", type=int, default=200)
    t.add_argument("--out", required=True, help="run folder (state.pt for resuming, final/ weights)")
    t.add_argument("--resume", action="store_true")
    t.add_argument("--no-progress", action="store_true")

    e = sub.add_parser("eval", help="PSNR/SSIM (RGB, [0,1], padded to 16, no GT-mean unless --gt-mean)")
    data_args(e)
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--split", default="test")
    e.add_argument("--gt-mean", action="store_true")
    e.add_argument("--json", default=None, help="also write the results here")

    n = sub.add_parser("enhance", help="enhance one image")
    n.add_argument("input")
    n.add_argument("output")
    n.add_argument("--checkpoint", required=True)
    n.add_argument("--device", default="auto")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from .engine import Enhancer, TrainConfig

    if args.command == "train":
        kw = json.loads(args.model_kw)
        train_set = _dataset(args.data, "train", args.subset, args.seed, args.size, args.max_items)
        enh = Enhancer(args.model, device=args.device, seed=args.seed, **kw)
        cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, patch_size=args.patch_size, lr=args.lr,
                          lr_min=args.lr_min, warmup_steps=args.warmup_steps, seed=args.seed,
                          mixed_precision=args.mixed_precision, checkpoint_every=args.checkpoint_every)
        hist = enh.fit(train_set, cfg, run_dir=args.out, resume=args.resume, progress=not args.no_progress)
        print(f"trained {args.model} for {args.steps} steps; final loss {hist['loss'][-1]:.4f}; "
              f"weights in {Path(args.out) / 'final'}")
    elif args.command == "eval":
        enh = Enhancer.load(args.checkpoint, device=args.device)
        ds = _dataset(args.data, args.split, args.subset, args.seed, args.size, args.max_items)
        res = enh.evaluate(ds, gt_mean=args.gt_mean, progress=True)
        print(f"{len(ds)} images: PSNR {res['psnr']:.3f} dB  SSIM {res['ssim']:.4f}  "
              f"(RGB, [0,1], gt_mean={args.gt_mean})")
        if args.json:
            from commons.io import save_json

            save_json(args.json, res)
    elif args.command == "enhance":
        from PIL import Image

        enh = Enhancer.load(args.checkpoint, device=args.device)
        out = enh.enhance(args.input)
        arr = (out.permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype("uint8")
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(args.output)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
