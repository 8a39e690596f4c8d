"""Training, evaluation and inference: :class:`Enhancer` (``fit`` / ``evaluate`` / ``enhance`` / ``save`` / ``load``).

Training follows the released recipe (WalMaFa ``train.py``, ``configs/LOL/train/*.yaml``) with iterations in place
of epochs: Adam (lr 8e-4, betas (0.9, 0.999), eps 5e-5, no weight decay), a linear warm-up followed by cosine
annealing to ``lr_min`` (released: 1 warm-up epoch, then cosine over the remaining epochs, stepped per epoch; here
stepped per iteration), random ``patch_size`` crops with the 8 flip/rotate augmentations, and the loss of
:class:`walmafa.losses.WalMaFaLoss`. Multi-GPU through :class:`commons.device.TrainingBackend` (``accelerate launch``):
``steps`` counts batches of one global stream; each optimiser step takes ``num_processes`` consecutive batches, one
per process, so the learning-rate schedule and the checkpoint/resume points are counted in global batches.

Evaluation metrics are defined explicitly (:func:`evaluate_pairs`): the enhanced image is computed on the input
reflect-padded right/bottom to a multiple of 16 and cropped back (no all-side border padding unless ``border`` is
given: see :func:`enhance_image`), clamped to [0, 1]; PSNR = ``10·log10(1/MSE)`` over
all RGB values in [0, 1] (``commons.metrics.psnr``) and SSIM = Gaussian-window (11, σ 1.5) SSIM averaged over the RGB
channels (``commons.metrics.ssim``), per image, then averaged over images. No Y channel, no border crop, and no
GT-mean brightness alignment unless ``gt_mean=True`` (then :func:`gt_mean_align` scales the output by
``mean(grey(gt)) / mean(grey(output))`` before scoring, with the grey weights Retinexformer's evaluation applies).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from .models import WalMaFa, checkpoint_filter_fn, create_model, list_models
from .models.walmafa import load_strict

__all__ = ["TrainConfig", "Enhancer", "pad_to_multiple", "pad_border", "DEFAULT_BORDER", "enhance_image",
           "evaluate_pairs", "gt_mean_align", "GT_MEAN_GREY"]


def pad_to_multiple(x: torch.Tensor, multiple: int = 16) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad ``[B, C, H, W]`` right/bottom to multiples of ``multiple``; returns the padded tensor and (H, W)."""
    return pad_border(x, 0, multiple), tuple(x.shape[-2:])


#: default ``border`` of :func:`enhance_image` / :meth:`Enhancer.enhance` / ``walmafa enhance`` (pixels; see there)
DEFAULT_BORDER = 16


def pad_border(x: torch.Tensor, border: int, multiple: int = 16) -> torch.Tensor:
    """Reflect-pad ``[B, C, H, W]`` by ``border`` pixels on all four sides, plus what the right/bottom need to reach a
    multiple of ``multiple``; the image sits at ``[border:border + H, border:border + W]`` of the result.
    Replicate-padding where the image is too small to reflect (``pad >= H`` or ``W``)."""
    if x.ndim != 4:
        raise ValueError(f"x must be [B, C, H, W], got {tuple(x.shape)}")
    if not isinstance(border, int) or border < 0:
        raise ValueError(f"border must be a non-negative int (pixels), got {border!r}")
    h, w = x.shape[-2:]
    ph, pw = (-(h + 2 * border)) % multiple, (-(w + 2 * border)) % multiple
    pads = (border, border + pw, border, border + ph)
    if not any(pads):
        return x
    mode = "reflect" if border + ph < h and border + pw < w else "replicate"
    return F.pad(x, pads, mode=mode)


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, size - tile, step))
    return starts + [size - tile]


def _tile_weight(n: int, start: int, size: int, total: int, overlap: int) -> torch.Tensor:
    """1-D blending weight of a tile covering ``[start, start + n)`` of an axis of length ``total``.

    Zero for the ``margin = overlap // 4`` pixels next to an edge shared with another tile (where a tile's output sees
    its own border), then a linear ramp over ``overlap − 2·margin`` pixels up to 1; edges on the image border get no
    taper. Where two tiles overlap by ``overlap`` pixels, the distances of a pixel to the two inner edges add up to
    ``overlap − 1``, so at least one weight is positive and the normalised blend is defined everywhere."""
    margin = overlap // 4
    ramp = max(1, overlap - 2 * margin)
    i = torch.arange(n, dtype=torch.float32)
    w = torch.ones(n)
    if start > 0:
        w = torch.minimum(w, ((i - margin + 1) / ramp).clamp(0, 1))
    if start + n < total:
        w = torch.minimum(w, ((n - 1 - i - margin + 1) / ramp).clamp(0, 1))
    return w


@torch.no_grad()
def enhance_image(model: nn.Module, low: torch.Tensor, multiple: int = 16, tile: int | None = None,
                  overlap: int = 32, border: int | None = None) -> torch.Tensor:
    """Enhance ``[3, H, W]`` or ``[B, 3, H, W]`` in [0, 1] (any size): pad, run, crop back, clamp to [0, 1].

    ``border``: reflect-pad the input by this many pixels on all four sides before the model runs and crop the
    output back (:func:`pad_border`); ``None`` (default) = :data:`DEFAULT_BORDER`, ``0`` = only the right/bottom
    padding to ``multiple`` (the official evaluation). Why: every 3×3/5×5 convolution of the network zero-pads its
    input, so a constant image does not stay constant at the image edge; a network trained long enough learns to
    compensate, the shipped short-trained weights do not and draw a one-pixel coloured (mostly magenta: green driven
    below 0) ring around every output (per-pixel error about 2.5× the interior's on the outermost ring, measured in
    ``results/walmafa/walmafa_border.json``). The official architecture zero-pads identically, so this is not an
    implementation difference. Cost: the model runs on ``(H + 2·border) × (W + 2·border)`` pixels (rounded up to
    ``multiple``), e.g. +14 % at 400×592 with ``border=16``. With ``tile``, the padded image is tiled.

    ``tile``: run on overlapping ``tile×tile`` windows (a multiple of ``multiple``) and blend them
    (:func:`_tile_weight`: zero weight within ``overlap // 4`` of an inner tile edge, then a linear ramp), so peak
    memory depends on the tile, not the image. For a model whose receptive field is at most ``overlap // 4`` pixels
    this equals the untiled output up to rounding. WalMaFa's Mamba scans and Fourier block see the whole input, so
    for it a tiled result is an approximation; the overlap blending keeps the tile seams invisible.
    ``tile=None`` (default) or a tile at least as large as the image runs the image whole."""
    if tile is not None:
        if not isinstance(tile, int) or tile < multiple or tile % multiple:
            raise ValueError(f"tile must be a positive multiple of {multiple}, got {tile!r}")
        if not isinstance(overlap, int) or not 0 <= overlap < tile:
            raise ValueError(f"overlap must be an int in [0, tile), got {overlap!r}")
    border = DEFAULT_BORDER if border is None else border
    if not isinstance(border, int) or border < 0:
        raise ValueError(f"border must be a non-negative int (pixels), got {border!r}")
    squeeze = low.ndim == 3
    x = low[None] if squeeze else low
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"low must be [3, H, W] or [B, 3, H, W], got {tuple(low.shape)}")
    if border:
        h, w = x.shape[-2:]
        out = enhance_image(model, pad_border(x, border, multiple), multiple, tile, overlap, border=0)
        out = out[..., border:border + h, border:border + w]
        return out[0] if squeeze else out
    param = next(model.parameters())
    h, w = x.shape[-2:]
    if tile is None or (h <= tile and w <= tile):
        xp, _ = pad_to_multiple(x.to(param.device, param.dtype), multiple)
        out = model(xp)[..., :h, :w].clamp(0, 1).float()
        return out[0] if squeeze else out
    acc = torch.zeros(x.shape[0], 3, h, w)
    norm = torch.zeros(h, w)
    for y0 in _tile_starts(h, tile, overlap):
        th = min(tile, h)
        wy = _tile_weight(th, y0, tile, h, overlap)
        for x0 in _tile_starts(w, tile, overlap):
            tw = min(tile, w)
            crop = x[..., y0:y0 + th, x0:x0 + tw].to(param.device, param.dtype)
            cp, _ = pad_to_multiple(crop, multiple)
            out = model(cp)[..., :th, :tw].clamp(0, 1).float().cpu()
            wgt = wy[:, None] * _tile_weight(tw, x0, tile, w, overlap)[None, :]
            acc[..., y0:y0 + th, x0:x0 + tw] += out * wgt
            norm[y0:y0 + th, x0:x0 + tw] += wgt
    out = acc / norm
    return out[0] if squeeze else out


# Retinexformer's GT-mean grey level: ``cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)`` applied to RGB arrays
# (``Enhancement/test_from_dataset.py`` with ``utils.load_img`` = BGR→RGB), i.e. 0.114·R + 0.587·G + 0.299·B
GT_MEAN_GREY = (0.114, 0.587, 0.299)


def gt_mean_align(out: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Scale ``out`` by ``grey(gt).mean() / grey(out).mean()`` and clip to [0, 1] (Retinexformer/KinD "GT-mean").

    ``grey`` is the weighting Retinexformer's evaluation actually applies: OpenCV's BGR→grey weights on RGB data,
    :data:`GT_MEAN_GREY` = (0.114, 0.587, 0.299) on (R, G, B)."""
    wgt = torch.tensor(GT_MEAN_GREY, dtype=out.dtype, device=out.device).view(3, 1, 1)
    mean_out = (out * wgt).sum(-3).mean()
    mean_gt = (gt.to(out) * wgt).sum(-3).mean()
    return (out * (mean_gt / mean_out.clamp_min(1e-8))).clamp(0, 1)


def evaluate_pairs(model: nn.Module, dataset: Dataset, gt_mean: bool = False, multiple: int = 16,
                   progress: bool = False, tile: int | None = None, overlap: int = 32, border: int = 0) -> dict:
    """Mean and per-image PSNR/SSIM of ``model`` on ``(low, high)`` pairs (definitions in the module docstring).

    ``border`` defaults to 0 here (the official evaluation: right/bottom padding only, the protocol of the model
    card and of published numbers); pass ``border=DEFAULT_BORDER`` to score what ``walmafa enhance`` produces."""
    from tqdm.auto import tqdm

    from commons.metrics import psnr, ssim

    was_training = model.training
    model.eval()
    psnrs, ssims = [], []
    try:
        for i in tqdm(range(len(dataset)), desc="eval", disable=not progress, leave=False):
            low, high = dataset[i]
            out = enhance_image(model, low, multiple, tile=tile, overlap=overlap, border=border).cpu()
            if gt_mean:
                out = gt_mean_align(out, high)
            psnrs.append(psnr(out, high))
            ssims.append(ssim(out, high))
    finally:
        model.train(was_training)
    return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)), "psnr_per_image": psnrs,
            "ssim_per_image": ssims, "gt_mean": gt_mean, "n": len(psnrs)}


@dataclass
class TrainConfig:
    """Training settings; defaults are the released LOL-v1 recipe, in iterations."""

    steps: int = 1000
    batch_size: int = 12
    patch_size: int = 128
    lr: float = 8e-4
    lr_min: float = 1e-6
    betas: tuple = (0.9, 0.999)
    eps: float = 5e-5
    warmup_steps: int = 50
    w_main: float = 0.95
    w_tv: float = 0.05
    augment: bool = True
    grad_clip: float | None = None
    mixed_precision: str = "no"
    num_workers: int = 0
    seed: int = 1234
    checkpoint_every: int = 200
    log_every: int = 20
    val_every: int = 0  # validate every N steps (and at the end) when fit() gets a val_set; 0 = only at the end
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "patch_size", "checkpoint_every", "log_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.patch_size % 16:
            raise ValueError(f"patch_size must be a multiple of 16, got {self.patch_size}")
        if not self.lr > 0 or not 0 <= self.lr_min <= self.lr:
            raise ValueError(f"need lr > 0 and 0 <= lr_min <= lr, got lr={self.lr}, lr_min={self.lr_min}")
        if not isinstance(self.val_every, int) or self.val_every < 0:
            raise ValueError(f"val_every must be a non-negative int, got {self.val_every!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be positive or None, got {self.grad_clip!r}")
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ValueError(f"num_workers must be a non-negative int, got {self.num_workers!r}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be a non-negative int, got {self.warmup_steps!r}")
        self.betas = tuple(self.betas)

    def lr_at(self, step: int) -> float:
        """Learning rate for 0-based ``step``: linear warm-up to ``lr`` then cosine to ``lr_min``."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        span = max(1, self.steps - self.warmup_steps)
        t = min(1.0, (step - self.warmup_steps) / span)
        return self.lr_min + 0.5 * (self.lr - self.lr_min) * (1 + math.cos(math.pi * t))


class Enhancer:
    """A low-light enhancement model with ``fit`` / ``evaluate`` / ``enhance`` / ``save`` / ``load``.

    Args:
        model: a registry name (``walmafa``, ``walmafa_paper``, ``walmafa_classdefault``, ``retinex_unet``) or an
            ``nn.Module``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        seed: seeds the model initialisation.
        **model_kwargs: configuration overrides for a registry name.
    """

    def __init__(self, model: str | nn.Module = "walmafa", device: str = "auto", seed: int = 0, **model_kwargs):
        from commons.device import resolve_device, seed_everything

        if isinstance(model, str):
            if model not in list_models():
                raise ValueError(f"model must be one of {list_models()} or an nn.Module, got {model!r}")
            seed_everything(seed)
            self.model_name = model
            self.model = create_model(model, **model_kwargs)
        elif isinstance(model, nn.Module):
            from .models import RetinexUNet

            # registry names, so that save() / load() round-trip (a WalMaFa's config holds every variant switch)
            known = {WalMaFa: "walmafa", RetinexUNet: "retinex_unet"}
            self.model_name = known.get(type(model), type(model).__name__)
            self.model = model
        else:
            raise TypeError(f"model must be a registry name or an nn.Module, got {type(model).__name__}")
        self.device = resolve_device(device)
        self.model.to(self.device)

    # ------------------------------------------------------------------------------------------------ training
    def fit(self, train_set: Dataset, config: TrainConfig | None = None, run_dir: str | os.PathLike | None = None,
            resume: bool = False, val_set: Dataset | None = None, progress: bool = True,
            backend=None, stop_after: int | None = None) -> dict:
        """Train on ``(low, high)`` pairs. With ``run_dir``, checkpoints the resumable state every
        ``checkpoint_every`` steps (and at the end) to ``run_dir/state.pt`` and the final weights to
        ``run_dir/final``; ``resume=True`` continues from ``state.pt``. ``stop_after`` ends this call after that many
        steps (a time-boxed job; the state is saved and a later ``resume=True`` call continues the same schedule and
        batches). With ``val_set``, PSNR/SSIM on it are computed every ``config.val_every`` steps (0: once, at the
        end) and the best-PSNR weights kept in ``run_dir/best``; the history records them (``val_*``, ``best``) and
        ``run_dir/metrics.jsonl`` gets one line per logged step and validation. ``config.grad_clip`` clips the global
        gradient norm; ``config.num_workers`` sets the data-loader processes. Returns a history dict.

        The loop's phases (resume, step, log / validate / checkpoint, finish) are :class:`walmafa.training.FitLoop`'s
        methods."""
        from tqdm.auto import tqdm

        from commons.device import TrainingBackend, seed_everything

        from .training import FitLoop

        config = config or TrainConfig()
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        if len(train_set) == 0:
            raise ValueError("train_set is empty")
        seed_everything(config.seed)
        own_backend = backend is None
        if backend is None:
            backend = TrainingBackend(mixed_precision=config.mixed_precision, cpu=self.device.type == "cpu",
                                      device=self.device, use_accelerate=None if self.device.type != "cpu" else False)
        run = backend.open_run_dir(run_dir, resume)  # opened once, attached by the others
        loop = FitLoop(self, config, backend, run, val_set)
        if resume:
            loop.resume()
        loader = loop.loader(train_set, stop_after)
        loop.prepare()
        bar = tqdm(total=config.steps, initial=loop.step_count, desc=f"train {self.model_name}",
                   disable=not progress or not backend.is_main_process)
        for low, high in loader:
            loop.after_step(loop.step(low, high), bar)
        bar.close()
        history = loop.finish()
        if own_backend:
            backend.close()  # under `accelerate launch`: barrier, then tear the process group down
        return history

    # ------------------------------------------------------------------------------------------------ inference
    def evaluate(self, dataset: Dataset, gt_mean: bool = False, progress: bool = False, tile: int | None = None,
                 overlap: int = 32, border: int = 0) -> dict:
        """PSNR/SSIM on full images (see :func:`evaluate_pairs`; ``border`` 0 = the official protocol)."""
        return evaluate_pairs(self.model, dataset, gt_mean=gt_mean, progress=progress, tile=tile, overlap=overlap,
                              border=border)

    def enhance(self, low: torch.Tensor | np.ndarray | str | os.PathLike, tile: int | None = None,
                overlap: int = 32, border: int | None = None) -> torch.Tensor:
        """Enhance a ``[3, H, W]``/``[B, 3, H, W]`` tensor in [0, 1], a ``uint8 [H, W, 3]`` array or an image path
        (``tile``/``overlap``/``border``: see :func:`enhance_image`; ``border=None`` = :data:`DEFAULT_BORDER`)."""
        if isinstance(low, (str, os.PathLike)):
            from commons.data import read_image

            low = read_image(low)
        elif isinstance(low, np.ndarray):
            if low.ndim != 3 or low.shape[2] != 3:
                raise ValueError(f"array images must be [H, W, 3], got {low.shape}")
            scale = 255.0 if low.dtype == np.uint8 else 1.0
            low = torch.from_numpy(low.astype(np.float32) / scale).permute(2, 0, 1)
        if not isinstance(low, torch.Tensor) or low.ndim not in (3, 4) or low.shape[-3] != 3:
            raise ValueError("low must be a [3, H, W] or [B, 3, H, W] tensor, an [H, W, 3] array or an image path")
        self.model.eval()
        return enhance_image(self.model, low, tile=tile, overlap=overlap, border=border).cpu()

    # ------------------------------------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write ``model.safetensors`` + ``config.json`` (registry name and configuration) into ``directory``."""
        return self._save_module(self.model, directory, overwrite=overwrite)

    def _save_module(self, module: nn.Module, directory: str | os.PathLike, overwrite: bool = True) -> Path:
        from commons.io import save_checkpoint

        cfg = getattr(module, "config", None)
        config = {"model": self.model_name, "model_config": cfg.to_dict() if hasattr(cfg, "to_dict") else {}}
        return save_checkpoint(directory, module.state_dict(), config, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto", released_layout: bool = False,
             **config) -> Enhancer:
        """Load weights into an :class:`Enhancer`.

        ``path`` may be: a folder written by :meth:`save` / ``fit`` (``model.safetensors`` + ``config.json``); a
        ``.safetensors`` file with its model card beside it (same stem, ``.json``: ``{"model": ..., "model_config":
        ...}``, the format of the shipped weights, :mod:`walmafa.pretrained`); or, with ``released_layout=True``, an
        official WalMaFa checkpoint (``.pth``: read with ``torch.load(weights_only=True)``) converted by
        :func:`walmafa.models.checkpoint_filter_fn` (``config`` overrides the fields it cannot infer)."""
        from commons.device import resolve_device

        path = Path(path)
        if released_layout:
            from .models import load_released_checkpoint

            enh = cls(load_released_checkpoint(path, **config), device="cpu")
        elif path.is_dir():
            from commons.io import load_checkpoint

            state, card = load_checkpoint(path)
            enh = cls._from_card(state, card, str(path))
        elif path.is_file() and path.suffix == ".safetensors":
            from safetensors.torch import load_file

            card_path = path.with_suffix(".json")
            if not card_path.is_file():
                raise ValueError(f"{str(path)!r} needs its model card {card_path.name!r} beside it")
            enh = cls._from_card(load_file(str(path)), json.loads(card_path.read_text()), str(path))
        elif path.is_file() and path.suffix in (".pth", ".pt"):
            raise ValueError(f"{str(path)!r} is a PyTorch checkpoint: pass released_layout=True (CLI: "
                             f"--released-layout) for official WalMaFa weights")
        else:
            raise ValueError(f"weights must be a checkpoint folder, a .safetensors file with its .json card, or a "
                             f"released .pth with released_layout=True; got {str(path)!r}")
        enh.device = resolve_device(device)
        enh.model.to(enh.device)
        return enh

    @classmethod
    def _from_card(cls, state: dict, card: dict, where: str) -> Enhancer:
        if not isinstance(card, dict) or card.get("model") not in list_models():
            got = card.get("model") if isinstance(card, dict) else card
            raise ValueError(f"{where} does not name a registered model (model={got!r}; expected one of "
                             f"{list_models()})")
        enh = cls(card["model"], device="cpu", **card.get("model_config", {}))
        if isinstance(enh.model, WalMaFa):  # weights written before issue 26 still hold unused released parameters
            state = checkpoint_filter_fn(state)
        load_strict(enh.model, state, f"{where} (model {card['model']!r})")
        return enh

    @classmethod
    def pretrained(cls, device: str = "auto") -> Enhancer:
        """The shipped WalMaFa weights (:func:`walmafa.pretrained.default_weights`)."""
        from .pretrained import default_weights

        return cls.load(default_weights(), device=device)
