"""GPU check of vqcore's diffusers integration (issue 27, item 4): a CogVideoX-2B-size ``CogVideoXTransformer3DModel``
with random weights is built in bf16 on the GPU, quantized (``rtn``, W4A8 — the DiT preset keeps the MLPs at W8A8 —
and W8A8), converted to integer layers, saved with ``vqcore.save_converted(..., format="diffusers")`` and loaded back
with ``CogVideoXTransformer3DModel.from_pretrained(folder, device_map="cuda")``. For the bf16 model, the converted
model in memory and the model loaded by ``from_pretrained`` it times one denoiser step (batch 2 = classifier-free
guidance, 13 latent frames of 60x90 = CogVideoX-2B's 49 frames at 480x720, 226 text tokens; median of ``--reps``
after a warm-up that compiles the Triton kernels) and records the GPU memory of the weights and the step's peak; for
the load it records the time, the peak GPU memory and the peak growth of host RSS. The loaded model's output is
compared with the converted model's (bit-equal expected; a second run of the converted model gives the
run-to-run floor if a kernel is not deterministic).

    PAPERLAB_GIT_COMMIT=<commit> PYTHONPATH=packages/commons/src:packages/vqcore/src \\
        python3 tools/bench/vqcore_diffusers_gpu.py --out "$OUT"

Needs diffusers (pure Python) on the GPU machine; without it the script stops at once with a message. A copy can be
carried: ``.cache/vqcore_pydeps`` is put first on ``sys.path`` when present (12 MB: the venv's diffusers 0.42.1
without its pipeline subpackages, which this script does not import)::

    mkdir -p .cache/vqcore_pydeps && cp -r .venv/lib/python3.11/site-packages/diffusers \\
        .venv/lib/python3.11/site-packages/diffusers-0.42.1.dist-info .cache/vqcore_pydeps/ \\
        && cd .cache/vqcore_pydeps && find . -name __pycache__ -prune -exec rm -rf {} + \\
        && find diffusers/pipelines diffusers/modular_pipelines -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +

Files under ``--out`` (2): ``vqcore/vqcore_diffusers.json`` (``commons.results`` rows; copy
it to ``results/vqcore/``) and ``vqcore_diffusers.log``. The checkpoints go to a temporary folder (not ``--out``).
``--quick`` runs a tiny configuration (CPU smoke test of this script, ~1 min on 2 cores).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYDEPS = ROOT / ".cache" / "vqcore_pydeps"

COGVIDEOX_2B = dict(  # diffusers' CogVideoX-2b transformer/config.json
    num_attention_heads=30, attention_head_dim=64, in_channels=16, out_channels=16, flip_sin_to_cos=True, freq_shift=0,
    time_embed_dim=512, text_embed_dim=4096, num_layers=30, dropout=0.0, attention_bias=True, sample_width=90,
    sample_height=60, sample_frames=49, patch_size=2, temporal_compression_ratio=4, max_text_seq_length=226,
    activation_fn="gelu-approximate", timestep_activation_fn="silu", norm_elementwise_affine=True, norm_eps=1e-5,
    spatial_interpolation_scale=1.875, temporal_interpolation_scale=1.0, use_rotary_positional_embeddings=False,
    use_learned_positional_embeddings=False,
)  # fmt: skip
QUICK = {**COGVIDEOX_2B, "num_attention_heads": 4, "num_layers": 2, "text_embed_dim": 64, "time_embed_dim": 64,
         "sample_width": 16, "sample_height": 16, "sample_frames": 9, "max_text_seq_length": 16}  # fmt: skip
CONFIGS = {"W4A8": (4, 8), "W8A8": (8, 8)}


def log(msg: str, fh) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    fh.write(line + "\n")
    fh.flush()


def _proc_status(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _bytes(model) -> int:
    """Bytes of the persistent state (what a checkpoint holds; non-persistent buffers such as CogVideoX's sin-cos
    position table differ in dtype between a model cast with ``.to`` and one built by ``from_pretrained``)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def _inputs(cfg: dict, batch: int, device, dtype):
    import torch

    g = torch.Generator().manual_seed(1)
    frames = (cfg["sample_frames"] - 1) // cfg["temporal_compression_ratio"] + 1
    x = torch.randn(batch, frames, cfg["in_channels"], cfg["sample_height"], cfg["sample_width"], generator=g)
    e = torch.randn(batch, cfg["max_text_seq_length"], cfg["text_embed_dim"], generator=g)
    return {"hidden_states": x.to(device, dtype), "encoder_hidden_states": e.to(device, dtype),
            "timestep": torch.tensor([500] * batch, device=device)}  # fmt: skip


def _alloc_gib(device) -> float:
    import torch

    return torch.cuda.memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def _step(model, inputs, reps: int, device) -> dict:
    """Warm-up (Triton compilation) + ``reps`` timed steps; the output of the first timed step and a second one."""
    import torch

    with torch.inference_mode():
        model(**inputs, return_dict=False)
        _sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        times, outs = [], []
        for _ in range(reps):
            _sync(device)
            t0 = time.perf_counter()
            y = model(**inputs, return_dict=False)[0]
            _sync(device)
            times.append(time.perf_counter() - t0)
            if len(outs) < 2:
                outs.append(y.float().cpu())
            del y
        peak = torch.cuda.max_memory_allocated(device) - before if device.type == "cuda" else float("nan")
    return {"step_ms": 1e3 * statistics.median(times), "step_ms_min": 1e3 * min(times),
            "step_peak_gib": peak / 2**30, "out": outs}  # fmt: skip


def _free(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_config(name: str, bits: tuple[int, int], cfg: dict, args, device, fh, rows: list, with_bf16: bool) -> None:
    import torch
    from diffusers import CogVideoXTransformer3DModel

    import vqcore
    from vqcore.integrations.diffusers import register

    dtype = torch.bfloat16
    inputs = _inputs(cfg, args.batch, device, dtype)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    # built as from_pretrained builds it: default dtype bf16, no cast afterwards (the non-persistent sin-cos position
    # table stays float64 in both), and __init__ on the CPU, then moved. from_pretrained computes the non-persistent
    # buffers on the CPU too; a model built under torch.device("cuda") computes the position table with CUDA's sin/cos
    # (the 2026-12-08 run, built that way, differed from the loaded model by one bf16 ulp, 0.0156 at |out| 2.84, most
    # likely through that table: the CPU tests are bit-equal); this CPU build has not run on a GPU yet.
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = CogVideoXTransformer3DModel(**cfg)
    finally:
        torch.set_default_dtype(prev)
    model = model.to(device).eval()
    n_params = sum(p.numel() for p in model.parameters())
    log(f"{name}: built {n_params / 1e9:.2f} B-parameter bf16 model on {device} in {time.perf_counter() - t0:.1f}s", fh)
    base = {"table": "step", "config": name, "params_b": n_params / 1e9, "batch": args.batch}
    if with_bf16:
        s = _step(model, inputs, args.reps, device)
        rows.append({**base, "config": "bf16", "model": "bf16 (float)", "weights_gib": _bytes(model) / 2**30,
                     "resident_gib": _alloc_gib(device), "step_ms": s["step_ms"],
                     "step_peak_gib": s["step_peak_gib"]})  # fmt: skip
        log(f"bf16: step {s['step_ms']:.1f} ms, weights {_bytes(model) / 2**30:.2f} GiB, step peak "
            f"{s['step_peak_gib']:.2f} GiB", fh)  # fmt: skip
    t0 = time.perf_counter()
    conv = vqcore.convert(vqcore.quantize(model, method="rtn", w_bits=bits[0], a_bits=bits[1], inplace=True))
    _sync(device)
    del model
    _free(device)
    log(f"{name}: quantize + convert {time.perf_counter() - t0:.1f}s", fh)
    s_conv = _step(conv, inputs, args.reps, device)
    floor = float((s_conv["out"][0] - s_conv["out"][1]).abs().max()) if len(s_conv["out"]) > 1 else 0.0
    conv_bytes = _bytes(conv)
    rows.append({**base, "model": "converted (in memory)", "weights_gib": conv_bytes / 2**30,
                 "resident_gib": _alloc_gib(device), "step_ms": s_conv["step_ms"],
                 "step_peak_gib": s_conv["step_peak_gib"]})  # fmt: skip
    log(f"{name} converted: step {s_conv['step_ms']:.1f} ms, weights {conv_bytes / 2**30:.2f} GiB, step peak "
        f"{s_conv['step_peak_gib']:.2f} GiB, run-to-run max |diff| {floor:.3g}", fh)  # fmt: skip
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        t0 = time.perf_counter()
        vqcore.save_converted(conv, tmp, format="diffusers")
        save_s = time.perf_counter() - t0
        folder_bytes = sum(p.stat().st_size for p in Path(tmp).iterdir())
        log(f"{name}: saved diffusers folder ({folder_bytes / 2**30:.2f} GiB) in {save_s:.1f}s", fh)
        del conv
        _free(device)
        register()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        gpu_before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        rss_ok = _reset_peak_rss()
        rss_before = _proc_status("VmRSS")
        t0 = time.perf_counter()
        how = f"from_pretrained(device_map={device.type!r})"
        try:
            loaded = CogVideoXTransformer3DModel.from_pretrained(tmp, device_map=device.type)
        except Exception as err:  # noqa: BLE001 - recorded; the fallback path is measured instead
            log(f"{name}: device_map={device.type!r} failed ({type(err).__name__}: {err}); loading to CPU + .to()", fh)
            how = "from_pretrained().to(device)"
            loaded = CogVideoXTransformer3DModel.from_pretrained(tmp).to(device)
        _sync(device)
        load_s = time.perf_counter() - t0
        rss_peak = (_proc_status("VmHWM") - rss_before) / 2**30 if rss_ok and rss_before else float("nan")
        gpu_peak = ((torch.cuda.max_memory_allocated(device) - gpu_before) / 2**30 if device.type == "cuda"
                    else float("nan"))  # fmt: skip
    log(f"{name}: {how} in {load_s:.1f}s, load peak GPU {gpu_peak:.2f} GiB, host RSS growth {rss_peak:.2f} GiB", fh)
    s_load = _step(loaded, inputs, args.reps, device)
    diff = float((s_load["out"][0] - s_conv["out"][0]).abs().max())
    ref = float(s_conv["out"][0].abs().max())
    equal = bool(diff == 0.0)
    loaded_bytes = _bytes(loaded)
    rows.append({**base, "model": "from_pretrained", "weights_gib": loaded_bytes / 2**30,
                 "resident_gib": _alloc_gib(device), "step_ms": s_load["step_ms"],
                 "step_peak_gib": s_load["step_peak_gib"], "load_s": load_s, "load_peak_gpu_gib": gpu_peak,
                 "load_peak_rss_gib": rss_peak, "folder_gib": folder_bytes / 2**30, "save_s": save_s,
                 "max_abs_diff_vs_converted": diff, "run_to_run_max_abs": floor, "output_absmax": ref,
                 "bit_equal": int(equal), "load_path": how})  # fmt: skip
    ratio = s_load["step_ms"] / s_conv["step_ms"]
    log(f"{name} from_pretrained: step {s_load['step_ms']:.1f} ms ({ratio:.3f}x the converted model), weights "
        f"{loaded_bytes / 2**30:.2f} GiB ({'same' if loaded_bytes == conv_bytes else 'DIFFERENT'} bytes), step peak "
        f"{s_load['step_peak_gib']:.2f} GiB; output max |diff| vs converted {diff:.3g} (run-to-run {floor:.3g}, "
        f"|out| max {ref:.3g}) -> {'bit-equal' if equal else 'NOT bit-equal'}", fh)  # fmt: skip
    del loaded
    _free(device)


def cross_device(args, device, fh, rows: list) -> None:
    """The same folder on both paths: a small CogVideoX converted on the GPU, saved once, loaded with
    ``device_map="cpu"`` (reference kernels) and ``device_map="cuda"`` (Triton kernels); outputs compared."""
    import torch
    from diffusers import CogVideoXTransformer3DModel

    import vqcore
    from vqcore.integrations.diffusers import register

    torch.manual_seed(0)
    with torch.device(device):
        model = CogVideoXTransformer3DModel(**QUICK).to(device=device, dtype=torch.float32).eval()
    conv = vqcore.convert(vqcore.quantize(model, method="rtn", w_bits=4, a_bits=8, inplace=True))
    register()
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp, torch.inference_mode():
        vqcore.save_converted(conv, tmp, format="diffusers")
        outs = {}
        for dev in ("cpu", device.type):
            loaded = CogVideoXTransformer3DModel.from_pretrained(tmp, device_map=dev)
            outs[dev] = loaded(**_inputs(QUICK, 2, torch.device(dev), torch.float32), return_dict=False)[0].cpu()
    ref = outs["cpu"]
    rel = float((outs[device.type] - ref).norm() / ref.norm())
    mx = float((outs[device.type] - ref).abs().max())
    rows.append({"table": "devices", "config": "W4A8 fp32 (small CogVideoX)", "model": "from_pretrained",
                 "rel_l2_cuda_vs_cpu": rel, "max_abs_cuda_vs_cpu": mx})  # fmt: skip
    log(f"same folder on cpu (reference) and {device.type} (Triton): relative L2 difference {rel:.3g}", fh)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--configs", default="W4A8,W8A8", help=f"comma-separated subset of {sorted(CONFIGS)}")
    ap.add_argument("--reps", type=int, default=5, help="timed steps per model (after one warm-up)")
    ap.add_argument("--batch", type=int, default=2, help="batch of one step (2 = classifier-free guidance)")
    ap.add_argument("--budget-s", type=float, default=450.0, help="skip further configs past this wall time")
    ap.add_argument("--tmp", default=None, help="folder for the temporary checkpoints (default: system temp)")
    ap.add_argument("--quick", action="store_true", help="tiny configuration (CPU smoke test)")
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    args = ap.parse_args(argv)
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = [c for c in names if c not in CONFIGS]
    if bad or not names:
        ap.error(f"--configs: unknown {bad}, expected a subset of {sorted(CONFIGS)}")
    if args.batch < 1:
        ap.error("--batch must be >= 1")
    if args.reps < 2:
        ap.error("--reps must be >= 2 (two outputs give the run-to-run floor)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    if PYDEPS.is_dir():
        sys.path.insert(0, str(PYDEPS))
    for p in ("packages/commons/src", "packages/vqcore/src"):
        if str(ROOT / p) not in sys.path:
            sys.path.insert(0, str(ROOT / p))
    with open(out / "vqcore_diffusers.log", "w") as fh:
        try:
            import diffusers
        except ImportError as err:
            log(f"diffusers is not importable here ({err}); carry a copy as {PYDEPS} (cp -r the venv's diffusers and "
                "diffusers-*.dist-info) — nothing measured", fh)  # fmt: skip
            return 3
        import torch

        from commons.results import write_results

        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        log(f"torch {torch.__version__}, diffusers {diffusers.__version__} ({Path(diffusers.__file__).parent}), device "
            f"{device} ({gpu})", fh)
        cfg = QUICK if args.quick else COGVIDEOX_2B
        rows: list[dict] = []
        settings = {"model": "CogVideoXTransformer3DModel", "config": cfg, "quick": args.quick, "reps": args.reps,
                    "batch": args.batch, "method": "rtn", "device": gpu, "dtype": "bfloat16",
                    "diffusers": diffusers.__version__, "command": " ".join(sys.argv)}  # fmt: skip
        path, failed, longest = None, [], 0.0

        def save() -> Path | None:
            if not rows:
                return path
            clean = [{k: v for k, v in r.items() if not (isinstance(v, float) and math.isnan(v))} for r in rows]
            return write_results("vqcore", "vqcore_diffusers", clean, {**settings, "failed": failed}, root=out)

        def attempt(label: str, fn) -> None:
            try:
                fn()
            except Exception:  # noqa: BLE001 - logged with its traceback; the next part still runs
                failed.append(label)
                log(f"{label} FAILED:\n{traceback.format_exc()}", fh)
            _free(device)

        for i, name in enumerate(names):
            spent = time.time() - t_start
            if i and spent + longest > args.budget_s:  # the next config would likely overrun the budget
                log(f"{spent:.0f}s spent, a config took {longest:.0f}s (budget {args.budget_s:.0f}s): skipping "
                    f"{names[i:]}", fh)  # fmt: skip
                break
            t0 = time.time()
            attempt(name, lambda name=name, i=i: run_config(name, CONFIGS[name], cfg, args, device, fh, rows,
                                                             with_bf16=i == 0))  # fmt: skip
            longest = max(longest, time.time() - t0)
            path = save()  # after every config: a time-out keeps what was measured
        if device.type == "cuda" and time.time() - t_start < args.budget_s + 60:
            attempt("cross-device", lambda: cross_device(args, device, fh, rows))
            path = save()
        log(f"wrote {path} in {time.time() - t_start:.0f}s{f'; FAILED: {failed}' if failed else ''}", fh)
        for r in rows:
            log(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}), fh)
    return 1 if failed else 0
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
