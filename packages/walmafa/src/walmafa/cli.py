"""``walmafa`` command line: ``train``, ``eval``, ``enhance``.

Examples::

    walmafa train --data synthetic --steps 200 --patch-size 64 --batch-size 4 --out runs/walmafa/demo
    walmafa train --data datasets/LOLv1 --steps 150000 --out runs/walmafa/lolv1     # (accelerate launch ... for GPUs)
    walmafa eval --checkpoint runs/walmafa/demo/final --data synthetic
    walmafa enhance in.png out.png                                   # the shipped weights
    walmafa enhance in.png out.png --weights official.pth --released-layout     # official LOL checkpoint
    walmafa enhance big.jpg out.png --tile 256                       # bounded memory for any size

Weights: ``--checkpoint`` (a run folder), ``--weights`` (a .safetensors file with its .json card, or an official
.pth with ``--released-layout``), or neither: the shipped weights (walmafa/weights/, or $WALMAFA_WEIGHTS).
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
    from .engine import DEFAULT_BORDER

    p = argparse.ArgumentParser(prog="walmafa", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
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
    t.add_argument("--grad-clip", type=float, default=None, help="clip the global gradient norm (default: off)")
    t.add_argument("--num-workers", type=int, default=0, help="data-loader worker processes")
    t.add_argument("--val-every", type=int, default=0,
                   help="validate every N steps and keep the best weights in OUT/best (needs --val-split)")
    t.add_argument("--val-split", default=None,
                   help="split of --data to validate on, e.g. 'test' (LOL has no separate validation split: "
                        "selecting on the test split makes its numbers optimistic)")
    t.add_argument("--out", required=True, help="run folder (state.pt for resuming, final/ and best/ weights)")
    t.add_argument("--resume", action="store_true")
    t.add_argument("--no-progress", action="store_true")

    def weight_args(sp, border_default):
        sp.add_argument("--checkpoint", default=None, help="a run folder's final/ or best/ (from walmafa train)")
        sp.add_argument("--weights", default=None,
                        help="a .safetensors file with its .json card, or an official .pth with --released-layout "
                             "(default: the shipped weights)")
        sp.add_argument("--released-layout", action="store_true",
                        help="--weights is an official WalMaFa checkpoint (read with torch.load(weights_only=True))")
        sp.add_argument("--model-kw", default="{}",
                        help="JSON config overrides for --released-layout, e.g. '{\"token_layout\": \"raw\"}'")
        sp.add_argument("--tile", default="auto",
                        help="enhance in overlapping TILE×TILE windows (a multiple of 16) to bound memory; 'auto' "
                             f"(default): {AUTO_TILE}-pixel tiles for images over {AUTO_TILE_PIXELS / 1e6:g} Mpx "
                             "(bounded memory), "
                             "'none': always whole")
        sp.add_argument("--overlap", type=int, default=32, help="tile overlap in pixels")
        sp.add_argument("--border", type=int, default=border_default,
                        help="reflect-pad the input by N pixels on all four sides and crop back (the padded size "
                             "is rounded up to a multiple of 16); against the coloured one-pixel ring the convs' "
                             f"zero padding draws at the edges of a short-trained model (default: {border_default}"
                             + (", the official evaluation" if border_default == 0 else "") + ")")
        sp.add_argument("--scan", choices=["auto", "chunked", "triton"], default="auto",
                        help="selective scan for inference: 'auto' (default) = the fused Triton kernel on a CUDA "
                             "device with Triton installed, else the chunked PyTorch scan (same function)")

    e = sub.add_parser("eval", help="PSNR/SSIM (RGB, [0,1], padded to 16, no GT-mean unless --gt-mean)")
    data_args(e)
    weight_args(e, 0)
    e.add_argument("--split", default="test")
    e.add_argument("--gt-mean", action="store_true", help="Retinexformer's GT-mean brightness alignment")
    e.add_argument("--json", default=None, help="also write the results here")

    n = sub.add_parser("enhance", help="enhance one image")
    n.add_argument("input")
    n.add_argument("output")
    weight_args(n, DEFAULT_BORDER)
    n.add_argument("--device", default="auto")
    return p


# whole images up to 0.3 Mpx (LOL's 600×400 stays whole, as the official evaluation runs it): the untiled scans grow
# memory by ~10 GiB per Mpx for the shipped dim-8 weights (2.4 GiB measured at 400×592 on CPU, walmafa_tiling.json),
# roughly twice that at the released dim 16; above, 256² tiles (0.7 GiB for the shipped weights)
AUTO_TILE, AUTO_TILE_PIXELS = 256, 300_000


def _tile(spec: str, h: int, w: int) -> int | None:
    """``--tile`` value → tile size or None (whole image)."""
    if spec == "none":
        return None
    if spec == "auto":
        return AUTO_TILE if h * w > AUTO_TILE_PIXELS else None
    try:
        return int(spec)
    except ValueError:
        raise ValueError(f"--tile must be a multiple of 16, 'auto' or 'none', got {spec!r}") from None


def _model_kw(text: str) -> dict:
    """``--model-kw``: a JSON object of configuration overrides."""
    kw = json.loads(text)
    if not isinstance(kw, dict):
        raise ValueError(f"--model-kw must be a JSON object such as '{{\"dim\": 8}}', got {text!r}")
    return kw


def _load(args):
    """The model of ``--checkpoint`` / ``--weights`` / the shipped weights, with the ``--scan`` of choice."""
    enh = _load_weights(args)
    from .mamba import set_scan
    from .scan_triton import triton_available

    scan = args.scan
    if scan == "auto":
        scan = "triton" if enh.device.type == "cuda" and triton_available(enh.device) else None
    set_scan(enh.model, scan)  # "triton" falls back to the chunked scan where the kernel cannot run
    return enh


def _load_weights(args):
    from .engine import Enhancer

    if args.checkpoint and args.weights:
        raise ValueError("pass either --checkpoint or --weights, not both")
    if args.released_layout and not args.weights:
        raise ValueError("--released-layout needs --weights official.pth")
    if args.checkpoint:
        return Enhancer.load(args.checkpoint, device=args.device)
    if args.weights:
        return Enhancer.load(args.weights, device=args.device, released_layout=args.released_layout,
                             **_model_kw(args.model_kw))
    return Enhancer.pretrained(device=args.device)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _run(args)
    except (ValueError, TypeError, FileNotFoundError, json.JSONDecodeError) as exc:
        if args.verbose:
            raise
        print(f"walmafa {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _run(args) -> int:
    from .engine import Enhancer, TrainConfig

    if args.command == "train":
        kw = _model_kw(args.model_kw)
        if args.val_every and not args.val_split:
            raise ValueError("--val-every needs --val-split (e.g. test)")
        train_set = _dataset(args.data, "train", args.subset, args.seed, args.size, args.max_items)
        val_set = (_dataset(args.data, args.val_split, args.subset, args.seed, args.size, args.max_items)
                   if args.val_split else None)
        enh = Enhancer(args.model, device=args.device, seed=args.seed, **kw)
        cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, patch_size=args.patch_size, lr=args.lr,
                          lr_min=args.lr_min, warmup_steps=args.warmup_steps, seed=args.seed,
                          mixed_precision=args.mixed_precision, checkpoint_every=args.checkpoint_every,
                          grad_clip=args.grad_clip, num_workers=args.num_workers, val_every=args.val_every)
        hist = enh.fit(train_set, cfg, run_dir=args.out, resume=args.resume, val_set=val_set,
                       progress=not args.no_progress)
        best = f"; best val PSNR {hist['best']['psnr']:.3f} dB at step {hist['best']['step']}" if hist["best"] else ""
        print(f"trained {args.model} for {args.steps} steps; final loss {hist['loss'][-1]:.4f}{best}; "
              f"weights in {Path(args.out) / 'final'}")
    elif args.command == "eval":
        enh = _load(args)
        ds = _dataset(args.data, args.split, args.subset, args.seed, args.size, args.max_items)
        h, w = ds[0][0].shape[-2:]
        res = enh.evaluate(ds, gt_mean=args.gt_mean, progress=True, tile=_tile(args.tile, h, w), overlap=args.overlap,
                           border=args.border)
        print(f"{len(ds)} images: PSNR {res['psnr']:.3f} dB  SSIM {res['ssim']:.4f}  "
              f"(RGB, [0,1], gt_mean={args.gt_mean})")
        if args.json:
            from commons.io import save_json

            save_json(args.json, res)
    elif args.command == "enhance":
        from PIL import Image

        if not Path(args.input).is_file():
            raise ValueError(f"input must be an existing image file, got {args.input!r}")
        known = Image.registered_extensions()
        if Path(args.output).suffix.lower() not in known:
            raise ValueError(f"output must end in an image extension such as .png or .jpg, got {args.output!r}")
        enh = _load(args)
        from commons.data import read_image

        low = read_image(args.input)
        out = enh.enhance(low, tile=_tile(args.tile, *low.shape[-2:]), overlap=args.overlap, border=args.border)
        arr = (out.permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype("uint8")
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(args.output)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
