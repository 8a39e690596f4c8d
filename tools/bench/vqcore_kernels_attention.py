"""Error of the SageAttention-style int8 attention (``vqcore.kernels.int8_attention``) against float SDPA on *real*
activations: every attention call of the zoo's video DiT (``moving-digits-dit``, shipped weights, diffusers Latte:
spatial self-attention, cross-attention to the class tokens, temporal self-attention) while it samples with DDIM.

Each call's Q/K/V go through the int8 reference (the kernel's exact numerics on the same codes; the Triton kernel
equals it within fp32 summation order, tests) and, for comparison, through the same int8 quantization *without* K
smoothing; the model itself continues with the float output, so every step sees the activations of the float model.
Also the whole-model effect: the sample made with ``convert``-style int8 attention everywhere vs the float sample.
CPU (reference path), a few seconds.

    .venv/bin/python tools/bench/vqcore_kernels_attention.py [--steps 10] [--labels 4]

Writes ``results/vqcore/vqcore_kernels_attention.json`` (``commons.results``; rows per attention kind, table
``calls``, and the sample-level row, table ``sample``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
for p in ("packages/vqcore/src", "packages/commons/src"):
    if str(ROOT / p) not in sys.path:
        sys.path.insert(0, str(ROOT / p))

from vqcore import kernels, zoo  # noqa: E402
from vqcore.kernels import attention as attn  # noqa: E402
from vqcore.quant.attention import _wrapper_class  # noqa: E402
from vqcore.zoo.sampling import sample  # noqa: E402


class _Probe(nn.Module):
    """SDPA stand-in that returns the float result and records the int8 attention's error on the same inputs."""

    def __init__(self, name: str, log: list) -> None:
        super().__init__()
        self.name, self.log = name, log

    def forward(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        y = attn._SDPA(query, key, value, attn_mask=attn_mask, dropout_p=0.0, is_causal=is_causal, scale=scale)
        if attn_mask is None and not is_causal and attn.kernel_supports(query, key, value):
            sc = query.shape[-1] ** -0.5 if scale is None else scale
            ref = y.float()
            row = {"module": self.name, "sq": query.shape[2], "sk": key.shape[2], "d": query.shape[3]}
            for smooth in (True, False):
                qc, qs, kc, ks = attn.quantize_qk(query, key, sc, smooth_k=smooth)
                yi = attn.int8_attention_ref(qc, qs, kc, ks, value, torch.float32)
                key_ = "smooth" if smooth else "nosmooth"
                row[f"rel_err_{key_}"] = float((yi - ref).norm() / ref.norm())
                row[f"cos_{key_}"] = float(F.cosine_similarity(yi.flatten(), ref.flatten(), dim=0))
            self.log.append(row)
        return y


def _kind(name: str) -> str:
    if ".attn2" in name:
        return "cross-attention (to class tokens)"
    return "temporal self-attention" if "temporal" in name else "spatial self-attention"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--labels", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.time()
    torch.manual_seed(args.seed)
    model = zoo.load("moving-digits-dit").eval()
    labels = torch.arange(args.labels) % 10
    log: list = []
    probes = 0
    for name, mod in model.named_modules():
        proc = getattr(mod, "processor", None)
        if proc is not None and callable(proc):
            mod.processor = _wrapper_class(type(proc))(proc, _Probe(name, log))
            probes += 1
    with torch.no_grad():
        x_fp = sample(model, labels, num_steps=args.steps, seed=args.seed)
    for _, mod in model.named_modules():  # back to the plain processors, then int8 attention everywhere
        proc = getattr(mod, "processor", None)
        if proc is not None and hasattr(proc, "inner"):
            mod.processor = proc.inner
    kernels.use_int8_attention(model)
    with torch.no_grad():
        x_int8 = sample(model, labels, num_steps=args.steps, seed=args.seed)
    rows = []
    for kind in sorted({_kind(r["module"]) for r in log}):
        rs = [r for r in log if _kind(r["module"]) == kind]
        rows.append({"table": "calls", "attention": kind, "calls": len(rs), "Sq": rs[0]["sq"], "Sk": rs[0]["sk"],
                     "D": rs[0]["d"],
                     "median_rel_err": statistics.median(r["rel_err_smooth"] for r in rs),
                     "max_rel_err": max(r["rel_err_smooth"] for r in rs),
                     "max_1_minus_cos": max(1.0 - r["cos_smooth"] for r in rs),
                     "median_rel_err_no_smoothing": statistics.median(r["rel_err_nosmooth"] for r in rs)})  # fmt: skip
    mse = float(((x_int8 - x_fp) ** 2).mean())
    psnr = 10 * torch.log10(torch.tensor(1.0 / max(mse, 1e-12))).item()
    rows.append({"table": "sample", "attention": "all (int8 in every attention call)", "calls": len(log),
                 "psnr_vs_fp_sample_db": psnr, "max_abs_diff": float((x_int8 - x_fp).abs().max())})  # fmt: skip
    from commons.results import write_results

    path = write_results("vqcore", "vqcore_kernels_attention", rows,
                         {"model": "moving-digits-dit (shipped weights)", "sampler": f"DDIM {args.steps} steps",
                          "labels": labels.tolist(), "seed": args.seed, "path": "CPU reference (int8 codes exact)",
                          "q_block": 128, "k_block": 64, "seconds": round(time.time() - t0, 1)})  # fmt: skip
    for r in rows:
        print(r)
    print(f"{probes} attention modules; wrote {path} in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
