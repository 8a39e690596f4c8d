"""The quality benchmark: every registered quantization method on the zoo's video DiT and image UNet.

For the video DiT (``moving-digits-dit``) at W8A8, W4A8, W4A6, W3A6 and the image UNet (``digits-unet``) at W8A8,
W4A8, W4A4, W3A4, W2A4, each method quantizes the full-precision model (calibration data: inputs captured along FP
DDIM trajectories of calibration labels/seeds disjoint from the evaluation seeds), then samples the same labels from
the same initial noise as the FP model. Metrics (:mod:`vqcore.zoo.evaluate`): class accuracy of the samples, a
Fréchet distance on the zoo evaluators' features to held-out real data (FID-like / FVD-like — *not* Inception/I3D),
temporal flicker and motion smoothness (videos), and PSNR/SSIM to the FP samples (per frame for videos).

Rows: ``fp``, ``rtn``, the baseline (``vidit-q`` for video, ``q-diffusion`` for images) and every other method in
``vqcore.methods`` that applies to the model kind (a method may declare ``kinds = ("dit",)`` / ``("unet",)``; known
names are mapped, unknown ones run on both). Each row states its layer bit mix from the method's report.

Run ``python tools/bench/vqcore_quality.py --quick`` (CPU, minutes) or without ``--quick`` on a GPU.

Shared work is done once per kind: the FP samples (the reference of every row's PSNR/SSIM), the evaluator features
of the real reference, and the calibration set. On the CPU the rows run in worker processes (``jobs``, default one
per core, at most 4); each worker recomputes that shared state from the same seeds, so the table does not depend on
``jobs``. Evaluation sampling runs under ``torch.inference_mode``. ``meta["timings"]`` records where the time went.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import torch

from commons.reporting import markdown_table, save_image_grid

from . import load, sample
from .evaluate import evaluate_images, evaluate_videos, features, real_reference

__all__ = ["main", "run_benchmark", "VIDEO_SETTINGS", "IMAGE_SETTINGS", "methods_for", "clearly_worse",
           "fidelity_separates"]

logger = logging.getLogger(__name__)

VIDEO_SETTINGS = [(8, 8), (4, 8), (4, 6), (3, 6)]
IMAGE_SETTINGS = [(8, 8), (4, 8), (4, 4), (3, 4), (2, 4)]
BASELINE = {"video": "vidit-q", "video-l": "vidit-q", "image": "q-diffusion"}
#: kind -> (generator, evaluator) zoo entries; "video-l" is the larger DiT of issue 20 (16 frames x 256 tokens)
KIND_MODELS = {"video": ("moving-digits-dit", "moving-digits-classifier"),
               "video-l": ("moving-digits-dit-l", "moving-digits-classifier-l"),
               "image": ("digits-unet", "digits-classifier")}
_KNOWN_KINDS = {"vidit-q": ("dit",), "q-diffusion": ("unet",), "qvdit": ("dit",), "q-vdit": ("dit",),
                "s2q": ("dit",), "s2q-vdit": ("dit",), "mpqdm": ("unet",), "mpq-dm": ("unet",)}

PRESETS = {
    # name: (video samples, image samples, DDIM steps, calibration trajectories, method iters)
    "quick": dict(n_video=16, n_image=40, steps=8, calib_video=2, calib_image=4, iters=10, n_real=300),
    "full": dict(n_video=200, n_image=500, steps=20, calib_video=8, calib_image=32, iters=300, n_real=1000),
    # a seconds-long CPU smoke test of the driver (numbers meaningless): tests and `--full --preset tiny`
    "tiny": dict(n_video=4, n_image=10, steps=3, calib_video=1, calib_image=1, iters=1, n_real=40),
}
VIDEO_GUIDANCE = 2.0  # FP accuracy 0.84 at guidance 1 vs 0.99 at 2 (train log); both branches go through the model
IMAGE_GUIDANCE = 1.0


def methods_for(kind: str, requested: list[str] | None = None) -> list[str]:
    """``rtn``, the baseline, then the other registered methods that apply to ``kind`` ("video"/"image")."""
    from ..methods import METHODS, list_methods

    model_kind = "unet" if kind == "image" else "dit"
    names = list_methods()
    ordered = ["rtn", BASELINE[kind]] + [n for n in names if n not in ("rtn", *BASELINE.values())]
    out = []
    for n in ordered:
        if n not in names or (requested and n not in requested):
            continue
        kinds = getattr(METHODS[n], "kinds", None) or _KNOWN_KINDS.get(n, ("dit", "unet"))
        if model_kind in kinds:
            out.append(n)
    return out


def _options(method: str, iters: int, extra: dict | None = None) -> dict:
    from ..methods import get_method

    params = get_method(method).option_names()
    opts = {}
    if "iters" in params:
        opts["iters"] = iters
    if "progress" in params:
        opts["progress"] = False
    return {**opts, **(extra or {})}


#: kind -> (Capture memory budget, keep every n-th denoising call). Measured per FP denoiser call with CFG (one video
#: or image, block inputs + root): video 9.8 MB, video-l 106 MB, image 0.4 MB. The budgets hold the ``full`` preset's
#: whole set (video 8 x 20 calls = 1.6 GB; video-l 8 x 10 kept calls = 8.5 GB; image 32 x 20 = 0.26 GB): a smaller
#: budget silently drops the *later* calls — for video-l at the former 768 MiB all but the first 7 high-noise steps
#: of the first trajectory.
CAPTURE = {"video": (2 * 2**30, 1), "video-l": (12 * 2**30, 2), "image": (512 * 2**20, 1)}


def _calibration(model, labels, steps, guidance, seed, max_bytes, every_n_steps: int = 1, info: dict | None = None):
    """FP DDIM trajectories of ``labels`` captured for calibration; ``info`` (if given) gets the item count and the
    number of calls the memory budget dropped (``calib_skipped``, logged as a warning when > 0)."""
    from ..calib import Capture

    with torch.no_grad(), Capture(model, targets="blocks", max_bytes=max_bytes, every_n_steps=every_n_steps) as cap:
        sample(model, labels, num_steps=steps, guidance_scale=guidance, seed=seed, batch_size=1)
    if cap._skipped:
        logger.warning("calibration capture: budget of %.0f MiB reached, %d items dropped (the later timesteps/"
                       "trajectories)", max_bytes / 2**20, cap._skipped)
    if info is not None:
        info.update(calib_items=len(cap.result), calib_skipped=int(cap._skipped))
    return cap.result


def _sample_eval(model, labels, sample_kw) -> torch.Tensor:
    """Evaluation sampling (FP reference and every quantized row): no autograd state at all (``inference_mode``)."""
    with torch.inference_mode():
        return sample(model, labels, **sample_kw)


def clearly_worse(acc_fp: float, acc_q: float, n: int, fd_fp: float, fd_q: float) -> bool:
    """The benchmark's "clearly worse than FP" bar: the Fréchet distance at least doubles, or the accuracy drops by
    at least 0.10, or by more than two standard errors of the difference of two proportions over ``n`` samples each
    (and at least 0.03)."""
    import math

    pooled = (acc_fp + acc_q) / 2
    se = math.sqrt(max(pooled * (1 - pooled), 1e-12) * 2 / n)
    drop = acc_fp - acc_q
    return bool(fd_q >= 2 * fd_fp or drop >= 0.10 or (drop >= 0.03 and drop > 2 * se))


FIDELITY_MARGIN_DB = 6.0


def fidelity_separates(psnr_highest: float, psnr_lowest: float, margin_db: float = FIDELITY_MARGIN_DB) -> bool:
    """The benchmark's fidelity bar: RTN's PSNR to the FP samples (same seeds and labels) at the lowest setting is at
    least ``margin_db`` below RTN's at the highest (W8A8), i.e. the deviation from FP has ≥ 4× the energy of 8-bit
    rounding's. It says the fidelity columns separate bit-widths, hence methods, even where the distribution-level
    bar (:func:`clearly_worse`) cannot resolve a robust model's degradation with few samples."""
    return bool(psnr_lowest <= psnr_highest - margin_db)


def _video_rows(v: torch.Tensor, n: int = 2) -> list[torch.Tensor]:
    return [v[i, :, f] for i in range(min(n, v.shape[0])) for f in range(v.shape[2])]


def _prepare_kind(kind: str, p: dict, device: torch.device, seed: int) -> dict:
    """Everything a kind's rows share, computed once: models, held-out reference features, the FP samples (from the
    evaluation seeds) and their metrics, and the calibration set (FP trajectories of disjoint labels/seeds)."""
    if kind not in KIND_MODELS:
        raise ValueError(f"kind must be one of {sorted(KIND_MODELS)}, got {kind!r}")
    video = kind != "image"
    t_kind = time.perf_counter()
    gen_name, clf_name = KIND_MODELS[kind]
    gen = load(gen_name, device=device)
    clf = load(clf_name, device="cpu")
    n = p["n_video" if video else "n_image"]
    guidance = VIDEO_GUIDANCE if video else IMAGE_GUIDANCE
    evaluate = evaluate_videos if video else evaluate_images
    t0 = time.perf_counter()
    real, _ = real_reference(kind, n=p["n_real"], seed=123)
    real_feats, _ = features(clf, real)  # computed once per kind, shared by every row
    t_ref = time.perf_counter() - t0
    labels = torch.arange(n) % 10
    sample_kw = dict(num_steps=p["steps"], guidance_scale=guidance, seed=seed + 10_000, batch_size=50)
    t0 = time.perf_counter()
    fp = _sample_eval(gen, labels, sample_kw)  # the FP reference: sampled once, compared against by every row
    fp_seconds = time.perf_counter() - t0
    fp_metrics = evaluate(fp, labels, clf, real_feats)
    calib_labels = (torch.arange(p["calib_video" if video else "calib_image"]) * 3 + 1) % 10
    t0 = time.perf_counter()
    max_bytes, every = CAPTURE[kind]
    cinfo: dict = {}
    calib = _calibration(gen, calib_labels, p["steps"], guidance, seed + 50_000, max_bytes, every,
                         cinfo)  # one calibration set shared by all methods
    t_calib = time.perf_counter() - t0
    return dict(kind=kind, video=video, gen=gen, clf=clf, n=n, evaluate=evaluate, real_feats=real_feats,
                labels=labels, sample_kw=sample_kw, fp=fp, fp_metrics=fp_metrics, calib=calib, calib_info=cinfo,
                timings={"reference_s": t_ref, "fp_sample_s": fp_seconds, "calibration_s": t_calib,
                         "setup_s": time.perf_counter() - t_kind})


def _run_row(st: dict, w_bits: int, a_bits: int, method: str, p: dict, seed: int, keep_grid: bool,
             extra: dict | None = None):
    """Quantize with one method at one setting (``extra``: option overrides, e.g. an ablation's), sample, evaluate:
    ``(row, grid samples or None)``. On a GPU the row also has ``peak_gib``, the peak allocated memory of the
    quantization (calibration) step."""
    import vqcore

    kind = st["kind"]
    torch.manual_seed(seed)
    cuda = next(st["gen"].parameters()).device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    try:
        q = vqcore.quantize(st["gen"], method=method, w_bits=w_bits, a_bits=a_bits, calib=st["calib"],
                            **_options(method, p["iters"], extra))
    except Exception as err:  # noqa: BLE001 - one failing method must not hide the others
        logger.exception("%s %s W%dA%d failed", kind, method, w_bits, a_bits)
        return {"model": kind, "W/A": f"W{w_bits}A{a_bits}", "method": method,
                "bits": f"FAILED: {type(err).__name__}: {err}"[:200]}, None
    if cuda:
        torch.cuda.synchronize()
    qs = time.perf_counter() - t0
    peak = {"peak_gib": torch.cuda.max_memory_allocated() / 2**30} if cuda else {}
    t0 = time.perf_counter()
    qsamp = _sample_eval(q, st["labels"], st["sample_kw"])
    ss = time.perf_counter() - t0
    m = st["evaluate"](qsamp, st["labels"], st["clf"], st["real_feats"], fp_samples=st["fp"])
    bits = ", ".join(f"{k}×{v}" for k, v in sorted(q.vqcore_report.bits.items()))
    row = {"model": kind, "W/A": f"W{w_bits}A{a_bits}", "method": method, "bits": f"{bits} (+FP rest)", **m,
           "quant_s": qs, "sample_s": ss, **peak}
    logger.info("%s %s W%dA%d: %s", kind, method, w_bits, a_bits, m)
    grid = None
    if keep_grid:
        grid = torch.stack(_video_rows(qsamp) if st["video"] else list(qsamp[:10]))
    return row, grid


# -- worker processes (``jobs > 1``): each keeps its own copy of a kind's shared state, computed once per worker -----
_WORKER: dict = {}


def _worker_init(p: dict, device: str, seed: int, threads: int, log_level: int) -> None:
    torch.set_num_threads(threads)
    logging.basicConfig(level=log_level, format="%(asctime)s [worker %(process)d] %(name)s: %(message)s")
    _WORKER.update(p=p, device=torch.device(device), seed=seed, states={})


def _worker_state(kind: str) -> dict:
    states = _WORKER["states"]
    if kind not in states:
        states.clear()  # jobs arrive kind by kind: free the previous kind's model and calibration set
        states[kind] = _prepare_kind(kind, _WORKER["p"], _WORKER["device"], _WORKER["seed"])
    return states[kind]


def _worker_fp(kind: str) -> dict:
    st = _worker_state(kind)
    return {"fp": st["fp"], "fp_metrics": st["fp_metrics"], "timings": st["timings"]}


def _worker_row(kind: str, w_bits: int, a_bits: int, method: str, keep_grid: bool):
    return _run_row(_worker_state(kind), w_bits, a_bits, method, _WORKER["p"], _WORKER["seed"], keep_grid)


def run_benchmark(preset: str = "quick", device: str = "cpu", seed: int = 0, kinds=("video", "image"),
                  methods: list[str] | None = None, out: Path | None = None, settings: dict | None = None,
                  jobs: int | None = None) -> dict:
    """Run the benchmark and return ``{"rows": [...], "sanity": {...}, "meta": {...}}`` (see module docstring).

    ``jobs > 1`` (CPU only) spreads the (setting, method) rows over that many worker processes with
    ``torch.get_num_threads() // jobs`` threads each (at least 1); every worker recomputes a kind's FP samples and
    calibration set from the same seeds, so the rows are the ones a serial run gives. ``jobs=None``: one worker per
    usable CPU core (at most 4) on the CPU when there are at least 4 rows, else 1 (always 1 on a GPU)."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    if jobs is not None and (not isinstance(jobs, int) or jobs < 1):
        raise ValueError(f"jobs must be a positive int or None, got {jobs!r}")
    p = PRESETS[preset]
    dev = torch.device(device)
    if jobs is not None and jobs > 1 and dev.type != "cpu":
        raise ValueError(f"jobs > 1 runs worker processes on the CPU; use jobs=1 on {dev.type}")
    t_start = time.perf_counter()
    meta = {"preset": preset, **p, "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else
            f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch": torch.__version__,
            "video_guidance": VIDEO_GUIDANCE, "image_guidance": IMAGE_GUIDANCE, "seed": seed}
    plan = {}
    for kind in kinds:
        lowest = (VIDEO_SETTINGS if kind == "video" else IMAGE_SETTINGS)[-1]
        todo = [(w, a, m, (w, a) == lowest)
                for w, a in (settings or {}).get(kind, VIDEO_SETTINGS if kind == "video" else IMAGE_SETTINGS)
                for m in methods_for(kind, methods)]
        plan[kind] = (lowest, todo)
    if jobs is None:
        n_rows = sum(len(todo) for _, todo in plan.values())
        jobs = min(_usable_cpus(), 4) if dev.type == "cpu" and n_rows >= 4 else 1
    meta["jobs"] = jobs
    if jobs > 1:
        meta["device"] += f"; {jobs} worker processes × {max(1, torch.get_num_threads() // jobs)} thread(s)"
    if jobs == 1:
        results = {}
        for kind in kinds:
            t_kind = time.perf_counter()
            st = _prepare_kind(kind, p, dev, seed)
            logger.info("%s FP: %s", kind, st["fp_metrics"])
            out_rows = [_run_row(st, w, a, m, p, seed, g) for w, a, m, g in plan[kind][1]]
            results[kind] = ({"fp": st["fp"], "fp_metrics": st["fp_metrics"],
                              "timings": {**st["timings"], "total_s": time.perf_counter() - t_kind}}, out_rows)
            del st
    else:
        results = _run_parallel(kinds, plan, p, device, seed, jobs)
    rows, sanity, grids, timings = [], {}, {}, {}
    for kind in kinds:
        video = kind == "video"
        fd_key = "fvd_like" if video else "fid_like"
        n = p["n_video" if video else "n_image"]
        head, out_rows = results[kind]
        fp, fp_metrics = head["fp"], head["fp_metrics"]
        rows.append({"model": kind, "W/A": "FP", "method": "fp", "bits": "all FP", **fp_metrics,
                     "quant_s": 0.0, "sample_s": head["timings"]["fp_sample_s"]})
        grid, grid_labels = (_video_rows(fp) if video else list(fp[:10])), ["fp"]
        for (_, _, method, _), (row, g) in zip(plan[kind][1], out_rows):
            rows.append(row)
            if g is not None:
                grid += list(g)
                grid_labels.append(method)
        lowest = plan[kind][0]
        fp_ok = fp_metrics["accuracy"] >= 0.8
        rtn = next((r for r in rows if r["model"] == kind and r["method"] == "rtn"
                    and r["W/A"] == f"W{lowest[0]}A{lowest[1]}" and "accuracy" in r), None)
        rtn_hi = next((r for r in rows if r["model"] == kind and r["method"] == "rtn" and "psnr" in r
                       and r["W/A"] == "W8A8"), None)
        worse = separates = None
        if rtn is not None:
            worse = clearly_worse(fp_metrics["accuracy"], rtn["accuracy"], n, fp_metrics[fd_key], rtn[fd_key])
            if rtn_hi is not None and "psnr" in rtn:
                separates = fidelity_separates(rtn_hi["psnr"], rtn["psnr"])
        sanity[kind] = {"fp_accuracy": fp_metrics["accuracy"], "fp_accuracy_ok": fp_ok,
                        "lowest_setting": f"W{lowest[0]}A{lowest[1]}",
                        "rtn_lowest_accuracy": None if rtn is None else rtn["accuracy"],
                        f"rtn_lowest_{fd_key}": None if rtn is None else rtn[fd_key],
                        f"fp_{fd_key}": fp_metrics[fd_key], "rtn_lowest_clearly_worse": worse,
                        "rtn_w8a8_psnr": None if rtn_hi is None else rtn_hi["psnr"],
                        "rtn_lowest_psnr": None if rtn is None else rtn.get("psnr"),
                        "rtn_fidelity_separates": separates}
        grids[kind] = (grid, grid_labels, 16 if video else 10)
        kind_rows = [r for r in rows if r["model"] == kind and r["method"] != "fp"]
        per_method: dict[str, float] = {}
        for r in kind_rows:
            per_method[r["method"]] = per_method.get(r["method"], 0.0) + r.get("quant_s", 0.0)
        timings[kind] = {**head["timings"], "quantize_s": sum(per_method.values()),
                         "sample_s": sum(r.get("sample_s", 0.0) for r in kind_rows),
                         "quantize_s_per_method": per_method}
        logger.info("%s timings: %s", kind, {k: v if isinstance(v, dict) else round(v, 1)
                                               for k, v in timings[kind].items()})
    meta["timings"] = {**timings, "total_s": time.perf_counter() - t_start}
    result = {"meta": meta, "rows": rows, "sanity": sanity}
    if out is not None:
        write_outputs(result, grids, Path(out))
    return result


def _usable_cpus() -> int:
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _run_parallel(kinds, plan, p: dict, device: str, seed: int, jobs: int) -> dict:
    """Rows over ``jobs`` spawned worker processes; a kind's rows are queued after its FP job, in table order."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, torch.get_num_threads() // jobs)
    level = logging.getLogger().getEffectiveLevel()
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                             initargs=(p, str(device), seed, threads, level)) as pool:
        futures = {kind: (pool.submit(_worker_fp, kind),
                          [pool.submit(_worker_row, kind, w, a, m, g) for w, a, m, g in plan[kind][1]])
                   for kind in kinds}
        return {kind: (head.result(), [f.result() for f in rows]) for kind, (head, rows) in futures.items()}


COLUMNS = ["model", "W/A", "method", "bits", "accuracy", "fvd_like", "fid_like", "flicker", "smoothness", "psnr",
           "ssim", "quant_s", "sample_s"]


def write_outputs(result: dict, grids: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.json", "w") as fh:
        json.dump(result, fh, indent=2, default=str)
    meta = result["meta"]
    lines = [f"# vqcore quality benchmark ({meta['preset']})", "",
             f"Machine: {meta['device']}; torch {meta['torch']}; {meta['date']}. Samples: {meta['n_video']} videos, "
             f"{meta['n_image']} images, {meta['steps']} DDIM steps (guidance {meta['video_guidance']} video, "
             f"{meta['image_guidance']} image); real reference: {meta['n_real']} held-out samples.", "",
             "`fvd_like`/`fid_like`: Fréchet distance on the zoo's own small CNN evaluators' features — NOT "
             "Inception/I3D FID/FVD. `psnr`/`ssim`: fidelity to the FP samples from the same seeds (per frame for "
             "video). `bits`: quantized layers per W/A setting (the rest of the model stays FP).", ""]
    for kind in ("video", "image"):
        kind_rows = [{c: r.get(c, "") for c in COLUMNS if c in r or c in ("bits",)} for r in result["rows"]
                     if r["model"] == kind]
        if kind_rows:
            lines += [f"## {kind}", "", markdown_table(kind_rows), ""]
    t = meta.get("timings")
    if t:
        lines += ["## wall time", ""]
        for kind in ("video", "image"):
            if kind in t:
                k = t[kind]
                per = ", ".join(f"{m} {v:.0f} s" for m, v in k["quantize_s_per_method"].items())
                span = f"{k['total_s'] / 60:.1f} min" if "total_s" in k else "in worker processes"
                lines.append(f"- {kind}: {span} — FP samples {k['fp_sample_s']:.0f} s, "
                             f"calibration capture {k['calibration_s']:.0f} s, "
                             f"real reference {k['reference_s']:.0f} s, "
                             f"quantized sampling {k['sample_s']:.0f} s, quantize {k['quantize_s']:.0f} s ({per})")
        lines += [f"- total: {t['total_s'] / 60:.1f} min wall ({meta.get('jobs', 1)} process(es)); quantize and "
                  "sampling are per-row sums", ""]
    lines += ["## sanity bars", ""]
    for kind, s in result["sanity"].items():
        verdict = "PASS" if s["fp_accuracy_ok"] else "FAIL"
        fid = s.get("rtn_fidelity_separates")
        fid_text = "n/a (no W8A8 row)" if fid is None else (
            f"{s['rtn_lowest_psnr']:.1f} vs {s['rtn_w8a8_psnr']:.1f} dB: {'PASS' if fid else 'FAIL'}")
        lines.append(f"- {kind}: FP accuracy {s['fp_accuracy']:.3f} (≥ 0.8: {verdict})"
                     f"; RTN at {s['lowest_setting']} clearly worse than FP (Fréchet ×2, or accuracy −0.10, or a "
                     f"drop > 2 s.e. and ≥ 0.03): "
                     f"{'PASS' if s['rtn_lowest_clearly_worse'] else 'FAIL'}"
                     f"; RTN's PSNR to FP at {s['lowest_setting']} ≥ {FIDELITY_MARGIN_DB:.0f} dB below W8A8 "
                     f"({fid_text}). Passes if FP accuracy passes and either RTN bar does.")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    for kind, (grid, labels, nrow) in grids.items():
        save_image_grid(torch.stack(grid), out / f"grid_{kind}.png", nrow=nrow, scale=3)
        (out / f"grid_{kind}.txt").write_text("rows, top to bottom: " + ", ".join(labels) + "\n")


def sanity_ok(s: dict) -> bool:
    """FP samples are recognisable, and RTN at the lowest setting is clearly worse than FP by the distribution-level
    bar or by the fidelity bar (both are printed, so a reader sees which one holds)."""
    return bool(s["fp_accuracy_ok"] and (s["rtn_lowest_clearly_worse"] or s.get("rtn_fidelity_separates")))


def _int_list(text: str, name: str) -> list[int]:
    try:
        out = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        out = []
    if not out:
        raise SystemExit(f"{name} must be a comma-separated list of ints, got {text!r}")
    return out


def _settings_arg(text: str | None, kinds) -> dict | None:
    """``'video-l=W3A6,W4A6;image=W2A4'`` -> ``{"video-l": [(3, 6), (4, 6)], "image": [(2, 4)]}``."""
    import re

    if not text:
        return None
    out: dict[str, list[tuple[int, int]]] = {}
    for part in (p for p in text.split(";") if p.strip()):
        kind, _, values = part.partition("=")
        pairs = [re.fullmatch(r"W(\d+)A(\d+)", v.strip()) for v in values.split(",")]
        if kind.strip() not in kinds or not values or not all(pairs):
            raise SystemExit(f"--settings must look like 'video-l=W3A6,W4A6;image=W2A4' with kinds from "
                             f"{','.join(kinds)}, got {text!r}")
        out[kind.strip()] = [(int(m.group(1)), int(m.group(2))) for m in pairs]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="vqcore quality benchmark on the model zoo")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small CPU setting (minutes)")
    mode.add_argument("--full", action="store_true",
                      help="issue 20's run (vqcore.zoo.bench_full): video, video-l and image kinds, --seeds, every "
                           "method and each method's ablations at its headline setting; resumable, writes "
                           "<results-root>/vqcore/vqcore_quality.json when complete")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/bench/vqcore_quality"))
    ap.add_argument("--kinds", default=None,
                    help="comma-separated kinds (default video,image; with --full video,video-l,image)")
    ap.add_argument("--methods", default=None, help="comma-separated subset of methods (default: all registered)")
    ap.add_argument("--jobs", type=int, default=None,
                    help="worker processes on the CPU (each recomputes the shared FP samples/calibration; rows are "
                         "identical to a serial run); default: one per usable core, at most 4 (1 on a GPU)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's own; 1 is faster on a machine shared with other jobs)")
    full = ap.add_argument_group("--full only")
    full.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (calibration and sampling)")
    full.add_argument("--preset", default="full", help=f"sample/iteration preset, one of {sorted(PRESETS)}")
    full.add_argument("--no-ablations", action="store_true", help="skip the per-method ablation units")
    full.add_argument("--resume-from", type=Path, action="append", default=None,
                      help="a units file of an earlier call (vqcore_quality_units.jsonl); repeatable")
    full.add_argument("--max-seconds", type=float, default=None,
                      help="start no unit predicted to end after this many seconds (a GPU call is killed at 600)")
    full.add_argument("--results-root", type=Path, default=None,
                      help="where vqcore/vqcore_quality.json goes (default: the repository's results/)")
    full.add_argument("--settings", default=None,
                      help="restrict the W/A settings per kind, e.g. 'video-l=W3A6,W4A6;image=W2A4' (kinds not "
                           "named keep all theirs); a unit done under one value is reused by a later, wider call "
                           "that resumes from its units file")
    full.add_argument("--plan", action="store_true", help="print the units and exit (loads no model)")
    ap.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    args = ap.parse_args(argv)
    try:
        return _main(args)
    except (ValueError, FileNotFoundError) as err:
        if args.verbose:
            raise
        raise SystemExit(f"vqcore bench: {err}") from None


def _main(args) -> int:
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"--threads must be a positive int, got {args.threads}")
        torch.set_num_threads(args.threads)
    methods = args.methods.split(",") if args.methods else None
    if args.full or args.plan:
        from . import bench_full

        if args.preset not in PRESETS:
            raise SystemExit(f"--preset must be one of {sorted(PRESETS)}, got {args.preset!r}")
        kinds = tuple(k for k in (args.kinds or ",".join(bench_full.FULL_KINDS)).split(",") if k)
        seeds = _int_list(args.seeds, "--seeds")
        settings = _settings_arg(args.settings, kinds)
        units = bench_full.plan_units(kinds, seeds, methods, args.preset, settings, ablations=not args.no_ablations)
        if args.plan:
            for u in units:
                print(u["key"] + (f" {json.dumps(u['options'])}" if u["options"] else ""))
            print(f"{len(units)} units ({len(seeds)} seeds, kinds {', '.join(kinds)}, preset {args.preset})")
            return 0
        for path in args.resume_from or []:
            if not path.is_file():
                raise SystemExit(f"--resume-from: no such file {path}")
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
        res = bench_full.run_full(args.out, args.device, kinds, seeds, methods, args.preset, settings,
                                  ablations=not args.no_ablations, resume_from=args.resume_from,
                                  max_seconds=args.max_seconds, results_root=args.results_root,
                                  log=lambda m: print(m, flush=True))
        return 0 if res["left"] == 0 else 3
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    result = run_benchmark("quick" if args.quick else "full", args.device, args.seed,
                           tuple(k for k in (args.kinds or "video,image").split(",") if k), methods, args.out,
                           **({"jobs": args.jobs} if args.jobs is not None else {}))
    print((args.out / "results.md").read_text())
    ok = all(sanity_ok(s) for s in result["sanity"].values())
    print("sanity bars:", "PASS" if ok else "FAIL")
    return 0 if ok else 1
