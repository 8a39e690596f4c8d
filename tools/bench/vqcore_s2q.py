"""S²Q-VDiT ablations on the zoo video DiT (``moving-digits-dit``) at W4A6, plus the integer-export storage ratio.

    python tools/bench/vqcore_s2q.py --quick            # CPU, minutes (the setting quoted in the README)

Rows (same FP model, calibration trajectories, evaluation seeds and metrics as ``tools/bench/vqcore_quality.py``):

* data selection at equal budget K (half the candidate pool): ``salient`` vs ``random`` — both with sparse token
  distillation;
* distillation with salient data: ``plain`` (per-token MSE) vs ``token`` (dense attention λ) vs ``sparse`` (λ kept on
  the tokens holding 75 % of the attention mass).

Also converts the default S²Q-VDiT W4A6 model with ``vqcore.convert`` and reports linear-weight storage vs fp16.
Writes results.json, results.md under --out.

    python tools/bench/vqcore_s2q.py --storage-2b      # CPU, ~1 min: storage of a CogVideoX-2B-size model only
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


def storage_cogvideox_2b(w_bits: int = 4, a_bits: int = 6, mlp_8bit: bool = True, seed: int = 0) -> dict:
    """Model storage of a CogVideoX-2B-size transformer (diffusers defaults, 1.69 B parameters, random weights)
    converted with ``vqcore.convert`` under S²Q-VDiT's allocation, vs the same model in fp16.

    The model is built on the meta device; each planned linear is materialised on its own (random N(0, 0.02)
    weights), fake-quantized as ``s2q-vdit`` does before training (per-channel min-max weights, dynamic per-token
    activations), converted and measured (``linear_weight_bytes``), then freed — so peak memory is one layer. Linears
    the preset keeps in floating point, biases and every other parameter are counted at fp16. ``mlp_8bit=False``
    drops the preset's W8A8 MLP override (every quantized linear at ``w_bits``)."""
    from dataclasses import replace

    from diffusers import CogVideoXTransformer3DModel

    from vqcore import convert
    from vqcore.convert import QLinearInt, linear_weight_bytes
    from vqcore.methods import get_method
    from vqcore.quant import QLinear, plan_layers

    with torch.device("meta"):
        model = CogVideoXTransformer3DModel()
    cfg = get_method("s2q-vdit").default_config("dit", w_bits, a_bits)
    if not mlp_8bit:
        cfg = replace(cfg, overrides=())
    plans = {p.name: p for p in plan_layers(model, cfg)}
    gen = torch.Generator().manual_seed(seed)
    total_params = sum(p.numel() for p in model.parameters())
    int_bytes, fp_kept_linear, per_bits = 0, 0, {}
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear):
            continue
        if name not in plans:
            fp_kept_linear += mod.weight.numel() * 2
            continue
        plan = plans[name]
        lin = nn.Linear(mod.in_features, mod.out_features, bias=mod.bias is not None)
        with torch.no_grad():
            lin.weight.normal_(0, 0.02, generator=gen)
        q = QLinear.from_float(lin, replace(cfg.weight, bits=plan.w_bits), replace(cfg.act, bits=plan.a_bits))
        q.weight_quantizer.calibrate(q.effective_weight().detach())
        box = nn.Module()
        box.layer = q
        convert(box)
        assert isinstance(box.layer, QLinearInt)
        b = linear_weight_bytes(box)
        int_bytes += b
        key = f"W{plan.w_bits}"
        n, fp16 = per_bits.get(key, (0, 0))
        per_bits[key] = (n + 1, fp16 + lin.weight.numel() * 2)
        per_bits[key + "_int_bytes"] = per_bits.get(key + "_int_bytes", 0) + b
        del box, q, lin
    quantized_weight_params = sum(model.get_submodule(n).weight.numel() for n in plans)
    fp16_total = total_params * 2
    rest_fp16 = (total_params - quantized_weight_params) * 2  # biases, FP-kept linears, norms, embeddings
    out = {"model": "CogVideoXTransformer3DModel() defaults (CogVideoX-2B size), random weights",
           "parameters": total_params, "setting": f"W{w_bits}A{a_bits}" + (" (MLPs W8A8)" if mlp_8bit else ""),
           "quantized_linears": len(plans), "fp16_bytes": fp16_total, "converted_int_bytes": int_bytes,
           "fp_kept_linear_fp16_bytes": fp_kept_linear, "other_fp16_bytes": rest_fp16 - fp_kept_linear,
           "ratio_whole_model": fp16_total / (int_bytes + rest_fp16),
           "ratio_quantized_linears": quantized_weight_params * 2 / int_bytes}
    for key in [k for k in per_bits if not k.endswith("_int_bytes")]:
        n, fp16 = per_bits[key]
        out[f"ratio_{key}_linears"] = fp16 / per_bits[key + "_int_bytes"]
        out[f"{key}_linears"] = n
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
    ap.add_argument("--storage-2b", action="store_true",
                    help="only the CogVideoX-2B-size storage measurement (CPU, about a minute, one layer in memory)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.storage_2b:
        t0 = time.perf_counter()
        res = [storage_cogvideox_2b(args.w_bits, args.a_bits, mlp_8bit=m, seed=args.seed) for m in (True, False)]
        meta = {"machine": f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seconds": time.perf_counter() - t0}
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "storage_2b.json").write_text(json.dumps({"meta": meta, "rows": res}, indent=2))
        print(json.dumps({"meta": meta, "rows": res}, indent=2))
        return 0
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
