#!/usr/bin/env python3
"""How peak CPU memory of vqcore calibration scales with the calibration size (and stays under ``max_bytes``).

For each number of FP sampling trajectories of the zoo video DiT (``moving-digits-dit``), a fresh subprocess captures
block + model inputs/outputs with :class:`vqcore.calib.Capture` and then runs the ``vidit-q`` baseline on them;
reported: bytes stored, peak RSS growth during capture and during quantization (``commons.profiling.PeakMemory``,
sampled process RSS). The last row repeats the largest size under a budget of a quarter of its stored bytes.

    python tools/bench/vqcore_calib_memory.py --out runs/bench/vqcore_calib_memory
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def one(n: int, steps: int, max_bytes: int) -> dict:
    import torch

    import vqcore
    from commons.profiling import PeakMemory
    from vqcore.calib import Capture
    from vqcore.zoo import load, sample

    torch.manual_seed(0)
    model = load("moving-digits-dit")
    labels = torch.arange(n) % 10
    with PeakMemory("cpu") as pm_cap, torch.no_grad(), Capture(model, targets="blocks", max_bytes=max_bytes) as cap:
        sample(model, labels, num_steps=steps, seed=1, batch_size=1)
    stored = cap.result.nbytes()
    with PeakMemory("cpu") as pm_q:
        q = vqcore.quantize(model, method="vidit-q", w_bits=4, a_bits=8, calib=cap.result)
    return {"trajectories": n, "steps": steps, "items": len(cap.result), "stored_MiB": stored / 2**20,
            "budget_MiB": max_bytes / 2**20, "capture_peak_rss_MiB": pm_cap.peak_bytes / 2**20,
            "quantize_peak_rss_MiB": pm_q.peak_bytes / 2**20, "layers": q.vqcore_report.layers}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path("runs/bench/vqcore_calib_memory"))
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--max-bytes", type=int, default=2**31, help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="calibration sizes 1 and 2 only (the README rows use 1 2 4 8)")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes = [1, 2]
    if args.one is not None:
        print(json.dumps(one(args.one, args.steps, args.max_bytes)))
        return 0
    rows = []

    def run(n: int, max_bytes: int) -> dict:
        cmd = [sys.executable, __file__, "--one", str(n), "--steps", str(args.steps), "--max-bytes", str(max_bytes)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        print({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
        return row

    for n in args.sizes:
        rows.append(run(n, 2**31))
    rows.append(run(args.sizes[-1], int(rows[-1]["stored_MiB"] * 2**20 / 4)))
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": "cpu"}
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    keys = list(rows[0])
    md = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    md += ["| " + " | ".join(f"{r[k]:.1f}" if isinstance(r[k], float) else str(r[k]) for k in keys) + " |"
           for r in rows]
    (args.out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
