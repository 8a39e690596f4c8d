"""Q-VDiT ablation on the zoo video DiT: baseline (no TQE, no TMD), +TQE, +TMD, both — beside FP, RTN and vidit-q.

    python tools/bench/vqcore_qvdit.py --quick                  # CPU minutes (16 videos, 8 DDIM steps)
    python tools/bench/vqcore_qvdit.py --device cuda --iters 300

Same protocol as ``tools/bench/vqcore_quality.py`` (``vqcore.zoo.bench``): the FP model samples the evaluation labels
from fixed seeds, calibration data are FP DDIM trajectories of disjoint labels/seeds, every quantized model samples the
same labels from the same noise; metrics from ``vqcore.zoo.evaluate``. ``q-vdit`` = the official defaults per
setting (TQE on; TMD per config, i.e. off at W4A6). "baseline" is the Q-VDiT pipeline with neither component
(grid-search weight ranges, smoothing per config, weight Δ learned with MSE). TMD is forced on in the +TMD rows (the
official W4A6 config trains with MSE only). Writes results.json / results.md under --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from commons.reporting import markdown_table

VARIANTS = {"baseline": dict(tqe=False, tmd=False), "+TQE": dict(tqe=True, tmd=False),
            "+TMD": dict(tqe=False, tmd=True), "TQE+TMD": dict(tqe=True, tmd=True)}


def main(argv=None) -> int:
    import vqcore
    from vqcore.methods.qvdit import official_settings
    from vqcore.zoo import load, sample
    from vqcore.zoo.bench import PRESETS, VIDEO_GUIDANCE, _calibration
    from vqcore.zoo.evaluate import evaluate_videos, features, real_reference

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iters", type=int, default=None, help="q-vdit iterations (default: the preset's)")
    ap.add_argument("--settings", default="4x8,4x6,3x6", help="comma-separated WxA: FP/RTN/vidit-q/q-vdit rows")
    ap.add_argument("--ablate", default="3x6", help="settings that also get the four ablation rows")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/vqcore_qvdit"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    p = PRESETS["quick" if args.quick else "full"]
    iters = args.iters if args.iters is not None else p["iters"]
    dev = torch.device(args.device)
    gen = load("moving-digits-dit", device=dev)
    clf = load("moving-digits-classifier", device="cpu")
    real, _ = real_reference("video", n=p["n_real"], seed=123)
    real_feats, _ = features(clf, real)
    n = p["n_video"]
    labels = torch.arange(n) % 10
    kw = dict(num_steps=p["steps"], guidance_scale=VIDEO_GUIDANCE, seed=args.seed + 10_000, batch_size=50)
    fp = sample(gen, labels, **kw)
    rows = [{"W/A": "FP", "variant": "fp", **evaluate_videos(fp, labels, clf, real_feats)}]
    calib = _calibration(gen, (torch.arange(p["calib_video"]) * 3 + 1) % 10, p["steps"], VIDEO_GUIDANCE,
                         args.seed + 50_000, max_bytes=768 * 2**20)
    for setting in args.settings.split(","):
        w, a = (int(v) for v in setting.split("x"))
        runs = [("rtn", "rtn", {}), ("vidit-q", "vidit-q", {}), ("q-vdit", "q-vdit", {"iters": iters,
                                                                                    "progress": False})]
        if setting in args.ablate.split(","):
            official = official_settings(w, a)
            for k, v in VARIANTS.items():  # the variant equal to the official default is the q-vdit row itself
                if not (v["tqe"] and v["tmd"] == official["tmd"]):
                    runs.append((f"q-vdit {k}", "q-vdit", {**v, "iters": iters, "progress": False}))
        for name, method, opts in runs:
            torch.manual_seed(args.seed)
            t0 = time.perf_counter()
            q = vqcore.quantize(gen, method=method, w_bits=w, a_bits=a, calib=calib, **opts)
            qs = time.perf_counter() - t0
            m = evaluate_videos(sample(q, labels, **kw), labels, clf, real_feats, fp_samples=fp)
            d = q.vqcore_report.details
            rows.append({"W/A": f"W{w}A{a}", "variant": name, **m, "final_loss": d.get("final_loss"),
                         "quant_s": qs})
            logging.info("%s W%dA%d: %s", name, w, a, m)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"preset": "quick" if args.quick else "full", "iters": iters, "n_video": n, "steps": p["steps"],
            "device": str(dev), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str))
    table = markdown_table([{k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows])
    (args.out / "results.md").write_text(f"# Q-VDiT ablation\n\n{json.dumps(meta)}\n\n{table}\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
