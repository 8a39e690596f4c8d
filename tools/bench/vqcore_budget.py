"""How far each trained vqcore recipe moves its parameters, in units of the weight quantization step (issue 20).

For ``q-vdit`` and ``s2q-vdit`` (zoo ``moving-digits-dit``, W4A6) and ``mpq-dm`` (zoo ``digits-unet``, W4A8) this runs
the method with its default learning rates (the budget rule of :mod:`vqcore.methods.budget`) at ``--iters`` (100:
the rule then gives exactly the official ``lr × steps``), and with the official rates unchanged (``lr_scale=1``) at a
short ``--short`` budget, and reports per trained group:

* ``delta_rel``: mean ``|Δ_after − Δ_before| / Δ_before`` of the weight steps;
* ``lora_in_steps``: mean ``|B A|`` of the in-quantizer LoRA, in units of its layer's mean weight step;
* ``rank1_in_steps`` (q-vdit): the same for the rank-1 term ``β αᵀ``.

``mpq-dm``'s default keeps the code's per-step rates (``lr_scale=1``; the budget rule collapsed the zoo UNet), so it
gets both rows: ``default`` (its real default) and ``budget_rule`` (``lr_scale="budget"``).

``official_extrapolated`` multiplies the ``lr_scale=1`` movement by ``official steps / our steps`` (Adam moves a
parameter about ``lr`` per step, so movement ∝ lr × steps while it is small): the amount the official recipe would move
the parameter. The default run should be of that order. CPU, a few minutes; writes ``results/vqcore/budget.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import vqcore
from commons.results import write_results
from vqcore.quant import QLinear
from vqcore.quant.modules import QuantModule


def _snapshot(q) -> dict:
    out = {}
    for name, m in q.named_modules():
        if not isinstance(m, QuantModule) or m.weight_quantizer is None or not m.quant_weight:
            continue
        d = {"delta": m.weight_quantizer.scale.detach().float().clone()}
        if m.weight_adapter is not None:
            d["lora"] = m.weight_adapter().detach().float().reshape(m.weight.shape[0], -1)
        side = getattr(m, "side_branch", None)
        if isinstance(m, QLinear) and side is not None:
            d["rank1"] = (side.up.weight @ side.down.weight).detach().float()
        out[name] = d
    return out


def _movement(before: dict, after: dict) -> dict:
    rel, lora, r1 = [], [], []
    for name, a in after.items():
        b = before.get(name)
        if b is None or b["delta"].shape != a["delta"].shape:
            continue
        d0 = b["delta"].abs().clamp_min(1e-12)
        rel.append(float(((a["delta"] - b["delta"]).abs() / d0).mean()))
        step = float(d0.mean())
        if "lora" in a:
            lora.append(float((a["lora"] - b.get("lora", 0 * a["lora"])).abs().mean()) / step)
        if "rank1" in a:
            r1.append(float(a["rank1"].abs().mean()) / step)
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return {"delta_rel": mean(rel), "lora_in_steps": mean(lora), "rank1_in_steps": mean(r1), "layers": len(rel)}


def measure(method: str, model, w: int, a: int, calib, iters: int, short: int, official_steps: int, steps_of,
            budget_opts: dict | None = None, **opts) -> list:
    """The method's default run at ``iters``; where the budget rule is not the default (``budget_opts`` selects it,
    mpq-dm) also a ``budget_rule`` run at ``iters``; the official-rate run at ``short`` iterations (extrapolated);
    one row each."""
    base = vqcore.quantize(model, method, w_bits=w, a_bits=a, calib=calib, iters=0, progress=False, **opts)
    before = _snapshot(base)
    rows = []
    runs = [("default", iters, {})] + ([("budget_rule", iters, budget_opts)] if budget_opts else [])
    for label, n, extra in (*runs, ("official_lr", short, {"lr_scale": 1.0})):
        t0 = time.perf_counter()
        q = vqcore.quantize(model, method, w_bits=w, a_bits=a, calib=calib, iters=n, progress=False, **opts, **extra)
        sec = time.perf_counter() - t0
        mv, det = _movement(before, _snapshot(q)), q.vqcore_report.details
        rows.append({"method": method, "run": label, "steps": steps_of(det), "lr_scale": det.get("lr_scale"),
                     **{k: v for k, v in mv.items() if v is not None}, "seconds": round(sec, 1)})
    factor = official_steps / rows[-1]["steps"]
    rows.append({"method": method, "run": "official_extrapolated", "steps": official_steps, "lr_scale": 1.0,
                 **{k: (v * factor if k in ("delta_rel", "lora_in_steps", "rank1_in_steps") else v)
                    for k, v in rows[-1].items() if k not in ("method", "run", "steps", "lr_scale", "seconds")}})
    return rows


def main(argv=None) -> int:
    from vqcore.zoo import load
    from vqcore.zoo.bench import VIDEO_GUIDANCE, _calibration

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=100, help="default-run iterations (q-vdit; s2q-vdit per block)")
    ap.add_argument("--rollouts", type=int, default=25, help="default-run mpq-dm rollouts (x 8 steps)")
    ap.add_argument("--short", type=int, default=20, help="iterations of the official-rate run (mpq-dm: /4 rollouts)")
    ap.add_argument("--out", type=Path, default=None, help="results root (default: the repo's results/)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    rows = []
    dit = load("moving-digits-dit")
    calib = _calibration(dit, torch.tensor([1, 4]), 8, VIDEO_GUIDANCE, 50_000, 512 * 2**20)
    rows += measure("q-vdit", dit, 4, 6, calib, args.iters, args.short, 10000, lambda d: d["iters"], tqe=True)
    rows += measure("s2q-vdit", dit, 4, 6, calib, args.iters, args.short, 10000, lambda d: d["iters_per_block"])
    unet = load("digits-unet")
    ucalib = _calibration(unet, torch.tensor([1, 4]), 8, 1.0, 50_000, 2**28)
    rows += measure("mpq-dm", unet, 4, 8, ucalib, args.rollouts, max(args.short // 4, 1), 16000,
                    lambda d: d["optimizer_steps"], budget_opts={"lr_scale": "budget"},  # not mpq-dm's default
                    batch_size=2, search_items=4, trd=False)
    for r in rows:
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
    kw = {"root": args.out} if args.out else {}
    write_results("vqcore", "budget", rows=rows, settings={
        "device": "cpu", "dit": "moving-digits-dit W4A6, 2 calibration trajectories x 8 steps",
        "unet": "digits-unet W4A8, 2 trajectories x 8 steps, batch 2, trd off", "iters": args.iters,
        "rollouts": args.rollouts, "short": args.short,
        "command": "python tools/bench/vqcore_budget.py"}, **kw)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
