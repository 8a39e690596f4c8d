"""The full quality benchmark of issue 20: both zoo video DiTs and the image UNet, every method and bit setting,
several seeds, each method's ablations, resumable across calls of bounded length.

``python tools/bench/vqcore_quality.py --full --device cuda --out $OUT`` runs, for every seed (default 0, 1, 2: the
seed sets the calibration trajectories *and* the evaluation noise, :func:`vqcore.zoo.bench._prepare_kind`) and every
kind — ``video`` (``moving-digits-dit``, 8 frames × 64 tokens), ``video-l`` (``moving-digits-dit-l``, 16 frames × 256
tokens) and ``image`` (``digits-unet``) —

* the FP row, then every method of :func:`vqcore.zoo.bench.methods_for` (``rtn``, ``vidit-q`` / ``q-diffusion``,
  ``q-vdit``, ``s2q-vdit`` on the DiTs, ``mpq-dm`` on the UNet) at W8A8, W4A8, W4A6, W3A6 (video) and W8A8, W4A8,
  W3A4, W2A4 (image), at the ``full`` preset (200 videos / 500 images, 20 DDIM steps, 300 iterations);
* each method's ablations (:data:`ABLATIONS`, one component off at a time) at its paper's headline setting
  (:data:`HEADLINE`), on the largest model of its kind in the run.

Rows: class accuracy of the samples, FVD-like / FID-like (zoo evaluators' features, not I3D/Inception), PSNR/SSIM to
the FP samples of the same seed, calibration (quantize) wall time, and on a GPU the peak allocated memory of the
quantization. Every finished unit is appended at once to ``<out>/vqcore_quality_units.jsonl``; ``--resume-from`` that
file runs only the units missing from it (same settings; :func:`commons.jobs.load_partial`), and ``--max-seconds``
stops before a unit predicted to end after it (a GPU call is killed at 10 minutes). When every unit is done the seeds
are aggregated (mean and standard deviation) and written with :func:`commons.results.write_results` to
``<results-root>/vqcore/vqcore_quality.json`` (tables ``video``, ``video-l``, ``image``, ``ablation``, ``targets``),
which fills the README's ``vqcore/vqcore_quality`` blocks (``python tools/results.py``). ``--plan`` prints the units
and exits without loading a model.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from .bench import KIND_MODELS, PRESETS, VIDEO_SETTINGS, methods_for

__all__ = ["ABLATIONS", "HEADLINE", "FULL_KINDS", "plan_units", "run_full", "aggregate", "targets"]

FULL_KINDS = ("video", "video-l", "image")
FULL_SETTINGS = {"video": VIDEO_SETTINGS, "video-l": VIDEO_SETTINGS, "image": [(8, 8), (4, 8), (3, 4), (2, 4)]}
#: each method's paper headline setting (issue 20, item 3 targets)
HEADLINE = {"q-vdit": (3, 6), "s2q-vdit": (4, 6), "mpq-dm": (2, 4)}
#: one component off at a time (option overrides of the method's Config)
ABLATIONS = {
    "q-vdit": {"no-tqe": {"tqe": False}, "no-tmd": {"tmd": False}, "no-frame-mask": {"frame_mask": False}},
    "s2q-vdit": {"global-topk": {"stratify": False}, "random-select": {"select": "random"},
                 "dense-tokens": {"distill": "token"}, "plain-mse": {"distill": "plain"}, "no-lora": {"lora_rank": 0}},
    # minmax-init is not a component off: the default L_2.4 weight-range search collapses the zoo UNet at W2
    # (docs/mpq-dm.md), and min-max ranges do not; the seeds show whether that holds beyond one CPU run
    "mpq-dm": {"no-omq": {"omq": False}, "no-trd": {"trd": False}, "minmax-init": {"weight_init": "minmax"}},
}
UNITS_FILE = "vqcore_quality_units.jsonl"
METRICS = ("accuracy", "fvd_like", "fid_like", "flicker", "smoothness", "psnr", "ssim", "quant_s", "sample_s",
           "peak_gib", "calib_items", "calib_skipped")


def _ablation_kind(kinds, method: str) -> str | None:
    """The model a method's ablations run on: the largest of its kind in the run."""
    order = ("video-l", "video") if method != "mpq-dm" else ("image",)
    for k in order:
        if k in kinds and method in methods_for(k):
            return k
    return None


def _unit(kind: str, seed: int, p: dict, method: str, w: int | None = None, a: int | None = None,
          ablation: str = "none", options: dict | None = None) -> dict:
    wa = "FP" if w is None else f"W{w}A{a}"
    return {"key": f"{kind}|s{seed}|{wa}|{method}|{ablation}", "kind": f"{kind}/{method}", "bench": kind,
            "model": kind, "seed": seed, "w": w, "a": a, "method": method, "ablation": ablation,
            "options": options or {}, "preset": p}


def plan_units(kinds=FULL_KINDS, seeds=(0, 1, 2), methods: list[str] | None = None, preset: str = "full",
               settings: dict | None = None, ablations: bool = True) -> list[dict]:
    """Every unit of the run, in execution order (grouped by kind, then seed: a group shares FP samples and the
    calibration set). A unit is a JSON-able dict with a unique ``key``; the preset is part of it, so a resume with
    other settings runs it again instead of reusing it."""
    for k in kinds:
        if k not in KIND_MODELS:
            raise ValueError(f"kinds must be a subset of {sorted(KIND_MODELS)}, got {k!r}")
    if not seeds:
        raise ValueError("seeds must be a non-empty list of ints")
    p = PRESETS[preset]
    units: list[dict] = []
    for kind in kinds:
        names = methods_for(kind, methods)
        for seed in seeds:
            units.append(_unit(kind, seed, p, "fp"))
            for w, a in (settings or {}).get(kind, FULL_SETTINGS[kind]):
                units += [_unit(kind, seed, p, m, w, a) for m in names]
            if ablations:
                for m, variants in ABLATIONS.items():
                    if m in names and _ablation_kind(kinds, m) == kind:
                        w, a = HEADLINE[m]
                        units += [_unit(kind, seed, p, m, w, a, name, opts) for name, opts in variants.items()]
    return units


def _mean_sd(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd


def aggregate(records: list[dict]) -> list[dict]:
    """Seed-aggregated rows: per (model, W/A, method, ablation) the mean of every metric and ``<metric>_sd`` (sample
    standard deviation over seeds; 0 for one seed), ``seeds`` = how many seeds went in."""
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        r = rec["row"]
        groups.setdefault((r["model"], r["W/A"], r["method"], r.get("ablation", "none")), []).append(r)
    out = []
    for (model, wa, method, abl), rows in groups.items():
        row = {"model": model, "W/A": wa, "method": method, "ablation": abl, "bits": rows[0].get("bits", ""),
               "seeds": len(rows)}
        failed = [r["bits"] for r in rows if str(r.get("bits", "")).startswith("FAILED")]
        if failed:
            row["bits"] = failed[0]
        for k in METRICS:
            xs = [float(r[k]) for r in rows if isinstance(r.get(k), (int, float))]
            if xs:
                row[k], row[f"{k}_sd"] = _mean_sd(xs)
        out.append(row)
    return out


def targets(rows: list[dict]) -> list[dict]:
    """Issue 20's targets, per model where the method ran at its headline setting: the method's Fréchet score and
    accuracy against the strongest baseline (lowest Fréchet / highest accuracy of ``rtn`` and the kind's baseline),
    with the seed spread (the larger of the two standard deviations) as the margin to beat."""
    out = []
    for method, (w, a) in HEADLINE.items():
        wa = f"W{w}A{a}"
        for model in sorted({r["model"] for r in rows}):
            fd = "fid_like" if model == "image" else "fvd_like"
            get = {r["method"]: r for r in rows if r["model"] == model and r["W/A"] in (wa, "FP")
                   and r["ablation"] == "none" and fd in r}
            if method not in get or "fp" not in get:
                continue
            base = [get[b] for b in ("rtn", "vidit-q", "q-diffusion") if b in get]
            if not base:
                continue
            m, fp = get[method], get["fp"]
            best_fd = min(base, key=lambda r: r[fd])
            best_acc = max(base, key=lambda r: r["accuracy"])
            spread_fd = max(m[f"{fd}_sd"], best_fd[f"{fd}_sd"])
            spread_acc = max(m["accuracy_sd"], best_acc["accuracy_sd"])
            row = {"model": model, "method": method, "W/A": wa, "frechet": m[fd], "frechet_fp": fp[fd],
                   "best_baseline_frechet": best_fd[fd], "best_baseline": best_fd["method"],
                   "frechet_gain": best_fd[fd] - m[fd], "frechet_spread": spread_fd,
                   "accuracy": m["accuracy"], "best_baseline_accuracy": best_acc["accuracy"],
                   "accuracy_gain": m["accuracy"] - best_acc["accuracy"], "accuracy_spread": spread_acc}
            beats = row["frechet_gain"] > spread_fd and row["accuracy_gain"] > spread_acc
            if method == "s2q-vdit":
                beats = beats and m[fd] <= 1.1 * fp[fd]
                row["target"] = "beats baselines by > spread, Fréchet within 10 % of FP"
            elif method == "mpq-dm":
                beats = beats and m[fd] <= 0.6 * best_fd[fd]
                row["target"] = "beats baselines by > spread, Fréchet <= 0.6 x best baseline"
            else:
                row["target"] = "beats baselines by > spread (Fréchet and accuracy)"
            row["met"] = "yes" if beats else "no"
            out.append(row)
    return out


def _load_done(paths: list[Path], units: list[dict]) -> dict[str, dict]:
    from commons.jobs import load_partial

    return load_partial(paths, units)


def run_full(out: Path, device: str = "cpu", kinds=FULL_KINDS, seeds=(0, 1, 2), methods: list[str] | None = None,
             preset: str = "full", settings: dict | None = None, ablations: bool = True,
             resume_from: list[Path] | None = None, max_seconds: float | None = None,
             results_root: Path | None = None, log=print) -> dict:
    """Run the units not yet done (module docstring); returns ``{"done": n, "left": n, "rows": aggregated or None}``.
    The results JSON is written only when no unit is left."""
    import torch

    from commons.jobs import plain_json

    from . import weights_path
    from .bench import _prepare_kind, _run_row

    start = time.perf_counter()
    units = plan_units(kinds, seeds, methods, preset, settings, ablations)
    for kind in kinds:  # before any work: a missing model fails in one line
        for name in KIND_MODELS[kind]:
            if not weights_path(name).is_file():
                raise FileNotFoundError(
                    f"kind {kind!r} needs the zoo weights of {name!r}, not shipped yet ({weights_path(name).name}); "
                    "train them with tools/vqcore_train_zoo.py --only large (tools/GPU_RUNS.md) or leave the kind "
                    "out (--kinds)")
    done = _load_done([Path(p) for p in resume_from or []], units)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    partial = out / UNITS_FILE
    tmp = partial.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in done.values()))
    tmp.replace(partial)
    dev = torch.device(device)
    last: dict[str, float] = {rec["job"]["kind"]: rec["seconds"] for rec in done.values()}
    setup: dict[str, float] = {}
    state, state_key, stopped = None, None, False
    p = PRESETS[preset]
    for unit in units:
        if unit["key"] in done:
            continue
        group = (unit["model"], unit["seed"])
        elapsed = time.perf_counter() - start
        predicted = 1.1 * last.get(unit["kind"], max((v for k, v in last.items()
                                                      if k.startswith(unit["model"] + "/")), default=0.0))
        if group != state_key:
            predicted += setup.get(unit["model"], 0.0)
        if max_seconds is not None and elapsed + predicted > max_seconds:
            stopped = True
            break
        if group != state_key:
            state = None  # free the previous group's model, samples and calibration set first
            t0 = time.perf_counter()
            state = _prepare_kind(unit["model"], p, dev, unit["seed"])
            setup[unit["model"]] = time.perf_counter() - t0
            state_key = group
        t0 = time.perf_counter()
        if unit["method"] == "fp":
            row = {"model": unit["model"], "W/A": "FP", "method": "fp", "ablation": "none", "bits": "all FP",
                   **state["fp_metrics"], "quant_s": 0.0, "sample_s": state["timings"]["fp_sample_s"],
                   "calibration_capture_s": state["timings"]["calibration_s"], **state["calib_info"]}
        else:
            row, _ = _run_row(state, unit["w"], unit["a"], unit["method"], p, unit["seed"], False, unit["options"])
            row["ablation"] = unit["ablation"]
        row["seed"] = unit["seed"]
        seconds = time.perf_counter() - t0
        last[unit["kind"]] = seconds
        rec = plain_json({"key": unit["key"], "job": unit, "seconds": round(seconds, 2), "row": row})
        done[unit["key"]] = rec
        with partial.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        log(f"[{time.perf_counter() - start:6.0f} s] {unit['key']}: " + ", ".join(
            f"{k} {row[k]:.4g}" for k in ("accuracy", "fvd_like", "fid_like", "psnr", "quant_s") if k in row))
    left = sum(u["key"] not in done for u in units)
    result = {"done": len(units) - left, "left": left, "rows": None}
    if left or stopped:
        log(f"INCOMPLETE: {left} of {len(units)} units left; run again with --resume-from {partial}")
        return result
    records = [done[u["key"]] for u in units]
    rows = aggregate(records)
    result["rows"] = rows
    tables = [{**r, "table": r["model"]} for r in rows if r["ablation"] == "none"]
    for m in ABLATIONS if ablations else ():
        k = _ablation_kind(kinds, m)
        if k is None or m not in HEADLINE:
            continue
        wa = "W{}A{}".format(*HEADLINE[m])
        tables += [{**r, "table": "ablation"} for r in rows
                   if r["model"] == k and r["W/A"] == wa and (r["method"] == m or r["ablation"] == "none"
                                                              and r["method"] in ("rtn", "vidit-q", "q-diffusion"))]
    tables += [{**r, "table": "targets"} for r in targets(rows)]
    from commons.results import write_results

    meta_dev = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    path = write_results("vqcore", "vqcore_quality", rows=tables, settings={
        "preset": preset, **p, "kinds": list(kinds), "seeds": list(seeds), "device": meta_dev,
        "settings": {k: [f"W{w}A{a}" for w, a in (settings or {}).get(k, FULL_SETTINGS[k])] for k in kinds},
        "ablations": {m: list(v) for m, v in ABLATIONS.items()}, "headline": {m: "W{}A{}".format(*v)
                                                                          for m, v in HEADLINE.items()},
        "units": len(units), "command": "python tools/bench/vqcore_quality.py --full"},
        **({"root": Path(results_root)} if results_root is not None else {}))
    log(f"wrote {path}")
    result["path"] = str(path)
    return result
