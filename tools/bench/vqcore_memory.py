#!/usr/bin/env python3
"""Peak CPU memory of ``vqcore.quantize(..., inplace=True)`` on a CogVideoX-2B-size transformer, random bf16.

Each method runs in a fresh subprocess: build ``CogVideoXTransformer3DModel`` with the CogVideoX-2B configuration (30
blocks, 30 heads × 64, text width 4096) directly in bf16 (random init, no download), capture a small calibration set
(``--calib`` calls of batch 1: ``--frames`` latent frames of ``--size``² latents and 16 text tokens), then quantize in
place. Reported: the model's bytes, the calibration store's bytes, process RSS after building (``rss_model``), and the
peak RSS growth during ``quantize`` above it (``commons.profiling.PeakMemory``, sampled RSS). The issue's target is
peak (model + quantize) ≤ 1.3 × (model bytes + calibration store). Each method runs with glibc's default allocator
settings and, with ``--allocators default mmap``, also with ``MALLOC_MMAP_THRESHOLD_=1048576`` (every large block
mmapped and returned to the system when freed) for comparison. ``q-vdit`` trains ``--iters`` steps (default 1; from
the second step on, AdamW's two moment buffers of the LoRA/rank-1 adapters, 2 × 4 bytes per trainable, are live
during the backward pass too — ``--iters 2`` measures that steady state).

    python tools/bench/vqcore_memory.py                 # rtn, vidit-q, q-vdit; tens of minutes on 2 CPU cores
    python tools/bench/vqcore_memory.py --layers 4      # the same width, 4 of the 30 blocks (quick)

Writes ``results/vqcore/vqcore_memory.json`` through ``commons.results`` (``--no-write`` to skip).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def one(method: str, layers: int, calib: int, frames: int, size: int, iters: int = 1) -> dict:
    import torch
    from diffusers import CogVideoXTransformer3DModel

    import vqcore
    from commons.profiling import PeakMemory, _rss_bytes
    from vqcore.calib import Capture

    torch.manual_seed(0)
    base = _rss_bytes()
    t0 = time.perf_counter()
    torch.set_default_dtype(torch.bfloat16)
    model = CogVideoXTransformer3DModel(num_attention_heads=30, attention_head_dim=64, in_channels=16, out_channels=16,
                                        num_layers=layers, text_embed_dim=4096, time_embed_dim=512,
                                        sample_width=size, sample_height=size, sample_frames=4 * frames - 3,
                                        max_text_seq_length=16).eval()  # fmt: skip
    torch.set_default_dtype(torch.float32)
    model.requires_grad_(False)
    build_s = time.perf_counter() - t0
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    g = torch.Generator().manual_seed(1)
    with torch.no_grad(), Capture(model, targets="blocks") as cap:
        for i in range(calib):
            model(hidden_states=torch.randn(1, frames, 16, size, size, generator=g).to(torch.bfloat16),
                  encoder_hidden_states=torch.randn(1, 16, 4096, generator=g).to(torch.bfloat16),
                  timestep=torch.tensor([999 - 100 * i]))
    calib_bytes = cap.result.nbytes()
    rss_model = _rss_bytes() - base
    opts = {"q-vdit": {"iters": iters, "progress": False}}.get(method, {})
    t0 = time.perf_counter()
    with PeakMemory("cpu") as pm:
        q = vqcore.quantize(model, method, w_bits=4, a_bits=8, calib=cap.result, inplace=True, **opts)
    seconds = time.perf_counter() - t0
    peak = rss_model + pm.peak_bytes
    return {"method": method, "layers": layers, "params_M": round(model_bytes / 2 / 1e6, 1),
            "model_GiB": round(model_bytes / 2**30, 3), "calib_MiB": round(calib_bytes / 2**20, 1),
            "rss_model_GiB": round(rss_model / 2**30, 3), "quantize_growth_GiB": round(pm.peak_bytes / 2**30, 3),
            "peak_GiB": round(peak / 2**30, 3),
            "peak_over_model_plus_calib": round(peak / (model_bytes + calib_bytes), 3),
            "quantized_layers": q.vqcore_report.layers, "quantize_s": round(seconds, 1), "build_s": round(build_s, 1),
            "iters": iters if method == "q-vdit" else 0, "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=["rtn", "vidit-q", "q-vdit"])
    ap.add_argument("--layers", type=int, default=30, help="transformer blocks (CogVideoX-2B: 30)")
    ap.add_argument("--calib", type=int, default=2, help="calibration calls (batch 1 each)")
    ap.add_argument("--frames", type=int, default=2, help="latent frames per calibration call")
    ap.add_argument("--size", type=int, default=16, help="latent height = width")
    ap.add_argument("--iters", type=int, default=1, help="q-vdit training steps")
    ap.add_argument("--allocators", nargs="+", default=["default"], choices=["default", "mmap"],
                    help="glibc default settings and/or MALLOC_MMAP_THRESHOLD_=1048576")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one, args.layers, args.calib, args.frames, args.size, args.iters)))
        return 0
    import os

    rows = []
    allocators = {"default": ("glibc default", {}),
                  "mmap": ("MALLOC_MMAP_THRESHOLD_=1MiB", {"MALLOC_MMAP_THRESHOLD_": str(2**20)})}
    for m in args.methods:
        for alloc, env in (allocators[a] for a in args.allocators):
            cmd = [sys.executable, __file__, "--one", m, "--layers", str(args.layers), "--calib", str(args.calib),
                   "--frames", str(args.frames), "--size", str(args.size), "--iters", str(args.iters)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, **env})
            rows.append({**json.loads(out.stdout.strip().splitlines()[-1]), "allocator": alloc})
            print(rows[-1], flush=True)
    if not args.no_write:
        from commons.results import write_results

        write_results("vqcore", "vqcore_memory", rows=rows,
                      settings={"model": "CogVideoXTransformer3DModel, CogVideoX-2B width, random bf16 weights",
                                "layers": args.layers, "calib_calls": args.calib, "frames": args.frames,
                                "size": args.size, "device": "cpu", "inplace": True, "w_bits": 4, "a_bits": 8,
                                "q_vdit_iters": args.iters, "allocators": args.allocators,
                                "omp_num_threads": os.environ.get("OMP_NUM_THREADS")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
