"""Train the shipped WalMaFa weights and the Retinex U-Net baseline at the same budget, on one device.

Data: :class:`commons.data.lol.SyntheticLowLightCrops`, fresh random crops (several scales, the 8 flip/rotations) of
every embedded training photo, darkened on the fly by the camera model of ``degrade_low_light`` (a new exposure,
gamma, white-balance and noise level per crop, so each batch spans several exposure/noise levels). Held out: the
photos ``coffee`` and ``flower`` (never seen in training), evaluated on full images
(``SyntheticLowLightDataset("test", size=--eval-size, variants=--eval-variants)``: fixed seeded degradations).

Recipe (both models, same batches): the released WalMaFa loss (0.95·(L1 + 1−SSIM) + 0.05·TV) and Adam (lr 8e-4,
betas (0.9, 0.999), eps 5e-5), linear warm-up then cosine to ``--lr-min``, in iterations, gradient clipping at
``--grad-clip`` (not in the release; a guard for the short from-scratch run). The number of iterations comes from the
budget: a few timed calibration steps of each model (on CUDA also choosing the fastest scan chunk length, which does
not change the result beyond rounding) and a reserve for evaluation fix ``steps`` so that both models train for the
same number of steps on the same batch stream and everything ends within ``--budget-s`` seconds; ``--steps`` fixes
it instead (reproducible). A time guard stops WalMaFa early if the machine turns out slower (recorded in the card).

The network is the released configuration (Mamba on the high bands, raw token layout, blocks [2, 3, 4]) at a reduced
width (``--dim 8`` by default, 2.05 M parameters, 8.3 MB in float32; the release uses dim 16 with 7.89 M) so that
the shipped file stays under 10 MB and the short budget buys more steps.

Writes into ``--out``: ``walmafa.safetensors`` + ``walmafa.json`` (model card: config, data, recipe, steps, seed,
command, held-out PSNR/SSIM of input / WalMaFa / U-Net, training curve), ``unet.safetensors`` + ``unet.json``,
``walmafa/walmafa_train.json`` (``commons.results`` rows), ``curves.png`` and ``before_after.png``.

    python tools/walmafa_train.py --out $OUT --budget-s 450                    # one H100, ~7.5 min
    python tools/walmafa_train.py --out /tmp/w --budget-s 30 --device cpu --batch-size 2 --crop 32 --eval-size 64
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

T0 = time.perf_counter()
# the embedded photos (scikit-image + scikit-learn samples) and the held-out split of the shipped weights' card
TRAIN_PHOTOS = ("astronaut", "chelsea", "china", "immunohistochemistry", "retina", "rocket")
HELDOUT_PHOTOS = ("coffee", "flower")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _lr_at(step: int, steps: int, warmup: int, lr: float, lr_min: float) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, steps - warmup))
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * t))


def _set_chunk(model: torch.nn.Module, chunk: int) -> None:
    from walmafa.mamba import Mamba

    for m in model.modules():
        if isinstance(m, Mamba):
            m.chunk_size = chunk
    if hasattr(model, "config") and hasattr(model.config, "chunk_size"):
        model.config.chunk_size = chunk


class PairedCrops:
    """Random ``crop×crop`` crops (with the 8 flip/rotations) of the training pairs of a LOL-style folder, held on
    the device; the same ``batch(batch_size, generator, noise_generator)`` interface as ``SyntheticLowLightCrops``."""

    def __init__(self, dataset, crop: int, device: torch.device):
        self.pairs = [(lo.to(device), hi.to(device)) for lo, hi in (dataset[i] for i in range(len(dataset)))]
        self.names = list(getattr(dataset, "names", range(len(self.pairs))))
        self.crop = crop

    def __repr__(self) -> str:
        return f"PairedCrops({len(self.pairs)} pairs, crop={self.crop})"

    def batch(self, batch_size: int, generator=None, noise_generator=None):
        import torch.nn.functional as F

        from commons.data.lol import augment_pair

        lows, highs = [], []
        for _ in range(batch_size):
            lo, hi = self.pairs[int(torch.randint(len(self.pairs), (1,), generator=generator))]
            h, w = lo.shape[-2:]
            if h < self.crop or w < self.crop:
                pad = (0, max(0, self.crop - w), 0, max(0, self.crop - h))
                lo, hi = (F.pad(t[None], pad, mode="replicate")[0] for t in (lo, hi))
                h, w = lo.shape[-2:]
            y = int(torch.randint(h - self.crop + 1, (1,), generator=generator))
            x = int(torch.randint(w - self.crop + 1, (1,), generator=generator))
            lo, hi = augment_pair(lo[:, y:y + self.crop, x:x + self.crop], hi[:, y:y + self.crop, x:x + self.crop],
                                  int(torch.randint(8, (1,), generator=generator)))
            lows.append(lo)
            highs.append(hi)
        return torch.stack(lows), torch.stack(highs)


class Trainer:
    """One model, its optimiser and its training step (released loss and Adam settings).

    On CUDA the whole step (forward, backward, gradient clipping, Adam) can be captured in a CUDA graph
    (:meth:`capture`): the pure-PyTorch scan issues thousands of small kernels per step, so replaying them as one
    graph removes the launch overhead that otherwise bounds the step time. The batch is copied into static input
    tensors and the learning rate lives in a device tensor (Adam ``capturable=True``), so replays follow the
    schedule. Without a graph (CPU, or if capture fails) the same step runs eagerly.
    """

    def __init__(self, model: torch.nn.Module, args, device: torch.device):
        from walmafa.losses import WalMaFaLoss

        self.model = model.to(device).train()
        self.device = device
        self.params = [p for p in model.parameters() if p.requires_grad]
        cuda = device.type == "cuda"
        lr = torch.tensor(args.lr, device=device) if cuda else args.lr
        self.opt = torch.optim.Adam(self.params, lr=lr, betas=(0.9, 0.999), eps=5e-5, capturable=cuda)
        self.loss_fn = WalMaFaLoss(0.95, 0.05)
        self.grad_clip = args.grad_clip if args.grad_clip else float("inf")
        self.graph = None

    def _set_lr(self, lr: float) -> None:
        for g in self.opt.param_groups:
            if isinstance(g["lr"], torch.Tensor):
                g["lr"].fill_(lr)
            else:
                g["lr"] = lr

    def _body(self, low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss = self.loss_fn(self.model(low), high)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.opt.step()
        return loss.detach(), gn.detach()

    def step(self, low: torch.Tensor, high: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        self._set_lr(lr)
        if self.graph is not None:
            self.static_low.copy_(low)
            self.static_high.copy_(high)
            self.graph.replay()
            return self.static_loss.clone(), self.static_gn.clone()
        self.opt.zero_grad(set_to_none=True)
        return self._body(low, high)

    def capture(self, batches, lr: float, check: bool = False) -> None:
        """Warm up eagerly on the first 3 batches of ``batches`` (real steps at ``lr``), then capture the step.
        ``check``: replay once on a fresh batch and compare its loss with an eager forward of the same weights
        (raises if they differ)."""
        self._set_lr(lr)
        low, high = next(batches)
        self.static_low, self.static_high = low.clone(), high.clone()
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for i in range(3):
                if i:
                    low, high = next(batches)
                    self.static_low.copy_(low)
                    self.static_high.copy_(high)
                self.opt.zero_grad(set_to_none=True)
                self._body(self.static_low, self.static_high)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        if check:
            with torch.no_grad():
                ref = float(self.loss_fn(self.model(self.static_low), self.static_high))
        graph = torch.cuda.CUDAGraph()
        self.opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            self.static_loss, self.static_gn = self._body(self.static_low, self.static_high)
        self.graph = graph
        if check:
            graph.replay()
            got = float(self.static_loss)
            if not (math.isfinite(got) and abs(got - ref) <= 1e-3 * max(1.0, abs(ref))):
                self.graph = None
                raise RuntimeError(f"CUDA-graph step disagrees with the eager step: loss {got} vs {ref}")


def _batches(data, args, device, seed: int):
    gen = torch.Generator().manual_seed(seed)
    ngen = torch.Generator(device=device).manual_seed(seed)
    while True:
        yield data.batch(args.batch_size, gen, ngen)


def _time_steps(trainer: Trainer, batches, device, warm: int, timed: int) -> float:
    for i in range(warm + timed):
        if i == warm:
            _sync(device)
            t = time.perf_counter()
        low, high = next(batches)
        trainer.step(low, high, 1e-6)
    _sync(device)
    return (time.perf_counter() - t) / timed


def _eval_time(model: torch.nn.Module, image: torch.Tensor, device) -> float:
    from walmafa.engine import enhance_image

    model.eval()
    enhance_image(model, image)
    _sync(device)
    t = time.perf_counter()
    enhance_image(model, image)
    _sync(device)
    model.train()
    return time.perf_counter() - t


def _curve_eval(model, subset) -> float:
    from walmafa.engine import evaluate_pairs

    return evaluate_pairs(model, subset)["psnr"]


def _try_capture(name: str, trainer: Trainer, batches, lr: float, use_graph: bool, check: bool = False) -> int:
    """Capture ``trainer``'s step in a CUDA graph if asked; returns the number of warm-up steps it made."""
    if not use_graph:
        return 0
    try:
        trainer.capture(batches, lr, check=check)
        return 3
    except Exception as exc:  # noqa: BLE001 - any capture problem: train eagerly instead
        trainer.graph = None
        print(f"[{name}] CUDA graph capture failed ({type(exc).__name__}: {exc}); training eagerly", flush=True)
        return -1


def train_one(name: str, trainer: Trainer, batches, args, device, steps: int, warmup: int, deadline: float,
              curve_at: set[int], curve_set, log: dict, use_graph: bool, replan=None, replan_after: int = 20) -> int:
    """Train ``steps`` iterations (or until ``deadline``) on the seeded batch stream; fills ``log``.

    ``replan(seconds_per_step, done) -> (steps, deadline, curve_at)``: called once, after ``replan_after`` real steps,
    with their measured speed, so the step count (and with it the cosine schedule, still in its warm-up) fits the
    budget even when the calibration misjudged the step time."""
    log.update(step=[], loss=[], grad_norm=[], lr=[], heldout_step=[], heldout_psnr=[], seconds=[])
    t_start = time.perf_counter()
    first = _try_capture(name, trainer, batches, _lr_at(0, steps, warmup, args.lr, args.lr_min), use_graph)
    log["cuda_graph"] = first > 0
    first = max(first, 0)
    acc, accn, gn_max = torch.zeros((), device=device), 0, torch.zeros((), device=device)
    every = max(1, steps // 100)
    done = first
    t_mark, s_mark, next_replan = None, None, first + 1 + replan_after
    step = first
    log["replanned"] = []
    while step < steps:
        if replan is not None and step == first + 1:
            _sync(device)
            t_mark, s_mark = time.perf_counter(), step
        if replan is not None and t_mark is not None and step == next_replan:
            # measured speed since the last mark (curve evaluations excluded) -> a step count that fits the budget;
            # repeated every 10 % of the steps up to 80 %, so a drifting speed still ends with a finished schedule
            _sync(device)
            per_step = (time.perf_counter() - t_mark) / (step - s_mark)
            new_steps, deadline, curve_at = replan(per_step, step)
            new_steps = max(step + 1, new_steps)
            log["replanned"].append({"at_step": step, "measured_step_s": per_step, "steps": new_steps})
            if new_steps != steps:
                print(f"[{name}] measured {per_step * 1e3:.1f} ms/step: {steps} -> {new_steps} steps", flush=True)
            steps = new_steps
            every = max(1, steps // 100)
            next_replan = step + max(replan_after, steps // 10)
            if next_replan > 0.8 * steps:
                replan = None
            t_mark, s_mark = time.perf_counter(), step
        if time.perf_counter() > deadline:
            print(f"[{name}] time guard: stopped after {step} of {steps} steps", flush=True)
            break
        low, high = next(batches)
        lr = _lr_at(step, steps, warmup, args.lr, args.lr_min)
        loss, gn = trainer.step(low, high, lr)
        step += 1
        acc += loss
        gn_max = torch.maximum(gn_max, gn)
        accn += 1
        done = step
        if done % every == 0 or done == steps:
            log["step"].append(done)
            log["loss"].append(float(acc) / accn)
            log["grad_norm"].append(float(gn_max))
            log["lr"].append(lr)
            log["seconds"].append(time.perf_counter() - t_start)
            acc.zero_()
            gn_max.zero_()
            accn = 0
        if done in curve_at:
            log["heldout_step"].append(done)
            t_eval = time.perf_counter()
            log["heldout_psnr"].append(_curve_eval(trainer.model, curve_set))
            if t_mark is not None:  # keep evaluation time out of the measured step speed
                t_mark += time.perf_counter() - t_eval
            print(f"[{name}] step {done}/{steps} loss {log['loss'][-1]:.4f} held-out PSNR "
                  f"{log['heldout_psnr'][-1]:.2f} dB  ({time.perf_counter() - T0:.0f} s)", flush=True)
    _sync(device)
    log["steps_done"] = done
    log["train_seconds"] = time.perf_counter() - t_start
    return done


def _save_weights(model: torch.nn.Module, path: Path) -> str:
    from safetensors.torch import save_file

    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt"})
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--budget-s", type=float, required=True, help="wall-clock budget of the whole run, seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=None, help="fix the iteration count instead of deriving it")
    p.add_argument("--dim", type=int, default=8, help="WalMaFa width (released: 16)")
    p.add_argument("--num-blocks", default="2,3,4")
    p.add_argument("--wal-kw", default="{}",
                   help="JSON WalMaFaConfig overrides for ablations, e.g. '{\"mamba_on\": \"low\"}', "
                        "'{\"ffab\": false}'")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--lr", type=float, default=8e-4)
    p.add_argument("--lr-min", type=float, default=1e-6)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--grad-clip", type=float, default=1.0, help="0 = off")
    p.add_argument("--chunk-size", default="auto", help="scan chunk length, or 'auto' (CUDA: fastest of 16/32/64)")
    p.add_argument("--cuda-graph", choices=["on", "off"], default="on",
                   help="capture each training step in a CUDA graph (falls back to eager if capture fails)")
    p.add_argument("--unet-width", type=int, default=24)
    p.add_argument("--eval-size", type=int, default=400, help="short side of the held-out images")
    p.add_argument("--eval-variants", type=int, default=4, help="degradations per held-out photo")
    p.add_argument("--curve-points", type=int, default=8, help="held-out evaluations during training")
    p.add_argument("--replan-after", type=int, default=20,
                   help="re-plan the step count from the speed of this many real WalMaFa steps")
    p.add_argument("--lol", default=None, help="train/evaluate on a LOL-style folder instead of the synthetic pairs")
    p.add_argument("--lol-subset", choices=["real", "synthetic"], default=None, help="LOL-v2 subset")
    return p


def main(argv: list[str] | None = None) -> int:
    run(argv)
    return 0


def run(argv: list[str] | None = None) -> dict:
    """Everything ``main`` does; returns the WalMaFa model card (with ``heldout`` and ``recipe``)."""
    args = _parser().parse_args(argv)
    t_run = time.perf_counter()
    if args.budget_s <= 0:
        raise SystemExit("--budget-s must be positive seconds")
    if args.crop % 16:
        raise SystemExit(f"--crop must be a multiple of 16, got {args.crop}")
    if args.steps is not None and args.steps < 1:
        raise SystemExit(f"--steps must be a positive int, got {args.steps}")
    try:
        nb = tuple(int(v) for v in args.num_blocks.split(","))
        wal_extra = json.loads(args.wal_kw)
    except ValueError as exc:
        raise SystemExit(f"--num-blocks must be ints like 2,3,4 and --wal-kw a JSON object ({exc})") from None
    if len(nb) != 3 or not isinstance(wal_extra, dict):
        raise SystemExit(f"--num-blocks needs three ints and --wal-kw a JSON object, got {args.num_blocks!r}, "
                         f"{args.wal_kw!r}")
    from torch.utils.data import Subset

    from commons.data.lol import SyntheticLowLightCrops, SyntheticLowLightDataset
    from commons.device import resolve_device, seed_everything
    from commons.metrics import psnr, ssim
    from commons.reporting import save_image_grid, save_line_plot
    from commons.results import machine_info, write_results
    from walmafa.engine import enhance_image, evaluate_pairs
    from walmafa.models import create_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    budget_end = min(T0, t_run) + args.budget_s if argv is None else t_run + args.budget_s
    if args.lol:
        from commons.data.lol import PairedFolderDataset

        data = PairedCrops(PairedFolderDataset(args.lol, "train", args.lol_subset), args.crop, device)
        test = PairedFolderDataset(args.lol, "test", args.lol_subset)
        args.eval_variants = 1
    else:
        data = SyntheticLowLightCrops("train", crop=args.crop, device=device)
        test = SyntheticLowLightDataset("test", size=args.eval_size, variants=args.eval_variants, seed=0)
        held = sorted({n.rsplit("_", 1)[0] for n in test.names})
        if held != list(HELDOUT_PHOTOS) or sorted(data.names) != list(TRAIN_PHOTOS):
            # sample_photos() silently leaves out the photos of a missing package: refuse a smaller data set
            raise SystemExit(f"the embedded photos are incomplete (train {sorted(data.names)}, held out {held}; "
                             f"expected {list(TRAIN_PHOTOS)} and {list(HELDOUT_PHOTOS)}): install scikit-image and "
                             f"scikit-learn (GPU machine: the wheels in .whl, see tools/GPU_RUNS.md)")
    curve_set = Subset(test, list(range(0, len(test), args.eval_variants))[:4])  # variant 0 of each held-out photo
    wal_kw = {"dim": args.dim, "num_blocks": nb, **wal_extra}
    print(f"data: {data}; held-out: {len(test)} images {tuple(test[0][0].shape)}; device {device}", flush=True)

    # ---- calibration (throw-away models): step times, scan chunk length, evaluation time
    cuda = device.type == "cuda"
    warm, timed = (2, 4) if cuda else (1, 1)
    use_graph = cuda and args.cuda_graph == "on"
    chunks = [16, 32, 64] if args.chunk_size == "auto" and cuda else [int(args.chunk_size) if
                                                                       args.chunk_size != "auto" else 32]
    times = {}
    for c in chunks:
        probe = Trainer(create_model("walmafa", **wal_kw), args, device)
        _set_chunk(probe.model, c)
        pbatches = _batches(data, args, device, 12345)
        if _try_capture("walmafa probe", probe, pbatches, 1e-6, use_graph, check=True) < 0:
            use_graph = False
        times[c] = _time_steps(probe, pbatches, device, warm, timed)
        print(f"calibration: WalMaFa step {times[c] * 1e3:.1f} ms with scan chunk {c}"
              f"{' (CUDA graph)' if probe.graph is not None else ''}", flush=True)
        del probe
    chunk = min(times, key=times.get)
    t_wal = times[chunk]
    wprobe = create_model("walmafa", **wal_kw).to(device)
    _set_chunk(wprobe, chunk)
    t_wal_img = _eval_time(wprobe, test[0][0], device)
    del wprobe
    uprobe = Trainer(create_model("retinex_unet", width=args.unet_width), args, device)
    pbatches = _batches(data, args, device, 12345)
    _try_capture("unet probe", uprobe, pbatches, 1e-6, use_graph, check=True)
    t_unet = _time_steps(uprobe, pbatches, device, warm, max(timed, 3))
    t_unet_img = _eval_time(uprobe.model, test[0][0], device)
    del uprobe
    if cuda:
        torch.cuda.empty_cache()
    low0, high0 = test[0]
    t = time.perf_counter()
    _ = (psnr(low0, high0), ssim(low0, high0))
    t_metric = time.perf_counter() - t
    per_img = t_wal_img + t_unet_img + 2 * t_metric
    reserve = (len(test) * (per_img + t_metric) * 1.5 + args.curve_points * len(curve_set) * per_img * 1.5
               + 10 + 0.03 * args.budget_s)
    left = budget_end - time.perf_counter() - reserve
    steps = args.steps or max(1, int(left / (t_wal + t_unet)))
    warmup = min(args.warmup_steps, max(1, steps // 20))
    print(f"calibration: WalMaFa {t_wal * 1e3:.1f} ms/step, U-Net {t_unet * 1e3:.1f} ms/step, eval "
          f"{per_img:.2f} s/image; reserve {reserve:.0f} s -> {steps} steps each (warm-up {warmup})", flush=True)
    calib = {"walmafa_step_s": t_wal, "unet_step_s": t_unet, "chunk_times_s": {str(k): v for k, v in times.items()},
             "scan_chunk": chunk, "cuda_graph": use_graph, "eval_s_per_image": per_img, "reserve_s": reserve,
             "setup_and_calibration_s": time.perf_counter() - T0}

    # ---- training: WalMaFa then the U-Net, same steps, same batch stream, same schedule
    curve_at = {max(1, round(steps * (i + 1) / args.curve_points)) for i in range(args.curve_points)}
    seed_everything(args.seed)
    wal = Trainer(create_model("walmafa", **wal_kw), args, device)
    _set_chunk(wal.model, chunk)
    wal_log: dict = {}
    unet_time = steps * t_unet * 1.2 + len(curve_at) * len(curve_set) * t_unet_img
    wal_deadline = budget_end - reserve - unet_time

    def replan(per_step: float, done_now: int):
        """Steps that fit the budget at the measured speed (U-Net time and the curve evaluations included)."""
        # WalMaFa finishes its remaining n - done steps, then the U-Net makes all n:
        # now + (n - done)·per_step + n·1.2·t_unet = budget_end - reserve - curve evaluations
        curve_cost = args.curve_points * len(curve_set) * per_img * 1.5
        left_now = budget_end - reserve - time.perf_counter() - curve_cost
        n = max(1, int((left_now + done_now * per_step) / (per_step + t_unet * 1.2)))
        if args.steps:  # a fixed step count is kept
            n = steps
        new_curve = {max(1, round(n * (i + 1) / args.curve_points)) for i in range(args.curve_points)}
        curve_at.clear()
        curve_at.update(new_curve)
        deadline = budget_end - reserve - (n * t_unet * 1.2 + len(new_curve) * len(curve_set) * t_unet_img)
        return n, deadline, curve_at

    done = train_one("walmafa", wal, _batches(data, args, device, args.seed), args, device, steps, warmup,
                     wal_deadline, curve_at, curve_set, wal_log, use_graph, replan=replan,
                     replan_after=args.replan_after)
    wal.model.eval()
    _set_chunk(wal.model, 64)  # the package default for inference; the weights do not depend on it
    wal_sha = _save_weights(wal.model, out / "walmafa.safetensors")
    seed_everything(args.seed)
    unet = Trainer(create_model("retinex_unet", width=args.unet_width), args, device)
    unet_log: dict = {}
    curve_u = {s for s in curve_at if s <= done} | {done}
    train_one("retinex_unet", unet, _batches(data, args, device, args.seed), args, device, done, warmup,
              float("inf"), curve_u, curve_set, unet_log, use_graph)
    unet.model.eval()
    unet_sha = _save_weights(unet.model, out / "unet.safetensors")

    # ---- held-out evaluation: full images, RGB in [0, 1], padded to 16, no GT-mean (and with it, as extra)
    t_eval = time.perf_counter()
    res_in = {"psnr_per_image": [psnr(lo, hi) for lo, hi in test], "ssim_per_image": [ssim(lo, hi) for lo, hi in test]}
    res_in.update(psnr=sum(res_in["psnr_per_image"]) / len(test), ssim=sum(res_in["ssim_per_image"]) / len(test))
    res_w = evaluate_pairs(wal.model, test)
    res_u = evaluate_pairs(unet.model, test)
    res_wg = evaluate_pairs(wal.model, test, gt_mean=True)
    res_ug = evaluate_pairs(unet.model, test, gt_mean=True)
    eval_s = time.perf_counter() - t_eval
    heldout = {
        "images": test.names, "size": list(test[0][0].shape[-2:]),
        "input": res_in,
        "walmafa": {k: res_w[k] for k in ("psnr", "ssim", "psnr_per_image", "ssim_per_image")},
        "retinex_unet": {k: res_u[k] for k in ("psnr", "ssim", "psnr_per_image", "ssim_per_image")},
        "gt_mean": {"walmafa": {"psnr": res_wg["psnr"], "ssim": res_wg["ssim"]},
                    "retinex_unet": {"psnr": res_ug["psnr"], "ssim": res_ug["ssim"]}},
        "metrics": "PSNR = 10 log10(1/MSE) over RGB in [0,1]; SSIM Gaussian 11/1.5, mean over RGB (commons.metrics); "
                   "input padded to a multiple of 16 and cropped back; no GT-mean except under 'gt_mean'",
    }
    print(f"held-out ({len(test)} images): input {res_in['psnr']:.2f} dB / {res_in['ssim']:.4f}; WalMaFa "
          f"{res_w['psnr']:.2f} / {res_w['ssim']:.4f}; U-Net {res_u['psnr']:.2f} / {res_u['ssim']:.4f}", flush=True)

    # ---- pictures
    panels, labels = [], []
    shown = list(range(0, len(test), args.eval_variants))[:4]
    for i in shown:
        lo, hi = test[i]
        panels += [lo, enhance_image(wal.model, lo).cpu(), enhance_image(unet.model, lo).cpu(), hi]
    labels = ["low-light input", "WalMaFa (shipped)", "Retinex U-Net", "ground truth"]
    save_image_grid(panels, out / "before_after.png", nrow=4, col_labels=labels,
                    row_labels=[str(test.names[i]) for i in shown])
    with contextlib.suppress(ImportError):
        save_line_plot(out / "curves.png", {"WalMaFa held-out PSNR": (wal_log["heldout_step"], wal_log["heldout_psnr"]),
                                            "U-Net held-out PSNR": (unet_log["heldout_step"], unet_log["heldout_psnr"]),
                                            "input PSNR": ([0, done], [res_in["psnr"]] * 2)},
                       xlabel="step", ylabel="PSNR (dB)", title="held-out PSNR during training")

    # ---- model cards and results
    command = "python tools/walmafa_train.py " + " ".join(sys.argv[1:] if argv is None else argv)
    machine = machine_info()
    data_card = {
        "train": "commons.data.lol.SyntheticLowLightCrops('train'): random crops of every embedded photo except the "
                 "held-out ones, at relative scales (1, 0.75, 0.5) of a short side capped at 512, 8 flip/rotations, "
                 "darkened on the fly by degrade_low_light_batch (exposure 0.03-0.2, gamma 2.0-2.6, colour +-15 %, "
                 "shot noise 2e-4-3e-3, read noise 1e-3-1e-2, 8-bit)",
        "train_photos": data.names,
        "heldout": f"SyntheticLowLightDataset('test', size={args.eval_size}, variants={args.eval_variants}, seed=0)",
        "heldout_photos": sorted({n.rsplit("_", 1)[0] for n in test.names}),
    }
    if args.lol:
        data_card = {"train": f"random {args.crop}² crops (8 flip/rotations) of PairedFolderDataset({args.lol!r}, "
                              f"'train', {args.lol_subset!r})", "train_photos": len(data.names),
                     "heldout": f"PairedFolderDataset({args.lol!r}, 'test', {args.lol_subset!r})",
                     "heldout_photos": [str(n) for n in test.names]}
    recipe = {"steps": done, "planned_steps": (wal_log.get("replanned") or [{"steps": steps}])[-1]["steps"],
              "calibrated_steps": steps, "batch_size": args.batch_size, "crop": args.crop,
              "lr": args.lr, "lr_min": args.lr_min, "warmup_steps": warmup, "schedule": "linear warm-up + cosine",
              "optimizer": "Adam betas (0.9, 0.999) eps 5e-5", "loss": "0.95*(L1 + 1-SSIM) + 0.05*TV (released)",
              "grad_clip": args.grad_clip or None, "seed": args.seed, "budget_s": args.budget_s,
              "precision": "fp32 (TF32 matmuls on CUDA)" if cuda else "fp32"}
    common = {"data": data_card, "recipe": recipe, "command": command, "machine": machine, "calibration": calib,
              "heldout": heldout, "total_seconds": None}
    wal_card = {"model": "walmafa", "model_config": wal.model.config.to_dict(), "weights": "walmafa.safetensors",
                "sha256": wal_sha, "params": sum(p.numel() for p in wal.model.parameters()),
                "description": f"WalMaFa, released structure (Mamba on the high bands, raw token layout, blocks "
                               f"{list(nb)}) at reduced width dim {args.dim} (released: 16), trained from scratch "
                               f"for {done} steps on synthetic low-light crops; not the paper's LOL weights.",
                "curve": wal_log, "train_seconds": wal_log["train_seconds"], **common}
    unet_card = {"model": "retinex_unet", "model_config": unet.model.config.to_dict(), "weights": "unet.safetensors",
                 "sha256": unet_sha, "params": sum(p.numel() for p in unet.model.parameters()),
                 "description": "Retinex U-Net baseline, same steps, batches, loss and schedule as WalMaFa.",
                 "curve": unet_log, "train_seconds": unet_log["train_seconds"], **common}
    rows = [
        {"table": "heldout", "method": "input (no enhancement)", "psnr": res_in["psnr"], "ssim": res_in["ssim"]},
        {"table": "heldout", "method": f"WalMaFa dim {args.dim}", "psnr": res_w["psnr"], "ssim": res_w["ssim"],
         "psnr_gt_mean": res_wg["psnr"], "params_M": wal_card["params"] / 1e6, "steps": done,
         "train_s": wal_log["train_seconds"]},
        {"table": "heldout", "method": "Retinex U-Net", "psnr": res_u["psnr"], "ssim": res_u["ssim"],
         "psnr_gt_mean": res_ug["psnr"], "params_M": unet_card["params"] / 1e6, "steps": done,
         "train_s": unet_log["train_seconds"]},
    ]
    total = time.perf_counter() - (min(T0, t_run) if argv is None else t_run)
    for card in (wal_card, unet_card):
        card["total_seconds"] = total
        card["eval_seconds"] = eval_s
    (out / "walmafa.json").write_text(json.dumps(wal_card, indent=1, default=str) + "\n")
    (out / "unet.json").write_text(json.dumps(unet_card, indent=1, default=str) + "\n")
    write_results("walmafa", "walmafa_train", rows, settings={"command": command, **recipe, "data": data_card,
                                                             "dim": args.dim, "num_blocks": list(nb)},
                  root=out, extra={"walmafa_curve": wal_log, "unet_curve": unet_log, "calibration": calib},
                  machine=machine)
    print(f"done in {total:.0f} s (budget {args.budget_s:.0f} s); files in {out}", flush=True)
    return wal_card


if __name__ == "__main__":
    sys.exit(main())
