"""The shipped WalMaFa weights: ``walmafa/weights/walmafa.safetensors`` and its model card ``walmafa.json``.

The weights are trained by ``tools/walmafa_train.py`` (one GPU, a few minutes) on the embedded synthetic low-light
crops; the card records the configuration (a reduced width of the released architecture), the data, the recipe, the
number of steps, the seed, the command and the held-out PSNR/SSIM of the input, WalMaFa and the U-Net baseline, with
the training curve. They are *not* the paper's LOL weights; those load with ``--weights official.pth
--released-layout``.

``WALMAFA_WEIGHTS`` (a path to a ``.safetensors`` file with its ``.json`` card beside it) overrides the shipped file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch.nn as nn

__all__ = ["WEIGHTS_DIR", "default_weights", "model_card", "save_weights"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def default_weights() -> Path:
    """Path of the weights ``walmafa enhance`` uses by default (``$WALMAFA_WEIGHTS`` or the shipped file)."""
    env = os.environ.get("WALMAFA_WEIGHTS")
    path = Path(env) if env else WEIGHTS_DIR / "walmafa.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no WalMaFa weights at {str(path)!r} (set WALMAFA_WEIGHTS or pass --weights)")
    return path


def model_card(weights: str | os.PathLike | None = None) -> dict:
    """The JSON model card beside ``weights`` (default: :func:`default_weights`)."""
    path = Path(weights) if weights is not None else default_weights()
    card = path.with_suffix(".json")
    if not card.is_file():
        raise FileNotFoundError(f"no model card {str(card)!r} beside the weights")
    return json.loads(card.read_text())


def save_weights(model: nn.Module, path: str | os.PathLike, model_name: str, card: dict | None = None) -> Path:
    """Write ``model``'s float32 state dict to ``path`` (``.safetensors``) and its card to the ``.json`` beside it:
    ``{"model": model_name, "model_config": ..., "sha256": ..., "params": ..., **card}``."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"path must end in .safetensors, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt"})
    cfg = getattr(model, "config", None)
    full = {"model": model_name, "model_config": cfg.to_dict() if hasattr(cfg, "to_dict") else {},
            "weights": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "params": sum(p.numel() for p in model.parameters()), **(card or {})}
    path.with_suffix(".json").write_text(json.dumps(full, indent=1, default=str) + "\n")
    return path
