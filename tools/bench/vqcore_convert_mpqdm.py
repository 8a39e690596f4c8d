"""Integer export of MPQ-DM models (``vqcore.convert``) on the zoo image model (digits-unet): weight storage of the
converted model (OMQ ``mixed_layout="split"`` vs ``"padded"`` vs plain n-bit layers of the same model, vs fp16) and how
closely the converted model follows the fake-quant one (one denoiser call; a short DDIM loop), per W/A setting.

Storage is counted from the integer layers' buffers (codes, per-row scale, Σŵ, scale·zp, split index, activation
table) and the fp16 weights of the same layers; no latency is reported: on the CPU the integer layers run the
pure-PyTorch reference (float matmuls on dequantized codes), whose speed says nothing about the Triton kernels.

    python tools/bench/vqcore_convert_mpqdm.py            # CPU, ~3 min on one core
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch

import vqcore
from commons.reporting import markdown_table
from vqcore.convert import QConv2dInt, QLinearInt, convert, int_weight_bytes
from vqcore.quant.modules import QuantModule
from vqcore.zoo import load, sample
from vqcore.zoo.bench import _calibration


def _rel(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def _layers(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, (QuantModule, QLinearInt))}


def _bytes(model, kind: str | None = None) -> int:
    total = 0
    for m in _layers(model).values():
        conv = isinstance(m, QConv2dInt) or (isinstance(m, QuantModule) and m.weight.dim() == 4)
        if kind is None or (kind == "conv") == conv:
            total += int_weight_bytes(m)
    return total


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", default="4x8,3x4,2x4,8x8", help="comma-separated WxA list")
    ap.add_argument("--iters", type=int, default=1, help="mpq-dm rollouts (storage does not depend on them)")
    ap.add_argument("--steps", type=int, default=4, help="DDIM steps of the calibration and the sampling check")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/vqcore_convert_mpqdm"))
    ap.add_argument("--quick", action="store_true", help="settings W4A8 and W2A4 only")
    args = ap.parse_args(argv)
    if args.quick:
        args.settings = "4x8,2x4"
    torch.manual_seed(0)
    gen = load("digits-unet")
    calib = _calibration(gen, torch.tensor([1, 4]), args.steps, 1.0, 50_000, 2**28)
    labels = torch.tensor([0, 3, 5, 7])
    s_fp = sample(gen, labels, num_steps=args.steps, seed=1)
    x, lab, t = torch.randn(2, 1, 16, 16), torch.tensor([3, 5]), torch.full((2,), 499)
    rows = []
    for setting in args.settings.split(","):
        w, a = (int(v) for v in setting.split("x"))
        for name, opts in (("mpq-dm (k searched)", {}), ("mpq-dm k=10%", {"k_fractions": (0.1,)}),
                           ("plain W (omq=False)", {"omq": False})):  # fmt: skip
            q = vqcore.quantize(gen, method="mpq-dm", w_bits=w, a_bits=a, calib=calib, iters=args.iters,
                                batch_size=2, search_items=4, progress=False, **opts)  # fmt: skip
            fq = _layers(q)
            fp16 = sum(m.weight.numel() * 2 for m in fq.values())
            fp16_conv = sum(m.weight.numel() * 2 for m in fq.values() if m.weight.dim() == 4)
            split = convert(copy.deepcopy(q))
            padded = convert(copy.deepcopy(q), mixed_layout="padded")
            ints = [m for m in _layers(split).values() if isinstance(m, QLinearInt)]
            with torch.no_grad():
                y_fq, y_int = q(x, t, lab), split(x, t, lab)
            s_fq = sample(q, labels, num_steps=args.steps, seed=1)
            s_int = sample(split, labels, num_steps=args.steps, seed=1)
            b_split, b_pad = _bytes(split), _bytes(padded)
            rows.append({
                "W/A": f"W{w}A{a}", "model": name, "int layers": len(ints),
                "layers with split rows": sum(m.spec.split_rows > 0 for m in ints),
                "split rows / rows": round(sum(m.spec.split_rows for m in ints) / sum(m.out_features for m in ints), 4),
                "fp16 KiB": round(fp16 / 1024, 1), "split KiB": round(b_split / 1024, 1),
                "padded KiB": round(b_pad / 1024, 1), "split/fp16": round(b_split / fp16, 3),
                "padded/fp16": round(b_pad / fp16, 3),
                "conv split/fp16": round(_bytes(split, "conv") / fp16_conv, 3),
                "linear split/fp16": round(_bytes(split, "linear") / (fp16 - fp16_conv), 3),
                "step rel err": round(_rel(y_int, y_fq), 5), "sample int-vs-fq": round(_rel(s_int, s_fq), 4),
                "sample fq-vs-fp": round(_rel(s_fq, s_fp), 4),
            })  # fmt: skip
            print(rows[-1], flush=True)
    meta = {"device": f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch": torch.__version__,
            "iters": args.iters, "steps": args.steps}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"convert_mpqdm_{time.strftime('%Y%m%d_%H%M%S')}.json"
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(markdown_table(rows))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
