"""MPQ-DM ablation on the zoo image model (digits-unet): the EfficientDM-style base (LoRA + per-step activation tables,
rollout distillation, no OMQ, no TRD), +OMQ, +TRD (with gradients), +OMQ+TRD, +OMQ+TRD with the released code's
detached TRD, MPQ-DM without rollouts, MPQ-DM with the released code's activation-table update (absolute lr 5e-4,
every row moved by AdamW at every step: what collapsed before the fix) and MPQ-DM with min-max weight ranges, at
W4A8, W4A4 and W2A4 (``--settings``; ``--variants`` picks a subset), with FP and RTN for reference. Same sampling and
evaluation as ``vqcore_quality.py``.

    python tools/bench/vqcore_mpqdm.py --quick          # CPU minutes
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

import vqcore
from commons.reporting import markdown_table
from vqcore.zoo import load, sample
from vqcore.zoo.bench import PRESETS, _calibration
from vqcore.zoo.evaluate import evaluate_images, features, real_reference

VARIANTS = {
    "MPQ-DM init only (no rollouts)": dict(iters=0),
    "base (EfficientDM-style)": dict(omq=False, trd=False),
    "+OMQ": dict(omq=True, trd=False),
    "+TRD (grad)": dict(omq=False, trd=True, trd_grad=True),
    "+OMQ+TRD (grad) = MPQ-DM": dict(omq=True, trd=True, trd_grad=True),
    "+OMQ+TRD (detached, released code)": dict(omq=True, trd=True, trd_grad=False),
    "MPQ-DM, act tables as released (lr 5e-4 absolute, all rows move)": dict(act_lr="absolute", lazy_rows=False),
    "MPQ-DM, weight_init=minmax": dict(weight_init="minmax"),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--settings", default="4x8,4x4,2x4", help="comma-separated WxA list")
    ap.add_argument("--iters", type=int, default=None, help="rollouts (default: the preset's iters)")
    ap.add_argument("--variants", default=None, help="comma-separated substrings: run only the matching variants")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/bench/vqcore_mpqdm"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    p = PRESETS["quick" if args.quick else "full"]
    iters = args.iters or p["iters"]
    gen = load("digits-unet")
    clf = load("digits-classifier")
    real, _ = real_reference("image", n=p["n_real"], seed=123)
    real_feats, _ = features(clf, real)
    n = p["n_image"]
    labels = torch.arange(n) % 10
    kw = dict(num_steps=p["steps"], guidance_scale=1.0, seed=args.seed + 10_000, batch_size=50)
    fp = sample(gen, labels, **kw)
    rows = [{"W/A": "FP", "variant": "fp", **evaluate_images(fp, labels, clf, real_feats)}]
    calib = _calibration(gen, (torch.arange(p["calib_image"]) * 3 + 1) % 10, p["steps"], 1.0, args.seed + 50_000,
                         512 * 2**20)
    for setting in args.settings.split(","):
        w, a = (int(v) for v in setting.split("x"))
        wanted = [v for v in (args.variants or "").split(",") if v]
        runs = [("rtn", "rtn", {})] + [("mpq-dm", name, opts) for name, opts in VARIANTS.items()
                                       if not wanted or any(v in name for v in wanted)]
        for method, name, opts in runs:
            torch.manual_seed(args.seed)
            t0 = time.perf_counter()
            extra = {"iters": iters, "progress": False, **opts} if method == "mpq-dm" else {}
            q = vqcore.quantize(gen, method=method, w_bits=w, a_bits=a, calib=calib, seed=args.seed, **extra)
            qs = time.perf_counter() - t0
            m = evaluate_images(sample(q, labels, **kw), labels, clf, real_feats, fp_samples=fp)
            rows.append({"W/A": f"W{w}A{a}", "variant": name, **m, "quant_s": qs})
            logging.info("W%dA%d %s: %s", w, a, name, m)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"preset": "quick" if args.quick else "full", "rollouts": iters, "steps": p["steps"], "n_image": n,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "threads": torch.get_num_threads()}
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    cols = ["W/A", "variant", "accuracy", "fid_like", "psnr", "quant_s"]
    table = markdown_table([{c: (f"{r[c]:.3f}" if isinstance(r.get(c), float) else r.get(c, "")) for c in cols}
                            for r in rows])
    (args.out / "results.md").write_text(f"{json.dumps(meta)}\n\n{table}\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
