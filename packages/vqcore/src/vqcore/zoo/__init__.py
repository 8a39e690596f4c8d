"""vqcore's model zoo: small diffusion models (real diffusers classes) trained on embedded data, with evaluators.

* ``moving-digits-dit``: class-conditional video DiT, 8 frames × 16×16 × 1 channel, pixel space —
  :class:`MovingDigitsDiT` (diffusers ``LatteTransformer3DModel``).
* ``digits-unet``: class-conditional image diffusion model, 16×16 × 1 channel — :class:`DigitsUNet`
  (diffusers ``UNet2DModel``).
* ``digits-classifier``: 2-D CNN evaluator for 16×16 digits — :class:`DigitClassifier`.
* ``moving-digits-classifier``: 3-D CNN evaluator for the videos — :class:`VideoClassifier`.
* ``moving-digits-dit-l``: the larger video DiT of issue 20 — 16 frames × 32×32 (digits of 16 px), patch 2, so
  256 spatial tokens per frame and 4,096 per video, width 192 (6 heads × 32), 4 Latte layer pairs. At this size
  spatial attention spans a whole frame and the temporal blocks 16 frames, so attention is sparse enough for
  token-level methods (S²Q-VDiT's selection, Q-VDiT's TMD) to have something to select.
* ``moving-digits-classifier-l``: its 3-D CNN evaluator (16 frames × 32×32).

``moving-digits-dit-l`` is registered but its weights are **not shipped yet**: the first H100 run (320 s, 1,190 steps
while sharing the GPU with two other trainings, ``weights/train_log_run3_large.json``) reached a training loss of 0.03
but its samples are classified at chance (9–13 %), so it needs a longer run of ``tools/vqcore_train_zoo.py --only
large``. :func:`shipped_models` lists the entries whose weights are in the package.

``load(name)`` returns the trained module (eval mode, float32) from the safetensors shipped in ``zoo/weights/``;
``build(name)`` returns an untrained one with the same config. Weights were produced by ``tools/vqcore_train_zoo.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .models import (
    ClassifierConfig,
    DigitClassifier,
    DigitsUNet,
    DigitsUNetConfig,
    MovingDigitsDiT,
    VideoClassifier,
    VideoDiTConfig,
    config_to_dict,
)
from .sampling import ddpm_loss, initial_noise, make_sampler, make_train_scheduler, sample

__all__ = [
    "load", "build", "save", "list_models", "shipped_models", "weights_path", "MovingDigitsDiT", "VideoDiTConfig",
    "DigitsUNet",
    "DigitsUNetConfig", "DigitClassifier", "VideoClassifier", "ClassifierConfig", "sample", "ddpm_loss",
    "make_sampler", "make_train_scheduler", "initial_noise", "VIDEO_DATA",
]

WEIGHTS_DIR = Path(__file__).parent / "weights"

_REGISTRY: dict[str, tuple[type[nn.Module], type, dict]] = {
    "moving-digits-dit": (MovingDigitsDiT, VideoDiTConfig, {}),
    "digits-unet": (DigitsUNet, DigitsUNetConfig, {}),
    "digits-classifier": (DigitClassifier, ClassifierConfig, {"video": False}),
    "moving-digits-classifier": (VideoClassifier, ClassifierConfig, {"video": True}),
    "moving-digits-dit-l": (MovingDigitsDiT, VideoDiTConfig,
                            {"num_frames": 16, "size": 32, "patch_size": 2, "num_heads": 6, "head_dim": 32,
                             "num_layers": 4}),
    "moving-digits-classifier-l": (VideoClassifier, ClassifierConfig, {"video": True, "size": 32, "num_frames": 16}),
}

#: geometry of the moving-digit videos each video entry is trained and evaluated on (make_moving_digits kwargs)
VIDEO_DATA = {
    "moving-digits-dit": {"num_frames": 8, "size": 16, "digit_size": 8},
    "moving-digits-dit-l": {"num_frames": 16, "size": 32, "digit_size": 16},
}


def list_models() -> list[str]:
    """Names accepted by :func:`load` and :func:`build`."""
    return sorted(_REGISTRY)


def shipped_models() -> list[str]:
    """The entries of :func:`list_models` whose trained weights ship in the package (what :func:`load` can load)."""
    return [name for name in list_models() if weights_path(name).is_file()]


def _entry(name: str):
    if name not in _REGISTRY:
        raise ValueError(f"name must be one of {list_models()}, got {name!r}")
    return _REGISTRY[name]


def build(name: str, **overrides) -> nn.Module:
    """An untrained model of zoo entry ``name``; keyword arguments override config fields."""
    cls, cfg_cls, defaults = _entry(name)
    return cls(cfg_cls(**{**defaults, **overrides}))


def weights_path(name: str) -> Path:
    _entry(name)
    return WEIGHTS_DIR / f"{name}.safetensors"


def save(model: nn.Module, path: str | Path, *, name: str, dtype: torch.dtype = torch.float16,
         extra_metadata: dict | None = None) -> Path:
    """Write ``model``'s weights (cast to ``dtype``) to safetensors; its config goes into the file's metadata and a
    ``.json`` beside it. Atomic (temp file + rename)."""
    import os

    from safetensors.torch import save_file

    _entry(name)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
             for k, v in model.state_dict().items()}
    meta = {"name": name, "config": json.dumps(config_to_dict(model.config))}
    for k, v in (extra_metadata or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata=meta)
    os.replace(tmp, path)
    with open(path.with_suffix(".json"), "w") as fh:
        json.dump({"name": name, "config": config_to_dict(model.config),
                   **{k: json.loads(v) if k != "name" and v[:1] in "{[" else v for k, v in meta.items()
                      if k not in ("name", "config")}}, fh, indent=2)
    return path


def load(name: str, *, path: str | Path | None = None, device: str | torch.device = "cpu",
         dtype: torch.dtype = torch.float32) -> nn.Module:
    """Load zoo model ``name`` with its trained weights (eval mode, ``requires_grad`` off).

    ``path`` points at another safetensors file written by :func:`save` (e.g. a retrained model).
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    cls, cfg_cls, defaults = _entry(name)
    path = Path(path) if path is not None else weights_path(name)
    if not path.is_file():
        raise FileNotFoundError(f"no weights for {name!r} at {path}; retrain with tools/vqcore_train_zoo.py")
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("name") != name:
        raise ValueError(f"{path} holds {meta.get('name')!r}, not {name!r}")
    model = cls(cfg_cls(**{**defaults, **json.loads(meta["config"])}))
    state = load_file(str(path))
    model.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()})
    model.to(device=device, dtype=dtype).eval()
    model.requires_grad_(False)
    return model
