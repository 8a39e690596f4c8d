"""Benchmark of vqcore's integer kernels (issues 4 and 19).

GEMMs: W8A8, W4A8 and W4A8 g128 (Triton) vs bf16 ``torch.matmul`` (cuBLAS), ``torch._int_mm`` (int8 cuBLAS) and FP8
``torch._scaled_mm`` with per-row scales (e4m3 activations per token, e4m3 weights per output channel: the float8
path an H100 user would pick instead, torchao's rowwise recipe) at the linear shapes of CogVideoX-2B (hidden 1920,
MLP 7680) and Open-Sora/Latte (1152, 4608), at M ≈ 16–18k tokens and small M (256, 64, 16). "gemm" columns time the
GEMM alone on pre-quantized activations; "layer"/"+quant" columns add the activation quantization (what a layer really
pays: vqcore's per-token quantizer kernel; for FP8 the amax/scale/cast in plain torch ops). Plus one transformer
block of CogVideoX-2B size (random weights, 17 550 video + 226 text tokens): bf16 vs converted W8A8 / W4A8
(latency, linear-weight memory), and one whole 30-block denoiser step of that size (bf16 vs converted).

Numerics of the FP8 baseline vs vqcore's integer grids: e4m3 is a floating grid (3 mantissa bits: relative spacing
2^-3 near every value, denser near 0 and coarser near amax) scaled so that the row's amax maps to 448, whereas int8
is a uniform grid of 255 levels per row (absolute spacing amax/127); so FP8 keeps small values more precisely and large
values less precisely than A8, and its weights are 8 bit (there is no FP8 counterpart of W4).

    python tools/bench/vqcore_kernels.py                 # on a CUDA GPU (all shapes, block)
    python tools/bench/vqcore_kernels.py --large-only --budget-s 55   # reduced: large-M shapes, block, time-boxed
    python tools/bench/vqcore_kernels.py --quick         # CPU: tiny shapes through the reference path (smoke only)

On the GPU every large-M shape also times the kernel *variants* side by side in the same process ("before" = the
pointer-based kernel with the tiles the autotuner chose in the first H100 run, W4 unpacked inside its K loop; "after"
= the persistent TMA kernel with several tiles, W4 unpacked once to a transient int8 copy + the int8 GEMM); the
layer/block columns use the library's default dispatch policy.

Writes results.json, results.md, a PNG plot and (``commons.results`` format, flat rows in tables ``gemm``, ``small``,
``block``, ``step``, ``summary``) ``vqcore/vqcore_kernels.json`` into --out (default runs/bench/vqcore_kernels); the
lead copies the latter to ``results/vqcore/`` for the README's generated kernel table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
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

from vqcore import kernels  # noqa: E402
from vqcore.convert import QLinearInt, linear_weight_bytes  # noqa: E402

MODELS = {"CogVideoX-2B": (1920, 7680, 17776), "Latte/Open-Sora": (1152, 4608, 16384)}


GRAPH = True  # time GEMMs/layers as CUDA-graph replays (no host launch overhead); --eager turns it off


def _time(fn, warmup: int, rep: int, cuda: bool, graph: bool | None = None) -> float:
    """Median milliseconds of ``fn``. On GPU: CUDA-graph replays (``triton.testing.do_bench_cudagraph``) when ``graph``
    (default: the module's GRAPH), else ``triton.testing.do_bench`` (CUDA events, L2 flushed between calls, includes
    host launch overhead). On CPU: perf_counter."""
    graph = GRAPH if graph is None else graph
    if cuda:
        import triton

        for _ in range(3):  # autotuning and compilation happen here, outside any capture
            fn()
        torch.cuda.synchronize()
        if graph:
            return float(triton.testing.do_bench_cudagraph(fn, rep=rep, return_mode="median"))
        return float(triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))
    for _ in range(2):
        fn()
    ts = []
    for _ in range(5):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def _cfg_name(cfg: dict) -> str:
    c = {k: v for k, v in cfg.items()}
    swap = " swap" if c.get("SWAP") else ""
    unpack = "unpack+" if c.get("UNPACK") else ""
    extra = (" flat" if c.get("FLATTEN") else "") + (" tma-store" if c.get("STORE_DESC") else "")
    extra += f" k{c['BLOCK_K']}" if "BLOCK_K" in c else ""
    extra += " pair" if c.get("PAIR") else ""
    extra += " ws" if c.get("WS") else ""
    return (f"{unpack}{c.get('PATH', 'ptr')} {c.get('BLOCK_M')}x{c.get('BLOCK_N')} w{c.get('num_warps')} "
            f"s{c.get('num_stages')}{swap}{extra}")  # fmt: skip


# "before": the pointer kernel with the tiles the autotuner picked for the large-M shapes in the first H100 run
BEFORE_W8 = [
    {"PATH": "ptr", "UNPACK": False, "BLOCK_M": 128, "BLOCK_N": 256, "SWAP": 0, "num_warps": 8, "num_stages": 4},
    {"PATH": "ptr", "UNPACK": False, "BLOCK_M": 256, "BLOCK_N": 128, "SWAP": 1, "num_warps": 8, "num_stages": 3},
]
BEFORE_W4 = {"PATH": "ptr", "UNPACK": False, "BLOCK_M": 256, "BLOCK_N": 128, "SWAP": 1, "num_warps": 8,
             "num_stages": 3}  # fmt: skip
TMA_W8 = [  # the tiles closest to Triton's own persistent-TMA tutorial first, the more unusual ones after
    {"PATH": "tma", "BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 128, "num_warps": 8, "num_stages": 4},
    {"PATH": "tma", "BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_K": 128, "num_warps": 8, "num_stages": 3},
    {"PATH": "tma", "BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 128, "num_warps": 8, "num_stages": 3, "FLATTEN": True},
    {"PATH": "tma", "BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 256, "num_warps": 8, "num_stages": 2},
    {
        "PATH": "tma",
        "BLOCK_M": 128,
        "BLOCK_N": 256,
        "BLOCK_K": 128,
        "num_warps": 8,
        "num_stages": 3,
        "FLATTEN": True,
        "STORE_DESC": True,
    },
]
TMA_W8 += [  # Triton's automatic warp specialisation of the persistent tile loop (compiles for sm_90 with Triton 3.8)
    {"PATH": "tma", "BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 128, "num_warps": 8, "num_stages": 3, "WS": True},
    {"PATH": "tma", "BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 128, "num_warps": 8, "num_stages": 4, "WS": True},
]
G128_TMA = [
    {
        "PATH": "tma",
        "UNPACK": True,
        "BLOCK_M": 128,
        "BLOCK_N": 128,
        "BLOCK_K": 128,
        "num_warps": 8,
        "num_stages": 3,
        "PAIR": True,
    },
    {
        "PATH": "tma",
        "UNPACK": True,
        "BLOCK_M": 128,
        "BLOCK_N": 128,
        "BLOCK_K": 128,
        "num_warps": 8,
        "num_stages": 4,
        "PAIR": False,
    },
    {
        "PATH": "tma",
        "UNPACK": True,
        "BLOCK_M": 128,
        "BLOCK_N": 256,
        "BLOCK_K": 128,
        "num_warps": 8,
        "num_stages": 3,
        "PAIR": False,
    },
]
G128_AFTER = {"PATH": "ptr", "UNPACK": True, "BLOCK_M": 256, "BLOCK_N": 128, "SWAP": 1, "num_warps": 8,
              "num_stages": 3}  # fmt: skip


def _variants(args, cuda, t, errs, cfgs, run_cfg, ref_of, mods, deadline) -> None:
    """Time every variant config of the large-M comparison (best of each family), checking each one."""

    def best(key, mod, configs):
        out = []
        if not NEW_PATHS_OK[0]:
            configs = [c for c in configs if c.get("PATH") != "tma" and not c.get("UNPACK")]
        for cfg in configs:
            if time.time() > deadline:
                break
            try:
                y = run_cfg(mod, cfg)
                err = float((y.float() - ref_of[mod]).norm() / ref_of[mod].norm())
                ms = _time(lambda cfg=cfg: run_cfg(mod, cfg), args.warmup, args.rep, cuda)
                out.append((ms, err, _cfg_name(cfg)))
            except Exception as e:  # a variant that does not compile/run on this Triton: recorded, not fatal
                cfgs[f"{key}_fail_{_cfg_name(cfg)}"] = f"{type(e).__name__}: {str(e)[:300]}"
        if out:
            ms, err, name = min(out)
            t[key], errs[key], cfgs[key] = ms, err, name
            cfgs[key + "_all"] = {n: round(m, 4) for m, _, n in out}

    q8, q4, q4g = mods
    best("w8a8_before", q8, BEFORE_W8)
    best("w4a8_before", q4, [BEFORE_W4])
    best("w8a8_tma", q8, TMA_W8)
    tma_best = [c for c in TMA_W8 if _cfg_name(c) == cfgs.get("w8a8_tma")]
    best("w4a8_unpack", q4, [{**c, "UNPACK": True} for c in (tma_best or TMA_W8[:1])])
    best("w4a8_g128_before", q4g, [{**BEFORE_W4}])
    best("w4a8_g128_unpack", q4g, [G128_AFTER, *G128_TMA])


def _quant_variants(args, cuda, x, t, cfgs, deadline) -> None:
    """Rows per program / warps of the per-token quantizer (codes must equal the default launch's bit for bit)."""
    import triton

    from vqcore.kernels import triton_kernels as tk

    bk = triton.next_power_of_2(x.shape[1])
    base = tk.quantize_per_token(x, None, 8, True)
    cands = [(2, 4), (4, 8), (8, 8)] if bk <= 2048 else [(2, 8), (4, 16)]
    default = tk._quant_launch(bk)
    cands = [(r, w, False) for r, w in cands]
    if _probed("quantizer RECIP"):  # RECIP: reciprocal multiplies with the exact fallback
        cands += [(default["ROWS"], default["num_warps"], True)] + [(r, w, True) for r, w, _ in cands[:2]]
    configs = {f"rows{r} w{w}{' recip' if rc else ''}": {"ROWS": r, "num_warps": w, "RECIP": rc} for r, w, rc in cands}
    # the opt-in two-pass chunked row loop (CHUNK_K): only the last chunk is partial where K is not a power of two
    configs |= {f"chunk{c} rows{r} w{w}": {"ROWS": r, "num_warps": w, "CHUNK_K": c}
                for c, r, w in ((512, 1, 4), (1024, 1, 4), (1024, 2, 8), (2048, 1, 8))}
    out = {}
    for name, cfg in configs.items():
        if time.time() > deadline:
            break
        try:
            got = tk.quantize_per_token(x, None, 8, True, config=cfg)
            same = all(torch.equal(a, b) for a, b in zip(got, base))
            ms = _time(lambda cfg=cfg: tk.quantize_per_token(x, None, 8, True, config=cfg), args.warmup, args.rep, cuda)
            out[name] = (ms, same)
        except Exception as e:
            cfgs[f"quant_fail_{name}"] = f"{type(e).__name__}: {str(e)[:200]}"
    ok = {k: v[0] for k, v in out.items() if v[1]}
    if ok:
        name = min(ok, key=ok.get)
        t["quant_best"], cfgs["quant_best"] = ok[name], name
    cfgs["quant_all"] = {k: [round(v[0], 4), v[1]] for k, v in out.items()}


FP8_MAX = 448.0  # largest finite float8_e4m3fn


def fp8_rowwise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row FP8 (e4m3) quantization in plain torch ops (torchao's rowwise float8 recipe): ``s = amax/448`` per row,
    ``x/s`` cast to e4m3 (round to nearest). Returns the codes and the fp32 scales ``[rows, 1]``."""
    s = x.abs().amax(dim=-1, keepdim=True).float().clamp_min(1e-12) / FP8_MAX
    return (x.float() / s).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn), s


def _fp8(args, x, w, t, errs, cfgs) -> None:
    """FP8 baseline: ``torch._scaled_mm`` with per-row activation and per-column weight scales, bf16 output; the
    GEMM alone (``fp8``) and with the activation quantization (``fp8_layer``)."""
    try:
        wq, ws = fp8_rowwise(w)  # [N, K] e4m3, [N, 1]
        wt, wst = wq.t(), ws.t().contiguous()  # column-major [K, N] (what _scaled_mm wants), [1, N]
        xq, xs = fp8_rowwise(x)

        def gemm():
            return torch._scaled_mm(xq, wt, scale_a=xs, scale_b=wst, out_dtype=torch.bfloat16)

        def layer():
            a, s = fp8_rowwise(x)
            return torch._scaled_mm(a, wt, scale_a=s, scale_b=wst, out_dtype=torch.bfloat16)

        ref = x.float() @ w.float().t()
        errs["fp8_vs_bf16_input"] = float((layer().float() - ref).norm() / ref.norm())
        t["fp8"] = _time(gemm, args.warmup, args.rep, True)
        t["fp8_layer"] = _time(layer, args.warmup, args.rep, True)
    except Exception as e:  # no rowwise FP8 GEMM on this GPU/torch: recorded, not fatal
        cfgs["fp8_fail"] = f"{type(e).__name__}: {str(e)[:300]}"


_VARIANT_SHAPES_LEFT = [1 << 30]  # --variant-shapes: how many large-M shapes still get the variant comparison


def _bench_shape(args, device, cuda: bool, model: str, name: str, m: int, k: int, n: int, deadline: float) -> dict:
    x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
    lin = nn.Linear(k, n, bias=False, device=device, dtype=torch.bfloat16)
    w = lin.weight.detach()
    q8 = QLinearInt.from_linear(lin, w_bits=8, a_bits=8)
    q4 = QLinearInt.from_linear(lin, w_bits=4, a_bits=8)
    q4g = QLinearInt.from_linear(lin, w_bits=4, a_bits=8, group_size=128)
    act = kernels.quantize_per_token(x, 8, True)
    flops = 2.0 * m * n * k

    def run_int(mod):
        return kernels.int_linear(
            act, mod.qweight, mod.weight_scale, in_features=k, w4=mod.spec.packed,
            group_size=mod.spec.group_size, out_dtype=torch.bfloat16,
        )  # fmt: skip

    def run_cfg(mod, cfg):
        from vqcore.kernels import triton_kernels as tk

        sp = mod.spec
        return tk.int_linear(act.codes, act.scale, None, None, mod.qweight, mod.weight_scale, sp.group_size, sp.packed,
                             k, None, None, None, None, None, torch.bfloat16, config=dict(cfg))  # fmt: skip

    # correctness of the timed paths against the dequantized fp32 product
    xd = act.codes.float() * act.scale[:, None]
    errs, ref_of = {}, {}
    for key, mod in (("w8a8", q8), ("w4a8", q4), ("w4a8_g128", q4g)):
        ref_of[mod] = xd @ mod.dequantized_weight().t()
        errs[key] = float((run_int(mod).float() - ref_of[mod]).norm() / ref_of[mod].norm())
    del xd
    t, cfgs = {}, {}
    t["bf16"] = _time(lambda: F.linear(x, w), args.warmup, args.rep, cuda)
    if cuda and m > 16:
        wt = q8.qweight.t()  # [K, N] column-major view: the layout cuBLAS int8 wants
        t["int_mm"] = _time(lambda: torch._int_mm(act.codes, wt), args.warmup, args.rep, cuda)
    for key, mod in (("w8a8", q8), ("w4a8", q4), ("w4a8_g128", q4g)):
        t[key] = _time(lambda mod=mod: run_int(mod), args.warmup, args.rep, cuda)
    if cuda and m >= 4096 and not args.no_variants and _VARIANT_SHAPES_LEFT[0] > 0:
        _VARIANT_SHAPES_LEFT[0] -= 1
        _variants(args, cuda, t, errs, cfgs, run_cfg, ref_of, (q8, q4, q4g), deadline)
    del ref_of
    t["quant"] = _time(lambda: kernels.quantize_per_token(x, 8, True), args.warmup, args.rep, cuda)
    if cuda and m >= 4096 and not args.no_variants:
        _quant_variants(args, cuda, x, t, cfgs, deadline)
    t["w8a8_layer"] = _time(lambda: q8(x), args.warmup, args.rep, cuda)
    t["w4a8_layer"] = _time(lambda: q4(x), args.warmup, args.rep, cuda)
    t["w4a8_g128_layer"] = _time(lambda: q4g(x), args.warmup, args.rep, cuda)
    if cuda:
        _fp8(args, x, w, t, errs, cfgs)
    if cuda and m < LARGE_M and _probed("weight-only"):  # the weight-only path (16-bit activations): small M
        from vqcore.kernels import triton_kernels as tk

        for key, mod in (("wonly8", q8), ("wonly4", q4), ("wonly4_g128", q4g)):
            try:
                def wo(mod=mod):
                    return tk.weight_only_linear(x, mod.qweight, mod.weight_scale, mod.spec.group_size,
                                                 mod.spec.packed, k, None, torch.bfloat16)  # fmt: skip

                r_ = x.float() @ mod.dequantized_weight().t()
                errs[key] = float((wo().float() - r_).norm() / r_.norm())
                t[key] = _time(wo, args.warmup, args.rep, cuda)
                if key == "wonly8" and m <= 16:  # two more tiles for the tiniest batch (more programs / fewer)
                    for cfg in ({"BLOCK_N": 16}, {"BLOCK_N": 64, "num_stages": 3}):
                        ms_ = _time(lambda cfg=cfg, mod=mod: tk.weight_only_linear(
                            x, mod.qweight, mod.weight_scale, 0, False, k, None, torch.bfloat16, config=cfg),
                            args.warmup, args.rep, cuda)  # fmt: skip
                        cfgs[f"wonly8 {cfg}"] = round(ms_, 5)
            except Exception as e:
                cfgs[f"{key}_fail"] = f"{type(e).__name__}: {str(e)[:300]}"
        if _probed("weight-only split-K"):
            _wonly_split_variants(args, cuda, x, k, (("wonly8", q8), ("wonly4", q4), ("wonly4_g128", q4g)), t, errs,
                                  cfgs)  # fmt: skip
    if cuda and GRAPH and not (args.large_only or args.no_eager):  # the layer launched eagerly (host overhead)
        t["bf16_eager"] = _time(lambda: F.linear(x, w), args.warmup, args.rep, cuda, graph=False)
        t["w4a8_layer_eager"] = _time(lambda: q4(x), args.warmup, args.rep, cuda, graph=False)
    row = {"model": model, "layer": name, "M": m, "K": k, "N": n, "rel_err": errs, "configs": cfgs}
    for kk in ("wonly8", "wonly4"):  # the split the opt-in "auto" picked for this shape
        if f"{kk} auto split" in cfgs:
            row[f"{kk}_auto_split"] = cfgs[f"{kk} auto split"]
    for key, ms_ in t.items():
        row[f"{key}_ms"] = ms_
    row["bf16_tflops"] = flops / t["bf16"] / 1e9
    for key in t:
        if key not in ("bf16", "quant", "quant_best", "bf16_eager", "w4a8_layer_eager"):
            row[f"{key}_x"] = t["bf16"] / t[key]
    if "w4a8_layer_eager" in t:
        row["w4a8_layer_eager_x"] = t["bf16_eager"] / t["w4a8_layer_eager"]
    keys = ("int_mm", "fp8", "w8a8", "w4a8", "w4a8_g128", "w8a8_before", "w8a8_tma", "w4a8_before", "w4a8_unpack",
            "fp8_layer", "w8a8_layer", "w4a8_layer", "w4a8_g128_layer", "wonly8", "wonly4", "wonly4_g128",
            *SPLIT_COLS)  # fmt: skip
    speed = " ".join(f"{kk}={row[kk + '_x']:.2f}x" for kk in keys if kk + "_x" in row)
    err = max(v for kk, v in errs.items() if not kk.startswith("fp8"))
    print(f"{model:16s} {name:9s} M={m:6d} K={k:5d} N={n:5d} bf16 {t['bf16']:.3f}ms {speed} err<={err:.1e} {cfgs}",
          flush=True)  # fmt: skip
    return row


SMALL_MS = (256, 64, 16)  # the small-batch token counts of issue 19 item 5
#: split-K variants of the weight-only kernel timed at small M (opt-in: ``triton_weight_only.WONLY_SPLIT_K``):
#: ``auto`` (``choose_split_k``: ~3 programs per SM, ≥ 2 chunks per split, partials ≤ weight bytes) and fixed splits
WONLY_SPLITS = ("auto", 2, 4, 8)
SPLIT_COLS = tuple(f"{key}_sk{'_auto' if s_ == 'auto' else s_}" for key in ("wonly8", "wonly4", "wonly4_g128")
                   for s_ in WONLY_SPLITS)  # fmt: skip


def _wonly_split_variants(args, cuda, x, k, mods, t, errs, cfgs) -> None:
    """Time the weight-only kernel with split-K (:data:`WONLY_SPLITS`) next to the single-pass ``wonly*`` columns;
    records the split ``auto`` picks for this shape (``cfgs["wonly8 auto split"]``, ``"wonly4 auto split"``)."""
    from vqcore.kernels import triton_kernels as tk
    from vqcore.kernels import triton_weight_only as tw

    m = x.shape[0]
    tile = tw.WONLY_TILES["16" if m <= 16 else ("64" if m <= 64 else "256")]
    for key, mod in mods:
        r_ = x.float() @ mod.dequantized_weight().t()
        if key != "wonly4_g128":
            cfgs[f"{key} auto split"] = tw.choose_split_k(m, mod.qweight.shape[0], k, mod.spec.packed, tile["BLOCK_M"],
                                                          tile["BLOCK_N"], tk._num_sms(x.device))  # fmt: skip
        for split in WONLY_SPLITS:
            col = f"{key}_sk{'_auto' if split == 'auto' else split}"
            try:
                def wo(mod=mod, split=split):
                    return tk.weight_only_linear(x, mod.qweight, mod.weight_scale, mod.spec.group_size,
                                                 mod.spec.packed, k, None, torch.bfloat16,
                                                 config={"SPLIT_K": split})  # fmt: skip

                errs[col] = float((wo().float() - r_).norm() / r_.norm())
                t[col] = _time(wo, args.warmup, args.rep, cuda)
            except Exception as e:
                cfgs[f"{col}_fail"] = f"{type(e).__name__}: {str(e)[:300]}"


def gemm_table(args, device, cuda: bool, deadline: float, sink=None, large: bool = True, small: bool = True,
               rows: list | None = None) -> list[dict]:  # fmt: skip
    """Rows of the GEMM table: the large-M shapes (``large``) and/or the small-M ones (``small``, M in ``--small-ms``),
    appended to ``rows``; a shape is not started after ``deadline``."""
    rows = [] if rows is None else rows
    shapes = []
    for model, (h, mlp, m_large) in MODELS.items():
        layers = [("qkv/proj", h, h), ("fc1", h, mlp), ("fc2", mlp, h)]
        ms = ([m_large] if large else []) + (list(args.small_ms) if small and not args.large_only else [])
        if args.quick:
            ms = [48] if large else [16]
            layers = [(n, max(k // 32, 64), max(nn_ // 32, 64)) for n, k, nn_ in layers]
        for m in ms:
            for name, k, n in layers:
                shapes.append((model, name, m, k, n))
    order = {"fc1": 0, "fc2": 1, "qkv/proj": 2}
    shapes.sort(key=lambda s: (-s[2], order.get(s[1], 3)))  # large M first (the targets), then 256, 64, 16
    torch.manual_seed(args.seed)
    for shape in shapes:
        if time.time() > deadline:
            print(f"time budget reached: skipped {shape}", flush=True)
            continue
        rows.append(_bench_shape(args, device, cuda, *shape, deadline=deadline))
        if sink is not None:
            sink(gemm_rows=rows)
    return rows


class Block(nn.Module):
    """A CogVideoX-2B-sized DiT block (random weights): adaLN-style modulation, fused QKV, SDPA attention (30 heads ×
    64, FP), output projection, GELU-tanh MLP 1920→7680→1920. The linears are the parts vqcore quantizes."""

    def __init__(self, dim: int = 1920, heads: int = 30, mlp: int = 7680) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-5)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-5)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.norm_q = nn.LayerNorm(dim // heads, eps=1e-6)
        self.norm_k = nn.LayerNorm(dim // heads, eps=1e-6)
        self.proj = nn.Linear(dim, dim)
        self.fc1 = nn.Linear(dim, mlp)
        self.fc2 = nn.Linear(mlp, dim)
        self.attn_fn = F.scaled_dot_product_attention  # kernels.int8_attention in the int8-attention variants

    def forward(self, x: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6, dim=-1)
        b, s, d = x.shape
        h = self.norm1(x) * (1 + scale1) + shift1
        q, k, v = self.qkv(h).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = self.attn_fn(self.norm_q(q), self.norm_k(k), v)
        x = x + gate1 * self.proj(a.transpose(1, 2).reshape(b, s, d))
        h = self.norm2(x) * (1 + scale2) + shift2
        return x + gate2 * self.fc2(F.gelu(self.fc1(h), approximate="tanh"))


LINEARS = ("qkv", "proj", "fc1", "fc2")


def quantized_copy(blk: Block, w_bits: int | None, group_size: int = 0, attention: str | None = None) -> Block:
    """A block sharing ``blk``'s norms whose four linears are ``QLinearInt.from_linear`` (round-to-nearest, A8
    per-token symmetric; ``w_bits=None``: the bf16 linears are shared too) and whose attention is the int8 kernel
    when ``attention="int8"``; ``blk`` is left unchanged."""
    qb = Block.__new__(Block)
    nn.Module.__init__(qb)
    qb.heads = blk.heads
    qb.attn_fn = kernels.int8_attention if attention == "int8" else blk.attn_fn
    for name, child in blk.named_children():
        if name in LINEARS and w_bits is not None:
            child = QLinearInt.from_linear(child, w_bits=w_bits, a_bits=8, group_size=group_size)
        setattr(qb, name, child)
    return qb.eval()


#: (name, weight bits or None for bf16 linears, group size, dispatch policy, attention, torch.compile)
BLOCK_VARIANTS = [  # most informative first: a time-boxed run that stops early keeps these
    ("W8A8", 8, 0, {}, None, False),
    ("bf16 + int8 attention", None, 0, {}, "int8", False),
    ("W8A8 + int8 attention", 8, 0, {}, "int8", False),
    ("W4A8", 4, 0, {}, None, False),
    ("W4A8 + int8 attention", 4, 0, {}, "int8", False),
    ("W8A8 TMA kernel (opt-in)", 8, 0, "new", None, False),
    ("W4A8 unpack + TMA (opt-in)", 4, 0, "new", None, False),
    ("W4A8 g128", 4, 128, {}, None, False),
    ("bf16 compiled", None, 0, {}, None, True),
    ("W8A8 compiled (quantizer fused by Inductor)", 8, 0, {}, None, True),
    ("W8A8 + int8 attention compiled", 8, 0, {}, "int8", True),
]


def _selected(name: str, wanted: str) -> bool:
    return not wanted or any(w.strip() and w.strip() == name for w in wanted.split(";"))


def _time_events(fn, reps: int = 3) -> float:
    """Median ms of ``fn`` launched eagerly (CUDA events; for calls of 100+ ms, where launch overhead is small)."""
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    return statistics.median(ts)


STEP_VARIANTS = [("W8A8", 8, 0, None), ("W4A8", 4, 0, None), ("W8A8 + int8 attention", 8, 0, "int8"),
                 ("W4A8 + int8 attention", 4, 0, "int8"), ("bf16 + int8 attention", None, 0, "int8")]  # fmt: skip

#: tiles of the int8 attention kernel timed by the attention table (the first is ``triton_attention.ATTN_TILE``)
ATTN_TILES = [
    {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3},
    {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 3},
    {"BLOCK_M": 128, "BLOCK_N": 128, "num_warps": 8, "num_stages": 3},
    {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 4, "num_stages": 4},
    {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3},
    {"BLOCK_M": 128, "BLOCK_N": 32, "num_warps": 4, "num_stages": 4},
]


def attention_table(args, device, cuda: bool, deadline: float = float("inf"), sink=None) -> list[dict]:
    """CogVideoX-2B-size self-attention (1 × 30 heads × 17 776 tokens × 64, bf16, random Q/K/V with K given a
    shared channel bias as real keys have): float SDPA vs the SageAttention-style int8 kernel (with its Q/K
    quantization pass, and the kernel alone per tile), relative L2 error and cosine similarity to SDPA."""
    from vqcore.kernels import attention as attn

    torch.manual_seed(args.seed + 2)
    b, h, s_, d = (1, 30, 17776, 64) if not args.quick else (1, 2, 64, 16)
    dtype = torch.bfloat16 if cuda else torch.float32
    q = torch.randn(b, h, s_, d, device=device, dtype=dtype)
    k = (torch.randn(b, h, s_, d, device=device) + 2.0 * torch.randn(1, h, 1, d, device=device)).to(dtype)
    v = torch.randn(b, h, s_, d, device=device, dtype=dtype)
    rows = []
    with torch.no_grad():
        y_ref = F.scaled_dot_product_attention(q, k, v).float()
        t_sdpa = _time(lambda: F.scaled_dot_product_attention(q, k, v), args.warmup, args.rep, cuda)
        flops = 4.0 * b * h * s_ * s_ * d
        rows.append({"variant": "SDPA bf16", "ms": t_sdpa, "speedup": 1.0, "tflops": flops / t_sdpa / 1e9,
                     "rel_err": 0.0, "cos": 1.0})  # fmt: skip

        def err(y):
            y = y.float()
            return (float((y - y_ref).norm() / y_ref.norm()),
                    float(F.cosine_similarity(y.flatten(), y_ref.flatten(), dim=0)))  # fmt: skip

        if not _probed("int8 attention"):
            print(f"attention: int8 kernel skipped ({PROBED.get('int8 attention')})", flush=True)
            return rows
        y8 = kernels.int8_attention(q, k, v)
        t8 = _time(lambda: kernels.int8_attention(q, k, v), args.warmup, args.rep, cuda)
        e, c = err(y8)
        rows.append({"variant": "int8 (Q/K quant + kernel)", "ms": t8, "speedup": t_sdpa / t8,
                     "tflops": flops / t8 / 1e9, "rel_err": e, "cos": c})  # fmt: skip
        scale = d**-0.5
        tq = _time(lambda: attn.quantize_qk(q, k, scale), args.warmup, args.rep, cuda)
        rows.append({"variant": "Q/K quantization pass alone", "ms": tq, "speedup": float("nan"),
                     "tflops": float("nan"), "rel_err": float("nan"), "cos": float("nan")})  # fmt: skip
        if cuda:
            from vqcore.kernels import triton_attention as ta

            qc, qs, kc, ks = attn.quantize_qk(q, k, scale)
            for tile in ATTN_TILES:
                if time.time() > deadline:
                    break
                name = f"kernel {tile['BLOCK_M']}x{tile['BLOCK_N']} w{tile['num_warps']} s{tile['num_stages']}"
                try:
                    yk = ta.int8_attention(qc, qs, kc, ks, v, dtype, config=dict(tile))
                    tk_ = _time(lambda tile=tile: ta.int8_attention(qc, qs, kc, ks, v, dtype, config=dict(tile)),
                                args.warmup, args.rep, cuda)  # fmt: skip
                    e, c = err(yk)
                    rows.append({"variant": name, "ms": tk_, "speedup": t_sdpa / tk_, "tflops": flops / tk_ / 1e9,
                                 "rel_err": e, "cos": c})  # fmt: skip
                except Exception as ex:
                    print(f"attention {name} FAILED: {type(ex).__name__}: {str(ex)[:300]}", flush=True)
                if sink is not None:
                    sink(attn_rows=rows)
    for r in rows:
        print(f"attention {r['variant']:34s} {r['ms']:.3f} ms  x{r['speedup']:.2f}  {r['tflops']:.0f} TFLOP/s  "
              f"rel_err {r['rel_err']:.3g}  cos {r['cos']:.6f}", flush=True)  # fmt: skip
    return rows


def step_table(args, device, cuda: bool, deadline: float = float("inf"), sink=None) -> list[dict]:
    """One denoiser step of a CogVideoX-2B-size transformer: ``--step-blocks`` (30) blocks with their own random
    weights, 17 776 tokens, bf16 vs each converted variant (eager launches, median of 3; at ~10 ms per block the
    host launch overhead is < 1 %)."""
    torch.manual_seed(args.seed + 1)
    dim, heads, mlp, seq = (1920, 30, 7680, 17776) if not args.quick else (128, 2, 512, 64)
    n_blocks = args.step_blocks if not args.quick else 2
    dtype = torch.bfloat16
    with torch.device(device):
        blocks = [Block(dim, heads, mlp).to(dtype).eval() for _ in range(n_blocks)]
    x = torch.randn(1, seq, dim, device=device, dtype=dtype)
    mod = torch.randn(1, 1, 6 * dim, device=device, dtype=dtype) * 0.1

    def run(bl):
        h = x
        for b in bl:
            h = b(h, mod)
        return h

    def timed(bl):
        return _time_events(lambda: run(bl)) if cuda else _time(lambda: run(bl), 0, 0, False)

    rows = []
    fp16_bytes = sum(m.weight.numel() * 2 for b in blocks for m in b.modules() if isinstance(m, nn.Linear))
    with torch.no_grad():
        y_ref = run(blocks).float()
        t_bf16 = timed(blocks)
        rows.append({"variant": "bf16", "blocks": n_blocks, "ms": t_bf16, "speedup": 1.0,
                     "linear_weight_MiB": fp16_bytes / 2**20, "rel_err": 0.0})  # fmt: skip
        for name, wb, gs, attention in STEP_VARIANTS:
            if not _selected(name, args.step_variants) or (attention == "int8" and not _probed("int8 attention")):
                continue
            if time.time() > deadline:
                print(f"time budget reached: skipped step {name}", flush=True)
                continue
            qblocks = [quantized_copy(b, wb, gs, attention) for b in blocks]
            y = run(qblocks).float()
            t = timed(qblocks)
            nbytes = sum(linear_weight_bytes(b) for b in qblocks)
            rows.append({"variant": name, "blocks": n_blocks, "ms": t, "speedup": t_bf16 / t,
                         "linear_weight_MiB": nbytes / 2**20,
                         "rel_err": float((y - y_ref).norm() / y_ref.norm())})  # fmt: skip
            del qblocks
            if sink is not None:
                sink(step_rows=rows)
    for r in rows:
        print(f"step ({r['blocks']} blocks) {r['variant']:8s} {r['ms']:.1f} ms  x{r['speedup']:.2f}  "
              f"weights {r['linear_weight_MiB']:.0f} MiB  rel_err {r['rel_err']:.3g}", flush=True)  # fmt: skip
    return rows


def _inductor_quant_codes(blk: Block, x: torch.Tensor, mod: torch.Tensor) -> float:
    """Fraction of int8 codes where the Inductor-compiled plain-torch quantizer (the fused route) differs from the
    Triton quantizer (IEEE ``div_rn``) on the block's first quantized activation (LayerNorm + modulation output)."""
    from vqcore.kernels import reference

    try:
        shift1, scale1 = mod.chunk(6, dim=-1)[:2]
        h = (blk.norm1(x) * (1 + scale1) + shift1).reshape(-1, x.shape[-1])
        torch._dynamo.reset()
        q_ind = torch.compile(reference.quantize_per_token_ref)(h, None, 8, True)[0]
        q_tri = kernels.quantize_per_token(h, 8, True).codes
        return float((q_ind != q_tri).float().mean())
    except Exception as e:
        print(f"Inductor quantizer check FAILED: {type(e).__name__}: {str(e)[:300]}", flush=True)
        return float("nan")


class _Policy:
    """Temporarily override the kernels' dispatch policy (``triton_kernels.POLICY``)."""

    def __init__(self, cuda: bool, **kw) -> None:
        self.kw, self.cuda, self.old = kw, cuda, None

    def __enter__(self):
        if self.cuda and self.kw:
            from vqcore.kernels import triton_kernels as tk

            self.old = dict(tk.POLICY)
            tk.POLICY.update(self.kw)

    def __exit__(self, *exc):
        if self.old is not None:
            from vqcore.kernels import triton_kernels as tk

            tk.POLICY.clear()
            tk.POLICY.update(self.old)


NEW_POLICY = {"tma": True, "tma_min_m": 0, "w4_unpack_min_m": 256, "autotune": False}  # TMA + W4 unpack everywhere


def block_table(args, device, cuda: bool, deadline: float = float("inf"), sink=None) -> list[dict]:
    torch.manual_seed(args.seed)
    dim, heads, mlp, seq = (1920, 30, 7680, 17776) if not args.quick else (128, 2, 512, 64)
    dtype = torch.bfloat16
    blk = Block(dim, heads, mlp).to(device=device, dtype=dtype).eval()
    x = torch.randn(1, seq, dim, device=device, dtype=dtype)
    mod = torch.randn(1, 1, 6 * dim, device=device, dtype=dtype) * 0.1
    rows = []
    fp16_bytes = sum(m.weight.numel() * 2 for m in blk.modules() if isinstance(m, nn.Linear))
    eager = cuda and not (args.large_only or args.no_eager)
    with torch.no_grad():
        y_ref = blk(x, mod).float()
        t_bf16 = _time(lambda: blk(x, mod), args.warmup, args.rep, cuda)
        t_bf16_e = _time(lambda: blk(x, mod), args.warmup, args.rep, cuda, graph=False) if eager else t_bf16
        rows.append({"variant": "bf16", "ms": t_bf16, "speedup": 1.0, "ms_eager": t_bf16_e, "speedup_eager": 1.0,
                     "linear_weight_MiB": fp16_bytes / 2**20,
                     "mem_ratio_vs_fp16": 1.0, "rel_err": 0.0})  # fmt: skip
        t_compiled_bf16 = None
        for name, wb, gs, pol, attention, compiled in BLOCK_VARIANTS:
            if not _selected(name, args.block_variants) or (compiled and not cuda):
                continue
            if attention == "int8" and not _probed("int8 attention"):
                print(f"block {name}: skipped (int8 attention probe: {PROBED.get('int8 attention')})", flush=True)
                continue
            if pol == "new":
                if not (cuda and NEW_PATHS_OK[0]):
                    continue
                pol = NEW_POLICY
            if time.time() > deadline:
                print(f"time budget reached: skipped block {name}", flush=True)
                continue
            try:
                qb = quantized_copy(blk, wb, gs, attention)
                fn = qb
                if compiled:
                    kernels.COMPILE_QUANT = "torch"  # the quantizer as plain torch ops, fused with its producer
                    torch._dynamo.reset()
                    fn = torch.compile(qb)
                with _Policy(cuda, **pol):
                    y = fn(x, mod).float()
                    rel = float((y - y_ref).norm() / y_ref.norm())
                    t = _time(lambda fn=fn: fn(x, mod), args.warmup, args.rep, cuda)
                    te = _time(lambda fn=fn: fn(x, mod), args.warmup, args.rep, cuda, graph=False) if eager else t
            except Exception as e:  # a variant that fails on this GPU/torch: recorded, the others still run
                print(f"block {name} FAILED: {type(e).__name__}: {str(e)[:400]}", flush=True)
                rows.append({"variant": name + " (FAILED)", "ms": float("nan"), "speedup": float("nan"),
                             "ms_eager": float("nan"), "speedup_eager": float("nan"), "linear_weight_MiB": 0.0,
                             "mem_ratio_vs_fp16": 0.0, "rel_err": float("nan"), "error": str(e)[:300]})  # fmt: skip
                continue
            finally:
                kernels.COMPILE_QUANT = "op"
            if name == "bf16 compiled":
                t_compiled_bf16 = t
            nbytes = linear_weight_bytes(qb) if wb is not None else fp16_bytes
            rows.append({"variant": name, "ms": t, "speedup": t_bf16 / t, "ms_eager": te,
                         "speedup_eager": t_bf16_e / te,
                         "linear_weight_MiB": nbytes / 2**20,
                         "mem_ratio_vs_fp16": nbytes / fp16_bytes, "rel_err": rel})  # fmt: skip
            if compiled and t_compiled_bf16:
                rows[-1]["speedup_vs_compiled_bf16"] = t_compiled_bf16 / t
            del qb, fn
            if sink is not None:
                sink(block_rows=rows)
        if cuda and any(c for *_, c in BLOCK_VARIANTS) and time.time() < deadline:
            meta_codes = _inductor_quant_codes(blk, x, mod)
            rows.append({"variant": "Inductor quantizer codes vs Triton (div_rn)", "ms": float("nan"),
                         "speedup": float("nan"), "ms_eager": float("nan"), "speedup_eager": float("nan"),
                         "linear_weight_MiB": 0.0, "mem_ratio_vs_fp16": 0.0, "rel_err": meta_codes})  # fmt: skip
        # Amdahl bound: the block with the four linears removed (attention, norms, elementwise stay bf16)
        if cuda and time.time() < deadline:
            ident = Block(dim, heads, mlp).to(device=device, dtype=dtype).eval()

            class _Cheap(nn.Module):
                def __init__(self, n_out: int) -> None:
                    super().__init__()
                    self.n_out = n_out
                    self.buf = None

                def forward(self, h):  # a preallocated output: no compute, keeps the rest of the block unchanged
                    if self.buf is None:
                        self.buf = torch.randn(*h.shape[:-1], self.n_out, device=h.device, dtype=h.dtype)
                    return self.buf

            ident.qkv, ident.proj, ident.fc1, ident.fc2 = _Cheap(3 * dim), _Cheap(dim), _Cheap(mlp), _Cheap(dim)
            t_rest = _time(lambda: ident(x, mod), args.warmup, args.rep, cuda)
            rows.append({"variant": "no linears (bound)", "ms": t_rest, "speedup": t_bf16 / t_rest, "ms_eager": t_rest,
                         "speedup_eager": float("nan"),
                         "linear_weight_MiB": 0.0, "mem_ratio_vs_fp16": 0.0, "rel_err": float("nan")})  # fmt: skip
    for r in rows:
        print(f"block {r['variant']:32s} {r['ms']:.3f} ms  x{r['speedup']:.2f}  "
              f"weights {r['linear_weight_MiB']:.1f} MiB "
              f"({r['mem_ratio_vs_fp16']:.3f} of fp16)  rel_err {r['rel_err']:.3g}", flush=True)  # fmt: skip
    return rows


def _policy_snapshot(cuda: bool) -> dict:
    if not cuda:
        return {"path": "reference (CPU)"}
    from vqcore.kernels import triton_kernels as tk

    return {k: (v if isinstance(v, (bool, int, float, str)) else str(v)) for k, v in tk.POLICY.items()}


GEMM_COLS = ("int_mm", "fp8", "w8a8", "w4a8", "w4a8_g128", "fp8_layer", "w8a8_layer", "w4a8_layer", "w4a8_g128_layer",
             "wonly8", "wonly4", "wonly4_g128", *SPLIT_COLS)  # fmt: skip
VARIANT_COLS = ("w8a8_before", "w8a8_tma", "w4a8_before", "w4a8_unpack", "w4a8_g128_before", "w4a8_g128_unpack")
LARGE_M = 4096


PART_SHARES = {"block": 0.3, "step": 0.1, "attention": 0.08, "large": 0.32, "small": 0.2}


def flat_rows(gemm: list[dict], block: list[dict], step: list[dict], attention: list[dict] | None = None) -> list[dict]:
    """The results as flat rows for ``commons.results`` (tables ``gemm`` (M ≥ 4096), ``small``, ``variants``,
    ``block``, ``step``, ``summary``: medians over the large-M shapes, and the slowest small-M speed-up)."""
    out = []
    for r in gemm:
        row = {"table": "gemm" if r["M"] >= LARGE_M else "small", "model": r["model"], "layer": r["layer"],
               "M": r["M"], "K": r["K"], "N": r["N"], "bf16_ms": r["bf16_ms"], "quant_ms": r["quant_ms"]}  # fmt: skip
        row.update({f"{k}_x": r[f"{k}_x"] for k in GEMM_COLS if f"{k}_x" in r})
        row.update({k: r[k] for k in ("wonly8_auto_split", "wonly4_auto_split") if k in r})
        out.append(row)
        if any(f"{k}_x" in r for k in VARIANT_COLS):
            v = {"table": "variants", "model": r["model"], "layer": r["layer"], "M": r["M"]}
            v.update({f"{k}_x": r[f"{k}_x"] for k in VARIANT_COLS if f"{k}_x" in r})
            v["tiles"] = "; ".join(f"{k}: {c}" for k, c in r["configs"].items()
                                   if isinstance(c, str) and "_fail_" not in k)  # fmt: skip
            out.append(v)
    for r in block:
        out.append({"table": "block", **{k: r[k] for k in ("variant", "ms", "speedup", "linear_weight_MiB",
                                                           "mem_ratio_vs_fp16", "rel_err")}})  # fmt: skip
    for r in step:
        out.append({"table": "step", **r})
    for r in attention or []:
        out.append({"table": "attention", **r})
    big = [r for r in gemm if r["M"] >= LARGE_M]
    small = [r for r in gemm if r["M"] < LARGE_M]
    for k in GEMM_COLS + VARIANT_COLS:
        vals = [r[f"{k}_x"] for r in big if f"{k}_x" in r]
        svals = [r[f"{k}_x"] for r in small if f"{k}_x" in r]
        if vals or svals:
            out.append({"table": "summary", "path": k,
                        "median_large_M_x": statistics.median(vals) if vals else None,
                        "min_large_M_x": min(vals) if vals else None,
                        "min_small_M_x": min(svals) if svals else None,
                        "median_small_M_x": statistics.median(svals) if svals else None})  # fmt: skip
    return out


def _md(gemm: list[dict], block: list[dict], meta: dict, step: list[dict] | None = None,
        attention: list[dict] | None = None) -> str:  # fmt: skip
    lines = [
        f"GPU: {meta['device']} · driver {meta.get('driver', '-')} · torch {meta['torch']} · triton {meta['triton']} · "
        f"{meta['date']} · timing: {meta['timing']}",
        "",
    ]
    lines.append("| model | layer | M | K | N | bf16 ms | bf16 TFLOP/s | _int_mm × | FP8 × | W8A8 × | W4A8 × "
                 "| W4A8 g128 × | quant ms | FP8+quant × | W8A8+quant × | W4A8+quant × "
                 "| W4A8 g128+quant × | W8 weight-only × | W4 weight-only × | W4 g128 weight-only × |")  # fmt: skip
    lines.append("|---" * 20 + "|")

    def f(r, k):
        return f"{r[k]:.2f}" if k in r else "–"

    for r in gemm:
        lines.append(f"| {r['model']} | {r['layer']} | {r['M']} | {r['K']} | {r['N']} | {r['bf16_ms']:.3f} | "
                     f"{r['bf16_tflops']:.0f} | {f(r, 'int_mm_x')} | {f(r, 'fp8_x')} | {f(r, 'w8a8_x')} | "
                     f"{f(r, 'w4a8_x')} | {f(r, 'w4a8_g128_x')} | {r['quant_ms']:.3f} | {f(r, 'fp8_layer_x')} | "
                     f"{f(r, 'w8a8_layer_x')} | {f(r, 'w4a8_layer_x')} | {f(r, 'w4a8_g128_layer_x')} | "
                     f"{f(r, 'wonly8_x')} | {f(r, 'wonly4_x')} | {f(r, 'wonly4_g128_x')} |")  # fmt: skip
    big = [r for r in gemm if r["M"] >= LARGE_M]
    var = [r for r in big if "w8a8_before_x" in r or "w8a8_tma_x" in r]
    if var:
        lines += ["", "Kernel variants at large M (speed-up vs bf16; best tile of each family, same process):", "",
                  "| model | layer | W8A8 before (ptr) × | W8A8 TMA persistent × | W4A8 before (unpack in K loop) × | "
                  "W4A8 unpack + int8 GEMM × | W4A8 g128 before × | W4A8 g128 unpack × | quant ms (1 row/program) | "
                  "quant ms (best rows) | tiles |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in var:
            tiles = "; ".join(f"{k}: {v}" for k, v in r["configs"].items() if isinstance(v, str) and "_fail_" not in k)
            lines.append(f"| {r['model']} | {r['layer']} | {f(r, 'w8a8_before_x')} | {f(r, 'w8a8_tma_x')} | "
                         f"{f(r, 'w4a8_before_x')} | {f(r, 'w4a8_unpack_x')} | {f(r, 'w4a8_g128_before_x')} | "
                         f"{f(r, 'w4a8_g128_unpack_x')} | {r['quant_ms']:.3f} | "
                         f"{r.get('quant_best_ms', float('nan')):.3f} | {tiles} |")  # fmt: skip
        fails = sorted({k for r in var for k in r["configs"] if "_fail_" in k})
        if fails:
            lines.append("")
            lines.append("Variants that failed: " + "; ".join(fails))
    if big:
        lines.append("")
        lines.append("Median over the large-M shapes (speed-up vs bf16): " + ", ".join(
            f"{k} {statistics.median(r[k + '_x'] for r in big if k + '_x' in r):.2f}×"
            for k in GEMM_COLS + VARIANT_COLS
            if any(k + "_x" in r for r in big)))  # fmt: skip
    small = [r for r in gemm if r["M"] < LARGE_M]
    if small:
        lines.append("")
        lines.append("Slowest small-M shape (speed-up vs bf16): " + ", ".join(
            f"{k} {min(r[k + '_x'] for r in small if k + '_x' in r):.2f}×"
            for k in GEMM_COLS if any(k + "_x" in r for r in small)))  # fmt: skip
        split = [r for r in small if any(c + "_x" in r for c in SPLIT_COLS)]
        if split:
            lines += ["", "Weight-only split-K at small M (speed-up vs bf16; sk = programs per output tile, auto = "
                      "the split `choose_split_k` picks, in brackets):", "",
                      "| model | layer | M | K | N | " + " | ".join(("wonly8", "wonly4", "wonly4_g128") + SPLIT_COLS)
                      + " |", "|---" * (8 + len(SPLIT_COLS)) + "|"]  # fmt: skip
            for r in split:
                auto = {c: r.get(c.split("_sk")[0].replace("_g128", "") + "_auto_split") for c in SPLIT_COLS}
                cells = [f(r, c + "_x") + (f" [{auto[c]}]" if c.endswith("_auto") and auto[c] else "")
                         for c in SPLIT_COLS]  # fmt: skip
                lines.append(f"| {r['model']} | {r['layer']} | {r['M']} | {r['K']} | {r['N']} | {f(r, 'wonly8_x')} | "
                             f"{f(r, 'wonly4_x')} | {f(r, 'wonly4_g128_x')} | " + " | ".join(cells) + " |")  # fmt: skip
    lines += ["", "| block variant | ms (graph) | speed-up | ms (eager) | speed-up eager | linear weights MiB "
              "| of fp16 "
              "| rel. err vs bf16 |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in block:
        lines.append(f"| {r['variant']} | {r['ms']:.3f} | {r['speedup']:.2f} | {r['ms_eager']:.3f} | "
                     f"{r['speedup_eager']:.2f} | {r['linear_weight_MiB']:.1f} | "
                     f"{r['mem_ratio_vs_fp16']:.3f} | {r['rel_err']:.3g} |")  # fmt: skip
    if attention:
        lines += ["", "| attention (1×30×17776×64) | ms (graph) | speed-up vs SDPA | TFLOP/s | rel. err vs SDPA "
                  "| cos |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for r in attention:
            lines.append(f"| {r['variant']} | {r['ms']:.3f} | {r['speedup']:.2f} | {r['tflops']:.0f} | "
                         f"{r['rel_err']:.3g} | {r['cos']:.6f} |")  # fmt: skip
    if step:
        lines += ["", "| denoiser step | blocks | ms (eager) | speed-up | linear weights MiB | rel. err vs bf16 |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for r in step:
            lines.append(f"| {r['variant']} | {r['blocks']} | {r['ms']:.1f} | {r['speedup']:.2f} | "
                         f"{r['linear_weight_MiB']:.0f} | {r['rel_err']:.3g} |")  # fmt: skip
    return "\n".join(lines) + "\n"


NEW_PATHS_OK = [True]  # False after a failed probe: the opt-in TMA / unpack paths are not timed


def _probe() -> int:
    """``--probe``: run the opt-in paths once on small problems (exact int32 sums); exit 0 when all agree."""
    from vqcore.kernels import packing
    from vqcore.kernels import triton_kernels as tk

    dev = torch.device("cuda")
    m, n, k = 4224, 384, 1280
    a = torch.randint(-128, 128, (m, k), device=dev, dtype=torch.int8)
    w8 = torch.randint(-128, 128, (n, k), device=dev, dtype=torch.int8)
    w4 = torch.randint(-8, 8, (n, k), device=dev, dtype=torch.int8)
    one, one_n = torch.ones(m, device=dev), torch.ones(n, device=dev)
    bad = []
    for name, w, packed, group, cfg in (
        ("tma", w8, False, 0, {"PATH": "tma"}),
        ("w4 unpack + tma", w4, True, 0, {"PATH": "tma", "UNPACK": True}),
        ("w4 unpack + ptr", w4, True, 0, {"PATH": "ptr", "UNPACK": True}),
        ("w4 g128 unpack + tma pair", w4, True, 128, {"PATH": "tma", "UNPACK": True, "PAIR": True}),
    ):
        wq = packing.pack_int4(w) if packed else w
        sw = torch.ones(n, -(-k // 128), device=dev) if group else one_n
        y = tk.int_linear(a, one, None, None, wq, sw, group, packed, k, None, None, None, None, None, torch.float32,
                          config=cfg)  # fmt: skip
        ok = torch.equal(y, (a.double() @ w.double().t()).float())
        torch.cuda.synchronize()
        print(f"{name}: {'exact' if ok else 'WRONG'}", flush=True)
        bad += [] if ok else [name]
    return 1 if bad else 0


def _probe_kernels() -> int:
    """``--probe-kernels``: the issue-19 kernels once each (int8 attention, weight-only GEMM, the quantizer's RECIP
    and fused low-rank options) against their references; prints ``name: ok`` / ``name: WRONG`` / ``name: ERROR``."""
    from vqcore.kernels import attention as attn
    from vqcore.kernels import reference
    from vqcore.kernels import triton_kernels as tk

    g = torch.Generator().manual_seed(0)
    results = {}

    def check(name, fn):
        try:
            ok = bool(fn())
            torch.cuda.synchronize()
            results[name] = "ok" if ok else "WRONG"
        except Exception as e:
            results[name] = f"ERROR {type(e).__name__}: {str(e)[:150]}"
        print(f"{name}: {results[name]}", flush=True)

    def attention():
        q, k, v = (torch.randn(1, 4, 1000, 64, generator=g).bfloat16() for _ in range(3))
        y = kernels.int8_attention(q.cuda(), k.cuda(), v.cuda()).cpu().float()
        want = attn.int8_attention_ref(*attn.quantize_qk(q, k, 0.125), v, torch.float32)
        return float((y - want).norm() / want.norm()) < 2e-2

    def wonly():
        codes = torch.randint(-128, 128, (384, 1280), generator=g, dtype=torch.int8)
        x, sw = torch.randn(64, 1280, generator=g).bfloat16(), torch.rand(384, generator=g) + 0.5
        y = tk.weight_only_linear(x.cuda(), codes.cuda(), sw.cuda(), 0, False, 1280, None, torch.float32).cpu()
        want = reference.weight_only_linear_ref(x, codes, sw, 0, None, torch.float32)
        return float((y - want).norm() / want.norm()) < 1e-5

    def wonly_split():  # split-K: 4 and auto (the int8 and packed int4 per-group paths)
        from vqcore.kernels import packing

        ok = True
        for w4, group in ((False, 0), (True, 128)):
            codes = torch.randint(-8 if w4 else -128, 8 if w4 else 128, (384, 1280), generator=g, dtype=torch.int8)
            x = torch.randn(16, 1280, generator=g).bfloat16()
            sw = (torch.rand(384, 10, generator=g) if group else torch.rand(384, generator=g)) + 0.5
            w = packing.pack_int4(codes) if w4 else codes
            want = reference.weight_only_linear_ref(x, codes, sw, group, None, torch.float32)
            for split in (4, "auto"):
                y = tk.weight_only_linear(x.cuda(), w.cuda(), sw.cuda(), group, w4, 1280, None, torch.float32,
                                          config={"SPLIT_K": split}).cpu()  # fmt: skip
                ok = ok and float((y - want).norm() / want.norm()) < 1e-5
        return ok

    def recip():
        x = torch.randn(300, 1920, generator=g).bfloat16()
        got = tk.quantize_per_token(x.cuda(), None, 8, True, config={"RECIP": True})
        return all(torch.equal(a.cpu(), b) for a, b in zip(got, reference.quantize_per_token_ref(x, None, 8, True)))

    def lowrank():
        x, d = torch.randn(300, 1920, generator=g).bfloat16(), torch.randn(1, 1920, generator=g)
        got = tk.quantize_per_token(x.cuda(), None, 8, True, down=d.cuda())
        want = reference.quantize_per_token_ref(x, None, 8, True)
        t = reference.lowrank_on_dequantized_ref(want[0], want[1], want[2], d)
        return torch.equal(got[0].cpu(), want[0]) and torch.allclose(got[4].cpu(), t, rtol=1e-4, atol=1e-3)

    for name, fn in (("int8 attention", attention), ("weight-only", wonly), ("weight-only split-K", wonly_split),
                     ("quantizer RECIP", recip), ("quantizer low-rank", lowrank)):  # fmt: skip
        check(name, fn)
    return 0 if all(v == "ok" for v in results.values()) else 1


PROBED = {}  # kernel name -> "ok" / failure text, from --probe-kernels


def _probe_new_paths() -> str:
    import subprocess

    try:
        r = subprocess.run([sys.executable, __file__, "--probe"], capture_output=True, text=True, timeout=180)
        text = (r.stdout + r.stderr).strip().splitlines()
        ok = r.returncode == 0
        msg = "; ".join(ln for ln in text if ":" in ln and not ln.startswith(" "))[-400:]
    except subprocess.TimeoutExpired:
        ok, msg = False, "timed out"
    if ok:
        return f"ok ({msg})"
    NEW_PATHS_OK[0] = False
    from vqcore.kernels import triton_kernels as tk

    tk.POLICY["tma"] = False
    tk.POLICY["w4_unpack_min_m"] = 1 << 62
    return f"FAILED ({msg}); the opt-in TMA/unpack paths are not timed"


def _probe_issue19_kernels() -> str:
    import subprocess

    try:
        r = subprocess.run([sys.executable, __file__, "--probe-kernels"], capture_output=True, text=True, timeout=240)
        lines = (r.stdout + r.stderr).splitlines()
    except subprocess.TimeoutExpired:
        lines = []
    for name in ("int8 attention", "weight-only", "weight-only split-K", "quantizer RECIP", "quantizer low-rank"):
        hit = [ln.split(": ", 1)[1] for ln in lines if ln.startswith(name + ": ")]
        PROBED[name] = hit[0] if hit else "no result (child crashed or timed out)"
    return "; ".join(f"{k}: {v}" for k, v in PROBED.items())


def _probed(name: str) -> bool:
    return PROBED.get(name, "ok") == "ok"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny shapes on CPU through the reference path")
    ap.add_argument("--out", default="runs/bench/vqcore_kernels")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=25, help="warm-up (ms for do_bench on GPU)")
    ap.add_argument("--rep", type=int, default=100, help="repetition time (ms for do_bench on GPU)")
    ap.add_argument("--skip-block", action="store_true")
    ap.add_argument("--eager", action="store_true", help="time with do_bench (eager launches) instead of CUDA graphs")
    ap.add_argument("--large-only", action="store_true", help="only the large-M shapes (+ the block); no eager columns")
    ap.add_argument("--no-eager", action="store_true", help="no eager-launch columns (CUDA-graph timings only)")
    ap.add_argument("--no-variants", action="store_true", help="skip the before/after kernel-variant comparison")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--block-first", action="store_true", help=argparse.SUPPRESS)  # the default order now
    ap.add_argument(
        "--variant-shapes",
        type=int,
        default=1 << 30,
        help="compare the kernel variants on the first N large-M shapes only (time-boxed runs)",
    )
    ap.add_argument(
        "--budget-s",
        type=float,
        default=float("inf"),
        help="time box (s): each part (block, large-M GEMMs, small-M GEMMs, denoiser step) starts no new item after "
        "its share of it",
    )
    ap.add_argument("--small-ms", type=int, nargs="*", default=list(SMALL_MS), help="small-M token counts")
    ap.add_argument("--step-blocks", type=int, default=30, help="blocks of the denoiser step (0: skip the step)")
    ap.add_argument("--block-variants", default="", help="';'-separated block variant names to time (default: all)")
    ap.add_argument("--step-variants", default="W8A8;W4A8;W8A8 + int8 attention",
                    help="';'-separated denoiser-step variants ('' = all)")
    ap.add_argument("--parts", default="block,step,attention,large,small",
                    help="comma-separated parts to run: block, step, large, small, attention")
    ap.add_argument("--from-json", help="only print the markdown tables of a results.json written earlier")
    ap.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--probe-kernels", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.probe:
        return _probe()
    if args.probe_kernels:
        return _probe_kernels()
    if args.from_json:
        d = json.loads(Path(args.from_json).read_text())
        print(_md(d["gemm"], d["block"], d["meta"], d.get("step", []), d.get("attention", [])))
        return 0
    t0 = time.time()
    global GRAPH
    GRAPH = not args.eager
    _VARIANT_SHAPES_LEFT[0] = args.variant_shapes
    cuda = torch.cuda.is_available() and not args.quick
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda and not args.quick:
        ap.error("no CUDA device: run with --quick for the CPU smoke setting")
    from commons.results import machine_info

    meta = {"device": torch.cuda.get_device_name() if cuda else "cpu (reference path)", "torch": torch.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "triton": "-", "timing": "CUDA-graph replays, median" if GRAPH else "do_bench eager, median"}  # fmt: skip
    meta["machine"] = machine_info()  # GPU name, driver, CUDA, torch, Triton, CPU
    meta["driver"] = meta["machine"].get("driver", "-")
    meta["cuda"] = meta["machine"].get("cuda", "-")
    if cuda:
        import triton

        meta["triton"] = triton.__version__
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state = {"gemm": [], "block": [], "step": [], "attention": []}
    settings = {"argv": sys.argv[1:] if argv is None else list(argv), "timing": meta["timing"],
                "models": MODELS, "small_ms": list(args.small_ms), "step_blocks": args.step_blocks,
                "policy": _policy_snapshot(cuda), "quick": args.quick}  # fmt: skip

    def sink(gemm_rows=None, block_rows=None, step_rows=None, attn_rows=None):  # partial results survive a time-out
        for key, rows_ in (("gemm", gemm_rows), ("block", block_rows), ("step", step_rows), ("attention", attn_rows)):
            if rows_ is not None:
                state[key] = rows_
        (out / "results.json").write_text(json.dumps({"meta": meta, **state}, indent=1))
        (out / "results.md").write_text(_md(state["gemm"], state["block"], meta, state["step"], state["attention"]))
        flat = flat_rows(state["gemm"], state["block"], state["step"], state["attention"])
        if flat:
            from commons.results import write_results

            write_results("vqcore", "vqcore_kernels", flat, settings, root=out,
                          extra={"meta": meta})  # fmt: skip

    if cuda:  # insurance: a faulting new kernel would poison this process's CUDA context, so probe it in a child
        meta["probe"] = _probe_new_paths()
        print("new-path probe:", meta["probe"], flush=True)
        meta["probe_kernels"] = _probe_issue19_kernels()
        print("kernel probe:", meta["probe_kernels"], flush=True)
    # each part gets a share of --budget-s (normalised over the selected parts, in --parts order) and starts no new
    # item after its cumulative deadline; results are written as each item finishes
    parts = [p_.strip() for p_ in args.parts.split(",") if p_.strip()]
    unknown = sorted(set(parts) - set(PART_SHARES))
    if unknown:
        ap.error(f"--parts: unknown {unknown}; choose from {sorted(PART_SHARES)}")
    if args.skip_block:
        parts = [p_ for p_ in parts if p_ not in ("block", "step")]
    if not args.step_blocks:
        parts = [p_ for p_ in parts if p_ != "step"]
    total = sum(PART_SHARES[p_] for p_ in parts) or 1.0
    gemm, block, step, attn_rows = [], [], [], []
    acc = 0.0
    for part in parts:
        acc += PART_SHARES[part] / total
        deadline = t0 + acc * args.budget_s
        if time.time() > deadline:
            print(f"time budget reached: skipped part {part}", flush=True)
            continue
        if part == "block":
            block = block_table(args, device, cuda, deadline, sink)
        elif part == "step":
            step = step_table(args, device, cuda, deadline, sink)
        elif part == "attention":
            attn_rows = attention_table(args, device, cuda, deadline, sink)
        else:
            gemm = gemm_table(args, device, cuda, deadline, sink, large=part == "large", small=part == "small",
                              rows=gemm)  # fmt: skip
    sink(gemm, block, step, attn_rows)
    md = _md(gemm, block, meta, step, attn_rows)
    if args.no_plot or not gemm:
        print(md)
        return 0
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        big = [r for r in gemm if r["M"] >= 8192] or gemm
        labels = [f"{r['model'].split('/')[0]}\n{r['layer']} M={r['M']}" for r in big]
        keys = [k for k in ("int_mm_x", "w8a8_x", "w4a8_x", "w8a8_layer_x", "w4a8_layer_x") if k in big[0]]
        fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(big)), 4))
        width = 0.8 / len(keys)
        for i, k in enumerate(keys):
            ax.bar([j + i * width for j in range(len(big))], [r[k] for r in big], width, label=k[:-2])
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(big))], labels, fontsize=7)
        ax.set_ylabel("speed-up vs bf16 cuBLAS")
        ax.set_title(f"vqcore integer GEMMs — {meta['device']}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "speedup.png", dpi=120)
    except ImportError:
        pass
    print(md)
    worst = max((max(v for k, v in r["rel_err"].items() if not k.startswith("fp8")) for r in gemm), default=0.0)
    if not math.isfinite(worst) or worst > 2e-2:
        raise SystemExit(f"integer GEMM disagrees with its reference: relative error {worst:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
