"""S²Q-VDiT ablations on the zoo video DiT (``moving-digits-dit``) at W4A6, plus the integer-export storage ratio.

    python tools/bench/vqcore_s2q.py --quick            # CPU, minutes (the setting quoted in the README)

Rows (same FP model, calibration trajectories, evaluation seeds and metrics as ``tools/bench/vqcore_quality.py``):

* data selection at equal budget K (half the candidate pool): ``salient`` vs ``random`` — both with sparse token
  distillation;
* distillation with salient data: ``plain`` (per-token MSE) vs ``token`` (dense attention λ) vs ``sparse`` (λ kept on
  the tokens holding 75 % of the attention mass).

Also converts the default S²Q-VDiT W4A6 model with ``vqcore.convert`` and reports linear-weight storage vs fp16.
Writes results.json, results.md under --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import torch
from torch import nn

from commons.reporting import markdown_table

PRESETS = {"quick": dict(n_video=20, steps=10, calib_video=4, iters=20, n_real=300),
           "full": dict(n_video=200, steps=20, calib_video=8, iters=300, n_real=1000)}

VARIANTS = [
    ("select=salient, distill=sparse (default)", dict(select="salient", distill="sparse")),
    ("select=random seed 0, distill=sparse", dict(select="random", distill="sparse", seed=0)),
    ("select=salient, distill=plain", dict(select="salient", distill="plain")),
    ("select=salient, distill=token (dense λ)", dict(select="salient", distill="token")),
]


def storage(fp_model: nn.Module, qmodel: nn.Module) -> dict:
    """Linear-weight bytes of the converted model vs the same linears in fp16 (FP-kept linears counted at fp16)."""
    from vqcore import convert
    from vqcore.convert import QLinearInt, linear_weight_bytes

    fp16 = sum(m.weight.numel() * 2 for m in fp_model.modules() if isinstance(m, nn.Linear))
    convert(qmodel)
    int_bytes = sum(linear_weight_bytes(m) for m in qmodel.modules() if isinstance(m, QLinearInt))
    rest = sum(m.weight.numel() * 2 for m in qmodel.modules() if isinstance(m, nn.Linear))
    int_layers = [m for m in qmodel.modules() if isinstance(m, QLinearInt)]
    q_fp16 = sum(m.out_features * m.in_features * 2 for m in int_layers) if int_layers and hasattr(
        int_layers[0], "out_features") else None
    out = {"linears_fp16_bytes": fp16, "converted_int_bytes": int_bytes, "fp_kept_linear_fp16_bytes": rest,
           "ratio_all_linears": fp16 / (int_bytes + rest), "converted_layers": len(int_layers)}
    if q_fp16:
        out["ratio_converted_layers"] = q_fp16 / int_bytes
    for bits in sorted({m.spec.w_bits for m in int_layers}):
        layers = [m for m in int_layers if m.spec.w_bits == bits]
        out[f"ratio_W{bits}_layers"] = (sum(m.out_features * m.in_features * 2 for m in layers)
                                        / sum(linear_weight_bytes(m) for m in layers))
        out[f"W{bits}_layers"] = len(layers)
    return out


def main(argv: list[str] | None = None) -> int:
    import vqcore
    from vqcore.zoo import load, sample
    from vqcore.zoo.bench import VIDEO_GUIDANCE, _calibration
    from vqcore.zoo.evaluate import evaluate_videos, features, real_reference

    ap = argparse.ArgumentParser(description="S²Q-VDiT ablations on the zoo video DiT")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--w-bits", type=int, default=4)
    ap.add_argument("--a-bits", type=int, default=6)
    ap.add_argument("--out", type=Path, default=Path("runs/bench/vqcore_s2q"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    p = PRESETS["quick" if args.quick else "full"]
    gen = load("moving-digits-dit")
    clf = load("moving-digits-classifier")
    real, _ = real_reference("video", n=p["n_real"], seed=123)
    real_feats, _ = features(clf, real)
    labels = torch.arange(p["n_video"]) % 10
    kw = dict(num_steps=p["steps"], guidance_scale=VIDEO_GUIDANCE, seed=args.seed + 10_000, batch_size=50)
    fp = sample(gen, labels, **kw)
    rows = [{"variant": "FP", **evaluate_videos(fp, labels, clf, real_feats)}]
    calib = _calibration(gen, (torch.arange(p["calib_video"]) * 3 + 1) % 10, p["steps"], VIDEO_GUIDANCE,
                         args.seed + 50_000, max_bytes=768 * 2**20)
    conv = None
    for name, opts in VARIANTS:
        torch.manual_seed(args.seed)
        t0 = time.perf_counter()
        q = vqcore.quantize(gen, "s2q-vdit", w_bits=args.w_bits, a_bits=args.a_bits, calib=calib, iters=p["iters"],
                            progress=False, **opts)
        qs = time.perf_counter() - t0
        m = evaluate_videos(sample(q, labels, **kw), labels, clf, real_feats, fp_samples=fp)
        d = q.vqcore_report.details
        rows.append({"variant": name, **m, "kept": f"{d['kept']}/{d['pool']}",
                     "zero λ": "" if d["zero_weight_fraction"] is None else f"{d['zero_weight_fraction']:.2f}",
                     "quant_s": qs})
        logging.info("%s: %s", name, rows[-1])
        if conv is None:
            conv = storage(gen, q)
    meta = {"machine": f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "setting": f"W{args.w_bits}A{args.a_bits}",
            **p, "seed": args.seed}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows, "storage": conv}, indent=2))
    md = [f"# S²Q-VDiT ablations, moving-digits-dit {meta['setting']} ({meta['machine']}, {meta['date']})", "",
          markdown_table(rows), "", "Storage (linear weights, `vqcore.convert`): " + json.dumps(conv)]
    (args.out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
