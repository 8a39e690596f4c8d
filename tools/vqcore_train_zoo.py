"""Train vqcore's model zoo: two evaluator CNNs, the moving-digits video DiT (Latte) and the digits UNet.

Usage (what produced the shipped weights — see packages/vqcore/README.md for the machine and the numbers):

    PYTHONPATH=packages/commons/src:packages/vqcore/src python tools/vqcore_train_zoo.py --out OUT --device cuda

Each model trains for ``--*-steps`` optimizer steps, or until its ``--*-seconds`` wall-clock budget runs out, whichever
comes first (the step count reached is written into the weights' metadata, so ``--*-steps N --*-seconds 1e9``
reproduces a run's length). Diffusion models: DDPM ε-loss with 10 % label dropout (for classifier-free guidance),
AdamW, linear warm-up, EMA of the weights (the EMA copy is shipped), bf16 autocast on CUDA. Data: the digits are split
80/20 per class (``stratified_split(seed=0)``); models train on the 80 % glyphs only, evaluators are tested on the
held-out 20 %. At the end, samples of the FP models are classified by the evaluators (the ≥ 80 % sanity bar) for
several step counts and guidance scales; ``train_log.json`` holds all numbers and ``samples.png`` shows samples.

``--only large`` (moving-digits-dit-l, 4.5 M parameters) trains across several device calls of at most 10 minutes:
each call continues ``--resume-from DIR`` (the previous call's ``--out``, carried along), trains for
``--video-seconds`` (this call's budget; ``--video-steps`` caps the whole run), writes the checkpoint to ``--out``
every ``--ckpt-minutes`` and at the end of the budget, then scores samples with the shipped evaluator
``moving-digits-classifier-l`` (not retrained) and appends one line to ``history.jsonl``. Checkpoint: safetensors
shards of ≤ 15 MiB (weights, EMA, Adam moments, torch/CUDA/data RNG states) + ``ckpt_state.json`` (step, config,
optimizer hyper-parameters, numpy/python RNG states); no pickle. A resume with another model config, lr, batch, seed
or data setting is refused with one line naming the key. On the CPU, k steps + resume + k steps equal 2k steps bit for
bit (tests/test_tool_vqcore_train_zoo_resume.py). For dit-l the float32 state would be 69 MiB, over the 64 MiB a call
can carry, so ``--ckpt-moments auto`` stores the two Adam moments as bfloat16 (51.8 MiB in 4 shards; the resumed
moments are their bfloat16 rounding, relative error ≤ 2⁻⁹). When the samples are good,
``--only large --export-from DIR --out zoo/weights`` (CPU) writes the shipped float16 EMA weights and model card.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from commons.data import load_digits_arrays, stratified_split
from commons.data.moving_digits import make_moving_digits
from vqcore import zoo
from vqcore.zoo.models import config_to_dict

log = logging.getLogger("train_zoo")


def digits_tensor(indices, size=16):
    images, labels = load_digits_arrays()
    x = torch.from_numpy(images[indices]).unsqueeze(1)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return x, torch.from_numpy(labels[indices])


def videos_tensor(n, seed, indices, geometry=None):
    geometry = geometry or zoo.VIDEO_DATA["moving-digits-dit"]
    v, lab = make_moving_digits(n, num_digits=1, seed=seed, digit_indices=indices, **geometry)
    return torch.from_numpy(v).unsqueeze(1), torch.from_numpy(lab[:, 0])


def train_classifier(model, x, y, xt, yt, device, steps, seconds, seed, lr=2e-3, batch=256):
    g = torch.Generator(device="cpu").manual_seed(seed)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    x, y = x.to(device), y.to(device)
    t0, step = time.time(), 0
    while step < steps and time.time() - t0 < seconds:
        idx = torch.randint(0, x.shape[0], (batch,), generator=g).to(device)
        xb = x[idx]
        # robustness augmentation: small noise and contrast jitter (generated samples are never perfectly clean)
        xb = (xb * (0.8 + 0.4 * torch.rand(batch, *[1] * (xb.ndim - 1), device=device))
              + 0.05 * torch.randn_like(xb)).clamp(0, 1)
        loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
    model.eval()
    with torch.no_grad():
        acc = (torch.cat([model(xt[i:i + 512].to(device)).argmax(1).cpu() for i in range(0, len(xt), 512)])
               == yt).float().mean().item()
    log.info("%s: %d steps, %.1fs, held-out accuracy %.4f", type(model).__name__, step, time.time() - t0, acc)
    return {"steps": step, "seconds": time.time() - t0, "test_accuracy": acc, "final_loss": loss.item()}


def train_diffusion(model, x, y, device, steps, seconds, seed, lr, batch, warmup=300, ema_decay=0.999,
                    resume: Checkpoint | None = None, checkpoint=None, checkpoint_seconds: float = math.inf):
    """DDPM ε-loss training with AdamW, linear warm-up and an EMA copy; returns ``(ema, info)``.

    ``steps`` is the step count of the whole run: a run resumed from ``resume`` (a :class:`Checkpoint`) continues
    from its saved step, weights, EMA, optimizer moments and RNG streams, so on the CPU ``k`` steps + resume + ``k``
    steps give bit-identical weights to one run of ``2k`` steps. ``seconds`` is the budget of this call.
    ``checkpoint(model, ema, opt, g, progress)`` (if given) is called every ``checkpoint_seconds`` and once at the
    end, between two steps (it must not draw from any RNG).
    """
    torch.manual_seed(seed)
    g = torch.Generator(device="cpu").manual_seed(seed)
    model.to(device).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    progress = {"step": 0, "losses": [], "seconds_total": 0.0}
    if resume is not None:
        progress = resume.restore(model, ema, opt, g)
        log.info("resumed at step %d (%.0f s of training so far)", progress["step"], progress["seconds_total"])
    sched = zoo.make_train_scheduler(model)
    sched.alphas_cumprod = sched.alphas_cumprod.to(device)
    x, y = (x * 2 - 1).to(device), y.to(device)
    use_amp = device.type == "cuda"
    step, losses, start_step = progress["step"], progress["losses"], progress["step"]
    t0 = last_ckpt = time.time()

    def snapshot():
        return {"step": step, "losses": losses[-500:],
                "seconds_total": progress["seconds_total"] + time.time() - t0}

    while step < steps and time.time() - t0 < seconds:
        idx = torch.randint(0, x.shape[0], (batch,), generator=g).to(device)
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = zoo.ddpm_loss(model, x[idx], y[idx], sched, p_uncond=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            d = min(ema_decay, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - d)
        losses.append(loss.item() if step % 50 == 0 else losses[-1] if losses else loss.item())
        step += 1
        if step % 500 == 0:
            log.info("%s step %d loss %.4f (%.0fs)", type(model).__name__, step, np.mean(losses[-500:]),
                     time.time() - t0)
        if checkpoint is not None and time.time() - last_ckpt >= checkpoint_seconds:
            checkpoint(model, ema, opt, g, snapshot())
            last_ckpt = time.time()
    if checkpoint is not None:
        checkpoint(model, ema, opt, g, snapshot())
    final_loss = float(np.mean(losses[-200:])) if losses else float("nan")
    log.info("%s: %d steps in %.1fs (step %d), final loss %.4f", type(model).__name__, step - start_step,
             time.time() - t0, step, final_loss)
    return ema, {"steps": step, "seconds": time.time() - t0, "final_loss": final_loss,
                 "lr": lr, "batch": batch, "ema_decay": ema_decay,
                 **({"steps_this_call": step - start_step, "seconds_total": snapshot()["seconds_total"]}
                    if resume is not None or checkpoint is not None else {})}


def sample_accuracy(gen, clf, n, device, steps_list, guidance_list, seed=1000):
    labels = torch.arange(n) % 10
    out, samples = {}, None
    for steps in steps_list:
        for gs in guidance_list:
            t0 = time.time()
            s = zoo.sample(gen, labels, num_steps=steps, guidance_scale=gs, seed=seed, batch_size=512)
            with torch.no_grad():
                pred = clf(s.to(device)).argmax(1).cpu()
            acc = (pred == labels).float().mean().item()
            out[f"steps{steps}_cfg{gs}"] = {"accuracy": acc, "seconds": time.time() - t0}
            log.info("%s samples, %d DDIM steps, guidance %.1f: accuracy %.4f", type(gen).__name__, steps, gs, acc)
            if samples is None:
                samples = s
    return out, samples


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clf-steps", type=int, default=3000)
    ap.add_argument("--clf-seconds", type=float, default=20)
    ap.add_argument("--video-steps", type=int, default=100000)
    ap.add_argument("--video-seconds", type=float, default=440)
    ap.add_argument("--image-steps", type=int, default=100000)
    ap.add_argument("--image-seconds", type=float, default=100)
    ap.add_argument("--num-videos", type=int, default=30000)
    ap.add_argument("--eval-samples", type=int, default=500)
    ap.add_argument("--video-batch", type=int, default=256)
    ap.add_argument("--video-lr", type=float, default=4e-4)
    ap.add_argument("--dit-config", default="{}", help="JSON overrides of VideoDiTConfig (e.g. '{\"patch_size\": 2}')")
    ap.add_argument("--only", choices=["all", "video", "large"], default="all",
                    help="'video': train only the video DiT; evaluate it with --classifiers' video classifier; "
                         "'large': the 16x32x32 moving-digits-dit-l, scored by the shipped moving-digits-classifier-l "
                         "(--video-* options apply; --clf-* only if that classifier is not shipped); resumable")
    ap.add_argument("--classifiers", type=Path, default=None,
                    help="folder holding moving-digits-classifier.safetensors (with --only video)")
    ap.add_argument("--resume-from", type=Path, default=None,
                    help="(--only large) a folder written by an earlier call's --out: continue that training run "
                         "(the configuration must be the same; --video-steps counts the whole run, --video-seconds "
                         "is this call's budget)")
    ap.add_argument("--ckpt-minutes", type=float, default=2.0,
                    help="(--only large) also write the checkpoint every this many minutes of training")
    ap.add_argument("--ckpt-moments", choices=["auto", "float32", "bfloat16"], default="auto",
                    help="(--only large) dtype of the stored Adam moments; auto: float32 (exact resume) unless the "
                         "checkpoint would exceed --ckpt-max-mib, then bfloat16")
    ap.add_argument("--ckpt-max-mib", type=float, default=56.0,
                    help="(--only large) size limit of the whole checkpoint that --ckpt-moments auto keeps to")
    ap.add_argument("--heldout-videos", type=int, default=2000,
                    help="(--only large) held-out videos for the FVD-like reference")
    ap.add_argument("--export-from", type=Path, default=None,
                    help="(--only large, CPU) write moving-digits-dit-l.safetensors + model card to --out from the "
                         "EMA weights of the checkpoint in this folder and the last evaluation in its history")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if (args.resume_from or args.export_from) and args.only != "large":
        raise SystemExit("--resume-from and --export-from need --only large")
    if args.export_from is not None:
        export_large(args.export_from, args.out)
        return
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "args": {k: str(v) for k, v in vars(args).items()}}

    _, labels = load_digits_arrays()
    train_idx, test_idx = stratified_split(labels, 0.2, seed=0)
    if args.only == "large":
        train_large(args, device, report, train_idx, test_idx)
        if not math.isfinite(report[LARGE]["train"]["final_loss"]):
            raise SystemExit(f"training diverged: final loss {report[LARGE]['train']['final_loss']}")
        return
    xi, yi = digits_tensor(train_idx)
    xit, yit = digits_tensor(test_idx)
    t0 = time.time()
    xv, yv = videos_tensor(args.num_videos, seed=args.seed, indices=train_idx)
    xvt, yvt = videos_tensor(2000, seed=args.seed + 1, indices=test_idx)
    log.info("data: %d videos in %.1fs", len(xv), time.time() - t0)

    def dump():
        with open(args.out / "train_log.json", "w") as fh:
            json.dump(report, fh, indent=2)

    if args.only == "video":
        vclf = zoo.load("moving-digits-classifier", path=(args.classifiers / "moving-digits-classifier.safetensors"
                                                          if args.classifiers else None), device=device)
        dit = zoo.build("moving-digits-dit", **json.loads(args.dit_config))
        dit_ema, info = train_diffusion(dit, xv, yv, device, args.video_steps, args.video_seconds, args.seed,
                                        lr=args.video_lr, batch=args.video_batch)
        report["moving-digits-dit"] = {"train": info}
        zoo.save(dit_ema, args.out / "moving-digits-dit.safetensors", name="moving-digits-dit",
                 extra_metadata={"train": info})
        dump()
        report["moving-digits-dit"]["sample_accuracy"], vs = sample_accuracy(
            dit_ema.float().eval(), vclf, args.eval_samples, device, [10, 20], [1.0, 2.0, 3.0, 4.0])
        dump()
        return

    # evaluators
    dclf = zoo.build("digits-classifier")
    report["digits-classifier"] = train_classifier(dclf, xi, yi, xit, yit, device, args.clf_steps, args.clf_seconds,
                                                   args.seed)
    zoo.save(dclf, args.out / "digits-classifier.safetensors", name="digits-classifier",
             extra_metadata={"train": report["digits-classifier"]})
    vclf = zoo.build("moving-digits-classifier")
    report["moving-digits-classifier"] = train_classifier(vclf, xv, yv, xvt, yvt, device, args.clf_steps,
                                                          args.clf_seconds, args.seed, batch=128)
    zoo.save(vclf, args.out / "moving-digits-classifier.safetensors", name="moving-digits-classifier",
             extra_metadata={"train": report["moving-digits-classifier"]})
    dump()

    # video DiT
    dit = zoo.build("moving-digits-dit", **json.loads(args.dit_config))
    dit_ema, info = train_diffusion(dit, xv, yv, device, args.video_steps, args.video_seconds, args.seed,
                                    lr=args.video_lr, batch=args.video_batch)
    report["moving-digits-dit"] = {"train": info}
    zoo.save(dit_ema, args.out / "moving-digits-dit.safetensors", name="moving-digits-dit",
             extra_metadata={"train": info})
    dump()
    # image UNet
    unet = zoo.build("digits-unet")
    unet_ema, info = train_diffusion(unet, xi, yi, device, args.image_steps, args.image_seconds, args.seed, lr=3e-4,
                                     batch=256)
    report["digits-unet"] = {"train": info}
    zoo.save(unet_ema, args.out / "digits-unet.safetensors", name="digits-unet", extra_metadata={"train": info})
    dump()

    # the sanity bar: FP samples classified by the evaluators
    dit_ema.float().eval()
    unet_ema.float().eval()
    report["moving-digits-dit"]["sample_accuracy"], vs = sample_accuracy(
        dit_ema, vclf, args.eval_samples, device, [10, 20, 50], [1.0, 2.0, 4.0])
    report["digits-unet"]["sample_accuracy"], ims = sample_accuracy(
        unet_ema, dclf, args.eval_samples, device, [10, 20, 50], [1.0, 2.0, 4.0])
    dump()
    try:
        from commons.reporting import save_image_grid

        frames = vs[:10, 0]  # [10, F, H, W] -> one row per video
        rows = [frames[i, f][None] for i in range(10) for f in range(frames.shape[1])]
        save_image_grid(torch.stack(rows), args.out / "samples_video.png", nrow=frames.shape[1])
        save_image_grid(ims[:40], args.out / "samples_image.png", nrow=10)
    except Exception as exc:  # plotting must not lose the trained weights
        log.warning("could not write sample grids: %s", exc)
    log.info("done: %s", json.dumps({k: v.get("sample_accuracy", v.get("test_accuracy")) for k, v in report.items()
                                     if isinstance(v, dict) and k not in ("args",)}))
    assert math.isfinite(report["moving-digits-dit"]["train"]["final_loss"])


# --- moving-digits-dit-l: training that continues across calls (checkpoint + history) --------------------------------

LARGE = "moving-digits-dit-l"
LARGE_CLF = "moving-digits-classifier-l"
CKPT_STATE = "ckpt_state.json"
HISTORY = "history.jsonl"
SHARD_BYTES = 15 * 2**20  # one checkpoint file stays under the 16 MiB a device call can return
MOMENTS = ("exp_avg", "exp_avg_sq")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _prefixed(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def large_run_config(args, dit_config: dict, geometry: dict) -> dict:
    """What a resumed call must share with the run it continues (compared key by key; ``--video-steps``,
    ``--video-seconds``, ``--eval-samples`` and the device may change between calls)."""
    return {"model": LARGE, "dit": dit_config, "lr": args.video_lr, "batch": args.video_batch, "warmup": 300,
            "ema_decay": 0.999, "p_uncond": 0.1, "grad_clip": 1.0,
            "optimizer": "AdamW(betas=(0.9, 0.99), weight_decay=0)", "seed": args.seed,
            "num_videos": args.num_videos, "data": geometry,
            "glyph_split": "stratified_split(labels, 0.2, seed=0): train part"}


def _shard(tensors: dict, limit: int) -> list[dict]:
    shards, size = [{}], 0
    for key, value in tensors.items():
        n = value.numel() * value.element_size()
        if shards[-1] and size + n > limit:
            shards.append({})
            size = 0
        shards[-1][key] = value
        size += n
    return shards


def save_checkpoint(out: Path, model, ema, opt, g, progress: dict, *, config: dict,
                    moments_dtype: torch.dtype) -> list[Path]:
    """Write the training state to ``out``: ``ckpt_tensors_<i>.safetensors`` (≤ 15 MiB each: weights, EMA, Adam
    moments and steps, torch/CUDA/data-sampler RNG states) and ``ckpt_state.json`` (step, recent losses, run config,
    optimizer hyper-parameters and non-tensor state, numpy/python RNG states). Each file is written to a ``.tmp``
    then renamed; the JSON goes last and every shard carries the step, so a torn checkpoint is detected on resume.
    Draws from no RNG. Adam moments are stored as ``moments_dtype`` (bfloat16 halves them; inexact resume)."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    osd = opt.state_dict()
    scalars = {}
    for idx, entry in osd["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{name}"] = value.to(moments_dtype) if name in MOMENTS else value
            else:
                scalars[f"{idx}.{name}"] = value
    tensors["rng.torch"] = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    tensors.update({f"rng.cuda.{i}": s for i, s in enumerate(cuda_states)})
    tensors["rng.data"] = g.get_state()
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    shards = _shard(tensors, SHARD_BYTES)
    names = [f"ckpt_tensors_{i}.safetensors" for i in range(len(shards))]
    for name, shard in zip(names, shards):
        save_file(shard, str(out / (name + ".tmp")), metadata={"step": str(progress["step"])})
    for name in names:
        os.replace(out / (name + ".tmp"), out / name)
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {"format": 1, "step": progress["step"], "seconds_total": progress["seconds_total"],
             "losses": progress["losses"], "config": config, "shards": names,
             "moments_dtype": str(moments_dtype).removeprefix("torch."),
             "optimizer": {"param_groups": osd["param_groups"], "scalars": scalars},
             "rng": {"cuda_devices": len(cuda_states),
                     "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]),
                               float(np_state[4])],
                     "python": [py_state[0], list(py_state[1]), py_state[2]]}}
    _write_atomic(out / CKPT_STATE, json.dumps(state))
    for stale in out.glob("ckpt_tensors_*.safetensors"):
        if stale.name not in names:
            stale.unlink()
    files = [out / n for n in names] + [out / CKPT_STATE]
    for f in files:
        if f.stat().st_size > 16 * 2**20:
            log.warning("%s is %.1f MiB: over the 16 MiB a device call returns", f, f.stat().st_size / 2**20)
    return files


class Checkpoint:
    """A folder written by :func:`save_checkpoint` (plus the ``history.jsonl`` of the calls so far).

    Opening it reads only the JSON (cheap: done before any data is generated); ``flag`` names the option in the
    one-line errors."""

    def __init__(self, folder: Path, flag: str = "--resume-from"):
        self.folder, self.flag = Path(folder), flag
        path = self.folder / CKPT_STATE
        if not path.is_file():
            raise SystemExit(f"{flag} {self.folder}: no {CKPT_STATE} there (expected the --out folder of an earlier "
                             "--only large call)")
        self.state = json.loads(path.read_text())
        missing = [n for n in self.state["shards"] if not (self.folder / n).is_file()]
        if missing:
            raise SystemExit(f"{flag} {self.folder}: {CKPT_STATE} lists {', '.join(missing)}, which is missing")
        history = self.folder / HISTORY
        self.history = [ln for ln in history.read_text().splitlines() if ln.strip()] if history.is_file() else []

    def check_config(self, config: dict) -> None:
        saved, now = _flat(self.state["config"]), _flat(json.loads(json.dumps(config)))
        for key in sorted(set(saved) | set(now)):
            if saved.get(key, "<absent>") != now.get(key, "<absent>"):
                raise SystemExit(f"{self.flag} {self.folder}: the checkpoint was trained with {key}="
                                 f"{saved.get(key, '<absent>')!r} but this call has {key}={now.get(key, '<absent>')!r}"
                                 "; resume with the same settings, or start a new run without --resume-from")

    def tensors(self) -> dict[str, torch.Tensor]:
        from safetensors import safe_open

        out = {}
        for name in self.state["shards"]:
            with safe_open(str(self.folder / name), framework="pt") as fh:
                step = (fh.metadata() or {}).get("step")
                if step != str(self.state["step"]):
                    raise SystemExit(f"{self.flag} {self.folder}: {name} is from step {step} but {CKPT_STATE} from "
                                     f"step {self.state['step']} (a call was killed while writing the checkpoint)")
                keys = fh.keys()
                out.update({k: fh.get_tensor(k) for k in keys})
        return out

    def restore(self, model, ema, opt, g) -> dict:
        """Load weights, EMA, optimizer and every RNG stream; returns the progress dict of :func:`train_diffusion`."""
        t = self.tensors()
        model.load_state_dict(_prefixed(t, "model."))
        ema.load_state_dict(_prefixed(t, "ema."))
        osd = {"state": {}, "param_groups": self.state["optimizer"]["param_groups"]}
        for key, value in [*_prefixed(t, "optim.").items(), *self.state["optimizer"]["scalars"].items()]:
            idx, name = key.split(".", 1)
            osd["state"].setdefault(int(idx), {})[name] = value
        for group in osd["param_groups"]:
            group["betas"] = tuple(group["betas"])
        opt.load_state_dict(osd)  # casts the moments back to the parameters' dtype and device
        torch.set_rng_state(t["rng.torch"])
        cuda = [t[f"rng.cuda.{i}"] for i in range(self.state["rng"]["cuda_devices"])]
        if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
            torch.cuda.set_rng_state_all(cuda)
        elif cuda or torch.cuda.is_available():
            log.warning("CUDA RNG state saved for %d device(s), %d here: not restored (the run continues, not bit "
                        "for bit)", len(cuda), torch.cuda.device_count() if torch.cuda.is_available() else 0)
        g.set_state(t["rng.data"])
        npst = self.state["rng"]["numpy"]
        np.random.set_state((npst[0], np.asarray(npst[1], dtype=np.uint32), *npst[2:]))
        pyst = self.state["rng"]["python"]
        random.setstate((pyst[0], tuple(pyst[1]), pyst[2]))
        return {"step": self.state["step"], "losses": list(self.state["losses"]),
                "seconds_total": self.state["seconds_total"]}


def _large_evaluator(args, device, report, ckpt, xv, yv, xvt, yvt):
    """The shipped moving-digits-classifier-l (what the model card names); without shipped weights, the one a
    previous call trained (carried in the checkpoint folder), else train it now and write it to ``--out``."""
    fname = f"{LARGE_CLF}.safetensors"
    if LARGE_CLF in zoo.shipped_models():
        report[LARGE_CLF] = {"weights": "shipped"}
        return zoo.load(LARGE_CLF, device=device)
    if ckpt is not None and (ckpt.folder / fname).is_file():
        if (ckpt.folder / fname).resolve() != (args.out / fname).resolve():
            shutil.copyfile(ckpt.folder / fname, args.out / fname)
        report[LARGE_CLF] = {"weights": f"{args.resume_from / fname} (trained by an earlier call)"}
        return zoo.load(LARGE_CLF, path=args.out / fname, device=device)
    vclf = zoo.build(LARGE_CLF)
    report[LARGE_CLF] = train_classifier(vclf, xv, yv, xvt, yvt, device, args.clf_steps, args.clf_seconds,
                                         args.seed, batch=64)
    zoo.save(vclf, args.out / fname, name=LARGE_CLF, extra_metadata={"train": report[LARGE_CLF],
                                                                     "data": report["data"]})
    return vclf


def train_large(args, device, report, train_idx, test_idx) -> None:
    """``--only large``: train moving-digits-dit-l (continuing ``--resume-from``), checkpoint it, then score samples.

    Writes to ``--out``: the checkpoint (:func:`save_checkpoint`; every ``--ckpt-minutes`` and at the end of the
    budget, before the evaluation), ``history.jsonl`` (the carried lines + one for this call: step, loss, sample
    accuracy per guidance, FVD-like to held-out videos, wall times) and ``samples_video_large.png``.
    ``--export-from`` turns the final checkpoint into the shipped weights and model card.
    """
    t_call = time.time()
    geometry = dict(zoo.VIDEO_DATA[LARGE])
    try:
        overrides = json.loads(args.dit_config)
        assert isinstance(overrides, dict)
    except (ValueError, AssertionError):
        raise SystemExit(f"--dit-config must be a JSON object, got {args.dit_config!r}") from None
    torch.manual_seed(args.seed)
    dit = zoo.build(LARGE, **overrides)
    dit_config = config_to_dict(dit.config)
    if (dit_config["num_frames"], dit_config["size"]) != (geometry["num_frames"], geometry["size"]):
        raise SystemExit(f"--dit-config: num_frames and size must stay {geometry['num_frames']} and "
                         f"{geometry['size']} (the data geometry of {LARGE})")
    config = large_run_config(args, dit_config, geometry)
    ckpt = Checkpoint(args.resume_from) if args.resume_from is not None else None
    if ckpt is not None:
        ckpt.check_config(config)
    n_params = sum(p.numel() for p in dit.parameters())
    if args.ckpt_moments == "auto":  # model + EMA + two moments, float32
        moments = torch.float32 if 16 * n_params <= args.ckpt_max_mib * 2**20 else torch.bfloat16
    else:
        moments = getattr(torch, args.ckpt_moments)
    history = list(ckpt.history) if ckpt is not None else []

    t0 = time.time()
    xv, yv = videos_tensor(args.num_videos, args.seed, train_idx, geometry)
    xvt, yvt = videos_tensor(args.heldout_videos, args.seed + 1, test_idx, geometry)
    log.info("large data: %d videos %s in %.1fs", len(xv), tuple(xv.shape[1:]), time.time() - t0)
    report["data"] = {"train_videos": len(xv), "test_videos": len(xvt), **geometry,
                      "glyphs": "scikit-learn digits, 80/20 per-class split (stratified_split seed 0)"}
    vclf = _large_evaluator(args, device, report, ckpt, xv, yv, xvt, yvt)

    def write_ckpt(model, ema, opt, g, progress):
        t = time.time()
        files = save_checkpoint(args.out, model, ema, opt, g, progress, config=config, moments_dtype=moments)
        log.info("checkpoint at step %d: %s (%.1fs)", progress["step"],
                 ", ".join(f"{f.name} {f.stat().st_size / 2**20:.1f} MiB" for f in files), time.time() - t)

    dit_ema, info = train_diffusion(dit, xv, yv, device, args.video_steps, args.video_seconds, args.seed,
                                    lr=args.video_lr, batch=args.video_batch, warmup=config["warmup"],
                                    ema_decay=config["ema_decay"], resume=ckpt, checkpoint=write_ckpt,
                                    checkpoint_seconds=args.ckpt_minutes * 60)
    info["parameters"] = n_params
    info["moments_dtype"] = str(moments).removeprefix("torch.")
    report[LARGE] = {"train": info}
    del xv
    line = {"call": len(history) + 1, "date": report["date"], "device": report["device"], "step": info["steps"],
            "steps_this_call": info["steps_this_call"], "loss": info["final_loss"],
            "train_seconds": info["seconds"], "train_seconds_total": info["seconds_total"],
            "batch": args.video_batch, "lr": args.video_lr, "sample_accuracy": None, "fvd_like_fp_vs_heldout": None,
            "eval_samples": args.eval_samples, "heldout_videos": len(xvt), "args": report["args"]}

    def write_history():
        line["wall_seconds"] = time.time() - t_call
        _write_atomic(args.out / HISTORY, "".join(h + "\n" for h in [*history, json.dumps(line)]))

    write_history()  # the checkpoint's line even if the evaluation is cut off
    dit_ema.float().eval()
    line["sample_accuracy"], vs = sample_accuracy(dit_ema, vclf, args.eval_samples, device, [20], [1.0, 2.0, 4.0])
    report[LARGE]["sample_accuracy"] = line["sample_accuracy"]
    # FP reference of the model card: Frechet distance of FP samples to held-out real videos on the evaluator's
    # features (the floor every quantized model is compared with)
    try:
        from commons.metrics import frechet_distance

        with torch.no_grad():
            real = torch.cat([vclf.features(xvt[i:i + 256].to(device)).cpu() for i in range(0, len(xvt), 256)])
            fake = torch.cat([vclf.features(vs[i:i + 256].to(device)).cpu() for i in range(0, len(vs), 256)])
        line["fvd_like_fp_vs_heldout"] = float(frechet_distance(fake, real))
    except Exception as exc:  # noqa: BLE001 - the checkpoint matters more than this number
        log.warning("FP reference Frechet distance failed: %s", exc)
    report[LARGE]["fvd_like_fp_vs_heldout"] = line["fvd_like_fp_vs_heldout"]
    write_history()
    log.info("call %d: step %d, loss %.4f, sample accuracy %s, FVD-like %s", line["call"], line["step"],
             line["loss"], {k: round(v["accuracy"], 3) for k, v in line["sample_accuracy"].items()},
             line["fvd_like_fp_vs_heldout"])
    try:
        from commons.reporting import save_image_grid

        n = min(8, len(vs))
        frames = vs[:n, 0]
        rows = [frames[i, f][None] for i in range(n) for f in range(0, frames.shape[1], 2)]
        save_image_grid(torch.stack(rows), args.out / "samples_video_large.png", nrow=frames.shape[1] // 2, scale=2,
                        row_labels=[f"class {int(c)}" for c in (torch.arange(n) % 10)],
                        col_labels=[f"frame {f}" for f in range(0, frames.shape[1], 2)])
    except Exception as exc:  # noqa: BLE001
        log.warning("could not write the sample grid: %s", exc)


def export_large(folder: Path, out: Path) -> Path:
    """``--export-from``: the checkpoint's EMA weights as the shipped ``moving-digits-dit-l.safetensors`` (float16,
    via ``zoo.save``) with its model card: training totals, data, evaluator, and the FP reference metrics of the last
    history line evaluated at the checkpoint's step."""
    ckpt = Checkpoint(folder, flag="--export-from")
    state = ckpt.state
    model = zoo.build(LARGE, **state["config"]["dit"])
    model.load_state_dict(_prefixed(ckpt.tensors(), "ema."))
    lines = [json.loads(h) for h in ckpt.history]
    last = next((h for h in reversed(lines) if h.get("step") == state["step"] and h.get("sample_accuracy")), None)
    if last is None:
        log.warning("history.jsonl has no evaluation at step %d: the model card's fp_reference stays empty",
                    state["step"])
    cfg = state["config"]
    train = {"steps": state["step"], "seconds": state["seconds_total"], "calls": len(lines),
             "final_loss": float(np.mean(state["losses"][-200:])), "lr": cfg["lr"], "batch": cfg["batch"],
             "ema_decay": cfg["ema_decay"], "warmup": cfg["warmup"], "parameters": sum(p.numel() for p in
                                                                                     model.parameters()),
             "device": last["device"] if last else None,
             "tool": "tools/vqcore_train_zoo.py --only large (--resume-from across calls), then --export-from"}
    data = {"train_videos": cfg["num_videos"], "test_videos": last["heldout_videos"] if last else None,
            **cfg["data"], "glyphs": "scikit-learn digits, 80/20 per-class split (stratified_split seed 0)"}
    fp_ref = ({"sample_accuracy": last["sample_accuracy"], "fvd_like_fp_vs_heldout": last["fvd_like_fp_vs_heldout"],
               "eval_samples": last["eval_samples"]} if last else {})
    out.mkdir(parents=True, exist_ok=True)
    path = zoo.save(model, out / f"{LARGE}.safetensors", name=LARGE,
                    extra_metadata={"train": train, "data": data, "evaluator": LARGE_CLF, "fp_reference": fp_ref})
    log.info("wrote %s (%.1f MiB) and its model card from step %d", path, path.stat().st_size / 2**20, state["step"])
    return path


if __name__ == "__main__":
    main()
