"""Pre-trained ViT backbones for the prompt-based learners, loadable offline.

- ``"vit-fractal-tiny32"`` (shipped, 2.4 MB fp16): a timm ViT (32×32 input, patch 4, width 128, depth 6, 4 heads)
  pre-trained by this project on FractalDB-style formula-driven images (``commons.data.fractals``; 200 IFS classes,
  no natural images, no digits), by ``tools/clfreq_pretrain_vit.py``. It is **not** an ImageNet-21k model: it
  exists so that tests, demos and the embedded benchmark run offline with a backbone whose pre-training data is
  disjoint from the benchmark. Frozen-feature linear probe on scikit-learn digits: 0.905 (random init: 0.831).
- Any timm ViT name with ``pretrained=True`` (hub access), e.g. ``vit_base_patch16_224.augreg_in21k``.
- A local file: a timm/PyTorch state dict (``.safetensors``/``.pth``) or Google's original ``ViT-B_16.npz`` (the
  ImageNet-21k checkpoint L2P/DualPrompt/HiDe-Prompt/PrePrompt use), via timm's npz loader.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from .vit import create_vit

__all__ = ["load_pretrained_vit", "SHIPPED_BACKBONES"]

_WEIGHTS = Path(__file__).with_name("weights")
SHIPPED_BACKBONES = {"vit-fractal-tiny32": _WEIGHTS / "vit-fractal-tiny32"}


def load_pretrained_vit(name_or_path: str | os.PathLike = "vit-fractal-tiny32", timm_name: str | None = None,
                        pretrained: bool = False, **timm_kwargs) -> nn.Module:
    """A frozen-ready timm VisionTransformer (no head) with pre-trained weights.

    Args:
        name_or_path: a shipped backbone name, a local weights file, or (with ``pretrained=True``) a timm model name.
        timm_name: the timm architecture for a local weights file (e.g. ``"vit_base_patch16_224"``).
        pretrained: load hub weights for a timm model name (needs network or a populated cache).
    """
    key = str(name_or_path)
    if key in SHIPPED_BACKBONES:
        base = SHIPPED_BACKBONES[key]
        meta = json.loads(base.with_suffix(".json").read_text())
        from safetensors.torch import load_file

        model = create_vit(meta["timm_name"], pretrained=False, **meta["kwargs"])
        state = {k: v.float() for k, v in load_file(str(base.with_suffix(".safetensors"))).items()}
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        model.load_state_dict(state, strict=True)
        return model
    path = Path(key)
    if path.suffix in (".npz", ".safetensors", ".pth", ".pt", ".bin"):
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} does not exist")
        if timm_name is None:
            raise ValueError("timm_name is required with a weights file, e.g. timm_name='vit_base_patch16_224'")
        model = create_vit(timm_name, pretrained=False, **timm_kwargs)
        if path.suffix == ".npz":
            model.load_pretrained(str(path))
            return model
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("model", state.get("state_dict", state))
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as err:  # shape mismatches: name the first one in one line
            first = next((ln.strip() for ln in str(err).splitlines() if "size mismatch" in ln), str(err))
            raise ValueError(f"weights in {path} do not match {timm_name}{timm_kwargs or ''}: {first}") from None
        if missing or unexpected:
            raise ValueError(f"weights in {path} do not match {timm_name}: missing {missing[:6]}, "
                             f"unexpected {unexpected[:6]}")
        return model
    if pretrained:
        return create_vit(key, pretrained=True, **timm_kwargs)
    raise ValueError(f"name_or_path must be one of {sorted(SHIPPED_BACKBONES)}, a weights file "
                     f"(.npz/.safetensors/.pth), or a timm name with pretrained=True; got {key!r}")
